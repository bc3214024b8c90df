"""Per-step fidelity of a cached sampler: what each cached step used vs the truth.

Walks a `Sampler`'s plan with `Sampler.walk` (the trajectory follows the cached
steps), and at every cached step also runs the full model at the same (x, t) to
compare (a) the model output and (b) for the deep-feature policies, the deep feature
the cached step used (stored or forecast) against the true one: the feature-similarity
curves of the Skip-DiT paper. A diagnostic; it costs a full forward per cached step.
"""
from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from skipdit_jax.sampling import policies
from skipdit_jax.sampling.cache_plan import FULL
from skipdit_jax.sampling.step_fns import _model_time, model_inputs


def _cos(a: jax.Array, b: jax.Array) -> jax.Array:
  """Mean over the batch of the per-sample cosine similarity (float32)."""
  a = a.reshape(a.shape[0], -1).astype(jnp.float32)
  b = b.reshape(b.shape[0], -1).astype(jnp.float32)
  den = jnp.linalg.norm(a, axis=1) * jnp.linalg.norm(b, axis=1)
  return jnp.mean(jnp.sum(a * b, axis=1) / jnp.maximum(den, 1e-30))


@functools.lru_cache(maxsize=16)
def _probe(sampler: Any, variant: str):
  """jit(params, x, i, y, cache, aux) -> (cos of model outputs, cos of deep features)."""
  model, plan, policy, solver = sampler.model, sampler.plan, sampler.policy, sampler.solver
  cut = model.num_units - plan.k
  cached_method = policy.cached_method(variant)
  has_feature = isinstance(policy, policies.SkipCache)  # skip_cache, forecast, deep_cache

  def truth(mod, x, t, y, drop):
    out, states, _ = policies.split_pass(mod, x, t, y, drop, [cut])
    return out, states[cut][0]

  def probe(params, x, i, y, cache, aux):
    xin, yin, drop = model_inputs(x, y, solver)
    t = _model_time(sampler.diffusion, i, xin.shape[0])
    v = {"params": params}
    out_true, feat_true = model.apply(v, xin, t, yin, drop, method=truth)
    out = model.apply(v, xin, t, yin, drop, cache, i, aux, method=cached_method)
    feat_cos = (_cos(policy.feature(cache, i, aux), feat_true) if has_feature
                else jnp.float32(jnp.nan))
    return _cos(out, out_true), feat_cos
  return jax.jit(probe)


def fidelity_trace(sampler: Any, params, x: jax.Array, y: jax.Array,
                   rng: jax.Array) -> dict[str, Any]:
  """Runs the plan; returns x_0 and per-step arrays (execution order, length S):
  `t` timesteps, `cached` bools, `cos_out` and `cos_feature` (NaN at full steps, and
  for policies without a deep feature)."""
  plan = sampler.plan
  cos_out, cos_feat = [], []

  def probe(j, action, i, x, cache):
    if action == FULL:
      cos_out.append(jnp.float32(jnp.nan))
      cos_feat.append(jnp.float32(jnp.nan))
    else:
      co, cf = _probe(sampler, action)(params, x, i, y, cache, sampler.aux)
      cos_out.append(co)
      cos_feat.append(cf)
  x = sampler.walk(params, x, y, rng, donate=False, before=probe)
  return {"x": np.asarray(x), "t": np.asarray(plan.timesteps),
          "cached": np.array([a != FULL for a in plan.actions]),
          "cos_out": np.asarray(jnp.stack(cos_out)),
          "cos_feature": np.asarray(jnp.stack(cos_feat))}
