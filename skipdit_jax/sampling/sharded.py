"""Sampling on a device mesh: the sampler's steps jitted with explicit shardings.

`ShardedSampler` runs a `Sampler`'s plan walk with params on their rule shardings, x / y
and every cache leaf split along its batch axis over (data, fsdp), and x and the cache
donated; `generate` is `sampler.generate` on a mesh (padding the batch, gathering the
samples to every host). Compiled once per (plan, mesh, params shardings, shapes).
"""
from __future__ import annotations

import collections
import copy
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from skipdit_jax.parallel.batch import batch_sharding, replicated
from skipdit_jax.parallel.jitting import sharding_key
from skipdit_jax.parallel.mesh import BATCH_AXES, batch_ways
from skipdit_jax.sampling.sampler import get_sampler, respaced_plan
from skipdit_jax.sampling.step_fns import SolverConfig, cached_step_fn, full_step_fn


def _abstract(tree: Any) -> Any:
  return jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), a.dtype), tree)


def cache_batch_axes(sampler: Any, params: Any, x: Any, y: Any) -> Any:
  """Per leaf of `sampler`'s cache for the batch (x, y): the axis that holds the
  (CFG-doubled) batch, or None for a leaf without one.

  Found by construction, not from sizes: the cache's shapes are traced for batches of
  N and N + 1 rows, and the batch axis is the one whose extent follows the batch. So
  FORA's (L, B, T, D) stacks and the forecast's (order+1, B, T, D) get their B axis even
  when B equals L or order+1. params, x, y: arrays or ShapeDtypeStructs.
  """
  def cache_at(n: int) -> Any:
    xs = jax.ShapeDtypeStruct((n,) + tuple(x.shape[1:]), x.dtype)
    ys = jax.ShapeDtypeStruct((n,) + tuple(y.shape[1:]), y.dtype)
    return jax.eval_shape(lambda p: sampler.empty_cache(p, xs, ys), _abstract(params))

  n = int(x.shape[0])

  def axis(a: jax.ShapeDtypeStruct, b: jax.ShapeDtypeStruct) -> int | None:
    moved = [d for d, (u, v) in enumerate(zip(a.shape, b.shape)) if u != v]
    if len(moved) > 1:
      raise ValueError(f"cache leaf {a.shape} has {len(moved)} batch-sized axes "
                       f"{moved}; a cache policy keeps the batch on one axis")
    return moved[0] if moved else None
  return jax.tree.map(axis, cache_at(n), cache_at(n + 1))


def cache_shardings(sampler: Any, params: Any, x: Any, y: Any, mesh: Mesh) -> Any:
  """NamedShardings for `sampler`'s cache: each leaf split over (data, fsdp) along its
  batch axis (`cache_batch_axes`), whatever axes lead it; leaves without one
  replicated."""
  ways = batch_ways(mesh)
  shapes = jax.eval_shape(lambda p: sampler.empty_cache(p, x, y), _abstract(params))

  def pick(leaf: jax.ShapeDtypeStruct, axis: int | None) -> NamedSharding:
    if axis is None:
      return replicated(mesh)
    if leaf.shape[axis] % ways:
      raise ValueError(f"cache leaf {leaf.shape}: batch axis {axis} of size "
                       f"{leaf.shape[axis]} does not split into mesh.data x mesh.fsdp = "
                       f"{ways}; use a multiple for config.sample.batch_size")
    return NamedSharding(mesh, P(*([None] * axis), BATCH_AXES))
  return jax.tree.map(pick, shapes, cache_batch_axes(sampler, params, x, y))


def sampler_step_jit_kwargs(mesh: Mesh, params_sh: Any, cache_sh: Any
                            ) -> tuple[dict[str, Any], dict[str, Any]]:
  """`jax.jit` keywords of the sampler's (full, cached) steps on `mesh`.

  full(params, x, i, y, rng, cache) -> (x, cache) donates x and the cache (kept as an
  argument even by policies that never read the old cache, so XLA can reuse it);
  cached(params, x, i, y, rng, cache, aux) -> x donates x (the cache is read again by
  later steps). Params keep `params_sh`, x / y / the cache's batch axes are split over
  (data, fsdp), the step index, rng and host tables are replicated.
  """
  rep, batch = replicated(mesh), batch_sharding(mesh)
  full = dict(in_shardings=(params_sh, batch, rep, batch, rep, cache_sh),
              out_shardings=(batch, cache_sh), donate_argnums=(1, 5),
              keep_unused=True)  # donate the old cache even where it is not read
  cached = dict(in_shardings=(params_sh, batch, rep, batch, rep, cache_sh, rep),
                out_shardings=batch, donate_argnums=(1,))
  return full, cached


