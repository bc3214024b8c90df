"""DiT and Skip-DiT: one Flax module, `long_skip` switches the U-Net-style long skips.

The forward is exposed in stages so that cached samplers compose them without flags:
`embed -> run_blocks(0, a) -> run_blocks(a, b) -> ... -> head`. Deep blocks pop the skip
stack that shallow blocks push, so any split of `[0, depth)` into consecutive ranges gives
the same result as one full pass.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from skipdit_jax.models import attention, scan, skip_pairs, text_cond
from skipdit_jax.models.blocks import DiTBlock, FinalLayer, SkipFusion
from skipdit_jax.models.layers import (TimestepEmbedder, dense, patchify, sincos_2d,
                                       unpatchify)

Skips = tuple[jax.Array, ...]


class TransformerFields(nn.Module):
  """The fields DiT and Latte share (one config surface for both) and their derived sizes."""
  input_size: int = 32
  patch_size: int = 2
  in_channels: int = 4
  hidden_size: int = 1152
  depth: int = 28
  num_heads: int = 16
  mlp_ratio: float = 4.0
  num_classes: int = 1000
  class_dropout_prob: float = 0.1
  learn_sigma: bool = True
  long_skip: bool = False
  dtype: str = "float32"
  scan_blocks: bool = False  # stacked blocks under lax.scan (models/scan.py)
  remat: str = "none"        # none | full | dots | dots_no_batch (models/scan.py)
  attention: str = "xla"     # xla | cudnn | flash (models/attention.py)
  cond: str = "class"        # class | text_pooled | text_tokens (models/text_cond.py)
  caption_channels: int = 384  # caption embedding width (MiniLM 384; T5-XXL 4096)
  pooled_projection: str = "linear"  # text_pooled: linear | mlp (models/text_cond.py)

  @property
  def out_channels(self) -> int:
    return 2 * self.in_channels if self.learn_sigma else self.in_channels

  @property
  def num_tokens(self) -> int:
    return (self.input_size // self.patch_size) ** 2

  def __call__(self, x: jax.Array, t: jax.Array, y: jax.Array, *, train: bool = False,
               force_drop_ids: jax.Array | None = None) -> jax.Array:
    """The staged forward in one call: `embed`, every unit of `run_blocks`, `head` (each
    model defines the three and `num_units`)."""
    h, c = self.embed(x, t, y, train=train, force_drop_ids=force_drop_ids)
    h, _ = self.run_blocks(h, c, (), 0, self.num_units)
    return self.head(h, c)


class DiT(TransformerFields):
  """Class-conditional diffusion transformer on NHWC inputs.

  x: (N, H, W, C), t: (N,) timesteps in [0, 999], y: (N,) labels (a caption dict for
  cond="text_pooled", models/text_cond.py) -> (N, H, W, C_out),
  C_out = 2C with a learned sigma (ε first, then the variance interpolation), else C.
  """

  @property
  def num_units(self) -> int:
    """How many units `run_blocks(start, stop)` counts: one per block here (a video model
    counts spatial+temporal pairs). Cache plans and policies index in these units."""
    return self.depth

  @property
  def sample_shape(self) -> tuple[int, ...]:
    """One input without the batch axis: (H, W, C)."""
    return (self.input_size, self.input_size, self.in_channels)

  def setup(self):
    validate_shape(self)
    dt = jnp.dtype(self.dtype)
    self.x_embedder = dense(self.hidden_size, ("patch", "embed"), dtype=dt)
    self.t_embedder = TimestepEmbedder(self.hidden_size, dt)
    self.y_embedder = text_cond.condition_embedder(self, dt)  # labels or pooled caption
    if self.scan_blocks:
      self.block_stack = scan.BlockStack(self.hidden_size, self.num_heads, self.mlp_ratio,
                                         self.depth, self.long_skip, self.remat, dt,
                                         attention=self.attention)
    else:
      block = scan.maybe_remat(DiTBlock, self.remat)
      self.blocks = [block(self.hidden_size, self.num_heads, self.mlp_ratio, dt,
                           attention=self.attention) for _ in range(self.depth)]
      if self.long_skip:
        self.skip_fusions = [SkipFusion(self.hidden_size, dt) for _ in range(self.depth // 2)]
    self.final_layer = FinalLayer(self.hidden_size,
                                  self.patch_size ** 2 * self.out_channels, dt)

  def patchify(self, x: jax.Array) -> jax.Array:
    """(N, H, W, C) -> (N, T, p*p*C), tokens row-major, features ordered (p, p, C)."""
    return patchify(x, self.patch_size)

  def unpatchify(self, x: jax.Array) -> jax.Array:
    """(N, T, p*p*C_out) -> (N, H, W, C_out)."""
    return unpatchify(x, self.patch_size, self.input_size // self.patch_size,
                      self.out_channels)

  def embed(self, x: jax.Array, t: jax.Array, y: jax.Array, *, train: bool = False,
            force_drop_ids: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
    """Tokens h (N, T, D) with positions added, and the conditioning c (N, D)."""
    dt = jnp.dtype(self.dtype)
    pos = jnp.asarray(sincos_2d(self.hidden_size, self.input_size // self.patch_size),
                      jnp.float32)
    h = self.x_embedder(self.patchify(x.astype(dt))) + pos[None].astype(dt)
    c = self.t_embedder(t) + self.y_embedder(y, train, force_drop_ids)
    return h, c

  def run_blocks(self, h: jax.Array, c: jax.Array, skips: Skips, start: int,
                 stop: int) -> tuple[jax.Array, Skips]:
    """Blocks start..stop-1. Shallow blocks push their output; deep blocks pop and fuse."""
    if self.scan_blocks:
      return self.block_stack(h, c, skips, start, stop)
    for kind, a, b in skip_pairs.segments(self.depth, self.long_skip, start, stop):
      popped, skips = (skip_pairs.pop(skips, a, b) if kind == skip_pairs.DEEP
                       else ([], skips))
      for n, i in enumerate(range(a, b)):
        if kind == skip_pairs.DEEP:
          h = self.skip_fusions[skip_pairs.fusion_index(i, self.depth)](h, popped[n])
        h = self.blocks[i](h, c)
        if kind == skip_pairs.SHALLOW:
          skips = skips + (h,)
    return h, skips

  def head(self, h: jax.Array, c: jax.Array) -> jax.Array:
    """Final layer and unpatchify; the output is float32."""
    return self.unpatchify(self.final_layer(h, c)).astype(jnp.float32)



def validate_shape(m: DiT) -> None:
  """Raise a ValueError naming the config field for shapes the model cannot take."""
  if m.long_skip and m.depth % 2:
    raise ValueError(f"model.depth={m.depth} is odd, but long skips pair shallow and deep "
                     "blocks: use an even depth or model.long_skip=False")
  if m.depth < 1:
    raise ValueError(f"model.depth={m.depth} must be >= 1")
  if m.input_size % m.patch_size:
    raise ValueError(f"model.patch_size={m.patch_size} does not divide the input size "
                     f"{m.input_size}: choose a patch size that divides it")
  if m.hidden_size % m.num_heads:
    raise ValueError(f"model.num_heads={m.num_heads} does not divide model.hidden_size="
                     f"{m.hidden_size}: choose heads that divide the width")
  text_cond.validate(m)
  if m.dtype == "float16":
    raise ValueError("model.dtype='float16' is refused: float16's 5-bit exponent underflows "
                     "small gradients unless the loss is scaled dynamically, which this "
                     "trainer does not do; use model.dtype='bfloat16' (float32's range, the "
                     "same speed on current accelerators) or 'float32'")
  if m.dtype not in ("float32", "bfloat16"):
    raise ValueError(f"model.dtype={m.dtype!r} is not one of float32, bfloat16")
  attention.validate_name(m.attention)
