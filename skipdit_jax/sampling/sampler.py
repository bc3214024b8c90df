"""The sampler: a host loop that walks a `CachePlan` over two compiled step functions.

`generate(...)` is the one-call entry point (plain or cached); `Sampler` holds the
compiled functions for one (model, diffusion, plan, solver) so repeated calls reuse
them. The loop dispatches asynchronously: nothing is read back to the host until
the final images, so steps queue on the device back to back. The loop's steps donate
x and the cache (each step's output reuses its input's buffers); `sample` copies the
caller's x first, so the caller's arrays stay valid.
"""
from __future__ import annotations

import collections
import functools
from typing import Any, Callable, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from skipdit_jax import diffusion as D
from skipdit_jax.models import text_cond
from skipdit_jax.sampling import policies
from skipdit_jax.sampling.cache_plan import FULL, CachePlan
from skipdit_jax.sampling.step_fns import (SolverConfig, cached_step_fn, check_model,
                                           full_step_fn, make_cached_step, make_full_step,
                                           model_inputs)


# A plan-walk hook: (execution step j, action, respaced index i, x, cache) -> None.
StepHook = Callable[[int, str, jax.Array, jax.Array, Any], None]


class Sampler:
  """Compiled full / cached steps for one model, respaced diffusion, plan and solver.

  `sample(params, x_T, y, rng)` -> x_0 as a device array (N, H, W, C).
  `full_step` / `cached_steps` keep their arguments (`walk(donate=False)`, for hooks
  that keep x or the cache); `loop_full_step` / `loop_cached_steps`, the ones `sample`
  runs, donate x (and the full step its cache).
  """

  def __init__(self, model: Any, diffusion: D.Diffusion, plan: CachePlan,
               solver: SolverConfig):
    check_model(model, solver)
    if plan.num_steps != diffusion.num_timesteps:
      raise ValueError(f"the plan has {plan.num_steps} steps but the respaced diffusion "
                       f"{diffusion.num_timesteps}; build both from sample.num_steps.")
    if plan.depth != model.num_units:
      raise ValueError(f"the plan was built for {plan.depth} block units, the model runs "
                       f"{model.num_units} (model.depth={model.depth}).")
    self.model, self.diffusion, self.plan, self.solver = model, diffusion, plan, solver
    self.policy = policies.from_plan(plan)
    self.full_step = make_full_step(model, diffusion, solver, self.policy)
    self.cached_steps = {v: make_cached_step(model, diffusion, solver, self.policy, v)
                         for v in plan.variants}
    self.loop_full_step = _donating_full(model, diffusion, solver, self.policy)
    self.loop_cached_steps = {v: _donating_cached(model, diffusion, solver, self.policy, v)
                              for v in plan.variants}
    s = plan.num_steps
    # Host tables are indexed by execution step; the steps index them by respaced i.
    self.aux = jnp.asarray(self.policy.aux_table(plan)[::-1])
    self.indices = [jnp.asarray(s - 1 - j, jnp.int32) for j in range(s)]
    self._cache_shapes: dict = {}
    self._runs: dict = {}

  def empty_cache(self, params, x: jax.Array, y: jax.Array):
    """Zeros shaped like the policy's cache for this batch (shapes traced once)."""
    key = (x.shape, str(x.dtype), jax.tree_util.tree_structure(y),
           tuple((np.shape(a), str(a.dtype)) for a in jax.tree_util.tree_leaves(y)))
    if key not in self._cache_shapes:
      def entry(p, x, y):
        xin, yin, drop = model_inputs(x, y, self.solver)
        t = jnp.zeros((xin.shape[0],), jnp.int32)
        return self.model.apply({"params": p}, xin, t, yin, drop,
                                method=self.policy.entry)[1]
      shapes = jax.eval_shape(entry, params, x, y)
      # Built by a compiled function so that no host constant is transferred per call.
      self._cache_shapes[key] = jax.jit(lambda: self.policy.empty(shapes))
    return self._cache_shapes[key]()

  def walk(self, params, x: jax.Array, y: jax.Array, rng: jax.Array, *,
           donate: bool = True, before: Optional[StepHook] = None,
           after: Optional[StepHook] = None) -> jax.Array:
    """The one walk of the plan (sampling, the fidelity trace and the stability analyses
    all run it): returns x_0 (N, H, W, C) for noise x (N, H, W, C), labels y (N,).

    `before(j, action, i, x, cache)` is called before step j with its inputs, `after(...)`
    after it with its outputs (i: the respaced index as a device scalar). With `donate`
    the steps reuse x's and the cache's buffers (x is copied first, so the caller's
    array survives); hooks that keep x or the cache past the step walk with
    `donate=False`.
    """
    cache = self.empty_cache(params, x, y)
    if donate:
      x = _own_copy(x)
      full, cached = self.loop_full_step, self.loop_cached_steps
    else:
      full, cached = self.full_step, self.cached_steps
    for j, action in enumerate(self.plan.actions):
      i = self.indices[j]
      if before is not None:
        before(j, action, i, x, cache)
      if action == FULL:  # a donating full step replaces x and the cache
        x, cache = full(params, x, i, y, rng, cache)
      else:  # later cached steps read the same cache
        x = cached[action](params, x, i, y, rng, cache, self.aux)
      if after is not None:
        after(j, action, i, x, cache)
    return x

  def sample(self, params, x: jax.Array, y: jax.Array, rng: jax.Array) -> jax.Array:
    """x: (N, H, W, C) noise x_T; y: (N,) labels; rng: key for DDPM / η > 0 noise."""
    return self.walk(params, x, y, rng)

  def sample_fused(self, params, x: jax.Array, y: jax.Array, rng: jax.Array) -> jax.Array:
    """As `sample`, but each run of identical plan segments (a full step and the cached
    steps after it) is one compiled `fori_loop`: a handful of dispatches per sample
    instead of one per step, for devices where dispatch costs show."""
    cache = self.empty_cache(params, x, y)
    x = _own_copy(x)
    for pattern, start, count in plan_runs(self.plan.actions):
      x, cache = self._run_fn(pattern)(params, x, cache, y, rng, self.aux,
                                       jnp.int32(start), jnp.int32(count))
    return x

  def _run_fn(self, pattern: tuple[str, ...]):
    if pattern not in self._runs:
      s = self.plan.num_steps
      full = full_step_fn(self.model, self.diffusion, self.solver, self.policy)
      cached = {v: cached_step_fn(self.model, self.diffusion, self.solver, self.policy, v)
                for v in set(pattern) - {FULL}}

      def run(params, x, cache, y, rng, aux, start, count):
        def segment(u, carry):
          x, cache = carry
          for o, action in enumerate(pattern):
            i = s - 1 - (start + u * len(pattern) + o)
            if action == FULL:
              x, cache = full(params, x, i, y, rng, cache)
            else:
              x = cached[action](params, x, i, y, rng, cache, aux)
          return x, cache
        return jax.lax.fori_loop(0, count, segment, (x, cache))
      self._runs[pattern] = jax.jit(run, donate_argnums=(1, 2))  # x and the cache
    return self._runs[pattern]


