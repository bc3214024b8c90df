"""Model sizes by name (`DiT-XL/2`, `SkipDiT-S/4`, `SkipLatte-XL/2`, ...), initialisation and
parameter counts. DiT takes images (N, H, W, C); Latte takes videos (N, F, H, W, C)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from typing import Union

from skipdit_jax.models.dit import DiT, validate_shape
from skipdit_jax.models.latte import Latte, validate_latte

Model = Union[DiT, Latte]

# (depth, hidden_size, num_heads) as in DiT; Tiny and Small-CPU sizes are ours for CPU work.
SIZES: dict[str, tuple[int, int, int]] = {
    "S": (12, 384, 6), "B": (12, 768, 12), "L": (24, 1024, 16), "XL": (28, 1152, 16),
    "Tiny": (6, 64, 4), "Mini": (8, 128, 4),
}
PATCHES = (1, 2, 4, 8)
FAMILIES = {"DiT": False, "SkipDiT": True, "Latte": False, "SkipLatte": True}
VIDEO_FAMILIES = ("Latte", "SkipLatte")


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


def create(name: str, *, input_size: int = 32, in_channels: int = 4, num_classes: int = 1000,
           learn_sigma: bool = True, num_frames: int | None = None, **overrides) -> Model:
  """The Flax module for a registry name; `overrides` replace any model field.

  Latte names take `num_frames` (frames per clip, default 16; `num_classes=0` builds the
  unconditional model); DiT names refuse it."""
  long_skip, size, patch = parse_name(name)
  depth, width, heads = SIZES[size]
  fields = dict(input_size=input_size, patch_size=patch, in_channels=in_channels,
                hidden_size=width, depth=depth, num_heads=heads, num_classes=num_classes,
                learn_sigma=learn_sigma, long_skip=long_skip)
  fields.update(overrides)
  if is_video(name):
    model = Latte(num_frames=16 if num_frames is None else num_frames, **fields)
    validate_latte(model)
    return model
  if num_frames is not None:
    raise ValueError(f"model.name={name!r} is an image model, but num_frames={num_frames} "
                     "was given (data.num_frames): use a Latte-* / SkipLatte-* name for video")
  model = DiT(**fields)
  validate_shape(model)
  return model


def dummy_inputs(model: Model, batch: int = 1) -> tuple[jax.Array, jax.Array, jax.Array]:
  x = jnp.zeros((batch,) + tuple(model.sample_shape), jnp.float32)
  return x, jnp.zeros((batch,), jnp.int32), jnp.zeros((batch,), jnp.int32)


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
