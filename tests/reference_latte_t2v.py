"""An independent float64 numpy Latte-T2V(-skip) forward in the official layout, written
from shared/docs/VIDEO.md §2.1 (the diffusers-0.24 LatteT2V built on PixArt-α pieces).

x (N, C, F, H, W) channels before frames; frames folded into the batch for the spatial
blocks (N·F, P, D), patches for the temporal blocks (N·P, F, D); adaLN-single (shared
Linear(SiLU(t_emb)) -> 6D plus each block's scale_shift_table); the caption projection
(Linear, tanh-GELU, Linear) repeated per frame as the K/V of every spatial block's
cross-attention (no norm, no gate, mask as an additive -10000 bias); temp_pos_embed after
spatial block 0; the long skips per layer (push after the temporal block, pop before the
spatial block); the final layer's (2, D) table plus the embedded timestep.
Reads official state_dict names; shares no code with `skipdit_jax`.
"""
from __future__ import annotations

import math

import numpy as np

import reference_dit as R


def _lin(sd, name, x):
  return x @ np.asarray(sd[name + ".weight"], np.float64).T + np.asarray(sd[name + ".bias"],
                                                                         np.float64)


def _ln(x, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)


def _silu(x):
  return x / (1 + np.exp(-x))


def _gelu_tanh(x):
  return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _attn(sd, name, x, ctx, heads, mask=None):
  """diffusers Attention: x (B, T, D) queries, ctx (B, L, D) keys/values; mask (B, L)."""
  b, t, d = x.shape
  hd = d // heads
  q = _lin(sd, name + ".to_q", x).reshape(b, t, heads, hd).transpose(0, 2, 1, 3)
  k = _lin(sd, name + ".to_k", ctx).reshape(b, -1, heads, hd).transpose(0, 2, 1, 3)
  v = _lin(sd, name + ".to_v", ctx).reshape(b, -1, heads, hd).transpose(0, 2, 1, 3)
  s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd)
  if mask is not None:
    s = s + ((1.0 - mask) * -10000.0)[:, None, None, :]
  s = np.exp(s - s.max(-1, keepdims=True))
  s = s / s.sum(-1, keepdims=True)
  o = (s @ v).transpose(0, 2, 1, 3).reshape(b, t, d)
  return _lin(sd, name + ".to_out.0", o)


def _block(sd, name, x, t6, heads, ctx=None, mask=None):
  """BasicTransformerBlock (ada_norm_single). x (B, T, D), t6 (B, 6D)."""
  b, _, d = x.shape
  mod = np.asarray(sd[name + ".scale_shift_table"], np.float64)[None] + t6.reshape(b, 6, d)
  sh, sc, g, sh2, sc2, g2 = (mod[:, j][:, None] for j in range(6))
  h = _ln(x) * (1 + sc) + sh
  x = x + g * _attn(sd, name + ".attn1", h, h, heads)
  if ctx is not None:
    x = x + _attn(sd, name + ".attn2", x, ctx, heads, mask)
  h = _ln(x) * (1 + sc2) + sh2
  ff = _lin(sd, name + ".ff.net.2", _gelu_tanh(_lin(sd, name + ".ff.net.0.proj", h)))
  return x + g2 * ff


def _t_freq(t, dim=256):
  half = dim // 2
  freqs = np.exp(-math.log(10000.0) * np.arange(half) / half)
  a = np.asarray(t, np.float64)[:, None] * freqs[None]
  return np.concatenate([np.cos(a), np.sin(a)], axis=1)


