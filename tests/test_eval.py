"""Tests of the evaluation tools against independent computations (float64 numpy,
explicit Jacobians, written-out definitions, constructed point sets)."""
import itertools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skipdit_jax import diffusion as D
from skipdit_jax import models
from skipdit_jax.eval import frechet, kid, precision_recall, stability


def _spd(rng, f):
  a = rng.normal(size=(f, f))
  return a @ a.T / f + 0.1 * np.eye(f)


def _fd_by_eigh(mu1, s1, mu2, s2):
  # Tr((S1 S2)^½) = Tr((S1^½ S2 S1^½)^½): symmetric, so eigh replaces sqrtm entirely.
  w, v = np.linalg.eigh(s1)
  r1 = (v * np.sqrt(w)) @ v.T
  m = np.linalg.eigvalsh(r1 @ s2 @ r1)
  return float(np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
               - 2 * np.sum(np.sqrt(np.clip(m, 0, None))))


def test_frechet_matches_independent_float64():
  rng = np.random.default_rng(0)
  for f in (1, 3, 16):
    mu1, mu2 = rng.normal(size=f), rng.normal(size=f)
    s1, s2 = _spd(rng, f), _spd(rng, f)
    got = frechet.frechet_distance(mu1, s1, mu2, s2)
    np.testing.assert_allclose(got, _fd_by_eigh(mu1, s1, mu2, s2), rtol=1e-9, atol=1e-9)


def test_frechet_known_values_and_features():
  # 1-D: (m1-m2)² + (σ1-σ2)²; diagonal: Σ (√a-√b)² + |Δμ|².
  assert frechet.frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(5.0)
  a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 16.0])
  got = frechet.frechet_distance(np.zeros(3), np.diag(a), np.ones(3), np.diag(b))
  assert got == pytest.approx(3.0 + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))
  x = np.random.default_rng(1).normal(size=(200, 5))
  assert frechet.frechet_distance_features(x, x) == pytest.approx(0.0, abs=1e-8)
  mu, sig = frechet.feature_stats(x)
  np.testing.assert_allclose(sig, np.cov(x.T), rtol=1e-12)
  with pytest.raises(ValueError, match="mu shapes differ"):
    frechet.frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_stats_npz_round_trip(tmp_path):
  rng = np.random.default_rng(2)
  mu, sig = rng.normal(size=7), _spd(rng, 7)
  path = str(tmp_path / "ref" / "stats.npz")
  frechet.save_stats(path, mu, sig)
  with np.load(path) as z:  # the plain format others read: keys mu and sigma
    assert set(z.files) == {"mu", "sigma"}
  mu2, sig2 = frechet.load_stats(path)
  np.testing.assert_array_equal(mu, mu2)
  np.testing.assert_array_equal(sig, sig2)
  np.savez(tmp_path / "bad.npz", mean=mu)
  with pytest.raises(ValueError, match="lacks keys"):
    frechet.load_stats(str(tmp_path / "bad.npz"))


def test_kid_matches_written_out_definition():
  rng = np.random.default_rng(3)
  x, y = rng.normal(size=(6, 4)), rng.normal(0.5, 1.0, size=(5, 4))
  k = lambda a, b: (float(np.dot(a, b)) / 4 + 1.0) ** 3
  m, n = len(x), len(y)
  xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
  yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
  xy = sum(k(a, b) for a in x for b in y) / (m * n)
  want = xx + yy - 2 * xy
  assert kid.mmd2_unbiased(x, y) == pytest.approx(want, rel=1e-12)
  # One subset as large as the smaller set; MMD is permutation invariant, so with
  # equal-size sets the subset estimate is the definition itself.
  y6 = rng.normal(0.5, 1.0, size=(6, 4))
  mean, std = kid.kid(x, y6, num_subsets=1, subset_size=100)
  assert mean == pytest.approx(kid.mmd2_unbiased(x, y6), rel=1e-12) and std == 0.0


def test_precision_recall_constructed_sets():
  real = np.arange(10, dtype=float)[:, None]          # k=1 radii: 1 for every point
  pr = precision_recall.precision_recall(real, real.copy(), k=1)
  assert pr == {"precision": 1.0, "recall": 1.0}
  # 0.5 lies inside the ball of 0; 100 lies in none. The two fake points are 99.5 apart,
  # so each fake ball has radius 99.5 and the fake manifold covers every real point.
  pr = precision_recall.precision_recall(real, np.array([[0.5], [100.0]]), k=1)
  assert pr == {"precision": 0.5, "recall": 1.0}
  # A tight far cluster: nothing inside the real manifold and vice versa.
  far = 50 + 0.01 * np.arange(5, dtype=float)[:, None]
  assert precision_recall.precision_recall(real, far, k=1) == {"precision": 0.0,
                                                                "recall": 0.0}


# ------------------------------------------------------------------- model analyses

def _tiny(long_skip, depth=4):
  name = "SkipDiT-Tiny/2" if long_skip else "DiT-Tiny/2"
  m = models.create(name, input_size=4, in_channels=1, num_classes=3, learn_sigma=False,
                    hidden_size=8, depth=depth, num_heads=2)
  # Random weights everywhere: a fresh adaLN-Zero model is the identity per block.
  # Shapes only, values from numpy: compiling Flax's init (threefry per leaf) costs seconds.
  shapes = jax.eval_shape(lambda k: models.init_params(m, k), jax.random.key(0))
  rng = np.random.default_rng(1)
  p = jax.tree_util.tree_map(
      lambda s: jnp.asarray(0.4 * rng.normal(size=s.shape), jnp.float32), shapes)
  return m, p


