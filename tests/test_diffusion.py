"""Tests for skipdit_jax.diffusion against float64 numpy written from the formulas."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import integrate, stats

from skipdit_jax import diffusion as D

T = 1000
SHAPE = (4, 4, 4, 3)  # N, H, W, C


def _rng(seed=0):
  return np.random.default_rng(seed)


def _ref_linear(n):
  scale = 1000.0 / n
  return np.linspace(1e-4 * scale, 0.02 * scale, n)


def _ref_kept(num, k):
  """Evenly spaced respacing with one section, as ADM: round(pos) with pos += (num-1)/(k-1)
  accumulated in float (tests/test_respacing.py checks every count against ADM)."""
  stride, pos, out = (num - 1) / (k - 1), 0.0, []
  for _ in range(k):
    out.append(round(pos))
    pos += stride
  return np.array(out)


def _col(a, ndim=len(SHAPE)):
  return a.reshape((-1,) + (1,) * (ndim - 1))


def _close(got, want, rtol=1e-5, atol=1e-5):
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=atol)


# --- schedules and tables ----------------------------------------------------

def test_linear_betas_known_values():
  b = D.betas_for("linear", T)
  assert b.dtype == np.float64 and b.shape == (T,)
  assert b[0] == pytest.approx(1e-4, abs=1e-15)
  assert b[-1] == pytest.approx(0.02, abs=1e-15)
  np.testing.assert_allclose(b, _ref_linear(T), rtol=1e-14)
  b250 = D.betas_for("linear", 250)  # scaled by 1000/250
  assert b250[0] == pytest.approx(4e-4) and b250[-1] == pytest.approx(0.08)


def test_cosine_betas_follow_alpha_bar():
  """Nichol & Dhariwal eq. 17: alpha_bar(t) = f(t) / f(0) is the cumulative product of
  (1 - beta); the 0.999 cap binds only at the last step, where f reaches 0."""
  n = 1000
  f = lambda s: np.cos((s + 0.008) / 1.008 * np.pi / 2) ** 2
  b = D.betas_for("cosine", n)
  assert b[-1] == 0.999 and np.all(b[:-1] < 0.999)
  t = np.arange(1, n)  # alpha_bar after steps 1 .. n-1 (uncapped)
  np.testing.assert_allclose(np.cumprod(1 - b)[:-1], f(t / n) / f(0.0), rtol=1e-10)


@pytest.mark.parametrize("name", ["Linear", "quadratic", ""])
def test_bad_schedule_name_errors(name):
  with pytest.raises(ValueError, match=r"diffusion\.schedule") as e:
    D.betas_for(name, T)
  assert "linear" in str(e.value) and "cosine" in str(e.value)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_snr_shift_divides_every_timesteps_snr(schedule):
  """SNR = a / (1 - a) from the tables, against the unshifted schedule in float64."""
  base = np.cumprod(1.0 - D.betas_for(schedule, 1000))
  for shift in (2.0, 8.0):
    a = D.Diffusion.create(D.betas_for(schedule, 1000, snr_shift=shift)).alphas_cumprod
    # the cap at 0.999 (cosine's last steps) is the one place the ratio may differ
    ok = slice(None, -3) if schedule == "cosine" else slice(None)
    np.testing.assert_allclose((a / (1 - a))[ok], (base / (1 - base))[ok] / shift, rtol=1e-9)
  np.testing.assert_array_equal(D.betas_for(schedule, 1000, snr_shift=1.0),
                                D.betas_for(schedule, 1000))


@pytest.mark.parametrize("shift", [0.5, float("nan"), True, "8"])
def test_bad_snr_shift_names_the_field(shift):
  with pytest.raises(ValueError, match="diffusion.snr_shift"):
    D.betas_for("linear", 1000, snr_shift=shift)


def test_bad_num_steps_and_betas_error():
  with pytest.raises(ValueError, match="num_train_steps"):
    D.betas_for("linear", 0)
  with pytest.raises(ValueError, match="open interval"):
    D.Diffusion.create(np.array([0.1, 1.0]))


def test_tables_match_numpy():
  b = _ref_linear(T)
  d = D.Diffusion.create(D.betas_for("linear", T))
  a = 1 - b
  ac = np.array([np.prod(a[: i + 1]) for i in range(T)])  # product, not cumprod
  ac_prev = np.concatenate([[1.0], ac[:-1]])
  pv = b * (1 - ac_prev) / (1 - ac)
  np.testing.assert_allclose(d.alphas_cumprod, ac, rtol=1e-12)
  np.testing.assert_allclose(d.alphas_cumprod_prev, ac_prev, rtol=1e-12)
  np.testing.assert_allclose(d.posterior_variance, pv, rtol=1e-10)
  assert d.posterior_variance[0] == 0.0
  np.testing.assert_allclose(d.posterior_log_variance_clipped[1:], np.log(pv[1:]),
                             rtol=1e-10)
  assert d.posterior_log_variance_clipped[0] == pytest.approx(np.log(pv[1]))
  np.testing.assert_array_equal(d.timestep_map, np.arange(T))
  assert d.num_timesteps == T
  with pytest.raises(ValueError):
    d.betas[0] = 0.5  # read-only tables


def test_diffusion_is_hashable_static_arg():
  d1 = D.Diffusion.create(D.betas_for("linear", 100))
  d2 = D.Diffusion.create(D.betas_for("linear", 100))
  d3 = D.Diffusion.create(D.betas_for("cosine", 100))
  assert d1 == d2 and hash(d1) == hash(d2) and d1 != d3
  x = jnp.ones((2, 2, 2, 1))
  t = jnp.array([0, 99])
  f = jax.jit(D.q_sample, static_argnums=0)
  _close(f(d1, x, t, x), np.asarray(D.q_sample(d1, x, t, x)), rtol=1e-6)


# --- respacing -----------------------------------------------------------------

def test_respace_even_50():
  base = D.Diffusion.create(D.betas_for("linear", T))
  r = D.respace(base, 50)
  kept = _ref_kept(T, 50)
  np.testing.assert_array_equal(r.timestep_map, kept)
  assert r.num_timesteps == 50 and kept[0] == 0 and kept[-1] == 999
  ac_ref = np.cumprod(1 - _ref_linear(T))[kept]
  np.testing.assert_allclose(r.alphas_cumprod, ac_ref, rtol=1e-12)
  np.testing.assert_allclose(r.betas, 1 - ac_ref / np.concatenate([[1.0], ac_ref[:-1]]),
                             rtol=1e-10)


def test_respace_ddim_sections_and_composition():
  base = D.Diffusion.create(D.betas_for("linear", T))
  np.testing.assert_array_equal(D.respace(base, "ddim50").timestep_map,
                                np.arange(0, T, 20))
  r = D.respace(base, [10, 15, 20])  # sections of 334, 333, 333 steps
  want = np.concatenate([_ref_kept(334, 10), 334 + _ref_kept(333, 15),
                         667 + _ref_kept(333, 20)])
  np.testing.assert_array_equal(r.timestep_map, want)
  np.testing.assert_array_equal(D.respace(base, "10,15,20").timestep_map, want)
  rr = D.respace(D.respace(base, 250), 50)  # maps back to original steps
  np.testing.assert_array_equal(rr.timestep_map, _ref_kept(T, 250)[_ref_kept(250, 50)])
  np.testing.assert_allclose(rr.alphas_cumprod, base.alphas_cumprod[rr.timestep_map],
                             rtol=1e-12)


@pytest.mark.parametrize("spec,msg", [(0, "positive"), (1001, "cannot take"),
                                      ("ddim999", "no integer stride"),
                                      ("ddimx", "ddimK"), ("fast", "int K"),
                                      ([5, -1], "positive")])
def test_respace_errors(spec, msg):
  base = D.Diffusion.create(D.betas_for("linear", T))
  with pytest.raises(ValueError, match=msg):
    D.respace(base, spec)


# --- forward process and posterior --------------------------------------------

def test_q_sample_matches_numpy():
  d = D.Diffusion.create(D.betas_for("cosine", T))
  rng = _rng(1)
  x0, noise = rng.normal(size=SHAPE), rng.normal(size=SHAPE)
  t = np.array([0, 10, 500, 999])
  ac = np.cumprod(1 - D.betas_for("cosine", T))[t]
  want = _col(np.sqrt(ac)) * x0 + _col(np.sqrt(1 - ac)) * noise
  got = D.q_sample(d, jnp.asarray(x0, jnp.float32), jnp.asarray(t),
                   jnp.asarray(noise, jnp.float32))
  assert got.dtype == jnp.float32 and got.shape == SHAPE
  _close(got, want)


def test_posterior_matches_bayes():
  """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0): a product of Gaussians."""
  d = D.respace(D.Diffusion.create(D.betas_for("linear", T)), 100)
  rng = _rng(2)
  x0, xt = rng.normal(size=SHAPE), rng.normal(size=SHAPE)
  t = np.array([1, 5, 50, 99])
  ac_all = np.cumprod(1 - _ref_linear(T))[_ref_kept(T, 100)]
  a, a_prev = ac_all[t], ac_all[t - 1]
  alpha = a / a_prev  # one respaced step
  prec = 1 / (1 - a_prev) + alpha / (1 - alpha)
  var = 1 / prec
  mean = _col(var) * (_col(np.sqrt(a_prev) / (1 - a_prev)) * x0
                      + _col(np.sqrt(alpha) / (1 - alpha)) * xt)
  m, v, lv = D.q_posterior_mean_variance(d, jnp.asarray(x0, jnp.float32),
                                         jnp.asarray(xt, jnp.float32), jnp.asarray(t))
  assert m.shape == v.shape == lv.shape == SHAPE
  _close(m, mean)
  _close(v, np.broadcast_to(_col(var), SHAPE), rtol=1e-5, atol=0)
  _close(lv, np.broadcast_to(_col(np.log(var)), SHAPE), rtol=1e-5)
  # At t = 0 the posterior collapses onto x_0.
  m0, v0, _ = D.q_posterior_mean_variance(d, jnp.asarray(x0, jnp.float32),
                                          jnp.asarray(xt, jnp.float32), jnp.zeros(4, int))
  _close(m0, x0)
  assert float(jnp.max(v0)) == 0.0


# --- Gaussian utilities ----------------------------------------------------------

def test_normal_kl_closed_form_and_integral():
  rng = _rng(3)
  m1, m2 = rng.normal(size=10), rng.normal(size=10)
  lv1, lv2 = rng.uniform(-3, 1, 10), rng.uniform(-3, 1, 10)
  s1, s2 = np.exp(lv1 / 2), np.exp(lv2 / 2)
  want = np.log(s2 / s1) + (s1 ** 2 + (m1 - m2) ** 2) / (2 * s2 ** 2) - 0.5
  _close(D.normal_kl(*(jnp.asarray(a, jnp.float32) for a in (m1, lv1, m2, lv2))), want)
  p, q = stats.norm(0.3, 0.7), stats.norm(-0.2, 1.3)
  numeric, _ = integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), -15, 15)
  got = D.normal_kl(0.3, 2 * math.log(0.7), -0.2, 2 * math.log(1.3))
  assert float(got) == pytest.approx(numeric, rel=1e-5)


def test_approx_cdf_close_to_exact():
  x = np.linspace(-6, 6, 1001)
  _close(D.approx_standard_normal_cdf(jnp.asarray(x, jnp.float32)), stats.norm.cdf(x),
         rtol=0, atol=2e-4)


def test_discretized_log_likelihood_vs_cdf_difference():
  rng = _rng(4)
  x = np.arange(256) / 127.5 - 1.0  # every 8-bit value, including -1 and 1
  log_scales = rng.uniform(np.log(0.002), np.log(0.02), 256)
  s = np.exp(log_scales)
  means = x + rng.uniform(-0.5, 0.5, 256) * s  # keeps every bin's mass well above 0
  plus = stats.norm.cdf((x - means + 1 / 255) / s)
  minus = stats.norm.cdf((x - means - 1 / 255) / s)
  want = np.log(np.where(x < -0.999, plus, np.where(x > 0.999, 1 - minus, plus - minus)))
  got = D.discretized_gaussian_log_likelihood(
      *(jnp.asarray(a, jnp.float32) for a in (x, means, log_scales)))
  # The tanh CDF approximation is good to ~2e-4 absolute; bins here hold >= 0.1 mass.
  assert np.exp(want).min() > 0.1
  _close(got, want, rtol=0, atol=2e-3)
  # The bins tile the real line, so one Gaussian's probabilities over all 256 values sum to 1.
  one = D.discretized_gaussian_log_likelihood(jnp.asarray(x, jnp.float32), 0.1, -2.0)
  assert float(jnp.sum(jnp.exp(one))) == pytest.approx(1.0, abs=1e-4)


# --- model-facing terms ---------------------------------------------------------

def _resp50():
  d = D.respace(D.Diffusion.create(D.betas_for("linear", T)), 50)
  ac = np.cumprod(1 - _ref_linear(T))[_ref_kept(T, 50)]
  return d, ac, np.concatenate([[1.0], ac[:-1]])


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_step_matches_numpy(eta):
  d, ac, ac_prev = _resp50()
  rng = _rng(5)
  xt, eps, v, noise = (rng.normal(size=SHAPE) for _ in range(4))
  t = np.array([0, 1, 25, 49])
  a, ap = _col(ac[t]), _col(ac_prev[t])
  x0 = (xt - np.sqrt(1 - a) * eps) / np.sqrt(a)
  sigma = eta * np.sqrt((1 - ap) / (1 - a)) * np.sqrt(1 - a / ap)
  want = np.sqrt(ap) * x0 + np.sqrt(1 - ap - sigma ** 2) * eps + sigma * noise
  assert np.all(sigma[0] == 0)
  out = jnp.asarray(np.concatenate([eps, v], -1), jnp.float32)  # v must be ignored
  got = D.ddim_step(d, out, jnp.asarray(xt, jnp.float32), jnp.asarray(t),
                    jnp.asarray(noise, jnp.float32), eta=eta, learn_sigma=True)
  _close(got, want, rtol=1e-4, atol=1e-4)


def test_ddpm_step_learned_sigma_matches_numpy():
  d, ac, ac_prev = _resp50()
  rng = _rng(6)
  xt, eps, noise = (rng.normal(size=SHAPE) for _ in range(3))
  v = rng.uniform(-1, 1, SHAPE)
  t = np.array([0, 3, 30, 49])
  a, ap = _col(ac[t]), _col(ac_prev[t])
  alpha = a / ap
  beta = 1 - alpha
  mean = (xt - beta / np.sqrt(1 - a) * eps) / np.sqrt(alpha)  # Ho et al. eq. 11
  pv_all = (1 - ac / ac_prev) * (1 - ac_prev) / (1 - ac)
  log_pv = _col(np.log(np.where(t == 0, pv_all[1], pv_all[t])))
  frac = (v + 1) / 2
  log_var = frac * np.log(beta) + (1 - frac) * log_pv
  want = mean + _col(t > 0) * np.exp(0.5 * log_var) * noise
  got = D.ddpm_step(d, jnp.asarray(np.concatenate([eps, v], -1), jnp.float32),
                    jnp.asarray(xt, jnp.float32), jnp.asarray(t),
                    jnp.asarray(noise, jnp.float32), learn_sigma=True)
  _close(got, want, rtol=1e-4, atol=1e-4)
  # Fixed ("small") variance: the posterior variance itself.
  got = D.ddpm_step(d, jnp.asarray(eps, jnp.float32), jnp.asarray(xt, jnp.float32),
                    jnp.asarray(t), jnp.asarray(noise, jnp.float32), learn_sigma=False)
  _close(got, mean + _col(t > 0) * np.exp(0.5 * log_pv) * noise, rtol=1e-4, atol=1e-4)
  # Fixed "large" variance: beta_t, with the posterior variance at t = 0.
  large = D.p_mean_variance(d, jnp.asarray(eps, jnp.float32), jnp.asarray(xt, jnp.float32),
                            jnp.asarray(t), learn_sigma=False, fixed_variance="large")
  want_var = np.where(_col(t == 0), pv_all[1], beta)
  _close(large["variance"], np.broadcast_to(want_var, SHAPE), rtol=1e-5, atol=0)


def test_p_mean_variance_channel_mismatch_errors():
  d, _, _ = _resp50()
  x = jnp.zeros(SHAPE)
  with pytest.raises(ValueError, match="learn_sigma"):
    D.p_mean_variance(d, x, x, jnp.zeros(4, int), learn_sigma=True)


def _loss_inputs(seed=7, n=T):
  d = D.Diffusion.create(D.betas_for("linear", n))
  rng = _rng(seed)
  x0 = np.clip(rng.normal(0, 0.5, SHAPE), -1, 1)
  noise = rng.normal(size=SHAPE)
  t = np.array([0, 1, n // 2, n - 1])
  ac = np.cumprod(1 - _ref_linear(n))[t]
  xt = _col(np.sqrt(ac)) * x0 + _col(np.sqrt(1 - ac)) * noise
  out = np.concatenate([rng.normal(size=SHAPE), rng.uniform(-1, 1, SHAPE)], -1)
  return d, x0, noise, t, xt, out


def _ref_vb_bits(b, x0, xt, t, eps, v):
  """Per-example VLB in bits: decoder NLL at t == 0, KL(q || p) otherwise."""
  _col = lambda a: a.reshape((-1,) + (1,) * (x0.ndim - 1))  # noqa: E731  (images or clips)
  ac = np.cumprod(1 - b)
  ac_prev = np.concatenate([[1.0], ac[:-1]])
  pv = b * (1 - ac_prev) / (1 - ac)
  log_pv = _col(np.log(np.concatenate([[pv[1]], pv[1:]]))[t])
  a, ap, bt = _col(ac[t]), _col(ac_prev[t]), _col(b[t])
  true_mean = (np.sqrt(ap) * bt * x0 + np.sqrt(1 - bt) * (1 - ap) * xt) / (1 - a)
  model_mean = (xt - bt / np.sqrt(1 - a) * eps) / np.sqrt(1 - bt)
  frac = (v + 1) / 2
  lv = frac * np.log(bt) + (1 - frac) * log_pv
  kl = 0.5 * (-1 + lv - log_pv + np.exp(log_pv - lv)
              + (true_mean - model_mean) ** 2 * np.exp(-lv))
  s = np.exp(0.5 * lv)
  hi = stats.norm.cdf((x0 - model_mean + 1 / 255) / s)
  lo = stats.norm.cdf((x0 - model_mean - 1 / 255) / s)
  p = np.where(x0 < -0.999, hi, np.where(x0 > 0.999, 1 - lo, hi - lo))
  per_dim = np.where(_col(t == 0), -np.log(np.maximum(p, 1e-300)), kl)
  bits = per_dim.mean(axis=tuple(range(1, x0.ndim))) / np.log(2)
  return bits


@pytest.mark.parametrize("n", [T, 100])
def test_training_losses_values(n):
  d, x0, noise, t, xt, out = _loss_inputs(7, n)
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  got = D.training_losses(d, f32(out), f32(x0), f32(xt), jnp.asarray(t), f32(noise),
                          learn_sigma=True)
  c = SHAPE[-1]
  eps, v = out[..., :c], out[..., c:]
  mse = np.mean((noise - eps) ** 2, axis=(1, 2, 3))
  _close(got["mse"], mse, rtol=1e-5)
  # "Rescaled" hybrid: the VLB is weighted by num_timesteps / 1000.
  want_vb = _ref_vb_bits(_ref_linear(n), x0, xt, t, eps, v) * n / 1000
  _close(got["vb"][1:], want_vb[1:], rtol=2e-4, atol=1e-5)
  # The decoder term uses the tanh CDF approximation; scipy's exact CDF differs slightly.
  assert float(got["vb"][0]) == pytest.approx(want_vb[0], rel=2e-2)
  _close(got["loss"], np.asarray(got["mse"]) + np.asarray(got["vb"]), rtol=1e-6)
  plain = D.training_losses(d, f32(eps), f32(x0), f32(xt), jnp.asarray(t), f32(noise),
                            learn_sigma=False)
  _close(plain["loss"], mse, rtol=1e-5)
  assert float(jnp.max(jnp.abs(plain["vb"]))) == 0.0


def test_rank5_clips_q_sample_and_losses_match_numpy():
  """Video batches (N, F, H, W, C): t broadcasts over frames, means run over F, H, W, C,
  and the learned-sigma output splits on the last (channel) axis."""
  shape = (4, 3, 4, 4, 2)  # N, F, H, W, C
  d = D.Diffusion.create(D.betas_for("linear", T))
  rng = _rng(11)
  x0 = np.clip(rng.normal(0, 0.5, shape), -1, 1)
  noise = rng.normal(size=shape)
  t = np.array([0, 1, 500, 999])
  ac = np.cumprod(1 - _ref_linear(T))[t]
  xt = _col(np.sqrt(ac), 5) * x0 + _col(np.sqrt(1 - ac), 5) * noise
  f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
  got_xt = D.q_sample(d, f32(x0), jnp.asarray(t), f32(noise))
  assert got_xt.shape == shape
  _close(got_xt, xt)
  eps, v = rng.normal(size=shape), rng.uniform(-1, 1, shape)
  out = np.concatenate([eps, v], -1)
  got = D.training_losses(d, f32(out), f32(x0), f32(xt), jnp.asarray(t), f32(noise),
                          learn_sigma=True)
  _close(got["mse"], np.mean((noise - eps) ** 2, axis=(1, 2, 3, 4)), rtol=1e-5)
  want_vb = _ref_vb_bits(_ref_linear(T), x0, xt, t, eps, v)
  _close(got["vb"][1:], want_vb[1:], rtol=2e-4, atol=1e-5)
  assert float(got["vb"][0]) == pytest.approx(want_vb[0], rel=2e-2)
  with pytest.raises(ValueError, match="learn_sigma"):  # a split on the wrong axis is refused
    D.training_losses(d, f32(np.concatenate([eps, v], 1)), f32(x0), f32(xt), jnp.asarray(t),
                      f32(noise), learn_sigma=True)


def test_hybrid_vb_gradient_reaches_only_variance_channels():
  d, x0, noise, t, xt, out = _loss_inputs(8)
  f32 = lambda a: jnp.asarray(a, jnp.float32)

  def vb(model_out):
    return jnp.sum(D.training_losses(d, model_out, f32(x0), f32(xt), jnp.asarray(t),
                                     f32(noise), learn_sigma=True)["vb"])

  g = np.asarray(jax.grad(vb)(f32(out)))
  c = SHAPE[-1]
  assert np.all(g[..., :c] == 0.0)
  assert np.all(np.isfinite(g)) and np.abs(g[..., c:]).sum(axis=(1, 2, 3)).min() > 0


def test_sample_t_range():
  d = D.respace(D.Diffusion.create(D.betas_for("linear", T)), 10)
  t = D.sample_t(jax.random.PRNGKey(0), 512, d)
  assert t.shape == (512,) and int(t.min()) == 0 and int(t.max()) == 9
  _close(D.model_timesteps(d, t), _ref_kept(T, 10)[np.asarray(t)], rtol=0, atol=0)


# --- classifier-free guidance ---------------------------------------------------

def test_cfg_combine():
  rng = _rng(9)
  n, c = 3, 4
  out = rng.normal(size=(2 * n, 2, 2, 2 * c)).astype(np.float32)
  cond, uncond = out[:n].astype(np.float64), out[n:].astype(np.float64)
  one = D.cfg_combine(jnp.asarray(out), 1.0, learn_sigma=True)
  np.testing.assert_array_equal(np.asarray(one), out[:n])
  s = 1.5
  want = cond.copy()
  want[..., :c] = uncond[..., :c] + s * (cond[..., :c] - uncond[..., :c])
  _close(D.cfg_combine(jnp.asarray(out), s, learn_sigma=True), want)
  want3 = cond.copy()  # DiT's public sampler: guide 3 channels, rest conditional
  want3[..., :3] = uncond[..., :3] + s * (cond[..., :3] - uncond[..., :3])
  _close(D.cfg_combine(jnp.asarray(out), s, learn_sigma=True, guided_channels=3), want3)
  with pytest.raises(ValueError, match="guided_channels"):
    D.cfg_combine(jnp.asarray(out), s, learn_sigma=True, guided_channels=5)
  with pytest.raises(ValueError, match="even"):
    D.cfg_combine(jnp.asarray(out[:5]), s, learn_sigma=True)


# --- v-prediction (diffusion.prediction = "v") ------------------------------------

def test_v_prediction_reads_as_eps_and_trains_on_v():
  """A v model's output becomes eps = sqrt(a) v + sqrt(1 - a) x_t, and its loss is the MSE
  to v = sqrt(a) eps - sqrt(1 - a) x0 (numpy float64 from the definitions)."""
  n = T
  d = D.Diffusion.create(D.betas_for("linear", n), prediction="v")
  _, x0, noise, t, xt, out = _loss_inputs(11, n)
  a = _col(np.cumprod(1 - _ref_linear(n))[t])
  v_true = np.sqrt(a) * noise - np.sqrt(1 - a) * x0
  f32 = lambda z: jnp.asarray(z, jnp.float32)  # noqa: E731
  # The true v reads back as the true noise; variance channels pass through.
  c = SHAPE[-1]
  got = D.model_eps(d, f32(np.concatenate([v_true, out[..., c:]], -1)), f32(xt),
                    jnp.asarray(t), learn_sigma=True)
  _close(got[..., :c], noise, rtol=1e-4, atol=1e-4)
  _close(got[..., c:], out[..., c:].astype(np.float32), rtol=0, atol=0)
  pred = out[..., :c]
  losses = D.training_losses(d, f32(pred), f32(x0), f32(xt), jnp.asarray(t), f32(noise),
                             learn_sigma=False)
  _close(losses["mse"], np.mean((v_true - pred) ** 2, axis=(1, 2, 3)), rtol=1e-5)
  # The same output read as eps by an eps diffusion is untouched, its loss on the noise.
  e = D.Diffusion.create(D.betas_for("linear", n))
  np.testing.assert_array_equal(np.asarray(D.model_eps(e, f32(pred), f32(xt), jnp.asarray(t),
                                                       learn_sigma=False)), f32(pred))


def test_v_prediction_hybrid_vb_uses_the_eps_it_implies():
  """With learned sigma, the VLB term of a v model equals the eps model's VLB at the eps
  its v implies (the model's mean is the same function of eps)."""
  n = T
  dv = D.Diffusion.create(D.betas_for("linear", n), prediction="v")
  _, x0, noise, t, xt, out = _loss_inputs(12, n)
  c = SHAPE[-1]
  a = _col(np.cumprod(1 - _ref_linear(n))[t])
  eps = np.sqrt(a) * out[..., :c] + np.sqrt(1 - a) * xt
  want = _ref_vb_bits(_ref_linear(n), x0, xt, t, eps, out[..., c:])
  f32 = lambda z: jnp.asarray(z, jnp.float32)  # noqa: E731
  got = D.training_losses(dv, f32(out), f32(x0), f32(xt), jnp.asarray(t), f32(noise),
                          learn_sigma=True)
  _close(got["vb"][1:], want[1:], rtol=2e-4, atol=1e-5)


def test_v_prediction_ddim_step_equals_the_eps_models_step():
  """One DDIM step of a v model equals numpy's step at the eps its v implies, after
  respacing (the respaced table carries the prediction)."""
  base = D.Diffusion.create(D.betas_for("linear", T), prediction="v")
  d = D.respace(base, 50)
  assert d.prediction == "v" and d != D.respace(D.Diffusion.create(D.betas_for("linear", T)), 50)
  ac = np.cumprod(1 - _ref_linear(T))[_ref_kept(T, 50)]
  ac_prev = np.concatenate([[1.0], ac[:-1]])
  rng = _rng(13)
  xt, vout = rng.normal(size=SHAPE), rng.normal(size=SHAPE)
  t = np.array([0, 1, 25, 49])
  a, ap = _col(ac[t]), _col(ac_prev[t])
  eps = np.sqrt(a) * vout + np.sqrt(1 - a) * xt
  x0 = (xt - np.sqrt(1 - a) * eps) / np.sqrt(a)
  want = np.sqrt(ap) * x0 + np.sqrt(1 - ap) * eps
  from skipdit_jax.sampling import step_fns
  solver = step_fns.SolverConfig(sampler="ddim", eta=0.0, cfg_scale=1.0)
  for i in (1, 25, 49):
    rows = t == i
    got = step_fns.solve(d, solver, False, jnp.asarray(vout[rows], jnp.float32),
                         jnp.asarray(xt[rows], jnp.float32), jnp.int32(i), jax.random.PRNGKey(0))
    _close(got, want[rows], rtol=1e-3, atol=1e-3)


def test_bad_prediction_names_the_field():
  with pytest.raises(ValueError, match="diffusion.prediction"):
    D.Diffusion.create(D.betas_for("linear", 10), prediction="x0")
