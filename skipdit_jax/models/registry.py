"""Model sizes by name (`DiT-XL/2`, `SkipDiT-S/4`, `SkipLatte-XL/2`, ...), initialisation and
parameter counts. DiT takes images (N, H, W, C); Latte takes videos (N, F, H, W, C)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from typing import Any, Union

from skipdit_jax.models import text_cond
from skipdit_jax.models.dit import DiT, validate_shape
from skipdit_jax.models.latte import Latte, validate_latte
from skipdit_jax.models.latte_t2v import DiTT2V, LatteT2V, validate_t2v

Model = Union[DiT, Latte]

# (depth, hidden_size, num_heads) as in DiT; Tiny and Small-CPU sizes are ours for CPU work.
SIZES: dict[str, tuple[int, int, int]] = {
    "S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16),
    "Tiny": (6, 64, 4), "Mini": (8, 128, 4),
}
PATCHES = (1, 2, 4, 8)
FAMILIES = {"DiT": False, "SkipDiT": True, "Latte": False, "SkipLatte": True,
            "DiTT2I": False, "SkipDiTT2I": True, "LatteT2V": False, "SkipLatteT2V": True}
VIDEO_FAMILIES = ("Latte", "SkipLatte", "LatteT2V", "SkipLatteT2V")
# Families whose name fixes the condition: the caption-token (official T2V) models.
TEXT_FAMILIES = ("DiTT2I", "SkipDiTT2I", "LatteT2V", "SkipLatteT2V")


def is_video(name: str) -> bool:
  """Whether the registry name builds a video model (Latte), which takes num_frames."""
  return name.split("-", 1)[0] in VIDEO_FAMILIES


def parse_name(name: str) -> tuple[bool, str, int]:
  """`SkipDiT-XL/2` -> (long_skip=True, size="XL", patch=2), with a clear error otherwise."""
  try:
    family, rest = name.split("-", 1)
    size, patch = rest.split("/")
    patch_i = int(patch)
  except ValueError:
    patch_i, family, size = -1, "", ""
  if family not in FAMILIES or size not in SIZES or patch_i not in PATCHES:
    known = ", ".join(f"{f}-{s}/{{{','.join(map(str, PATCHES))}}}" for f in FAMILIES
                      for s in SIZES)
    raise ValueError(f"unknown model name {name!r} (config field model.name); known: {known}")
  return FAMILIES[family], size, patch_i


def size_of(name: str) -> tuple[int, int, int]:
  """(depth in blocks, width, heads) of a registry name. The T2V video names count a
  size's layers as spatial+temporal pairs, as the official Latte-T2V (XL: 28 layers = 56
  blocks, VIDEO.md §2.1); class-to-video Latte counts blocks (XL: 28 = 14 pairs)."""
  _, size, _ = parse_name(name)
  depth, width, heads = SIZES[size]
  family = name.split("-", 1)[0]
  return (2 * depth if family in ("LatteT2V", "SkipLatteT2V") else depth), width, heads


def create(name: str, *, input_size: int = 32, in_channels: int = 4, num_classes: int = 1000,
           learn_sigma: bool = True, num_frames: int | None = None, **overrides) -> Model:
  """The Flax module for a registry name; `overrides` replace any model field.

  Latte names take `num_frames` (frames per clip, default 16; `num_classes=0` builds the
  unconditional model); DiT names refuse it. `cond` ("class", "text_pooled",
  "text_tokens"; models/text_cond.py) picks the condition; `*T2I-*` / `*T2V-*` names
  mean cond="text_tokens" (the official Latte-T2V design; `caption_channels` sets the
  caption width, default 384 = MiniLM)."""
  long_skip, size, patch = parse_name(name)
  family = name.split("-", 1)[0]
  cond = overrides.get("cond", "text_tokens" if family in TEXT_FAMILIES else "class")
  if family in TEXT_FAMILIES and cond != "text_tokens":
    raise ValueError(f"model.name={name!r} is a caption-token model but model.cond="
                     f"{cond!r}: use {family.replace('T2V', '').replace('T2I', '')}-"
                     f"{size}/{patch} with cond={cond!r}")
  overrides["cond"] = cond
  depth, width, heads = size_of(name)
  fields = dict(input_size=input_size, patch_size=patch, in_channels=in_channels,
                hidden_size=width, depth=depth, num_heads=heads, num_classes=num_classes,
                learn_sigma=learn_sigma, long_skip=long_skip)
  fields.update(overrides)
  if is_video(name):
    frames = 16 if num_frames is None else num_frames
    if cond == "text_tokens":
      model = LatteT2V(num_frames=frames, **fields)
      validate_t2v(model)
      return model
    model = Latte(num_frames=frames, **fields)
    validate_latte(model)
    return model
  if num_frames is not None:
    raise ValueError(f"model.name={name!r} is an image model, but num_frames={num_frames} "
                     "was given (data.num_frames): use a Latte-* / SkipLatte-* name for video")
  if cond == "text_tokens":
    model = DiTT2V(**fields)
    validate_t2v(model)
    return model
  model = DiT(**fields)
  validate_shape(model)
  return model


def dummy_inputs(model: Model, batch: int = 1, num_tokens: int = 1) -> tuple[jax.Array, jax.Array, Any]:
  """(x, t, y) zeros shaped for `model`; y is a caption dict for text models."""
  x = jnp.zeros((batch,) + tuple(model.sample_shape), jnp.float32)
  return x, jnp.zeros((batch,), jnp.int32), text_cond.dummy_condition(model, batch, num_tokens)


def init_variables(model: Model, rng: jax.Array, batch: int = 1) -> dict:
  """Boxed variables (parameters with their logical axis names)."""
  return model.init(rng, *dummy_inputs(model, batch))


def init_params(model: Model, rng: jax.Array, batch: int = 1) -> dict:
  """Plain float32 parameter pytree (logical-axis boxes removed)."""
  return nn.unbox(init_variables(model, rng, batch))["params"]


def param_count(model: Model) -> int:
  """Trainable parameters, counted from shapes alone (nothing is allocated)."""
  shapes = jax.eval_shape(lambda r: init_params(model, r), jax.random.key(0))
  return int(sum(np.prod(s.shape) for s in jax.tree_util.tree_leaves(shapes)))


def logical_axes(model: Model) -> dict:
  """The logical axis names of every parameter, as a pytree of PartitionSpecs."""
  boxed = jax.eval_shape(lambda r: init_variables(model, r), jax.random.key(0))
  return nn.get_partition_spec(boxed)["params"]