def _inputs(m, n=2):
  x = jnp.asarray(np.random.default_rng(2).normal(size=(n, m.input_size, m.input_size, 1)),
                  jnp.float32)
  return x, jnp.array([10, 700][:n]), jnp.array([0, 2][:n])


def test_block_spectral_norm_matches_explicit_jacobian():
  # Skip-DiT of depth 2 covers both kinds of block: 0 is a plain (shallow) DiT block,
  # 1 a deep block whose map includes its skip fusion.
  m, p = _tiny(True, depth=2)
  x, t, y = _inputs(m)
  got = stability.block_spectral_norms(m, p, x, t, y, num_iters=200)
  h, c = m.apply({"params": p}, x, t, y, method="embed")
  skips = ()
  for i in range(m.depth):
    f = lambda hh: m.apply({"params": p}, hh, c, skips, i, i + 1, method="run_blocks")[0]
    # The batch Jacobian (N·T·D)² is block diagonal over samples, so its top singular
    # value is the largest of the per-sample ones, which `max` reports.
    jac = np.asarray(jax.jit(jax.jacfwd(f))(h), np.float64).reshape(h.size, h.size)
    assert got["max"][i] == pytest.approx(np.linalg.svd(jac, compute_uv=False)[0],
                                          rel=2e-3), i
    h, skips = m.apply({"params": p}, h, c, skips, i, i + 1, method="run_blocks")


def test_power_iteration_on_a_linear_map():
  a = np.random.default_rng(4).normal(size=(2, 6, 6))
  f = lambda v: jnp.einsum("nij,nj->ni", jnp.asarray(a, jnp.float32), v)
  v0 = jnp.asarray(np.random.default_rng(5).normal(size=(2, 6)), jnp.float32)
  got = stability.power_iteration(f, jnp.ones((2, 6)), v0, num_iters=300)
  want = [np.linalg.svd(a[i], compute_uv=False)[0] for i in range(2)]
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-3)


@pytest.mark.parametrize("long_skip", [False, True])
def test_stability_of_a_model_against_itself_is_one(long_skip):
  # Skip-Cache needs k=1 < depth/2, so the Skip-DiT is deeper than the DiT.
  m, p = _tiny(long_skip, depth=4 if long_skip else 2)
  diff = D.Diffusion.create(D.betas_for("linear", 1000))
  out = stability.step_similarity(m, p, diff, jnp.array([0, 1]), jax.random.key(5),
                                  num_steps=6, policy=stability.feature_policy(m),
                                  interval=1)
  np.testing.assert_allclose(out["cached_vs_uncached"], 1.0, atol=1e-6)
  np.testing.assert_allclose(out["x_similarity"], 1.0, atol=1e-6)
  assert len(out["consecutive"]) == 5 and all(-1 <= v <= 1 + 1e-9 for v in out["consecutive"])
  x, t, y = _inputs(m)
  pert = stability.perturbation_similarity(m, p, x, t, y, param_scales=(0.0, 0.1),
                                           input_scales=(0.0,))
  assert pert["deep"][0] == [pytest.approx(1.0, abs=1e-6)]
  assert pert["final"][0] == [pytest.approx(1.0, abs=1e-6)]
  assert pert["final"][1][0] < 1.0 - 1e-6  # a real perturbation does move the feature


def test_cached_run_records_the_samplers_trajectory():
  from skipdit_jax.sampling import SolverConfig, get_sampler, make_plan
  m, p = _tiny(True)
  spaced = D.respace(D.Diffusion.create(D.betas_for("linear", 1000)), 6)
  plan = make_plan(m, spaced, "skip_cache", interval=3, k=1)
  s = get_sampler(m, spaced, plan, SolverConfig())
  x = jax.random.normal(jax.random.key(7), (2, 4, 4, 1))
  y, rng = jnp.array([0, 1]), jax.random.key(8)
  rec = stability.record_trajectory(s, p, x, y, rng)
  np.testing.assert_array_equal(rec["final"], np.asarray(s.sample(p, x, y, rng)))
  # Cached steps use the feature of the last full step.
  for j, a in enumerate(plan.actions):
    if a != "full":
      last = max(i for i in range(j) if plan.actions[i] == "full")
      np.testing.assert_array_equal(rec["feature"][j], rec["feature"][last])


def test_feature_net_cache_round_trip(tmp_path):
  from skipdit_jax.eval import feature_net
  spec = feature_net.FeatureNetSpec(widths=(4,), feature_dim=8, train_steps=3, batch_size=16)
  net = feature_net.load_or_train("digits", str(tmp_path), spec=spec, log=lambda m: None)
  path = feature_net.cache_path(str(tmp_path), "digits", spec)
  assert os.path.exists(path) and net.score_name == "FD-digits"
  again = feature_net.load_or_train("digits", str(tmp_path), spec=spec,
                                    log=lambda m: pytest.fail("retrained: " + m))
  x = np.random.default_rng(0).uniform(-1, 1, (5, 8, 8, 1)).astype(np.float32)
  np.testing.assert_array_equal(net.features(x), again.features(x))
  assert net.features(x).shape == (5, 8) and again.test_accuracy == net.test_accuracy


def test_eval_options_name_the_field():
  import ml_collections
  from skipdit_jax.eval import run, sample_quality
  c = ml_collections.ConfigDict({"eval": {"num_samples": 0}})
  with pytest.raises(ValueError, match="config.eval.num_samples=0"):
    run.eval_options(c)
  ref = sample_quality.Reference("FD-x", np.zeros(3), np.eye(3), None)
  with pytest.raises(ValueError, match="3"):
    sample_quality.score_features(ref, np.zeros((10, 4)))
