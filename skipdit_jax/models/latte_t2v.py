"""Text-to-image DiT and text-to-video Latte on caption tokens (`cond="text_tokens"`), as
the official Latte-T2V-skip (shared/docs/VIDEO.md §2.1).

- adaLN-single: one shared timestep MLP gives t6 (N, 6D); each block adds its learned
  `scale_shift_table` (6, D) and splits shift/scale/gate for attention and MLP (PixArt).
  The final layer's (2, D) table is added to the embedded timestep (no SiLU there).
- The caption (N, L, C_txt) goes through the caption projection once per forward and is
  the key/value of a cross-attention, unnormalised and ungated, between self-attention and
  MLP: in every DiT block, in the spatial blocks only of Latte (temporal blocks have none).
- Caption dropout / CFG's null: rows of the null caption (text_cond.select).

The staged forward is unchanged (`embed -> run_blocks -> head`): only c changes, from an
(N, D) array to a `TextCond`, which the policies pass through opaquely; the blocks are
still `blocks_{i}` with `attn_branch` / `mlp_branch`, so FORA intercepts them as before.
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from skipdit_jax.models import scan, text_cond
from skipdit_jax.models.blocks import Mlp, SkipFusion
from skipdit_jax.models.dit import DiT, validate_shape
from skipdit_jax.models.latte import Latte, validate_latte
from skipdit_jax.models.layers import (Dtype, dense, layer_norm, modulate, patchify,
                                       per_sample, sincos_2d, zeros)
from skipdit_jax.models.text_cond import TextCond


def _table_init(key, shape, dtype=jnp.float32):
  """PixArt's scale_shift_table init: randn / sqrt(D)."""
  return jax.random.normal(key, shape, dtype) / math.sqrt(shape[-1])


