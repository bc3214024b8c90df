"""Latte and Skip-Latte (class-to-video): DiT blocks alternating over space and time.

Blocks come in pairs: `blocks_{2u}` attends among the P patches of each frame (spatial),
`blocks_{2u+1}` among the F frames at each patch position (temporal). A fixed 1-D sin-cos
table over frames (`temp_embed`) is added once, after spatial block 0. With `long_skip`
the unit of the U-Net skips is a pair: shallow pairs push their output, deep pairs pop
and fuse before their spatial block (`skip_pairs` over pairs; depth/4 fusions).

The staged forward (`embed`, `run_blocks(start, stop)` in pairs, `head`) is DiT's, so
cache plans, policies and the sampler run video unchanged. Hidden states are
(N, F, P, D) throughout (batch leading); the adaLN modulation is computed once per video
from c (N, D) and broadcast, which equals the official per-frame/per-patch repeat.
Facts: shared/docs/VIDEO.md §1.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from skipdit_jax.models import scan, skip_pairs, text_cond
from skipdit_jax.models.blocks import DiTBlock, FinalLayer, SkipFusion
from skipdit_jax.models.dit import TransformerFields
from skipdit_jax.models.dit import validate_shape as validate_dit_shape
from skipdit_jax.models.layers import (TimestepEmbedder, dense, layer_norm,
                                       modulate, patchify, sincos_1d, sincos_2d, unpatchify)

Skips = tuple[jax.Array, ...]


def temp_embed_table(dim: int, num_frames: int) -> np.ndarray:
  """The fixed (F, D) frame table: the MAE 1-D sin-cos formula over 0..F-1, sin half first."""
  return sincos_1d(dim, np.arange(num_frames))


class TemporalBlock(DiTBlock):
  """A DiT block whose attention runs over frames: x (N, F, P, D) stays in that layout,
  only the attention sees (N, P, F, D). Same parameters as `DiTBlock`."""

  def attn_branch(self, x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    h = jnp.swapaxes(modulate(layer_norm(x), shift, scale), -2, -3)
    return jnp.swapaxes(self.attn(h), -2, -3)


class Latte(TransformerFields):
  """Class-conditional (or unconditional) video diffusion transformer, channel-last.

  x: (N, F, H, W, C), t: (N,) timesteps in [0, 999], y: (N,) labels (ignored when
  num_classes=0) -> (N, F, H, W, C_out), C_out = 2C with a learned sigma. `depth` counts
  blocks (pairs = depth // 2); `num_classes=0` has no label embedder; `scan_blocks` is
  refused (validate_latte); `num_tokens` is patches per frame.
  """
  num_classes: int = 101
  num_frames: int = 16

  @property
  def num_units(self) -> int:
    """`run_blocks` counts spatial+temporal pairs."""
    return self.depth // 2

  @property
  def sample_shape(self) -> tuple[int, ...]:
    """One input without the batch axis: (F, H, W, C)."""
    return (self.num_frames, self.input_size, self.input_size, self.in_channels)

  def setup(self):
    validate_latte(self)
    dt = jnp.dtype(self.dtype)
    self.x_embedder = dense(self.hidden_size, ("patch", "embed"), dtype=dt)
    self.t_embedder = TimestepEmbedder(self.hidden_size, dt)
    if text_cond.has_condition(self):  # labels, or a pooled caption (cond="text_pooled")
      self.y_embedder = text_cond.condition_embedder(self, dt)
    spatial = scan.maybe_remat(DiTBlock, self.remat)
    temporal = scan.maybe_remat(TemporalBlock, self.remat)
    self.blocks = [(temporal if i % 2 else spatial)(self.hidden_size, self.num_heads,
                                                    self.mlp_ratio, dt)
                   for i in range(self.depth)]
    if self.long_skip:
      self.skip_fusions = [SkipFusion(self.hidden_size, dt) for _ in range(self.depth // 4)]
    self.final_layer = FinalLayer(self.hidden_size,
                                  self.patch_size ** 2 * self.out_channels, dt)

  def embed(self, x: jax.Array, t: jax.Array, y: jax.Array, *, train: bool = False,
            force_drop_ids: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Tokens h (N, F, P, D) with spatial positions added, and the conditioning c (N, D)."""
    dt = jnp.dtype(self.dtype)
    pos = jnp.asarray(sincos_2d(self.hidden_size, self.input_size // self.patch_size),
                      jnp.float32)
    h = self.x_embedder(patchify(x.astype(dt), self.patch_size)) + pos.astype(dt)
    c = self.t_embedder(t)
    if text_cond.has_condition(self):
      c = c + self.y_embedder(y, train, force_drop_ids)
    elif force_drop_ids is not None:
      raise ValueError("classifier-free guidance needs labels, but this Latte is "
                       "unconditional (model.num_classes=0): use sample.cfg_scale=1.0")
    return h, c

  def _pair(self, h: jax.Array, c: jax.Array, u: int) -> jax.Array:
    h = self.blocks[2 * u](h, c)
    if u == 0:  # the frame table enters once, between spatial block 0 and temporal block 1
      temp = jnp.asarray(temp_embed_table(self.hidden_size, self.num_frames), jnp.float32)
      h = h + temp[:, None, :].astype(h.dtype)
    return self.blocks[2 * u + 1](h, c)

  def run_blocks(self, h: jax.Array, c: jax.Array, skips: Skips, start: int,
                 stop: int) -> tuple[jax.Array, Skips]:
    """Pairs start..stop-1. Shallow pairs push their output; deep pairs pop and fuse
    before their spatial block."""
    pairs = self.num_units
    for kind, a, b in skip_pairs.segments(pairs, self.long_skip, start, stop):
      popped, skips = (skip_pairs.pop(skips, a, b) if kind == skip_pairs.DEEP
                       else ([], skips))
      for n, u in enumerate(range(a, b)):
        if kind == skip_pairs.DEEP:
          h = self.skip_fusions[skip_pairs.fusion_index(u, pairs)](h, popped[n])
        h = self._pair(h, c, u)
        if kind == skip_pairs.SHALLOW:
          skips = skips + (h,)
    return h, skips

  def head(self, h: jax.Array, c: jax.Array) -> jax.Array:
    """Final layer and per-frame unpatchify: (N, F, H, W, C_out) float32."""
    out = self.final_layer(h, c)
    return unpatchify(out, self.patch_size, self.input_size // self.patch_size,
                      self.out_channels).astype(jnp.float32)


def validate_latte(m: Latte) -> None:
  """Raise a ValueError naming the config field for shapes Latte cannot take."""
  if m.scan_blocks:
    raise ValueError("model.scan_blocks=True is not supported for Latte (its blocks "
                     "alternate spatial and temporal attention): set model.scan_blocks=False")
  if m.depth < 2 or m.depth % 2:
    raise ValueError(f"model.depth={m.depth} must be an even number >= 2: Latte runs "
                     "blocks in spatial+temporal pairs")
  if m.long_skip and m.depth % 4:
    raise ValueError(f"model.depth={m.depth} gives {m.depth // 2} block pairs, but long "
                     "skips pair shallow and deep pairs: use a depth divisible by 4 or "
                     "model.long_skip=False")
  if m.num_frames < 1:
    raise ValueError(f"data.num_frames={m.num_frames} must be >= 1 (frames per clip)")
  if m.num_classes < 0:
    raise ValueError(f"data.num_classes={m.num_classes} must be >= 0 (0 = unconditional)")
  validate_dit_shape(m)
