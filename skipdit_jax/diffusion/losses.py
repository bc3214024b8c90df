"""The training objective: MSE on eps plus (with learned sigma) the VLB term."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from skipdit_jax.diffusion.gaussian import (discretized_gaussian_log_likelihood,
                                            normal_kl)
from skipdit_jax.diffusion.process import (gather, model_eps, p_mean_variance,
                                           q_posterior_mean_variance, split_model_out)
from skipdit_jax.diffusion.schedule import Diffusion


def _mean_over_non_batch(x: jax.Array) -> jax.Array:
  return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def sample_t(rng: jax.Array, batch: int, diffusion: Diffusion) -> jax.Array:
  """(batch,) int32 timesteps drawn uniformly from [0, num_timesteps)."""
  return jax.random.randint(rng, (batch,), 0, diffusion.num_timesteps, dtype=jnp.int32)


def vb_terms_bpd(diffusion: Diffusion, model_out: jax.Array, x_start: jax.Array,
                 x_t: jax.Array, t: jax.Array) -> jax.Array:
  """(N,) VLB term in bits/dim: decoder NLL where t == 0, KL(q || p) elsewhere.

  `model_out` has the learned-sigma layout (N, H, W, 2C).
  """
  true_mean, _, true_log_var = q_posterior_mean_variance(diffusion, x_start, x_t, t)
  out = p_mean_variance(diffusion, model_out, x_t, t, learn_sigma=True)
  kl = normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])
  kl = _mean_over_non_batch(kl) / math.log(2.0)
  nll = -discretized_gaussian_log_likelihood(
      x_start, means=out["mean"], log_scales=0.5 * out["log_variance"])
  nll = _mean_over_non_batch(nll) / math.log(2.0)
  return jnp.where(t == 0, nll, kl)


def training_losses(diffusion: Diffusion, model_out: jax.Array, x_start: jax.Array,
                    x_t: jax.Array, t: jax.Array, noise: jax.Array, *,
                    learn_sigma: bool) -> dict[str, jax.Array]:
  """Per-example losses, each (N,).

  The caller forms x_t = q_sample(diffusion, x_start, t, noise) and
  model_out = model(x_t, model_timesteps(diffusion, t)).
  mse: mean over non-batch dims of (target - prediction)^2, the target being the noise
    (diffusion.prediction "eps") or v = sqrt(a_t) noise - sqrt(1 - a_t) x_start ("v",
    whose MSE is the eps MSE / a_t: it weights the noisiest steps, where the layout of
    a sample is decided, far more).
  vb (learn_sigma only, else zeros): the VLB term with eps behind a stop-gradient,
    so it trains only the variance channels; scaled by num_timesteps / 1000 as
    IDDPM's rescaled hybrid loss does (a factor of 1 at DiT's 1000 steps).
  loss = mse + vb.
  """
  pred, v = split_model_out(model_out, learn_sigma=learn_sigma)
  if pred.shape != noise.shape:
    raise ValueError(f"model eps {pred.shape} does not match noise {noise.shape} "
                     f"with learn_sigma={learn_sigma}; check model.learn_sigma.")
  target = noise
  if diffusion.prediction == "v":
    s = x_start.shape
    target = (gather(diffusion.sqrt_alphas_cumprod, t, s) * noise
              - gather(diffusion.sqrt_one_minus_alphas_cumprod, t, s) * x_start)
  mse = _mean_over_non_batch(jnp.square(target - pred))
  if learn_sigma:
    eps, _ = split_model_out(model_eps(diffusion, model_out, x_t, t, learn_sigma=True),
                             learn_sigma=True)
    frozen = jnp.concatenate([jax.lax.stop_gradient(eps), v], axis=-1)
    vb = vb_terms_bpd(diffusion, frozen, x_start, x_t, t)
    vb = vb * (diffusion.num_timesteps / 1000.0)
  else:
    vb = jnp.zeros_like(mse)
  return dict(loss=mse + vb, mse=mse, vb=vb)