def _own_copy(x: Any) -> jax.Array:
  """A device array the sampler may donate: a copy of a caller's jax.Array (same
  placement), a fresh transfer of host data."""
  return jnp.array(x, copy=True)


@functools.lru_cache(maxsize=64)
def _donating_full(model: Any, diffusion: D.Diffusion, solver: SolverConfig,
                   policy: Any) -> Any:
  """The sample loop's full(params, x, i, y, rng, cache), donating x and the cache;
  shared by every Sampler of the same (model, diffusion, solver, policy)."""
  # keep_unused: a policy that replaces its whole cache never reads the old one, and jit
  # would drop that argument (and its donation); kept, XLA writes the new cache over it.
  return jax.jit(full_step_fn(model, diffusion, solver, policy), donate_argnums=(1, 5),
                 keep_unused=True)


@functools.lru_cache(maxsize=64)
def _donating_cached(model: Any, diffusion: D.Diffusion, solver: SolverConfig,
                     policy: Any, variant: str) -> Any:
  """The sample loop's cached(params, x, i, y, rng, cache, aux), donating x."""
  return jax.jit(cached_step_fn(model, diffusion, solver, policy, variant),
                 donate_argnums=(1,))


def plan_runs(actions: Sequence[str]) -> list[tuple[tuple[str, ...], int, int]]:
  """Splits a plan into segments (a full step, then its cached steps) and merges equal
  neighbours: [(pattern, first step, repeat count), ...] in execution order."""
  segments, j = [], 0
  while j < len(actions):
    end = j + 1
    while end < len(actions) and actions[end] != FULL:
      end += 1
    segments.append((tuple(actions[j:end]), j))
    j = end
  runs: list[tuple[tuple[str, ...], int, int]] = []
  for pattern, start in segments:
    if runs and runs[-1][0] == pattern:
      runs[-1] = (pattern, runs[-1][1], runs[-1][2] + 1)
    else:
      runs.append((pattern, start, 1))
  return runs


