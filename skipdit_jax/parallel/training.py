"""The mesh side of a run, as the train loop and main's sampling use it.

`MeshRun` gathers what the loop needs from `config.mesh` in one place: the state born
sharded, restored / imported states placed on the same shardings, the step's jit
keywords, this process's rows of every global batch and the assembly of those rows into
one global array (sampling on a mesh: `skipdit_jax.sampling.sharded`). On one device
all of this reduces to the plain path.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import numpy as np
from jax.sharding import Mesh

from skipdit_jax.parallel.batch import make_global_batch, process_rows
from skipdit_jax.parallel.distributed import is_main_process
from skipdit_jax.parallel.jitting import step_jit_kwargs
from skipdit_jax.parallel.mesh import make_mesh
from skipdit_jax.parallel.rules import (axis_rules, constrained, param_shardings,
                                        state_shardings)


class MeshRun:
  """Mesh, rules and shardings of one training run (`config.mesh`, `config.train`).

  `abstract_state` is the train state's `jax.eval_shape`; its `params` / `ema_params`
  follow the rules, the optimizer moments their parameters, the rest is replicated.
  """

  def __init__(self, config: Any, model: Any, abstract_state: Any,
               devices: list | None = None):
    mesh_cfg = config.get("mesh") or {"data": -1}  # no mesh section: data parallel
    self.mesh: Mesh = make_mesh(mesh_cfg, devices)
    self.rules = axis_rules(mesh_cfg)
    self.params_sh = param_shardings(model, self.mesh, self.rules)
    self.state_sh = state_shardings(abstract_state, self.params_sh, self.mesh)
    self.batch_size = int(config.train.batch_size)
    # (index, count) for the data pipeline: this process's block of each global batch
    self.rows = process_rows(self.mesh, self.batch_size)
    self.is_main = is_main_process()

  @property
  def num_devices(self) -> int:
    return int(self.mesh.devices.size)

  def abstract(self, abstract_state: Any) -> Any:
    """`abstract_state` with the run's shardings: a restore target for any mesh."""
    return jax.tree.map(lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                        abstract_state, self.state_sh)

  def init(self, init_fn: Callable[[], Any]) -> Any:
    """`init_fn()` run under jit with every output already sharded (no host holds it)."""
    return jax.jit(init_fn, out_shardings=self.state_sh)()

  def place(self, state: Any) -> Any:
    """A state built elsewhere (imported weights) onto the run's shardings."""
    return jax.device_put(state, self.state_sh)

  def constrained(self, fn: Callable) -> Callable:
    """`fn` traced with the run's activation constraints (wrap the step before jit)."""
    return constrained(fn, self.mesh, self.rules)

  def step_jit_kwargs(self) -> dict[str, Any]:
    """in/out shardings and donation for the guarded step (state, guard, x, y)."""
    return step_jit_kwargs(self.mesh, self.state_sh, extra_state=1)

  def global_batch(self, images: np.ndarray, labels: np.ndarray) -> tuple[jax.Array, ...]:
    """This process's rows -> (images, labels) global arrays split over (data, fsdp)."""
    return make_global_batch((images, labels), self.mesh, self.batch_size)

  def sync(self, name: str) -> None:
    """Waits for every process (no-op in a single-process run)."""
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils
      multihost_utils.sync_global_devices(name)


def params_mesh(params: Any) -> Mesh | None:
  """The mesh `params` are sharded over when it spans several devices, else None."""
  leaf = jax.tree.leaves(params)[0]
  sharding = getattr(leaf, "sharding", None)
  mesh = getattr(sharding, "mesh", None)
  return mesh if mesh is not None and mesh.devices.size > 1 else None