class ShardedSampler:
  """A `sampling.Sampler` whose full and cached steps run with explicit shardings.

  params keep their rule shardings, x / y and every cache leaf (along its batch axis)
  are split over (data, fsdp), the step index, rng and host tables are replicated; the
  steps donate x and the cache as the base sampler's do. Compiled once per (params
  shapes, x / y shapes): `sample(params, x, y, rng)` has `Sampler.sample`'s contract.
  """

  def __init__(self, sampler: Any, mesh: Mesh, params_sh: Any):
    self.base, self.mesh, self.params_sh = sampler, mesh, params_sh
    self._compiled: dict[tuple, Any] = {}

  def _build(self, params: Any, x: Any, y: Any) -> Any:
    b = self.base
    n = x.shape[0]
    if n % batch_ways(self.mesh):
      raise ValueError(f"sample batch {n} is not divisible by mesh.data x mesh.fsdp = "
                       f"{batch_ways(self.mesh)}; use a multiple (config.sample.batch_size)")
    xs, ys, ps = _abstract(x), _abstract(y), _abstract(params)
    cache_sh = cache_shardings(b, ps, xs, ys, self.mesh)
    full_kw, cached_kw = sampler_step_jit_kwargs(self.mesh, self.params_sh, cache_sh)
    rep = replicated(self.mesh)
    smp = copy.copy(b)  # same plan / policy / tables; only the loop's steps change
    smp.loop_full_step = jax.jit(full_step_fn(b.model, b.diffusion, b.solver, b.policy),
                                 **full_kw)
    smp.loop_cached_steps = {
        v: jax.jit(cached_step_fn(b.model, b.diffusion, b.solver, b.policy, v), **cached_kw)
        for v in b.plan.variants}
    # The fresh cache is born sharded (nothing moves before the first step).
    make_cache = jax.jit(lambda: b.empty_cache(ps, xs, ys), out_shardings=cache_sh)
    smp.empty_cache = lambda params, x, y: make_cache()
    smp.aux = jax.device_put(b.aux, rep)
    smp.indices = [jax.device_put(i, rep) for i in b.indices]
    return smp

  def for_batch(self, params: Any, x: Any, y: Any) -> Any:
    """The base sampler with this mesh's steps, sharded cache and replicated tables for
    (params, x, y)'s shapes; built once per shapes. Its `sample` wants x and y already
    split over the batch axes (`sample` below places them)."""
    key = (tuple(x.shape), str(x.dtype), tuple(y.shape), str(y.dtype),
           tuple((a.shape, str(a.dtype)) for a in jax.tree.leaves(params)))
    if key not in self._compiled:
      self._compiled[key] = self._build(params, x, y)
    return self._compiled[key]

  def sample(self, params: Any, x: Any, y: Any, rng: jax.Array) -> jax.Array:
    smp = self.for_batch(params, x, y)
    batch, rep = batch_sharding(self.mesh), replicated(self.mesh)
    # The plan walk is the base sampler's own (it copies x before donating it).
    return smp.sample(params, jax.device_put(x, batch), jax.device_put(y, batch),
                      jax.device_put(rng, rep))


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


def generate(mesh: Mesh, params_sh: Any, model: Any, params: Any, diffusion: Any,
             labels: Any, rng: jax.Array, *, sampler: str = "ddim", num_steps: Any = 50,
             eta: float = 0.0, cfg_scale: float = 1.0, guided_channels: int | None = None,
             clip_denoised: bool = False, **cache: Any) -> np.ndarray:
  """`sampler.generate` (same noise from `rng`, same plan) with the steps sharded.

  The batch is padded with zero noise / class 0 up to a multiple of mesh.data x
  mesh.fsdp (rows are independent; the padding is dropped). `cache` takes the plan's
  keywords (`policy`, `interval`, `k`, ...); `execution` is ignored (a host loop). Returns
  (N, H, W, C) numpy on every process.
  """
  solver = SolverConfig(sampler=sampler, eta=float(eta), cfg_scale=float(cfg_scale),
                                 guided_channels=guided_channels,
                                 clip_denoised=clip_denoised)
  spaced, plan = respaced_plan(model, diffusion, num_steps, **cache)
  labels = np.asarray(labels, np.int32)
  n = labels.shape[0]
  noise_key, step_key = jax.random.split(rng)  # the split `sampler.generate` makes
  shape = (n,) + tuple(model.sample_shape)
  x = np.asarray(jax.random.normal(noise_key, shape, jnp.float32))
  pad = -n % batch_ways(mesh)
  if pad:
    x = np.concatenate([x, np.zeros((pad,) + shape[1:], np.float32)])
    labels = np.concatenate([labels, np.zeros(pad, np.int32)])
  base = get_sampler(model, spaced, plan, solver)
  out = sharded_sampler(base, mesh, params_sh).sample(params, x, labels, step_key)
  return _to_host(out)[:n]