_SAMPLERS: "collections.OrderedDict[tuple, Sampler]" = collections.OrderedDict()


def get_sampler(model: Any, diffusion: D.Diffusion, plan: CachePlan,
                solver: SolverConfig) -> Sampler:
  """A `Sampler` from a small cache, so periodic sampling does not recompile."""
  key = (model, diffusion, plan, solver)
  if key not in _SAMPLERS:
    _SAMPLERS[key] = Sampler(model, diffusion, plan, solver)
    while len(_SAMPLERS) > 8:
      _SAMPLERS.popitem(last=False)
  _SAMPLERS.move_to_end(key)
  return _SAMPLERS[key]


def options_from_config(sample: Any, *, with_cache: bool = True) -> dict:
  """`generate` keyword arguments from `config.sample` (sampler, steps, eta, CFG, the
  execution and, `with_cache`, the `sample.cache.*` plan); fields a config lacks keep
  their defaults."""
  get = lambda c, k, d: c.get(k, d) if hasattr(c, "get") else getattr(c, k, d)
  opts = dict(sampler=get(sample, "sampler", "ddim"), num_steps=get(sample, "num_steps", 50),
              eta=get(sample, "eta", 0.0), cfg_scale=get(sample, "cfg_scale", 1.0),
              guided_channels=get(sample, "guided_channels", None),
              clip_denoised=get(sample, "clip_denoised", False))
  cache = get(sample, "cache", None) if with_cache else None
  if cache is not None:
    for key in ("policy", "interval", "k", "window", "forecast_order", "delta_blocks",
                "delta_switch_t", "counter", "tail_t"):
      if get(cache, key, None) is not None:
        opts[key] = get(cache, key, None)
  opts["execution"] = get(sample, "execution", "auto")
  return opts


EXECUTIONS = ("auto", "loop", "fused")


def resolve_execution(execution: str) -> str:
  """"loop" (one dispatch per step) or "fused" (one compiled `fori_loop` per run of
  identical plan segments) for `execution`; "auto" is "fused".

  Measured (bench/sampler_speed.py --execution both, docs/RESULTS.md): the fused loops
  are never slower and are faster where a step is cheap enough for per-step dispatch,
  output allocation and the host round trip to show (the digits demo: 50 uncached steps
  8.05 s in the step loop, 6.90 s fused; Skip-Cache N=2 1.40x vs 1.44x of ideal 1.50x).
  The step loop stays for hooks that look at each step (`Sampler.walk`)."""
  if execution not in EXECUTIONS:
    raise ValueError(f"sample.execution={execution!r} is not one of {EXECUTIONS}: use "
                     "'loop' (one dispatch per step), 'fused' (compiled fori_loops) or "
                     "'auto'.")
  return "fused" if execution == "auto" else execution


def make_plan(model: Any, diffusion: D.Diffusion, policy: str = "none", **cache) -> CachePlan:
  """The plan for a respaced `diffusion` (steps high-noise first) and this model."""
  timesteps = [int(t) for t in diffusion.timestep_map[::-1]]
  return CachePlan.create(policy, timesteps=timesteps, depth=model.num_units,
                          long_skip=model.long_skip, **cache)


def respaced_plan(model: Any, diffusion: D.Diffusion,
                  num_steps: Union[int, str, Sequence[int]] = 50, *, policy: str = "none",
                  interval: int = 1, k: int = 1, window: Sequence[int] = (0, 1000),
                  forecast_order: int = 2, delta_blocks: int = 0,
                  delta_switch_t: int = 500, counter: str = "since_full", tail_t: int = 0,
                  **unused) -> tuple[D.Diffusion, CachePlan]:
  """(respaced diffusion, plan) exactly as `generate` builds them; extra keyword
  arguments (sampler, eta, ...) are ignored, so `generate`'s kwargs can be passed."""
  spaced = D.respace(diffusion, num_steps)
  return spaced, make_plan(model, spaced, policy, interval=interval, k=k,
                           window=tuple(window), forecast_order=forecast_order,
                           delta_blocks=delta_blocks, delta_switch_t=delta_switch_t,
                           counter=counter, tail_t=tail_t)


