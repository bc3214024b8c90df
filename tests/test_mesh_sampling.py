"""Mesh sampling compiles once per (plan, shapes), shards every cache along its batch axis
and donates x and the cache (skipdit_jax/sampling/sharded.py, sampling/sampler.py).

The 8-device tests run in a child pytest (`test_under_8_fake_devices`, as in
tests/test_parallel_devices.py). Compilations are counted with JAX's own monitoring
event for backend compiles; samples are compared with the single-device sampler (a
second code path); each policy's cache layout is written out here by hand from
sampling/policies.py, not read from the code under test.
"""
import os
import sys
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from skipdit_jax import diffusion as dfn
from skipdit_jax import parallel, sampling
from skipdit_jax.sampling import sharded
from skipdit_jax.sampling.sharded import cache_batch_axes

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import parallel_common as pc  # noqa: E402

in_child = pytest.mark.skipif(jax.device_count() != pc.N_DEV,
                              reason="runs in the 8-device child process")
in_parent = pytest.mark.skipif(jax.device_count() == pc.N_DEV,
                               reason="single-device test: ran in the parent process")
BASE = dfn.Diffusion.create(dfn.betas_for("linear", 1000))
POLICIES = ("none", "skip_cache", "skip_cache_forecast", "fora", "delta_dit")
# Which axis of each cache leaf holds the (CFG-doubled) batch B, from the layouts in
# sampling/policies.py: Skip-Cache (B, T, D); the forecast's history (order+1, B, T, D);
# FORA's (attn, mlp) stacks, each (L, B, T, D); Δ-DiT's front delta, its skip states and
# rear delta, each (B, T, D).
BATCH_AXIS = {"skip_cache": 0, "skip_cache_forecast": 1, "fora": 1, "delta_dit": 0}
# (policy, N, cfg_scale, forecast_order) whose cache's batch B = N (2N under CFG) equals
# another axis: depth L = 4, the forecast's order + 1 = 2, T = 4 tokens.
COINCIDENT = [("skip_cache", 2, 1.5, 2), ("skip_cache_forecast", 2, 1.0, 1),
              ("fora", 2, 1.5, 2), ("delta_dit", 2, 1.5, 2)]


def _options(policy, order=2, cfg=1.5):
  return dict(sampler="ddim", num_steps=4, cfg_scale=cfg, policy=policy, interval=2, k=1,
              forecast_order=order)


def _sampler(model, policy, order=2, cfg=1.5):
  spaced, plan = sampling.respaced_plan(model, BASE, **_options(policy, order, cfg))
  return sampling.get_sampler(model, spaced, plan, sampling.SolverConfig(
      sampler="ddim", cfg_scale=cfg))


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _inputs(model, n):
  rng = np.random.default_rng(4)
  x = rng.standard_normal((n, model.input_size, model.input_size, model.in_channels))
  return x.astype(np.float32), (np.arange(n) % model.num_classes).astype(np.int32)


@pytest.fixture(scope="module")
def model_params():
  return pc.sampler_model_and_params()  # depth 4, so B = 4 = L = order+1 at N = 2


@pytest.mark.slow  # ~70 s of CPU: the steps compiled for 5 policies, sharded and not
def test_under_8_fake_devices():
  if jax.device_count() == pc.N_DEV:
    pytest.skip("already the 8-device process")
  pc.run_child_pytest(__file__)


@in_parent
@pytest.mark.parametrize("policy,n,cfg,order", COINCIDENT)
def test_batch_axis_found_when_batch_equals_another_axis(model_params, policy, n, cfg,
                                                         order):
  """B equals the depth, the forecast's history length or the token count: sizes alone
  cannot tell the axes apart, the construction must."""
  model, params = model_params
  x, y = _inputs(model, n)
  smp = _sampler(model, policy, order, cfg)
  shapes = jax.eval_shape(lambda p: smp.empty_cache(p, x, y), params)
  axes = cache_batch_axes(smp, params, x, y)
  leaves, ax = jax.tree.leaves(shapes), jax.tree.leaves(axes)
  assert len(ax) == len(leaves) > 0
  b = 2 * n if cfg != 1.0 else n
  for leaf, a in zip(leaves, ax):
    assert a == BATCH_AXIS[policy], (policy, leaf.shape, a)
    assert leaf.shape[a] == b
    assert b in leaf.shape[:a] + leaf.shape[a + 1:], leaf.shape  # the coincidence


@in_parent
def test_single_device_steps_donate_and_keep_the_callers_arrays(model_params):
  model, host_params = model_params
  params = jax.device_put(host_params)
  smp = _sampler(model, "skip_cache_forecast")
  x, y = _inputs(model, 2)
  x, y, rng = jnp.asarray(x), jnp.asarray(y), jax.random.key(0)
  with warnings.catch_warnings():
    warnings.filterwarnings("error", message=".*[Dd]onated")  # every donation usable
    first = np.asarray(smp.sample(params, x, y, rng))
    assert not x.is_deleted()  # `sample` copies the caller's x before donating
    np.testing.assert_array_equal(np.asarray(smp.sample(params, x, y, rng)), first)
    np.testing.assert_allclose(np.asarray(smp.sample_fused(params, x, y, rng)), first,
                               rtol=1e-5, atol=1e-5)  # one fori_loop: other fusion
    cache, xs = smp.empty_cache(params, x, y), x + 0
    i = smp.indices[0]
    x1, cache1 = smp.loop_full_step(params, xs, i, y, rng, cache)
    assert xs.is_deleted() and cache.is_deleted()
    x2 = smp.loop_cached_steps["cached"](params, x1, smp.indices[1], y, rng, cache1, smp.aux)
    assert x1.is_deleted() and not cache1.is_deleted()  # later cached steps read it
    # The public step keeps its arguments (trace.py / eval walk the plan with it).
    _, kept = smp.full_step(params, x2, i, y, rng, cache1)
    assert not x2.is_deleted() and not cache1.is_deleted()


