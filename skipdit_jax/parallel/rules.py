"""Logical axis names -> mesh axes -> `NamedSharding`s for params, optimizer state and EMA.

Every DiT parameter names its dimensions with logical axes (`embed`, `mlp`, `heads`,
`modulation`, `skip_in`, ...; `models.logical_axes`). A rule set maps each logical name
to mesh axes; names without a rule stay replicated. Presets (`config.mesh.preset`):

  data         nothing sharded: pure data parallelism (params replicated)
  fsdp         `embed` over fsdp: every weight matrix split by rows or columns (ZeRO-3)
  tensor       Megatron-style: attention heads, MLP hidden, skip-fusion input and adaLN
               outputs over tensor
  fsdp_tensor  both, except adaLN outputs and skip-fusion inputs (see _TENSOR_ONLY)

Activations carry logical names too (`models.layers`: activation_batch, _length, _embed,
_heads, _mlp): every preset splits the batch over (data, fsdp) like the input batch and,
with tensor, the attention heads and the MLP hidden over tensor (Megatron: block inputs and
outputs replicated over tensor). `constrained(step, mesh, rules)` traces a step with these
constraints in force; outside it they are the identity.

`config.mesh.rules` ((logical, mesh axes) pairs) come first and so take precedence.
"""
from __future__ import annotations

import math
import re
import contextlib
import functools
from typing import Any, Callable, Iterator, Sequence

import flax.linen as nn
import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from skipdit_jax.parallel.mesh import AXES

Rules = tuple[tuple[str, Any], ...]

_FSDP: Rules = (("embed", "fsdp"),)
_TENSOR: Rules = (("heads", "tensor"), ("mlp", "tensor"))
# adaLN outputs and the skip-fusion input go over tensor only without fsdp: with both
# axes on one weight ((D, 6D) adaLN or (2D, D) fusion, P(fsdp, tensor) / P(tensor, fsdp))
# XLA's SPMD partitioner gave wrong gradients on a (2, 2, 2) mesh (jax 0.10.2, CPU, GSPMD
# and Shardy alike; a 15-line repro is in docs/SCALING.md).
_TENSOR_ONLY: Rules = (("modulation", "tensor"), ("skip_in", "tensor"))
_ACT: Rules = (("activation_batch", ("data", "fsdp")), ("activation_length", None),
               ("activation_embed", None))
_ACT_TENSOR: Rules = (("activation_heads", "tensor"), ("activation_mlp", "tensor"))
PRESETS: dict[str, Rules] = {
    "data": _ACT,
    "fsdp": _FSDP + _ACT,
    "tensor": _TENSOR + _TENSOR_ONLY + _ACT + _ACT_TENSOR,
    "fsdp_tensor": _FSDP + _TENSOR + _ACT + _ACT_TENSOR,
}


_PRESET_NAMES = {n for rules in PRESETS.values() for n, _ in rules} | {"skip_in", "layers"}


def _mesh_axes(value: Any) -> Any:
  """A rule's right side: None, one axis name or a tuple of them."""
  if value is None or isinstance(value, str):
    return value
  return tuple(value)


def axis_rules(mesh_cfg: Any) -> Rules:
  """The rule list of `config.mesh`: its explicit `rules`, then its `preset`."""
  get = (lambda k, d: mesh_cfg.get(k, d)) if hasattr(mesh_cfg, "get") else (
      lambda k, d: getattr(mesh_cfg, k, d))
  preset = get("preset", "fsdp_tensor")
  if preset not in PRESETS:
    raise ValueError(f"config.mesh.preset={preset!r} is not one of {sorted(PRESETS)}")
  extra = []
  for i, pair in enumerate(get("rules", ()) or ()):
    if isinstance(pair, str) or len(pair) != 2 or not isinstance(pair[0], str):
      raise ValueError(f"config.mesh.rules[{i}]={pair!r} must be a (logical name, mesh "
                       f"axes) pair, e.g. ('mlp', 'tensor') or ('embed', None)")
    axes = _mesh_axes(pair[1])
    for a in (axes,) if isinstance(axes, str) else (axes or ()):
      if a not in AXES:
        raise ValueError(f"config.mesh.rules[{i}]={pair!r} names mesh axis {a!r}; the "
                         f"mesh axes are {AXES}")
    extra.append((pair[0], axes))
  return tuple(extra) + PRESETS[preset]


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules: Rules) -> Iterator[None]:
  """While a step is traced inside: `nn.with_logical_constraint` maps activations through
  `rules` onto `mesh` (an abstract-mesh context, which may be entered under jit)."""
  with nn.logical_axis_rules(rules), jax.sharding.use_abstract_mesh(mesh.abstract_mesh):
    yield


