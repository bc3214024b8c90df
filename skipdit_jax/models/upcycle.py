"""Turn a vanilla DiT into a Skip-DiT, and the two-stage training recipe's optimizer mask.

REFERENCE §6: add fresh long-skip fusions to pretrained DiT weights, train only those
(stage 1, `trainable="skip_only"`), then train everything (stage 2, `trainable="all"`).
"""
from __future__ import annotations

import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from skipdit_jax.models.blocks import SkipFusion
from skipdit_jax.models.convert import load_official
from skipdit_jax.models.dit import DiT
from skipdit_jax.models.registry import init_params

TRAINABLE = ("all", "skip_only")
_SKIP_PREFIX = "skip_fusions_"


def _shapes(tree: Any) -> Any:
  return jax.tree_util.tree_map(lambda a: tuple(a.shape), tree)


def init_fusions(skip_model: DiT, rng: jax.Array) -> dict:
  """Fresh `skip_fusions_{j}` params, initialised exactly as the model's own init does."""
  d, half = skip_model.hidden_size, skip_model.depth // 2
  fusion = SkipFusion(d, jnp.dtype(skip_model.dtype))
  x = jnp.zeros((1, 1, d), jnp.float32)
  # One compiled init for all fusions (vmapped over keys), then one subtree each.
  stacked = jax.jit(jax.vmap(lambda k: nn.unbox(fusion.init(k, x, x))["params"]))(
      jax.random.split(rng, half))
  return {f"{_SKIP_PREFIX}{j}": jax.tree_util.tree_map(lambda a, j=j: a[j], stacked)
          for j in range(half)}


def upcycle(dit_params: dict, skip_model: DiT, rng: jax.Array) -> dict:
  """Skip-DiT params: every DiT weight kept, new fusion layers from the model's init.

  dit_params: an unrolled vanilla DiT tree of the same size as `skip_model`.
  """
  if not skip_model.long_skip:
    raise ValueError("upcycle needs a Skip-DiT target: model.long_skip=True")
  if "block_stack" in dit_params:
    from skipdit_jax.models import scan  # pylint: disable=import-outside-toplevel
    dit_params = scan.unstack_params(dit_params)
  if any(k.startswith(_SKIP_PREFIX) for k in dit_params):
    raise ValueError("dit_params already has skip fusions: it is a Skip-DiT, not a DiT")
  plain = skip_model.clone(long_skip=False, scan_blocks=False) if hasattr(
      skip_model, "scan_blocks") else skip_model.clone(long_skip=False)
  want = _shapes(jax.eval_shape(lambda r: init_params(plain, r), jax.random.key(0)))
  got = _shapes(dit_params)
  if got != want:
    raise ValueError("dit_params do not match the DiT twin of the Skip-DiT target "
                     f"(depth={skip_model.depth}, hidden_size={skip_model.hidden_size}, "
                     f"patch_size={skip_model.patch_size}): check model.* against the "
                     "checkpoint")
  params = dict(dit_params)
  params.update(init_fusions(skip_model, rng))
  if getattr(skip_model, "scan_blocks", False):
    from skipdit_jax.models import scan  # pylint: disable=import-outside-toplevel
    params = scan.stack_params(params, skip_model.depth, True)
  return params


def _is_skip_path(path) -> bool:
  keys = [getattr(k, "key", None) for k in path]
  return bool(keys) and (str(keys[0]).startswith(_SKIP_PREFIX)
                         or keys[:2] == ["block_stack", "fusions"])


def trainable_mask(params: Any, trainable: str) -> Any:
  """Bool pytree like `params`: True where the parameter trains."""
  if trainable not in TRAINABLE:
    raise ValueError(f"config.train.trainable={trainable!r} is not one of {TRAINABLE}")
  if trainable == "all":
    return jax.tree_util.tree_map(lambda _: True, params)
  mask = jax.tree_util.tree_map_with_path(lambda p, _: _is_skip_path(p), params)
  if not any(jax.tree_util.tree_leaves(mask)):
    raise ValueError("config.train.trainable='skip_only' but the model has no skip "
                     "fusions: set model.long_skip=True")
  return mask


def with_trainable(tx: optax.GradientTransformation,
                   trainable: str) -> optax.GradientTransformation:
  """`tx` on the trainable parameters; frozen ones get exactly zero updates (and no
  optimizer state), so weight decay cannot move them either."""
  if trainable not in TRAINABLE:
    raise ValueError(f"config.train.trainable={trainable!r} is not one of {TRAINABLE}")
  if trainable == "all":
    return tx
  labels = lambda p: jax.tree_util.tree_map(  # noqa: E731
      lambda m: "train" if m else "freeze", trainable_mask(p, trainable))
  return optax.multi_transform({"train": tx, "freeze": optax.set_to_zero()}, labels)


def init_from_official(path_or_state_dict: str | os.PathLike | dict, model: DiT,
                       rng: jax.Array) -> dict:
  """Initial params for `model` from an official checkpoint (`config.train.init_from`).

  A vanilla DiT checkpoint loaded into a Skip-DiT model is upcycled (fresh fusions).
  Every other shape field must agree; the error names the one that does not.
  """
  src, params = load_official(path_or_state_dict, input_size=model.input_size,
                              num_classes=model.num_classes, num_heads=model.num_heads)
  for field in ("input_size", "patch_size", "in_channels", "hidden_size", "depth",
                "mlp_ratio", "num_classes", "learn_sigma"):
    if getattr(src, field) != getattr(model, field):
      raise ValueError(f"config.train.init_from checkpoint has {field}="
                       f"{getattr(src, field)!r} but model.{field}="
                       f"{getattr(model, field)!r}")
  if src.long_skip and not model.long_skip:
    raise ValueError("config.train.init_from is a Skip-DiT checkpoint but model.long_skip="
                     "False: a DiT cannot take its skip fusions")
  if model.long_skip and not src.long_skip:
    return upcycle(params, model, rng)
  if getattr(model, "scan_blocks", False):
    from skipdit_jax.models import scan  # pylint: disable=import-outside-toplevel
    params = scan.stack_params(params, model.depth, model.long_skip)
  return params
