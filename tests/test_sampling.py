"""The sampler against an independent float64 numpy DDIM / DDPM-free loop, and the cache
plan's layout, ideal speedup and validation errors."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skipdit_jax import diffusion as D
from skipdit_jax import models, sampling
from skipdit_jax.sampling import CachePlan

import tiny_models


@pytest.fixture(scope="module")
def tiny():
  return tiny_models.tiny(long_skip=True, width=64)  # as test_cache_policies: shared jits


def test_ddim_with_cfg_matches_numpy_loop(tiny):
  model, params = tiny
  base = D.Diffusion.create(D.betas_for("linear", 1000))
  y = np.array([0, 3])
  x_t = np.asarray(jax.random.normal(jax.random.key(7), (2, 4, 4, 2)), np.float64)
  got = sampling.generate(model, params, base, y, jax.random.key(1), num_steps=6,
                          cfg_scale=2.0, noise=x_t.astype(np.float32))
  # Reference: the textbook DDIM (eta = 0) written from alphas_cumprod in float64,
  # with the model called directly (cond and null class separately).
  betas = np.linspace(1e-4, 0.02, 1000)
  ac_all = np.cumprod(1.0 - betas)
  kept = [round(j * 999 / 5) for j in range(6)]
  fwd = jax.jit(lambda x, t, y, drop: model.apply({"params": params}, x, t, y,
                                                  force_drop_ids=drop))
  x = x_t
  for j in reversed(range(6)):
    t = np.full(2, kept[j])
    a, a_prev = ac_all[kept[j]], (ac_all[kept[j - 1]] if j else 1.0)
    xin = x.astype(np.float32)
    eps_c = np.asarray(fwd(xin, t, y, np.zeros(2, bool)), np.float64)[..., :2]
    eps_u = np.asarray(fwd(xin, t, y, np.ones(2, bool)), np.float64)[..., :2]
    eps = eps_u + 2.0 * (eps_c - eps_u)
    x0 = (x - math.sqrt(1 - a) * eps) / math.sqrt(a)
    x = math.sqrt(a_prev) * x0 + math.sqrt(1 - a_prev) * eps
  np.testing.assert_allclose(got, x, rtol=1e-4, atol=1e-4)


def test_cfg_needs_null_class():
  model = models.create("SkipDiT-Tiny/2", input_size=4, in_channels=1, num_classes=3,
                        depth=2, hidden_size=16, num_heads=2, class_dropout_prob=0.0)
  with pytest.raises(ValueError, match="sample.cfg_scale"):
    sampling.generate(model, None, D.Diffusion.create(D.betas_for("linear", 100)),
                      [0], jax.random.key(0), num_steps=2, cfg_scale=2.0)


def _ts(n, total=1000):
  return [round(j * (total - 1) / (n - 1)) for j in range(n)][::-1]


@pytest.mark.parametrize("n,ideal", [(2, 1.87), (3, 2.63), (4, 3.29)])
def test_ideal_speedup_matches_the_published_figures(n, ideal):
  """REFERENCE §4's figures for L = 28, k = 1 (given to 2 places)."""
  plan = CachePlan.create("skip_cache", timesteps=_ts(60), depth=28, long_skip=True,
                          interval=n, k=1)
  assert abs(plan.ideal_speedup - ideal) <= 0.005
  assert plan.actions[:n + 1] == ("full",) + ("cached",) * (n - 1) + ("full",)


def test_plan_window_and_costs():
  ts = [900, 800, 700, 600, 500, 400, 300, 200, 100, 0]
  plan = CachePlan.create("skip_cache", timesteps=ts, depth=12, long_skip=True,
                          interval=3, k=2, window=(100, 700))
  # Outside [100, 700) every step is full; inside, two cached after each full step.
  assert plan.actions == ("full", "full", "full", "cached", "cached", "full", "cached",
                          "cached", "full", "full")
  assert plan.cost == tuple(12 if a == "full" else 4 for a in plan.actions)
  assert plan.ideal_speedup == pytest.approx(120 / (6 * 12 + 4 * 4))
  assert "ideal speedup" in sampling.describe(plan)
  d = CachePlan.create("delta_dit", timesteps=ts, depth=12, long_skip=False,
                       interval=2, delta_switch_t=500)
  assert d.delta_blocks == 10 and d.variants == ("front", "rear")
  assert d.actions[1] == "rear" and d.actions[7] == "front"


@pytest.mark.parametrize("kwargs,field", [
    (dict(interval=0), "sample.cache.interval"),
    (dict(interval=2, k=6), "sample.cache.k"),
    (dict(interval=2, k=0), "sample.cache.k"),
    (dict(interval=2, window=(700, 50)), "sample.cache.window"),
    (dict(interval=2, window=(300, 300)), "sample.cache.window"),
    (dict(interval=2, window=(10, 20)), "sample.cache.window"),  # holds no step
    (dict(interval=2, long_skip=False), "model.long_skip"),
    (dict(interval=2, policy="fast"), "sample.cache.policy"),
    (dict(interval=2, policy="deep_cache"), "deep_cache"),
    (dict(interval=2, policy="skip_cache_forecast", forecast_order=3),
     "sample.cache.forecast_order"),
    (dict(interval=2, policy="delta_dit", delta_blocks=12), "sample.cache.delta_blocks"),
])
def test_plan_validation_names_the_field(kwargs, field):
  args = dict(policy="skip_cache", timesteps=_ts(10), depth=12, long_skip=True)
  args.update(kwargs)
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    CachePlan.create(args.pop("policy"), **args)


def test_forecast_weights_extrapolate_polynomials_exactly():
  from skipdit_jax.sampling.policies import forecast_weights
  ts = [950, 900, 850, 700, 650, 600, 400, 300]
  acts = ["full", "full", "cached", "full", "cached", "cached", "full", "cached"]
  for order in (0, 1, 2):
    w = forecast_weights(ts, acts, order).astype(np.float64)
    f = lambda t: 3.0 - 0.01 * t + (2e-5 * t * t if order == 2 else 0.0)
    if order == 0:
      f = lambda t: 3.0
    hist = []
    for s, (a, t) in enumerate(zip(ts, acts and ts)):
      if acts[s] == "full":
        hist = ([f(t)] + hist)[: order + 1]
        assert not w[s].any()
      else:
        pred = float(w[s, :len(hist)] @ np.array(hist))
        # The first cached step has 2 nodes, so a quadratic is not yet exact there.
        exact = len(hist) >= order + 1
        if exact:
          assert pred == pytest.approx(f(t), rel=1e-5)
