"""An independent float64 numpy DiT / Skip-DiT forward, written from REFERENCE §1–2
(with a hook to substitute the hidden state entering any block, for §4's caches).

It reads weights in the *official* PyTorch layout (state_dict names, Linear weights
(out, in), patch conv (D, C, p, p)) and shares no code with `skipdit_jax.models`, so the
model tests compare two separate implementations. Inputs are NHWC like our model.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np


def pos_embed_2d(dim: int, grid: int) -> np.ndarray:
  """MAE 2-D sin-cos table (grid*grid, dim): first half from the column (w) coordinate."""
  def one_d(d, pos):
    omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
    out = np.outer(pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)
  gw, gh = np.meshgrid(np.arange(grid, dtype=np.float64), np.arange(grid, dtype=np.float64))
  return np.concatenate([one_d(dim // 2, gw), one_d(dim // 2, gh)], axis=1)


def linear(sd: dict, name: str, x: np.ndarray) -> np.ndarray:
  return x @ np.asarray(sd[name + ".weight"], np.float64).T + np.asarray(sd[name + ".bias"],
                                                                         np.float64)


def silu(x):
  return x / (1.0 + np.exp(-x))


def gelu_tanh(x):
  return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def layer_norm(x, weight=None, bias=None, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  y = (x - mu) / np.sqrt(var + eps)
  if weight is not None:
    y = y * weight + bias
  return y


def softmax(x):
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def embed(sd: dict, x: np.ndarray, t: np.ndarray, y: np.ndarray, p: int):
  """Tokens (N, T, D) and conditioning c (N, D)."""
  x = np.asarray(x, np.float64)
  n, hh, ww, _ = x.shape
  conv_w = np.asarray(sd["x_embedder.proj.weight"], np.float64)  # (D, C, p, p)
  d = conv_w.shape[0]
  # A stride-p conv: every output pixel is a dot product of one p x p x C patch.
  patches = x.reshape(n, hh // p, p, ww // p, p, -1)                # n, gh, a, gw, b, c
  tok = np.einsum("nhawbc,dcab->nhwd", patches, conv_w) + sd["x_embedder.proj.bias"]
  tok = tok.reshape(n, -1, d) + pos_embed_2d(d, hh // p)[None]
  half = 128
  freqs = np.exp(-math.log(10000.0) * np.arange(half, dtype=np.float64) / half)
  args = np.asarray(t, np.float64)[:, None] * freqs[None]
  tf = np.concatenate([np.cos(args), np.sin(args)], axis=-1)
  temb = linear(sd, "t_embedder.mlp.2", silu(linear(sd, "t_embedder.mlp.0", tf)))
  yemb = np.asarray(sd["y_embedder.embedding_table.weight"], np.float64)[np.asarray(y)]
  return tok, temb + yemb


def block(sd: dict, i: int, x: np.ndarray, c: np.ndarray, heads: int) -> np.ndarray:
  pre = f"blocks.{i}."
  mod = linear(sd, pre + "adaLN_modulation.1", silu(c))
  s1, sc1, g1, s2, sc2, g2 = (m[:, None] for m in np.split(mod, 6, axis=-1))
  n, tt, d = x.shape
  hd = d // heads
  h = layer_norm(x) * (1 + sc1) + s1
  qkv = linear(sd, pre + "attn.qkv", h).reshape(n, tt, 3, heads, hd).transpose(2, 0, 3, 1, 4)
  q, k, v = qkv                                                    # (N, heads, T, hd)
  att = softmax(q @ k.transpose(0, 1, 3, 2) / math.sqrt(hd))
  o = (att @ v).transpose(0, 2, 1, 3).reshape(n, tt, d)
  x = x + g1 * linear(sd, pre + "attn.proj", o)
  h = layer_norm(x) * (1 + sc2) + s2
  return x + g2 * linear(sd, pre + "mlp.fc2", gelu_tanh(linear(sd, pre + "mlp.fc1", h)))


def fuse(sd: dict, j: int, x: np.ndarray, skip: np.ndarray) -> np.ndarray:
  """Skip-DiT fusion j: Linear(LayerNorm(concat[x, skip]))."""
  h = np.concatenate([x, skip], axis=-1)
  h = layer_norm(h, np.asarray(sd[f"skip_norms.{j}.weight"], np.float64),
                 np.asarray(sd[f"skip_norms.{j}.bias"], np.float64))
  return linear(sd, f"skip_linears.{j}.linear", h)


def head(sd: dict, x: np.ndarray, c: np.ndarray, p: int) -> np.ndarray:
  """Final layer and unpatchify -> (N, H, W, C_out)."""
  shift, scale = np.split(linear(sd, "final_layer.adaLN_modulation.1", silu(c)), 2, axis=-1)
  out = linear(sd, "final_layer.linear", layer_norm(x) * (1 + scale[:, None]) + shift[:, None])
  n, tt, f = out.shape
  g = int(round(math.sqrt(tt)))
  cout = f // (p * p)
  out = out.reshape(n, g, g, p, p, cout)
  return np.einsum("nhwpqc->nhpwqc", out).reshape(n, g * p, g * p, cout)


def forward(sd: dict, x, t, y, *, patch: int, heads: int, long_skip: bool,
            replace: Optional[dict] = None, record: Optional[dict] = None) -> np.ndarray:
  """The whole model: x (N, H, W, C) -> (N, H, W, C_out), float64.

  replace: {i: (N, T, D)} sets the hidden state entering block i (before its skip
    fusion; i = depth means entering the final layer) to the given array. With
    i = L - k that array is REFERENCE §4's deep feature, so a forward at (x2, t2) with
    the deep feature of a forward at (x1, t1) is what a cached step at (x2, t2) after
    a full step at (x1, t1) must compute.
  record: a dict that receives the hidden state entering every block i (and the
    final layer at i = depth), after any replacement.
  """
  depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
  replace = replace or {}
  bad = [i for i in replace if not 0 <= i <= depth]
  if bad:
    raise ValueError(f"replace names blocks {bad}; the model has blocks 0..{depth - 1} "
                     f"and {depth} (the final layer)")

  def enter(i, h):
    h = np.asarray(replace[i], np.float64) if i in replace else h
    if record is not None:
      record[i] = h
    return h
  h, c = embed(sd, x, t, y, patch)
  stack = []
  for i in range(depth):
    h = enter(i, h)
    if long_skip and i >= depth // 2:
      h = fuse(sd, i - depth // 2, h, stack.pop())
    h = block(sd, i, h, c, heads)
    if long_skip and i < depth // 2:
      stack.append(h)
  return head(sd, enter(depth, h), c, patch)
