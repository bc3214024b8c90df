"""Feature-stability analyses of REFERENCE §6 ("Dynamic Feature Instability").

(a) `step_similarity`: per sampling step, the cosine similarity of the deep feature (the
    hidden state entering unit L-k) between consecutive steps of an uncached run (the
    paper's Figure 1a), and between the feature a cached run uses and the uncached run's
    true one.
(b) `perturbation_similarity`: the similarity of the deep and the final hidden feature
    under small parameter and input perturbations (a 2-D grid of scales).
(c) `block_spectral_norms`: the spectral norm of each unit's input -> output Jacobian
    (skip fusion included for deep units of long-skip models, skips held fixed), by power
    iteration with `jax.jvp` / `jax.vjp`.

Everything is indexed in `model.num_units`, the units of `run_blocks`: blocks for DiT,
spatial+temporal block pairs for Latte (L = num_units); inputs are (N, *model.sample_shape).

All of it runs through the model's staged forward (`embed`, `run_blocks`) and, for (a),
the cached sampler's own compiled steps, so the features are those the sampler uses.
Similarities are per-sample cosines over all tokens and channels, averaged over the batch.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from skipdit_jax import diffusion as D
from skipdit_jax.sampling import FULL, get_sampler, make_plan
from skipdit_jax.sampling.step_fns import SolverConfig


def cosine(a: Any, b: Any) -> np.ndarray:
  """Per-sample cosine similarity of a, b (N, ...) over all non-batch axes, float64 (N,)."""
  a = np.asarray(a, np.float64).reshape(np.shape(a)[0], -1)
  b = np.asarray(b, np.float64).reshape(np.shape(b)[0], -1)
  den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
  return (a * b).sum(1) / np.maximum(den, 1e-30)


# ----------------------------------------------------------------------------- (a)

def model_name(model: Any) -> str:
  """"Skip-DiT" / "DiT" / "Skip-Latte" / "Latte": the family, with long skips or not."""
  family = "Latte" if len(model.sample_shape) == 4 else "DiT"
  return ("Skip-" if model.long_skip else "") + family


def unit_name(model: Any) -> str:
  """What one unit of `run_blocks` is for this model (the x axis of per-unit results)."""
  return "spatial+temporal pair" if len(model.sample_shape) == 4 else "block"


def feature_policy(model: Any) -> str:
  """The deep-feature cache a model supports: Skip-Cache with long skips, else DeepCache."""
  return "skip_cache" if model.long_skip else "deep_cache"


def record_trajectory(sampler: Any, params: Any, x: jax.Array, y: jax.Array,
                      rng: jax.Array) -> dict[str, list]:
  """Walks `sampler.plan` with `Sampler.walk` (as sampling does), recording per step the
  input x_t and the deep feature the step used (fresh at full steps, from the cache at cached
  steps; None for policies without one). Returns {"x": [...], "feature": [...], "final"}.
  """
  policy = sampler.policy
  has_feature = hasattr(policy, "feature")
  xs, feats = [], []

  def before(j, action, i, x, cache):
    xs.append(np.asarray(x))
    if action != FULL:  # the feature this cached step reads
      feats.append(np.asarray(policy.feature(cache, i, sampler.aux)) if has_feature else None)

  def after(j, action, i, x, cache):
    if action == FULL:  # the feature this full step stored (the forecaster: a history)
      fresh = cache[0] if policy.name == "skip_cache_forecast" else cache
      feats.append(np.asarray(fresh) if has_feature else None)

  final = sampler.walk(params, x, y, rng, donate=False, before=before, after=after)
  return {"x": xs, "feature": feats, "final": np.asarray(final)}


def step_similarity(model: Any, params: Any, diffusion: D.Diffusion, labels: Any,
                    rng: jax.Array, *, num_steps: int = 50, k: int = 1,
                    sampler: str = "ddim", cfg_scale: float = 1.0,
                    policy: str | None = None, interval: int = 2,
                    window: Sequence[int] = (0, 1000), **cache_fields) -> dict:
  """(a) per-step deep-feature similarities for one model.

  The uncached reference runs the model's deep-feature policy with interval 1 (every
  step full, each recording its true feature). With `policy`, a second run from the same
  noise uses that cache plan; for deep-feature policies the feature it used at each step
  is compared with the reference's, for every policy its x_t trajectory is.
  Returns lists over steps (execution order, high noise first) and their means.
  """
  solver = SolverConfig(sampler=sampler, cfg_scale=float(cfg_scale))
  spaced = D.respace(diffusion, num_steps)
  labels = jnp.asarray(labels, jnp.int32)
  noise_key, step_key = jax.random.split(rng)
  x = jax.random.normal(noise_key, (labels.shape[0],) + tuple(model.sample_shape),
                        jnp.float32)
  ref_plan = make_plan(model, spaced, feature_policy(model), interval=1, k=k)
  ref = record_trajectory(get_sampler(model, spaced, ref_plan, solver), params, x, labels,
                          step_key)
  f = ref["feature"]
  consecutive = [float(cosine(f[s], f[s - 1]).mean()) for s in range(1, len(f))]
  out = {"model": model_name(model), "k": k,
         "timesteps": list(ref_plan.timesteps),
         "consecutive": consecutive, "consecutive_mean": float(np.mean(consecutive or [1.0]))}
  if policy is None:
    return out
  plan = make_plan(model, spaced, policy, interval=interval, k=k, window=tuple(window),
                   **cache_fields)
  run = record_trajectory(get_sampler(model, spaced, plan, solver), params, x, labels,
                          step_key)
  out.update(policy=policy, interval=interval, actions=list(plan.actions),
             ideal_speedup=plan.ideal_speedup,
             x_similarity=[float(cosine(a, b).mean()) for a, b in zip(run["x"], ref["x"])])
  if run["feature"][0] is not None:
    sims = [float(cosine(a, b).mean()) for a, b in zip(run["feature"], f)]
    out.update(cached_vs_uncached=sims, cached_vs_uncached_mean=float(np.mean(sims)))
  return out


# ----------------------------------------------------------------------------- (b)

def _features_fn(model: Any, k: int) -> Callable:
  """jit((params, x, t, y) -> (deep feature entering unit L-k, final hidden))."""
  def fwd(mod, x, t, y):
    h, c = mod.embed(x, t, y)
    deep, skips = mod.run_blocks(h, c, (), 0, mod.num_units - k)
    final, _ = mod.run_blocks(deep, c, skips, mod.num_units - k, mod.num_units)
    return deep, final
  return jax.jit(lambda p, x, t, y: model.apply({"params": p}, x, t, y, method=fwd))


def param_direction(params: Any, seed: int) -> Any:
  """A Gaussian direction with each leaf scaled to that leaf's RMS (filter-normalised as
  in loss-landscape plots), so a scale means "relative size of the change"; all-zero
  leaves get no change. Drawn with numpy: eager jax.random would compile per leaf shape."""
  rng = np.random.default_rng(seed)

  def leaf(p):
    p = np.asarray(p, np.float32)
    return jnp.asarray(rng.normal(size=p.shape) * np.sqrt(np.mean(np.square(p))), p.dtype)
  return jax.tree_util.tree_map(leaf, params)


def perturbation_similarity(model: Any, params: Any, x: jax.Array, t: jax.Array,
                            y: jax.Array, *,
                            param_scales: Sequence[float] = (0.0, 0.01, 0.02, 0.05, 0.1),
                            input_scales: Sequence[float] = (0.0, 0.01, 0.02, 0.05, 0.1),
                            k: int = 1, seed: int = 0) -> dict:
  """(b) grid[i][j] = mean cosine between the features at (params + a_i dP, x + b_j dX)
  and at (params, x); dP from `param_direction`, dX Gaussian scaled by std(x).

  x: (N, *model.sample_shape) noisy inputs at timesteps t (N,), labels y (N,).
  """
  fn = _features_fn(model, k)
  dp = param_direction(params, seed)
  x = jnp.asarray(x, jnp.float32)
  dx = jnp.asarray(np.random.default_rng(seed + 1).normal(size=x.shape) * float(jnp.std(x)),
                   jnp.float32)
  base = fn(params, x, t, y)
  grids = {"deep": np.zeros((len(param_scales), len(input_scales))),
           "final": np.zeros((len(param_scales), len(input_scales)))}
  for i, a in enumerate(param_scales):
    p = jax.tree_util.tree_map(lambda w, d: w + a * d, params, dp)
    for j, b in enumerate(input_scales):
      deep, final = fn(p, x + b * dx, t, y)
      grids["deep"][i, j] = cosine(deep, base[0]).mean()
      grids["final"][i, j] = cosine(final, base[1]).mean()
  return {"model": model_name(model), "k": k,
          "param_scales": list(map(float, param_scales)),
          "input_scales": list(map(float, input_scales)),
          "deep": grids["deep"].tolist(), "final": grids["final"].tolist()}


# ----------------------------------------------------------------------------- (c)

def power_iteration(f: Callable[[jax.Array], jax.Array], x: jax.Array, v0: jax.Array,
                    num_iters: int = 50) -> jax.Array:
  """Largest singular value of the Jacobian of f at x, per sample -> (N,).

  f maps (N, ...) -> (N, ...) sample by sample, so its Jacobian is block diagonal and
  normalising v per sample runs N independent power iterations at once:
  v <- Jᵀ J v / |Jᵀ J v|; for the converged unit v, |Jᵀ J v| = σ². v0 (x's shape) is
  the random start (drawn by the caller: threefry inside the program would double its
  compile time).
  """
  def norm(a):
    return jnp.sqrt(jnp.sum(jnp.square(a), axis=tuple(range(1, a.ndim)), keepdims=True))

  _, vjp = jax.vjp(f, x)

  def body(_, carry):
    v, _ = carry
    w = vjp(jax.jvp(f, (x,), (v,))[1])[0]
    n = norm(w)
    return w / jnp.maximum(n, 1e-30), jnp.sqrt(n)

  v0 = v0 / norm(v0)
  _, sigma = jax.lax.fori_loop(0, num_iters, body, (v0, jnp.zeros_like(norm(v0))))
  return sigma.reshape(x.shape[0])


def _unit_map(model: Any) -> Callable:
  """jit((params, unit i, h, c, skips, v0, num_iters) -> σ (N,)) of the map
  h -> run_blocks(h, c, skips, i, i + 1)[0]: one unit of the staged forward (a DiT block,
  a Latte spatial+temporal pair), with the skip fusion a deep unit applies to the skip it
  pops (skips held fixed). Generic over models; compiles once per unit."""
  def sigma(params, i, h, c, skips, v0, num_iters):
    def f(hh):
      return model.apply({"params": params}, hh, c, skips, i, i + 1, method="run_blocks")[0]
    return power_iteration(f, h, v0, num_iters)
  return jax.jit(sigma, static_argnums=(1, 6))


def block_spectral_norms(model: Any, params: Any, x: jax.Array, t: jax.Array, y: jax.Array,
                         *, num_iters: int = 50, seed: int = 0) -> dict:
  """(c) per unit i of `model.num_units` (a DiT block, a Latte spatial+temporal pair; deep
  units with their skip fusion), the spectral norm of h_i -> h_{i+1} at the states of a
  forward pass of x (N, *model.sample_shape) at t (N,), y (N,). Returns per-unit mean and
  max over the batch ("block" lists the unit indices)."""
  def states(mod, x, t, y):  # (h, skips) entering every unit, and c: one program
    h, c = mod.embed(x, t, y)
    out, skips = [], ()
    for i in range(mod.num_units):
      out.append((h, skips))
      h, skips = mod.run_blocks(h, c, skips, i, i + 1)
    return out, c

  inputs, c = jax.jit(lambda p, x, t, y: model.apply({"params": p}, x, t, y,
                                                      method=states))(params, x, t, y)
  fn = _unit_map(model)
  rng = np.random.default_rng(seed)
  means, maxes = [], []
  for i, (h, skips) in enumerate(inputs):
    sig = np.asarray(fn(params, i, h, c, skips,
                        jnp.asarray(rng.normal(size=h.shape), h.dtype), num_iters))
    means.append(float(sig.mean()))
    maxes.append(float(sig.max()))
  return {"model": model_name(model), "num_iters": num_iters, "unit": unit_name(model),
          "block": list(range(model.num_units)), "mean": means, "max": maxes}
