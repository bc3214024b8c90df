"""A cached step checked against an independent float64 forward at *another* (x, t).

The sampler takes full steps at (x0, i0) and (x1, i1), then a cached step at (x2, i2)
with other noise, timestep and labels. REFERENCE §4 says what that cached step computes:
the model at (x2, t2) with the hidden state entering deep block L-k replaced by the one
the latest full step saw at (x1, t1). `reference_dit.forward` computes exactly that in
float64 numpy (its `replace` hook), sharing no code with the model or the policies; the
cached step's model output must match it (and, guided, the sampler's DDIM update).
Expectations built from the wrong block, from the stale (x0, t0) feature, or without
the cache at all are far from our output, and a policy that caches the wrong block or
keeps a stale feature fails the check.
"""
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference_dit as ref
import tiny_models
from skipdit_jax import diffusion as D
from skipdit_jax import models, sampling
from skipdit_jax.sampling import SolverConfig, policies
from skipdit_jax.sampling.step_fns import full_step_fn, model_inputs

SPACED = D.respace(D.Diffusion.create(D.betas_for("linear", 1000)), 6)
DEPTH = 6            # k = 2 still leaves blocks out of a cached step
I0, I1, I2 = 4, 3, 2  # respaced indices in execution order: full, full, cached
TOL = 2e-5           # float32 against float64, relative to the output's scale
FAR = 1e-2           # every wrong expectation is further than this (measured >= 0.3)
RNG = jax.random.key(0)  # DDIM with eta = 0 draws no noise


@functools.lru_cache(maxsize=None)
def _model(long_skip: bool):
  model, params = tiny_models.tiny(long_skip=long_skip, depth=DEPTH, width=32,
                                   seed=0 if long_skip else 1)
  return model, params, models.to_official(params, model)


def _inputs(model, seed, labels):
  """x (2, H, W, C) float32 and y (2,) int32."""
  x = np.random.default_rng(seed).standard_normal(
      (2, model.input_size, model.input_size, model.in_channels))
  return jnp.asarray(x, jnp.float32), jnp.asarray(labels, jnp.int32)



def _xy(model):
  """(x, y) of the three steps; the labels differ too, so c changes between them."""
  return [_inputs(model, 10, [0, 1]), _inputs(model, 11, [2, 3]),
          _inputs(model, 12, [4, 0])]


def _reference(model, sd, x, i, y, solver, replace=None, record=None):
  """The float64 forward on the batch the step feeds the model ([cond; null] when
  guided), at the model timestep of respaced index i."""
  x, y = np.asarray(x, np.float64), np.asarray(y)
  if solver.guided:
    x, y = np.concatenate([x, x]), np.concatenate([y, np.full_like(y, model.num_classes)])
  t = np.full((x.shape[0],), SPACED.timestep_map[i])
  return ref.forward(sd, x, t, y, patch=model.patch_size, heads=model.num_heads,
                     long_skip=model.long_skip, replace=replace, record=record)


def _ddim(x, i, out, solver, channels):
  """DDIM, eta = 0 (Song et al. eq. 12), in float64 from a model output."""
  eps = out[..., :channels]
  if solver.guided:
    cond, null = np.split(eps, 2)
    eps = null + solver.cfg_scale * (cond - null)
  a, a_prev = SPACED.alphas_cumprod[i], SPACED.alphas_cumprod_prev[i]
  x0 = (np.asarray(x, np.float64) - np.sqrt(1 - a) * eps) / np.sqrt(a)
  return np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps


def _rel(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (got.shape, want.shape)
  return float(np.abs(got - want).max() / np.abs(want).max())


def _run(model, params, policy, full_step, cache, solver):
  """The step sequence: full at (x0, i0), full at (x1, i1), then the policy's cached
  path at (x2, i2). Returns (cache after the full steps, cached model output)."""
  (x0, y0), (x1, y1), (x2, y2) = _xy(model)
  _, cache = full_step(params, x0, jnp.int32(I0), y0, RNG, cache)
  _, cache = full_step(params, x1, jnp.int32(I1), y1, RNG, cache)
  # What `cached_step_fn` feeds the model before the solver update.
  xin, yin, drop = model_inputs(x2, y2, solver)
  t = jnp.full((xin.shape[0],), SPACED.timestep_map[I2], jnp.int32)
  aux = jnp.zeros((SPACED.num_timesteps, 1), jnp.float32)
  out = jax.jit(lambda p, c: model.apply(
      {"params": p}, xin, t, yin, drop, c, jnp.int32(I2), aux,
      method=policy.cached_method("cached")))(params, cache)
  return cache, out


CASES = [("skip_cache", True, 1, 1.0), ("skip_cache", True, 2, 1.0),
         ("deep_cache", False, 1, 1.0), ("deep_cache", False, 2, 1.0),
         ("skip_cache", True, 1, 2.0)]


@pytest.mark.parametrize("policy,long_skip,k,cfg", CASES)
def test_cached_step_equals_forward_with_the_earlier_deep_feature(policy, long_skip, k, cfg):
  model, params, sd = _model(long_skip)
  solver = SolverConfig(cfg_scale=cfg)
  plan = sampling.make_plan(model, SPACED, policy, interval=2, k=k)
  s = sampling.get_sampler(model, SPACED, plan, solver)
  (x0, y0), (x1, y1), (x2, y2) = _xy(model)
  cache, out = _run(model, params, s.policy, s.full_step, s.empty_cache(params, x2, y2),
                    solver)

  deep = DEPTH - k
  seen0, seen1 = {}, {}
  _reference(model, sd, x0, I0, y0, solver, record=seen0)
  _reference(model, sd, x1, I1, y1, solver, record=seen1)
  # The cache holds the hidden state entering block L-k at the latest full step.
  assert _rel(cache, seen1[deep]) < TOL

  want = _reference(model, sd, x2, I2, y2, solver, replace={deep: seen1[deep]})
  assert _rel(out, want) < TOL, (policy, k, cfg)
  if solver.guided:  # one case: the sampler's compiled step applies it (a compile each)
    x_prev = s.cached_steps["cached"](params, x2, jnp.int32(I2), y2, RNG, cache, s.aux)
    assert _rel(x_prev, _ddim(x2, I2, want, solver, model.in_channels)) < TOL

  # Teeth: what a mis-indexed, stale or unused cache would give is far from `out`.
  wrong = {
      "no cache (full forward at x2, t2)": {},
      "stale feature from (x0, t0)": {deep: seen0[deep]},
      f"feature entering block {deep - 1}": {deep - 1: seen1[deep - 1]},
      f"feature entering block {deep + 1}": {deep + 1: seen1[deep + 1]},
  }
  for what, replace in wrong.items():
    other = _reference(model, sd, x2, I2, y2, solver, replace=replace)
    assert _rel(out, other) > FAR, what


@dataclasses.dataclass(frozen=True)
class _MisIndexedSkipCache(policies.SkipCache):
  """Broken on purpose: stores the state entering block L-k-1, injects it at L-k."""

  def entry(self, mod, x, t, y, drop):
    h, c = mod.embed(x, t, y, force_drop_ids=drop)
    h, skips = mod.run_blocks(h, c, (), 0, self.depth - self.k - 1)
    feature = h
    h, _ = mod.run_blocks(h, c, skips, self.depth - self.k - 1, self.depth)
    return mod.head(h, c), feature


@dataclasses.dataclass(frozen=True)
class _StaleDeepCache(policies.DeepCache):
  """Broken on purpose: keeps the first full step's feature, never refreshes it."""

  def update(self, cache, entry):
    return jnp.where(jnp.any(cache != 0), cache, entry)


@pytest.mark.parametrize("broken,long_skip,k", [(_MisIndexedSkipCache, True, 1),
                                                 (_StaleDeepCache, False, 2)])
def test_check_fails_on_a_broken_cache(broken, long_skip, k):
  """The comparison above catches a cache taken at the wrong block, and a stale one
  (which a check against the full step that just filled the cache, at the same (x, t),
  would pass)."""
  model, params, sd = _model(long_skip)
  solver = SolverConfig()
  policy = broken(depth=DEPTH, k=k)
  _, (x1, y1), (x2, y2) = _xy(model)
  cache = jnp.zeros((2, model.num_tokens, model.hidden_size), jnp.float32)
  _, out = _run(model, params, policy, jax.jit(full_step_fn(model, SPACED, solver, policy)),
                cache, solver)
  seen1 = {}
  _reference(model, sd, x1, I1, y1, solver, record=seen1)
  want = _reference(model, sd, x2, I2, y2, solver, replace={DEPTH - k: seen1[DEPTH - k]})
  assert _rel(out, want) > FAR