def condition_input(model: Any, labels: Any) -> Any:
  """`labels` as the model's `y`: (N,) int32 labels, or a caption dict of device arrays
  checked against `model.cond` (shapes only)."""
  cond = getattr(model, "cond", "class")
  if cond == "class":
    text_cond.check_condition(labels, cond)
    labels = jnp.asarray(labels, jnp.int32)
    if labels.ndim != 1:
      raise ValueError(f"labels must be (N,) ints, got shape {labels.shape}")
    return labels
  text_cond.check_condition(labels, cond, model.caption_channels)
  return {k: jnp.asarray(v) for k, v in labels.items()}


def generate(model: Any, params: Any, diffusion: D.Diffusion, labels: Any,
             rng: jax.Array, *, sampler: str = "ddim",
             num_steps: Union[int, str, Sequence[int]] = 50, eta: float = 0.0,
             cfg_scale: float = 1.0, guided_channels: Optional[int] = None,
             clip_denoised: bool = False, policy: str = "none", interval: int = 1,
             k: int = 1, window: Sequence[int] = (0, 1000), forecast_order: int = 2,
             delta_blocks: int = 0, delta_switch_t: int = 500, counter: str = "since_full",
             tail_t: int = 0, execution: str = "auto",
             noise: Optional[jax.Array] = None) -> np.ndarray:
  """Samples images for `labels` from a DiT / Skip-DiT, optionally with a cache.

  Args:
    model: the `DiT` module (its `learn_sigma`, `depth`, `long_skip` are used).
    params: its parameters (e.g. the EMA ones).
    diffusion: the training `Diffusion` (e.g. 1000 steps); it is respaced to `num_steps`.
    labels: (N,) ints in [0, num_classes); for a text model (model.cond != "class") the
      caption dict of `models.caption_condition` (its null rows = the empty caption are
      CFG's null condition).
    rng: key; split into the x_T noise and the per-step noise (DDPM, η > 0).
    sampler: "ddim" or "ddpm"; eta: DDIM η; cfg_scale: guidance (1.0 = off; else the
      batch is doubled inside the step, the second half with the null class);
      guided_channels: guide only the first C' eps channels (DiT's sampler uses 3).
    policy, interval, k, window, forecast_order, delta_blocks, delta_switch_t, counter,
      tail_t: the cache plan (see `CachePlan.create`; `config.sample.cache.*`). Default: no cache.
    execution: "fused" runs the plan as a few compiled `fori_loop`s over its repeating
      segments (`Sampler.sample_fused`), "loop" dispatches one compiled step per step
      (`Sampler.sample`); "auto" picks (`resolve_execution`).
    noise: optional (N, *model.sample_shape) x_T (images (N, H, W, C), Latte videos
      (N, F, H, W, C)) to use instead of drawing it from `rng`.
  Returns:
    (N, *model.sample_shape) float32 numpy samples in the data scale (≈ [-1, 1]; not clipped).
  """
  fused = resolve_execution(execution) == "fused"  # bad values refused before compute
  solver = SolverConfig(sampler=sampler, eta=float(eta), cfg_scale=float(cfg_scale),
                        guided_channels=guided_channels, clip_denoised=clip_denoised)
  spaced, plan = respaced_plan(model, diffusion, num_steps, policy=policy,
                               interval=interval, k=k, window=window,
                               forecast_order=forecast_order, delta_blocks=delta_blocks,
                               delta_switch_t=delta_switch_t, counter=counter,
                               tail_t=tail_t)
  labels = condition_input(model, labels)
  noise_key, step_key = jax.random.split(rng)
  shape = (text_cond.batch_size(labels),) + tuple(model.sample_shape)
  x = jax.random.normal(noise_key, shape, jnp.float32) if noise is None else jnp.asarray(noise)
  if x.shape != shape:
    raise ValueError(f"noise has shape {x.shape}, expected {shape}")
  smp = get_sampler(model, spaced, plan, solver)
  out = (smp.sample_fused if fused else smp.sample)(params, x, labels, step_key)
  return np.asarray(jax.device_get(out))
