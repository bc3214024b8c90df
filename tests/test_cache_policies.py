"""Cache policies: no cached step => the plain sampler bit for bit; a cached step right
after a full step at the same (x, t) reproduces it; each cached step computes only the
blocks it claims (XLA FLOP counts against separately compiled single blocks)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skipdit_jax import diffusion as D
from skipdit_jax import sampling
from skipdit_jax.models import DiT
from skipdit_jax.sampling import SolverConfig

import tiny_models

BASE = D.Diffusion.create(D.betas_for("linear", 1000))
STEPS = 6
SPACED = D.respace(BASE, STEPS)
SKIP_POLICIES = ("skip_cache", "skip_cache_forecast", "fora", "delta_dit")


@pytest.fixture(scope="module")
def skipdit():
  return tiny_models.tiny(long_skip=True, width=64)


@pytest.fixture(scope="module")
def dit():
  return tiny_models.tiny(long_skip=False, width=64, seed=1)


def _sampler(model, policy, interval, solver=SolverConfig(cfg_scale=2.0)):
  plan = sampling.make_plan(model, SPACED, policy, interval=interval, k=1,
                            delta_switch_t=500)
  return sampling.get_sampler(model, SPACED, plan, solver)


def _inputs(model, n=2):
  x = jax.random.normal(jax.random.key(3), (n, model.input_size, model.input_size,
                                            model.in_channels))
  return x, jnp.arange(n, dtype=jnp.int32) % 5, jax.random.key(4)


def _cases():
  return [("skipdit", p) for p in SKIP_POLICIES] + [("dit", "deep_cache"), ("dit", "fora")]


@pytest.mark.parametrize("which,policy", _cases())
def test_no_cached_steps_is_bit_identical_to_plain(which, policy, request):
  model, params = request.getfixturevalue(which)
  x, y, rng = _inputs(model)
  plain = _sampler(model, "none", 1).sample(params, x, y, rng)
  cached = _sampler(model, policy, 1)
  assert cached.plan.num_cached == 0
  np.testing.assert_array_equal(np.asarray(cached.sample(params, x, y, rng)),
                                np.asarray(plain))


def test_forecast_uses_its_weights(skipdit):
  """Weights (0, 1, 0) reproduce plain Skip-Cache fed the previous full step's feature."""
  model, params = skipdit
  fc, sc = _sampler(model, "skip_cache_forecast", 2), _sampler(model, "skip_cache", 2)
  x, y, rng = _inputs(model)
  hist = fc.empty_cache(params, x, y)
  _, hist = fc.full_step(params, x * 0.5, jnp.int32(4), y, rng, hist)
  _, old = sc.full_step(params, x * 0.5, jnp.int32(4), y, rng, sc.empty_cache(params, x, y))
  _, hist = fc.full_step(params, x, jnp.int32(3), y, rng, hist)
  aux = jnp.zeros_like(fc.aux).at[2].set(jnp.array([0.0, 1.0, 0.0]))
  got = fc.cached_steps["cached"](params, x, jnp.int32(2), y, rng, hist, aux)
  want = sc.cached_steps["cached"](params, x, jnp.int32(2), y, rng, old, sc.aux)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)


def _flops(fn, *args):
  cost = fn.lower(*args).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def _probe_flops(model, params, n):
  """FLOPs of one block, one skip fusion, and one block's attention + MLP branches,
  each compiled on its own: the units the policies claim to skip."""
  t_, d = model.num_tokens, model.hidden_size
  h, c = jnp.ones((n, t_, d)), jnp.ones((n, d))
  run = lambda mod, h, c, sk, a, b: mod.run_blocks(h, c, sk, a, b)[0]
  f = lambda a, b, sk: jax.jit(lambda p, h, c, sk: model.apply(
      {"params": p}, h, c, sk, a, b, method=run))
  block = _flops(f(0, 1, ()), params, h, c, ())
  fusion = 0.0
  if model.long_skip:
    half = model.depth // 2
    fusion = _flops(f(half, half + 1, (h,)), params, h, c, (h,)) - block

  def branch(name):
    def fn(mod, h, shift, scale):
      return getattr(mod.blocks[0], name)(h, shift, scale)
    return _flops(jax.jit(lambda p, h, a, b: model.apply({"params": p}, h, a, b,
                                                          method=fn)), params, h, c, c)
  br = branch("attn_branch") + branch("mlp_branch")
  return block, fusion, br