def constrained(fn: Callable, mesh: Mesh, rules: Rules) -> Callable:
  """`fn` traced under `activation_rules(mesh, rules)` (wrap before `jax.jit`)."""
  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with activation_rules(mesh, rules):
      return fn(*args, **kwargs)
  return wrapped


def _path_str(path: tuple) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def mesh_specs(logical: Any, rules: Rules) -> Any:
  """PartitionSpec tree of logical names -> PartitionSpec tree of mesh axes."""
  return jax.tree.map(lambda s: nn.logical_to_mesh_axes(tuple(s), rules), logical,
                      is_leaf=lambda x: isinstance(x, P))


def check_rules(logical: Any, rules: Rules) -> None:
  """Every rule must name a logical axis some parameter has (a typo would do nothing)."""
  known = {n for s in jax.tree.leaves(logical, is_leaf=lambda x: isinstance(x, P))
           for n in s if n is not None}
  for name, _ in rules:
    if name not in known and name not in _PRESET_NAMES:
      raise ValueError(f"config.mesh.rules maps logical axis {name!r}, which no parameter "
                       f"has; the model's logical axes are {sorted(known)}")


def check_divisible(shapes: Any, specs: Any, mesh: Mesh | dict[str, int]) -> None:
  """Each sharded dimension must split evenly over its mesh axes; names the parameter."""
  sizes = dict(mesh.shape) if isinstance(mesh, Mesh) else dict(mesh)
  flat_specs = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P))
  flat = jax.tree_util.tree_leaves_with_path(shapes)
  for (path, leaf), spec in zip(flat, flat_specs):
    for dim, axes in zip(leaf.shape, spec):
      names = (axes,) if isinstance(axes, str) else (axes or ())
      ways = math.prod(sizes[a] for a in names)
      if dim % ways:
        raise ValueError(
            f"parameter {_path_str(path)} {tuple(leaf.shape)}: dimension {dim} cannot be "
            f"split over mesh axes {names} ({ways} ways). Choose config.mesh sizes that "
            f"divide it, or map its logical axis to None in config.mesh.rules")


def param_specs(model: Any, rules: Rules, mesh: Mesh | dict[str, int] | None = None) -> Any:
  """Mesh PartitionSpecs of every parameter of `model` (shapes only, nothing allocated)."""
  from skipdit_jax import models  # parallel knows models only through this public API
  logical = models.logical_axes(model)
  check_rules(logical, rules)
  specs = mesh_specs(logical, rules)
  if mesh is not None:
    shapes = jax.eval_shape(lambda r: models.init_params(model, r), jax.random.key(0))
    check_divisible(shapes, specs, mesh)
  return specs


def param_shardings(model: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedSharding of every parameter (a tree like the params)."""
  return jax.tree.map(lambda s: NamedSharding(mesh, s), param_specs(model, rules, mesh),
                      is_leaf=lambda x: isinstance(x, P))


def _dict_suffix(path: tuple) -> tuple[str, ...]:
  """The trailing run of dict keys of a key path (a param path inside any container)."""
  keys: list[str] = []
  for k in reversed(path):
    if not isinstance(k, jax.tree_util.DictKey):
      break
    keys.append(str(k.key))
  return tuple(reversed(keys))


def _fits(sh: NamedSharding, shape: tuple[int, ...]) -> bool:
  if len(sh.spec) > len(shape):
    return False
  for dim, axes in zip(shape, sh.spec):
    names = (axes,) if isinstance(axes, str) else (axes or ())
    if dim % math.prod(sh.mesh.shape[a] for a in names):
      return False
  return True


def state_shardings(abstract_state: Any, params_shardings: Any, mesh: Mesh) -> Any:
  """Shardings for any pytree that holds params-like subtrees (train state, opt state, EMA).

  A leaf whose trailing dict-key path is a parameter's path and whose shape matches takes
  that parameter's sharding (so AdamW's mu/nu and the EMA shard like the params); every
  other leaf (step, rng, counts) is replicated.
  """
  by_path = {}
  for path, sh in jax.tree_util.tree_leaves_with_path(
      params_shardings, is_leaf=lambda x: isinstance(x, NamedSharding)):
    by_path[_dict_suffix(path)] = sh
  replicated = NamedSharding(mesh, P())

  def pick(path, leaf):
    keys = _dict_suffix(path)
    for start in range(len(keys)):
      sh = by_path.get(keys[start:])
      if sh is not None and _fits(sh, leaf.shape):
        return sh
    return replicated
  return jax.tree_util.tree_map_with_path(pick, abstract_state)


def describe(specs: Any) -> dict[str, str]:
  """{param path: "P(...)"} for logs and golden files."""
  out = {}
  for path, spec in jax.tree_util.tree_leaves_with_path(
      specs, is_leaf=lambda x: isinstance(x, P)):
    out[_path_str(path)] = re.sub(r"\s+", "", repr(tuple(spec)))
  return out
