"""The mesh side of a run, as the train loop and main's sampling use it.

`MeshRun` gathers what the loop needs from `config.mesh` in one place: the state born
sharded, restored / imported states placed on the same shardings, the step's jit
keywords, this process's rows of every global batch and the assembly of those rows into
one global array. `generate` is `sampling.generate` with `ShardedSampler` steps and the
samples gathered to every host. On one device all of this reduces to the plain path.
"""
from __future__ import annotations

import collections
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from skipdit_jax.parallel.batch import make_global_batch, process_rows
from skipdit_jax.parallel.distributed import is_main_process
from skipdit_jax.parallel.jitting import ShardedSampler, sharding_key, step_jit_kwargs
from skipdit_jax.parallel.mesh import batch_ways, make_mesh
from skipdit_jax.parallel.rules import axis_rules, param_shardings, state_shardings


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


_SHARDED: "collections.OrderedDict[tuple, ShardedSampler]" = collections.OrderedDict()


def sharded_sampler(base: Any, mesh: Mesh, params_sh: Any) -> ShardedSampler:
  """The `ShardedSampler` for (base's model / diffusion / plan / solver, mesh, params
  shardings), from a small cache keyed on their values: periodic samples and main's
  timed second pass find everything compiled, whichever objects the caller built."""
  key = (base.model, base.diffusion, base.plan, base.solver, mesh, sharding_key(params_sh))
  if key not in _SHARDED:
    _SHARDED[key] = ShardedSampler(base, mesh, params_sh)
    while len(_SHARDED) > 8:
      _SHARDED.popitem(last=False)
  _SHARDED.move_to_end(key)
  return _SHARDED[key]


def _to_host(x: jax.Array) -> np.ndarray:
  if jax.process_count() > 1:  # rows live on other hosts: gather them everywhere
    from jax.experimental import multihost_utils
    return np.asarray(multihost_utils.process_allgather(x, tiled=True))
  return np.asarray(jax.device_get(x))


def params_mesh(params: Any) -> Mesh | None:
  """The mesh `params` are sharded over when it spans several devices, else None."""
  leaf = jax.tree.leaves(params)[0]
  sharding = getattr(leaf, "sharding", None)
  mesh = getattr(sharding, "mesh", None)
  return mesh if mesh is not None and mesh.devices.size > 1 else None


def generate(mesh: Mesh, params_sh: Any, model: Any, params: Any, diffusion: Any,
             labels: Any, rng: jax.Array, *, sampler: str = "ddim", num_steps: Any = 50,
             eta: float = 0.0, cfg_scale: float = 1.0, guided_channels: int | None = None,
             clip_denoised: bool = False, **cache: Any) -> np.ndarray:
  """`sampling.generate` (same noise from `rng`, same plan) with the steps sharded.

  The batch is padded with zero noise / class 0 up to a multiple of mesh.data x
  mesh.fsdp (rows are independent; the padding is dropped). `cache` takes the plan's
  keywords (`policy`, `interval`, `k`, ...); `fused` is ignored (host loop). Returns
  (N, H, W, C) numpy on every process.
  """
  from skipdit_jax import sampling
  solver = sampling.SolverConfig(sampler=sampler, eta=float(eta), cfg_scale=float(cfg_scale),
                                 guided_channels=guided_channels,
                                 clip_denoised=clip_denoised)
  spaced, plan = sampling.plan_for(model, diffusion, num_steps, **cache)
  labels = np.asarray(labels, np.int32)
  n = labels.shape[0]
  noise_key, step_key = jax.random.split(rng)  # the split `sampling.generate` makes
  shape = (n, model.input_size, model.input_size, model.in_channels)
  x = np.asarray(jax.random.normal(noise_key, shape, jnp.float32))
  pad = -n % batch_ways(mesh)
  if pad:
    x = np.concatenate([x, np.zeros((pad,) + shape[1:], np.float32)])
    labels = np.concatenate([labels, np.zeros(pad, np.int32)])
  base = sampling.get_sampler(model, spaced, plan, solver)
  out = sharded_sampler(base, mesh, params_sh).sample(params, x, labels, step_key)
  return _to_host(out)[:n]