@pytest.mark.parametrize("which", ["skipdit", "dit"])
def test_cached_steps_compute_only_the_blocks_they_claim(which, request):
  model, params = request.getfixturevalue(which)
  x, y, rng = _inputs(model)
  n2 = 2 * x.shape[0]  # guided: cond and null halves
  block, fusion, branches = _probe_flops(model, params, n2)
  L, half, k = model.depth, model.depth // 2, 1
  policies = SKIP_POLICIES if model.long_skip else ("deep_cache", "fora")
  for policy in policies:
    s = _sampler(model, policy, 2)
    cache = s.empty_cache(params, x, y)
    full = _flops(s.full_step, params, x, jnp.int32(2), y, rng, cache)
    m = s.plan.delta_blocks
    claims = {  # FLOPs a cached step saves against a full step
        "skip_cache": (L - 2 * k) * block + (half - k) * fusion,
        "skip_cache_forecast": (L - 2 * k) * block + (half - k) * fusion,
        "deep_cache": (L - k) * block,
        "fora": L * branches,
        "front": m * block,
        "rear": m * block + min(m, half) * fusion,
    }
    for variant, step in s.cached_steps.items():
      cached = _flops(step, params, x, jnp.int32(2), y, rng, cache, s.aux)
      saved = claims[variant if policy == "delta_dit" else policy]
      # Within 5 % of one block: a stray or missing block would be off by 100 %.
      assert abs((full - cached) - saved) < 0.05 * block, (
          policy, variant, full, cached, saved, block)


def test_fused_runs_match_the_step_loop(skipdit):
  from skipdit_jax.sampling.sampler import plan_runs
  model, params = skipdit
  plan = sampling.make_plan(model, SPACED, "skip_cache_forecast", interval=2,
                            window=(0, 600))
  assert plan_runs(plan.actions) == [(("full",), 0, 1), (("full", "cached"), 1, 2),
                                     (("full",), 5, 1)]
  s = sampling.get_sampler(model, SPACED, plan, SolverConfig(cfg_scale=2.0))
  x, y, rng = _inputs(model)
  np.testing.assert_allclose(np.asarray(s.sample_fused(params, x, y, rng)),
                             np.asarray(s.sample(params, x, y, rng)), rtol=1e-5, atol=1e-5)


def test_generate_walks_the_plan_alike_in_every_execution(skipdit):
  """`execution` (config: sample.execution) picks how `generate` walks the plan, never
  what it computes; "auto" takes the fused loops; a bad value is named before compute."""
  model, params = skipdit
  _, y, rng = _inputs(model)
  kw = dict(num_steps=STEPS, cfg_scale=2.0, policy="skip_cache", interval=2)
  loop = sampling.generate(model, params, BASE, y, rng, execution="loop", **kw)
  for execution in ("fused", "auto"):
    np.testing.assert_allclose(sampling.generate(model, params, BASE, y, rng,
                                                 execution=execution, **kw),
                               loop, rtol=1e-5, atol=1e-5)
  assert sampling.resolve_execution("auto") == "fused"
  with pytest.raises(ValueError, match="sample.execution='scan'"):
    sampling.generate(model, params, BASE, y, rng, execution="scan", **kw)


def test_fidelity_trace_follows_the_cached_trajectory(skipdit):
  from skipdit_jax.sampling.trace import fidelity_trace
  model, params = skipdit
  s = _sampler(model, "skip_cache", 2)
  x, y, rng = _inputs(model)
  tr = fidelity_trace(s, params, x, y, rng)
  np.testing.assert_array_equal(tr["x"], np.asarray(s.sample(params, x, y, rng)))
  cached = tr["cached"]
  assert cached.tolist() == [False, True] * 3
  assert np.isnan(tr["cos_out"][~cached]).all()
  for key in ("cos_out", "cos_feature"):
    v = tr[key][cached]
    assert np.all((v > 0.2) & (v < 1.0 + 1e-6)), (key, v)  # random weights: loose


def test_sample_loop_never_transfers_to_or_from_the_host(skipdit):
  model, params = skipdit
  s = _sampler(model, "skip_cache_forecast", 2)
  params = jax.device_put(params)
  x, y, rng = _inputs(model)
  s.sample(params, x, y, rng)  # compile and fill the shape cache outside the guard
  with jax.transfer_guard("disallow"):
    out = s.sample(params, x, y, rng)
  assert out.shape == x.shape


def test_ddpm_with_clipping_no_cache_and_cached_after_full(skipdit):
  """The DDPM update (noise from (rng, i)) with x0 clipping, the configs' pixel default:
  an all-full Skip-Cache plan equals the plain sampler bit for bit, and a cached step
  right after a full step at the same (x, i) reproduces it (same noise, same feature)."""
  model, params = skipdit
  solver = SolverConfig(sampler="ddpm", cfg_scale=2.0, clip_denoised=True)
  x, y, rng = _inputs(model)
  x = 3.0 * x  # push the predicted x0 out of [-1, 1] so the clip is on the path
  plain = _sampler(model, "none", 1, solver).sample(params, x, y, rng)
  np.testing.assert_array_equal(
      np.asarray(_sampler(model, "skip_cache", 1, solver).sample(params, x, y, rng)),
      np.asarray(plain))
  s = _sampler(model, "skip_cache", 2, solver)
  i = jnp.int32(2)
  want, cache = s.full_step(params, x, i, y, rng, s.empty_cache(params, x, y))
  got = s.cached_steps["cached"](params, x, i, y, rng, cache, s.aux)
  np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
  # The update really is stochastic: another key gives another x_{t-1}.
  other, _ = s.full_step(params, x, i, y, jax.random.key(9), cache)
  assert not np.allclose(np.asarray(other), np.asarray(want))