class T2VBlock(nn.Module):
  """A diffusers `BasicTransformerBlock` with ada_norm_single: x (N, ..., T, D), c TextCond.

  `temporal`: x is (N, F, P, D) and self-attention runs over F. `cross`: cross-attention
  to c.context after self-attention."""
  hidden_size: int
  num_heads: int
  mlp_ratio: float = 4.0
  cross: bool = True
  temporal: bool = False
  dtype: Dtype = jnp.float32

  def setup(self):
    self.attn1 = text_cond.MHA(self.hidden_size, self.num_heads, self.dtype)
    if self.cross:
      self.attn2 = text_cond.MHA(self.hidden_size, self.num_heads, self.dtype, zero_out=True)
    self.ff = Mlp(self.hidden_size, self.mlp_ratio, self.dtype)
    self.scale_shift_table = self.param(
        "scale_shift_table", nn.with_logical_partitioning(_table_init, (None, "embed")),
        (6, self.hidden_size), jnp.float32)

  def modulation(self, c: TextCond) -> tuple[jax.Array, ...]:
    n, d = c.t6.shape[0], self.hidden_size
    mod = self.scale_shift_table[None].astype(c.t6.dtype) + c.t6.reshape(n, 6, d)
    return tuple(mod[:, j] for j in range(6))

  def attn_branch(self, x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """Self-attention output before its gate (FORA reuses it)."""
    h = modulate(layer_norm(x), shift, scale)
    if self.temporal:
      return jnp.swapaxes(self.attn1(jnp.swapaxes(h, -2, -3)), -2, -3)
    return self.attn1(h)

  def mlp_branch(self, x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    return self.ff(modulate(layer_norm(x), shift, scale))

  def __call__(self, x: jax.Array, c: TextCond) -> jax.Array:
    s_msa, sc_msa, g_msa, s_mlp, sc_mlp, g_mlp = self.modulation(c)
    x = x + per_sample(g_msa, x) * self.attn_branch(x, s_msa, sc_msa)
    if self.cross:  # no norm before cross-attention with ada_norm_single (PixArt)
      x = x + self.attn2(x, c.context, c.mask)
    return x + per_sample(g_mlp, x) * self.mlp_branch(x, s_mlp, sc_mlp)


class T2VFinalLayer(nn.Module):
  """LayerNorm, modulated by scale_shift_table (2, D) + embedded t, then proj_out."""
  hidden_size: int
  out_features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, c: TextCond) -> jax.Array:
    table = self.param("scale_shift_table",
                       nn.with_logical_partitioning(_table_init, (None, "embed")),
                       (2, self.hidden_size), jnp.float32)
    mod = table[None].astype(c.t.dtype) + c.t[:, None]
    x = modulate(layer_norm(x), mod[:, 0], mod[:, 1])
    return dense(self.out_features, ("embed", None), dtype=self.dtype, kernel_init=zeros,
                 name="proj_out")(x)


def _setup_text(m, dt: Dtype, temporal_odd: bool) -> None:
  """The modules DiTT2V and LatteT2V share, assigned inside their `setup`."""
  m.x_embedder = dense(m.hidden_size, ("patch", "embed"), dtype=dt)
  m.adaln_single = text_cond.AdaLNSingle(m.hidden_size, dt)
  m.caption_projection = text_cond.CaptionProjection(m.hidden_size, dt)
  block = scan.maybe_remat(T2VBlock, m.remat)
  m.blocks = [block(m.hidden_size, m.num_heads, m.mlp_ratio, cross=not (temporal_odd and i % 2),
                    temporal=temporal_odd and bool(i % 2), dtype=dt) for i in range(m.depth)]
  if m.long_skip:
    n = m.depth // 4 if temporal_odd else m.depth // 2
    m.skip_fusions = [SkipFusion(m.hidden_size, dt) for _ in range(n)]
  m.final_layer = T2VFinalLayer(m.hidden_size, m.patch_size ** 2 * m.out_channels, dt)


def _embed(m, x: jax.Array, t: jax.Array, y, train: bool,
           force_drop_ids: jax.Array | None) -> tuple[jax.Array, TextCond]:
  text_cond.check_condition(y, "text_tokens", m.caption_channels)
  dt = jnp.dtype(m.dtype)
  pos = jnp.asarray(sincos_2d(m.hidden_size, m.input_size // m.patch_size), jnp.float32)
  h = m.x_embedder(patchify(x.astype(dt), m.patch_size)) + pos.astype(dt)
  drop = text_cond.drop_mask(m, x.shape[0], m.class_dropout_prob, train, force_drop_ids)
  tokens = text_cond.select(drop, y["tokens"], y["null_tokens"])
  mask = text_cond.select(drop, y["mask"], y["null_mask"]).astype(bool)
  emb, t6 = m.adaln_single(t)
  return h, TextCond(emb, t6, m.caption_projection(tokens), mask)


class _CaptionTokens:
  """The text-token models' setup and embed, shared by the image and the video model;
  `_temporal_odd`: whether odd blocks are temporal (no cross-attention)."""
  _temporal_odd = False  # a class attribute, not a module field

  def setup(self):
    validate_t2v(self)
    _setup_text(self, jnp.dtype(self.dtype), temporal_odd=self._temporal_odd)

  def embed(self, x: jax.Array, t: jax.Array, y, *, train: bool = False,
            force_drop_ids: jax.Array | None = None) -> tuple[jax.Array, TextCond]:
    """Tokens h with positions, and c = TextCond (caption rows dropped to the null)."""
    return _embed(self, x, t, y, train, force_drop_ids)


class DiTT2V(_CaptionTokens, DiT):
  """Text-to-image DiT / Skip-DiT: cross-attention to caption tokens in every block.

  x (N, H, W, C), t (N,), y a caption dict (text_cond.caption_condition) -> (N, H, W, C_out).
  """
  cond: str = "text_tokens"


class LatteT2V(_CaptionTokens, Latte):
  """Text-to-video Latte / Skip-Latte (Latte-T2V): spatial blocks cross-attend to the
  caption, temporal blocks do not. x (N, F, H, W, C) channel-last (the official layout is
  (N, C, F, H, W)), y a caption dict -> (N, F, H, W, C_out)."""
  cond: str = "text_tokens"
  _temporal_odd = True


def validate_t2v(m: DiTT2V | LatteT2V) -> None:
  """Field checks of the text-token models (on top of DiT's / Latte's)."""
  if m.cond != "text_tokens":
    raise ValueError(f"model.cond={m.cond!r}, but {type(m).__name__} is the caption-token "
                     "model: use models.create(name, cond=...) to pick the module")
  if m.scan_blocks:
    raise ValueError("model.scan_blocks=True is not supported with model.cond="
                     "'text_tokens' (its blocks differ): set model.scan_blocks=False")
  text_cond.validate(m)
  if isinstance(m, Latte):
    validate_latte(m)
  else:
    validate_shape(m)
