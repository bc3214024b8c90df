"""The device mesh: axes (data, fsdp, tensor) sized from `config.mesh`."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import jax
from jax.sharding import AxisType, Mesh

AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")  # the global batch is split over both


def _field(mesh_cfg: Any, axis: str) -> Any:
  if isinstance(mesh_cfg, Mapping) or hasattr(mesh_cfg, "get"):
    return mesh_cfg.get(axis, 1)
  return getattr(mesh_cfg, axis, 1)


def mesh_shape(mesh_cfg: Any, num_devices: int) -> tuple[int, int, int]:
  """(data, fsdp, tensor) with the one -1 resolved to the remaining devices.

  `mesh_cfg` is `config.mesh` (or a dict / (d, f, t) tuple). Raises a ValueError that
  names the fields when the sizes are invalid or their product is not `num_devices`.
  """
  if isinstance(mesh_cfg, Sequence) and not isinstance(mesh_cfg, str):
    if len(mesh_cfg) != 3:
      raise ValueError(f"mesh shape {tuple(mesh_cfg)} needs 3 sizes (data, fsdp, tensor)")
    sizes = dict(zip(AXES, mesh_cfg))
  else:
    sizes = {a: _field(mesh_cfg, a) for a in AXES}
  for a, v in sizes.items():
    if isinstance(v, bool) or not isinstance(v, int) or (v < 1 and v != -1):
      raise ValueError(f"config.mesh.{a}={v!r} must be a positive integer or -1 "
                       "(-1 = the remaining devices)")
  rest = [a for a, v in sizes.items() if v == -1]
  if len(rest) > 1:
    raise ValueError(f"config.mesh.{' and config.mesh.'.join(rest)} are all -1; at most "
                     "one axis may take the remaining devices")
  fixed = math.prod(v for v in sizes.values() if v != -1)
  shown = ", ".join(f"mesh.{a}={v}" for a, v in sizes.items())
  if rest:
    if num_devices % fixed:
      raise ValueError(f"config {shown}: the fixed axes ({fixed} devices) do not divide the "
                       f"{num_devices} devices; choose sizes whose product divides "
                       f"{num_devices}")
    sizes[rest[0]] = num_devices // fixed
  elif fixed != num_devices:
    raise ValueError(f"config {shown} multiply to {fixed} but there are {num_devices} "
                     f"devices: make mesh.data x mesh.fsdp x mesh.tensor = {num_devices}, "
                     "or set one of them to -1")
  return sizes["data"], sizes["fsdp"], sizes["tensor"]


def make_mesh(mesh_cfg: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A `Mesh` over `devices` (default: all devices of all processes), axes AXES.

  `jax.make_mesh` orders devices by the physical topology (ICI rings on TPU), so the
  fast axes end up on neighbouring chips. Axes are `Auto`: XLA propagates shardings
  from the parameters and the batch.
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = mesh_shape(mesh_cfg, len(devices))
  return jax.make_mesh(shape, AXES, axis_types=(AxisType.Auto,) * len(AXES),
                       devices=devices)


def batch_ways(mesh: Mesh) -> int:
  """How many pieces the global batch is split into (data x fsdp)."""
  return math.prod(mesh.shape[a] for a in BATCH_AXES)