def forward(sd: dict, x, t, tokens, mask, *, heads: int) -> np.ndarray:
  """x (N, C, F, H, W), t (N,), tokens (N, L, C_txt), mask (N, L) -> (N, C_out, F, H, W)."""
  x = np.asarray(x, np.float64)
  n, c, f, hh, ww = x.shape
  w_conv = np.asarray(sd["pos_embed.proj.weight"], np.float64)
  d, _, p, _ = w_conv.shape
  layers = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks."))
  video = any(k.startswith("temporal_transformer_blocks.") for k in sd)
  long_skip = any(k.startswith("skip_linears.") for k in sd)
  gh, gw = hh // p, ww // p
  # patch conv per frame: (N·F, C, H, W) -> (N·F, P, D), tokens row-major
  fr = x.transpose(0, 2, 1, 3, 4).reshape(n * f, c, gh, p, gw, p)
  h = np.einsum("bcipjq,dcpq->bijd", fr, w_conv).reshape(n * f, gh * gw, d)
  h = h + np.asarray(sd["pos_embed.proj.bias"], np.float64) + R.pos_embed_2d(d, gh)[None]
  emb = _lin(sd, "adaln_single.emb.timestep_embedder.linear_2",
             _silu(_lin(sd, "adaln_single.emb.timestep_embedder.linear_1", _t_freq(t))))
  t6 = _lin(sd, "adaln_single.linear", _silu(emb))
  ctx = _lin(sd, "caption_projection.linear_2",
             _gelu_tanh(_lin(sd, "caption_projection.linear_1",
                             np.asarray(tokens, np.float64))))
  mask = np.asarray(mask, np.float64)
  t6_sp, ctx_sp, mask_sp = (np.repeat(a, f, axis=0) for a in (t6, ctx, mask))
  pp = h.shape[1]
  t6_tm = np.repeat(t6, pp, axis=0)
  stack = []
  for i in range(layers):
    if long_skip and i >= layers // 2:
      j = i - layers // 2
      cat = np.concatenate([h, stack.pop()], -1)
      cat = _ln(cat) * np.asarray(sd[f"skip_norms.{j}.weight"], np.float64) + np.asarray(
          sd[f"skip_norms.{j}.bias"], np.float64)
      h = _lin(sd, f"skip_linears.{j}.linear", cat)
    h = _block(sd, f"transformer_blocks.{i}", h, t6_sp, heads, ctx_sp, mask_sp)
    if video:
      h = h.reshape(n, f, pp, d).transpose(0, 2, 1, 3).reshape(n * pp, f, d)
      if i == 0:
        h = h + temp_pos_embed(d, f)[None]
      h = _block(sd, f"temporal_transformer_blocks.{i}", h, t6_tm, heads)
      h = h.reshape(n, pp, f, d).transpose(0, 2, 1, 3).reshape(n * f, pp, d)
    if long_skip and i < layers // 2:
      stack.append(h)
  mod = np.asarray(sd["scale_shift_table"], np.float64)[None] + np.repeat(emb, f, 0)[:, None]
  h = _ln(h) * (1 + mod[:, 1][:, None]) + mod[:, 0][:, None]
  out = _lin(sd, "proj_out", h)
  co = out.shape[-1] // (p * p)
  out = out.reshape(n, f, gh, gw, p, p, co)  # unpatchify "nhwpqc->nchpwq", frames kept
  return out.transpose(0, 6, 1, 2, 4, 3, 5).reshape(n, co, f, gh * p, gw * p)


def temp_pos_embed(dim: int, frames: int) -> np.ndarray:
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  out = np.outer(np.arange(frames, dtype=np.float64), omega)
  return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def random_state_dict(rng: np.random.Generator, *, hidden: int, layers: int, channels: int,
                      patch: int, caption: int, long_skip: bool, video: bool = True,
                      learn_sigma: bool = True) -> dict:
  """Official Latte-T2V(-skip) names and shapes (VIDEO.md §2.1 key list), random values
  (every tensor non-zero), float32."""
  d = hidden
  shapes = {"pos_embed.proj.weight": (d, channels, patch, patch), "pos_embed.proj.bias": (d,)}

  def lin(name, out, inp):
    shapes[name + ".weight"], shapes[name + ".bias"] = (out, inp), (out,)

  lin("adaln_single.emb.timestep_embedder.linear_1", d, 256)
  lin("adaln_single.emb.timestep_embedder.linear_2", d, d)
  lin("adaln_single.linear", 6 * d, d)
  lin("caption_projection.linear_1", d, caption)
  lin("caption_projection.linear_2", d, d)
  kinds = ["transformer_blocks"] + (["temporal_transformer_blocks"] if video else [])
  for kind in kinds:
    for i in range(layers):
      b = f"{kind}.{i}"
      for a in ("attn1",) + (("attn2",) if kind == "transformer_blocks" else ()):
        for q in ("to_q", "to_k", "to_v", "to_out.0"):
          lin(f"{b}.{a}.{q}", d, d)
      lin(f"{b}.ff.net.0.proj", 4 * d, d)
      lin(f"{b}.ff.net.2", d, 4 * d)
      shapes[f"{b}.scale_shift_table"] = (6, d)
  for j in range(layers // 2 if long_skip else 0):
    shapes[f"skip_norms.{j}.weight"] = shapes[f"skip_norms.{j}.bias"] = (2 * d,)
    lin(f"skip_linears.{j}.linear", d, 2 * d)
  shapes["scale_shift_table"] = (2, d)
  lin("proj_out", patch * patch * channels * (2 if learn_sigma else 1), d)
  sd = {}
  for k, shape in shapes.items():
    scale = 1.0 if k.startswith("skip_norms") and k.endswith("weight") else 0.0
    fan_in = shape[1] if len(shape) > 1 and "scale_shift" not in k else 4
    sd[k] = (scale + rng.normal(0, 1 / np.sqrt(max(fan_in, 4)), shape)).astype(np.float32)
  return sd