def _placed(model, host_params, mesh):
  sh = parallel.param_shardings(model, mesh, parallel.axis_rules({"preset": "fsdp_tensor"}))
  return jax.device_put(host_params, sh), sh


def _check_cache_split_and_donated(smp, mesh, params, x, y, policy, b):
  """The sharded sampler's cache, as born and as its full step returns it: every leaf
  has its batch axis (of size b) on (data, fsdp) and nothing else split; the full step
  donated x and the old cache."""
  batch = NamedSharding(mesh, P(("data", "fsdp")))
  xd, yd = jax.device_put(x, batch), jax.device_put(y, batch)
  rng = jax.device_put(jax.random.PRNGKey(0), NamedSharding(mesh, P()))
  cache = smp.empty_cache(params, xd, yd)
  born = [(a.shape, a.sharding) for a in jax.tree.leaves(cache)]
  _, new = smp.loop_full_step(params, xd, smp.indices[0], yd, rng, cache)
  assert xd.is_deleted() and all(a.is_deleted() for a in jax.tree.leaves(cache))
  axis = BATCH_AXIS[policy]
  want = NamedSharding(mesh, P(*([None] * axis), ("data", "fsdp")))
  leaves = born + [(a.shape, a.sharding) for a in jax.tree.leaves(new)]
  assert len(leaves) >= 2
  for shape, sharding in leaves:
    assert shape[axis] == b, (policy, shape)
    assert sharding.is_equivalent_to(want, len(shape)), (policy, shape, sharding.spec)
    assert tuple(sharding.spec)[axis] == ("data", "fsdp")


@in_child
@pytest.mark.parametrize("policy", POLICIES)
def test_second_call_compiles_nothing_and_matches_single_device(model_params, policy):
  """main's `_generate` twice (a fresh sharding tree each call, as main builds it): the
  second call compiles nothing, so main's `sample*_steady_s` times sampling alone. The
  memoised sampler's cache is split along its batch axis and donated by the full step."""
  from skipdit_jax import main
  from skipdit_jax.sampling.sharded import sharded_sampler
  model, host_params = model_params
  mesh = parallel.make_mesh((2, 4, 1))
  params, sh = _placed(model, host_params, mesh)
  labels = (np.arange(8) % model.num_classes).astype(np.int32)
  opts = _options(policy)
  with warnings.catch_warnings():
    warnings.filterwarnings("error", message=".*[Dd]onated")  # every donation usable
    with pc.CountCompiles() as first_c:
      first, _ = main._generate(model, params, BASE, labels, 5, 8, **opts)
    with pc.CountCompiles() as second_c:
      second, _ = main._generate(model, params, BASE, labels, 5, 8, **opts)
    assert first_c.names, "the counter saw no compilation on the first call"
    assert second_c.names == [], (policy, second_c.names)
    np.testing.assert_array_equal(second, first)
    if policy != "none":
      x, y = _inputs(model, 8)
      with pc.CountCompiles() as again:  # the same sampler: found by value, compiled
        smp = sharded_sampler(_sampler(model, policy), mesh, sh).for_batch(params, x, y)
        _check_cache_split_and_donated(smp, mesh, params, x, y, policy, 16)
      assert again.names == [], again.names
  ref = sampling.generate(model, host_params, BASE, labels,
                          jax.random.fold_in(jax.random.PRNGKey(5), 0), **opts)
  assert np.std(ref) > 0.1 and _rel(first, ref) < 1e-5, (policy, _rel(first, ref))


@in_child
@pytest.mark.parametrize("case", [c for c in COINCIDENT if c[0] in ("fora",
                                                                      "skip_cache_forecast")])
def test_cache_split_along_batch_when_batch_equals_another_axis(model_params, case):
  """B = N (2N under CFG) equal to FORA's depth or the forecast's history length, on a
  2-device mesh: still the batch axis is the split one."""
  policy, n, cfg, order = case
  model, host_params = model_params
  mesh = parallel.make_mesh((2, 1, 1), jax.devices()[:2])
  params, sh = _placed(model, host_params, mesh)
  x, y = _inputs(model, n)
  smp = sharded.ShardedSampler(_sampler(model, policy, order, cfg), mesh,
                                sh).for_batch(params, x, y)
  with warnings.catch_warnings():
    warnings.filterwarnings("error", message=".*[Dd]onated")
    _check_cache_split_and_donated(smp, mesh, params, x, y, policy,
                                   2 * n if cfg != 1.0 else n)
