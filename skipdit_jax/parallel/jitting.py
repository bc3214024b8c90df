"""Sharded init and the train / sampler step functions jitted with explicit shardings.

Params, optimizer state and EMA are born sharded (`jax.jit(init, out_shardings=...)`), so
no host ever holds a whole XL/2; the steps then keep every array where the rules put it
and the train state is donated, so each step updates it in place.
"""
from __future__ import annotations

import copy
from typing import Any, Callable

import jax
from jax.sharding import Mesh

from skipdit_jax.parallel.batch import batch_sharding, replicated
from skipdit_jax.parallel.mesh import batch_ways
from skipdit_jax.parallel.rules import Rules, param_shardings, state_shardings


def sharded_init(init_fn: Callable[[], Any], model: Any, mesh: Mesh, rules: Rules
                 ) -> tuple[Any, Any]:
  """Runs `init_fn() -> state` (any pytree holding the model's params, e.g. the train
  state) under jit with every output already sharded. Returns (state, shardings).

  The shapes come from `jax.eval_shape`, so nothing is allocated before the sharded run.
  """
  shardings = state_shardings(jax.eval_shape(init_fn), param_shardings(model, mesh, rules),
                              mesh)
  return jax.jit(init_fn, out_shardings=shardings)(), shardings


def step_jit_kwargs(mesh: Mesh, state_sh: Any, *, extra_state: int = 0) -> dict[str, Any]:
  """`jax.jit` keywords for `step(state, *extra, images, labels) -> (state, *extra, metrics)`.

  The state keeps `state_sh`; `extra_state` further replicated state args (e.g. the
  non-finite guard's counters) are threaded the same way; images and labels are split
  over the batch axes; metrics come back replicated. All state arguments are donated.
  """
  rep, batch = replicated(mesh), batch_sharding(mesh)
  return dict(in_shardings=(state_sh,) + (rep,) * extra_state + (batch, batch),
              out_shardings=(state_sh,) + (rep,) * extra_state + (rep,),
              donate_argnums=tuple(range(1 + extra_state)))


def jit_train_step(step: Callable, mesh: Mesh, state_sh: Any, *, extra_state: int = 0
                   ) -> Callable:
  """`step` jitted with `step_jit_kwargs` (the trainer's `train_step`, bound by partial)."""
  return jax.jit(step, **step_jit_kwargs(mesh, state_sh, extra_state=extra_state))


def cache_shardings(cache: Any, mesh: Mesh, n: int) -> Any:
  """Cache leaves whose leading dim is the (CFG-doubled) batch split like the batch."""
  ways = batch_ways(mesh)

  def pick(leaf):
    lead = leaf.shape[0] if leaf.shape else None
    if lead in (n, 2 * n) and lead % ways == 0:
      return batch_sharding(mesh)
    return replicated(mesh)
  return jax.tree.map(pick, cache)


class ShardedSampler:
  """A `sampling.Sampler` whose full and cached steps run with explicit shardings.

  params keep their rule shardings, x / y / batch-shaped cache entries are split over
  (data, fsdp), the step index, rng and host tables are replicated; x is donated.
  `sample(params, x, y, rng)` has the same contract as `Sampler.sample`.
  """

  def __init__(self, sampler: Any, mesh: Mesh, params_sh: Any):
    self.base, self.mesh, self.params_sh = sampler, mesh, params_sh
    self._compiled: dict[tuple, Any] = {}

  def _build(self, params: Any, x: jax.Array, y: jax.Array) -> Any:
    from skipdit_jax.sampling.steps import cached_step_fn, full_step_fn
    b = self.base
    n = x.shape[0]
    if n % batch_ways(self.mesh):
      raise ValueError(f"sample batch {n} is not divisible by mesh.data x mesh.fsdp = "
                       f"{batch_ways(self.mesh)}; use a multiple (config.sample.batch_size)")
    cache_sh = cache_shardings(b.empty_cache(params, x, y), self.mesh, n)
    rep, batch = replicated(self.mesh), batch_sharding(self.mesh)
    smp = copy.copy(b)  # same plan / policy / tables; only the two step functions change
    smp.full_step = jax.jit(
        full_step_fn(b.model, b.diffusion, b.solver, b.policy),
        in_shardings=(self.params_sh, batch, rep, batch, rep, cache_sh),
        out_shardings=(batch, cache_sh), donate_argnums=(1,))
    smp.cached_steps = {
        v: jax.jit(cached_step_fn(b.model, b.diffusion, b.solver, b.policy, v),
                   in_shardings=(self.params_sh, batch, rep, batch, rep, cache_sh, rep),
                   out_shardings=batch, donate_argnums=(1,))
        for v in b.plan.variants}
    smp.aux = jax.device_put(b.aux, rep)
    smp.indices = [jax.device_put(i, rep) for i in b.indices]
    return smp, cache_sh

  def sample(self, params: Any, x: jax.Array, y: jax.Array, rng: jax.Array) -> jax.Array:
    key = (x.shape, str(x.dtype), y.shape)
    if key not in self._compiled:
      self._compiled[key] = self._build(params, x, y)
    smp, _ = self._compiled[key]
    batch, rep = batch_sharding(self.mesh), replicated(self.mesh)
    # The plan walk is the base sampler's own; the fresh cache is uncommitted, so the
    # first step's in_shardings place it.
    return smp.sample(params, jax.device_put(x, batch), jax.device_put(y, batch),
                      jax.device_put(rng, rep))


def shard_params(params: Any, shardings: Any) -> Any:
  """Place an existing params tree (e.g. restored or imported) on the mesh."""
  return jax.device_put(params, shardings)

