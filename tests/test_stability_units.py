"""The stability analyses on Latte (units = spatial+temporal pairs): the per-unit spectral
norm against a dense Jacobian SVD of a unit written out from the module's own blocks, and
the step-similarity (Figure 1a) features against a direct forward pass."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tiny_models
from skipdit_jax import diffusion as D
from skipdit_jax import models
from skipdit_jax.eval import stability
from skipdit_jax.models.latte import temp_embed_table
from skipdit_jax.sampling import SolverConfig, get_sampler, make_plan


def _tiny_latte(long_skip: bool, depth: int = 4):
  """2 pairs (4 blocks; SkipLatte: 1 fusion), 3 frames of 4x4x1, width 8, patch 2."""
  m = models.create("SkipLatte-Tiny/2" if long_skip else "Latte-Tiny/2", input_size=4,
                    in_channels=1, num_classes=3, num_frames=3, depth=depth, hidden_size=8,
                    num_heads=2, learn_sigma=False)
  return m, tiny_models.random_params(m, seed=3)


def _inputs(m, n=2):
  x = jnp.asarray(np.random.default_rng(2).normal(size=(n,) + m.sample_shape), jnp.float32)
  return x, jnp.array([10, 700][:n]), jnp.array([0, 2][:n])


def _pair_by_hand(mod, h, c, u, skip):
  """Pair u written out from its blocks (not run_blocks): [fusion with skip], spatial block
  2u, [pair 0: plus the (F, D) frame table], temporal block 2u+1."""
  if skip is not None:
    h = mod.skip_fusions[0](h, skip)
  h = mod.blocks[2 * u](h, c)
  if u == 0:
    h = h + jnp.asarray(temp_embed_table(mod.hidden_size, mod.num_frames))[:, None, :]
  return mod.blocks[2 * u + 1](h, c)


@pytest.mark.parametrize("long_skip", [True, False])
def test_unit_spectral_norm_matches_dense_jacobian_svd(long_skip):
  m, p = _tiny_latte(long_skip)
  x, t, y = _inputs(m)
  got = stability.block_spectral_norms(m, p, x, t, y, num_iters=300)
  assert got["block"] == [0, 1] and got["unit"] == "spatial+temporal pair"
  h0, c = m.apply({"params": p}, x, t, y, method="embed")
  h1 = m.apply({"params": p}, h0, c, 0, None, method=_pair_by_hand)  # pair 0's output
  # Pair 0 maps h0; pair 1 maps h1 and, with long skips, fuses pair 0's output (held fixed).
  for u, (h, skip) in enumerate([(h0, None), (h1, h1 if long_skip else None)]):
    f = lambda hh: m.apply({"params": p}, hh, c, u, skip, method=_pair_by_hand)
    n, per = h.shape[0], h[0].size
    # Samples do not interact: the per-sample diagonal blocks hold the whole Jacobian.
    jac = np.asarray(jax.jacobian(f)(h), np.float64).reshape(n, per, n, per)
    want = [np.linalg.svd(jac[i, :, i, :], compute_uv=False)[0] for i in range(n)]
    assert got["max"][u] == pytest.approx(max(want), rel=1e-4), u
    assert got["mean"][u] == pytest.approx(np.mean(want), rel=1e-4), u


@pytest.mark.parametrize("long_skip", [True, False])
def test_step_similarity_on_latte(long_skip):
  m, p = _tiny_latte(long_skip, depth=8 if long_skip else 4)  # skip_cache: k=1 < 4/2
  diff = D.Diffusion.create(D.betas_for("linear", 1000))
  labels, rng = jnp.array([0, 1]), jax.random.key(5)
  out = stability.step_similarity(m, p, diff, labels, rng, num_steps=5, k=1,
                                  policy=stability.feature_policy(m), interval=1)
  assert out["model"] == ("Skip-Latte" if long_skip else "Latte")
  np.testing.assert_allclose(out["cached_vs_uncached"], 1.0, atol=1e-6)
  # The recorded features are the hidden state entering unit L-k of a direct forward of
  # the step's x_t, and `consecutive` is their cosine (numpy float64, written out).
  spaced = D.respace(diff, 5)
  plan = make_plan(m, spaced, stability.feature_policy(m), interval=1, k=1)
  noise_key, step_key = jax.random.split(rng)
  x = jax.random.normal(noise_key, (2,) + m.sample_shape, jnp.float32)
  rec = stability.record_trajectory(get_sampler(m, spaced, plan, SolverConfig()), p, x,
                                    labels, step_key)

  def deep(mod, xt, t, yy):
    h, c = mod.embed(xt, t, yy)
    return mod.run_blocks(h, c, (), 0, mod.num_units - 1)[0]
  for s, t in enumerate(plan.timesteps):
    want = m.apply({"params": p}, jnp.asarray(rec["x"][s]), jnp.full((2,), t), labels,
                   method=deep)
    np.testing.assert_allclose(rec["feature"][s], np.asarray(want), rtol=1e-4, atol=1e-5)
  f = [np.asarray(v, np.float64).reshape(2, -1) for v in rec["feature"]]
  want = [np.mean([a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(f[s], f[s - 1])])
          for s in range(1, len(f))]
  np.testing.assert_allclose(out["consecutive"], want, rtol=1e-6)
