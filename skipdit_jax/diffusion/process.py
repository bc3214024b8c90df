"""Forward process q, posterior q(x_{t-1} | x_t, x_0) and the model's p(x_{t-1} | x_t).

Arrays are NHWC float32; `t` is an (N,) int array of (respaced) indices into the
`Diffusion` tables. The model output convention (eps first, then variance) lives
in `split_model_out` only.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from skipdit_jax.diffusion.schedule import Diffusion

FIXED_VARIANCES = ("small", "large")


def gather(table: np.ndarray, t: jax.Array, shape: tuple[int, ...]) -> jax.Array:
  """table[t] as float32, broadcast to `shape` (t indexes the leading axis)."""
  values = jnp.asarray(np.asarray(table, np.float32))[t]
  values = values.reshape(values.shape + (1,) * (len(shape) - values.ndim))
  return jnp.broadcast_to(values, shape)


def model_timesteps(diffusion: Diffusion, t: jax.Array) -> jax.Array:
  """(N,) int32 original timesteps to feed the model for respaced indices `t`."""
  return jnp.asarray(diffusion.timestep_map)[t]


def split_model_out(model_out: jax.Array, *, learn_sigma: bool
                    ) -> tuple[jax.Array, Optional[jax.Array]]:
  """Splits (..., C_out) into (eps (..., C), v (..., C) or None).

  With learned sigma the model emits 2C channels: eps first, then the variance
  interpolation value v in [-1, 1]; otherwise all C_out channels are eps.
  """
  if not learn_sigma:
    return model_out, None
  c_out = model_out.shape[-1]
  if c_out % 2:
    raise ValueError(f"learn_sigma=True needs an even channel count (eps, v), but "
                     f"the model output has {c_out}; set model.learn_sigma to "
                     "match the model.")
  return model_out[..., : c_out // 2], model_out[..., c_out // 2:]


def model_eps(diffusion: Diffusion, model_out: jax.Array, x_t: jax.Array, t: jax.Array, *,
              learn_sigma: bool) -> jax.Array:
  """`model_out` in the eps layout (eps, then any variance channels), whatever
  `diffusion.prediction` the model was trained for: v becomes
  eps = sqrt(a_t) v + sqrt(1 - a_t) x_t. Linear in the output, so classifier-free
  guidance gives the same result before or after it."""
  if diffusion.prediction == "eps":
    return model_out
  pred, var = split_model_out(model_out, learn_sigma=learn_sigma)
  s = x_t.shape
  eps = (gather(diffusion.sqrt_alphas_cumprod, t, s) * pred
         + gather(diffusion.sqrt_one_minus_alphas_cumprod, t, s) * x_t)
  return eps if var is None else jnp.concatenate([eps, var], axis=-1)


def _check_channels(model_out: jax.Array, x_t: jax.Array, learn_sigma: bool) -> None:
  want = x_t.shape[-1] * (2 if learn_sigma else 1)
  if model_out.shape[:-1] != x_t.shape[:-1] or model_out.shape[-1] != want:
    raise ValueError(f"model_out shape {model_out.shape} does not match x_t "
                     f"{x_t.shape} with learn_sigma={learn_sigma} (expects "
                     f"{want} channels); check model.learn_sigma.")


def q_sample(diffusion: Diffusion, x_start: jax.Array, t: jax.Array,
             noise: jax.Array) -> jax.Array:
  """x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) noise, a_t = alphas_cumprod[t]. Shapes (N, ...)."""
  s = x_start.shape
  return (gather(diffusion.sqrt_alphas_cumprod, t, s) * x_start
          + gather(diffusion.sqrt_one_minus_alphas_cumprod, t, s) * noise)


def q_posterior_mean_variance(diffusion: Diffusion, x_start: jax.Array, x_t: jax.Array,
                              t: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Mean, variance and clipped log variance of q(x_{t-1} | x_t, x_0), each x_t's shape."""
  s = x_t.shape
  mean = (gather(diffusion.posterior_mean_coef1, t, s) * x_start
          + gather(diffusion.posterior_mean_coef2, t, s) * x_t)
  return (mean, gather(diffusion.posterior_variance, t, s),
          gather(diffusion.posterior_log_variance_clipped, t, s))


def predict_xstart_from_eps(diffusion: Diffusion, x_t: jax.Array, t: jax.Array,
                            eps: jax.Array) -> jax.Array:
  """x_0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)."""
  s = x_t.shape
  return (gather(diffusion.sqrt_recip_alphas_cumprod, t, s) * x_t
          - gather(diffusion.sqrt_recipm1_alphas_cumprod, t, s) * eps)


def p_mean_variance(diffusion: Diffusion, model_out: jax.Array, x_t: jax.Array,
                    t: jax.Array, *, learn_sigma: bool, clip_denoised: bool = False,
                    fixed_variance: str = "small") -> dict[str, jax.Array]:
  """The model's p(x_{t-1} | x_t).

  Args:
    model_out: (N, H, W, C) eps, or (N, H, W, 2C) [eps, v] when `learn_sigma`.
    x_t: (N, H, W, C); t: (N,) respaced indices.
    learn_sigma: log variance = frac log(beta_t) + (1 - frac) log(posterior
      variance), frac = (v + 1) / 2 (IDDPM "learned range").
    clip_denoised: clip pred_xstart to [-1, 1] before forming the mean.
    fixed_variance: without learned sigma, "small" uses the posterior variance
      (IDDPM fixedsmall, the default here) and "large" uses beta_t (with the
      posterior variance at t = 0, IDDPM fixedlarge).
  Returns:
    dict of mean, variance, log_variance, pred_xstart, eps, each (N, H, W, C).
  """
  _check_channels(model_out, x_t, learn_sigma)
  eps, v = split_model_out(model_out, learn_sigma=learn_sigma)
  s = x_t.shape
  if learn_sigma:
    min_log = gather(diffusion.posterior_log_variance_clipped, t, s)
    max_log = gather(np.log(diffusion.betas), t, s)
    frac = (v + 1.0) / 2.0
    log_variance = frac * max_log + (1.0 - frac) * min_log
    variance = jnp.exp(log_variance)
  elif fixed_variance == "small":
    variance = gather(diffusion.posterior_variance, t, s)
    log_variance = gather(diffusion.posterior_log_variance_clipped, t, s)
  elif fixed_variance == "large":
    large = np.append(diffusion.posterior_variance[1:2], diffusion.betas[1:])
    if diffusion.num_timesteps == 1:
      large = diffusion.betas
    variance = gather(large, t, s)
    log_variance = gather(np.log(large), t, s)
  else:
    raise ValueError(f"fixed_variance={fixed_variance!r}; use one of "
                     f"{list(FIXED_VARIANCES)}.")
  pred_xstart = predict_xstart_from_eps(diffusion, x_t, t, eps)
  if clip_denoised:
    pred_xstart = jnp.clip(pred_xstart, -1.0, 1.0)
  mean, _, _ = q_posterior_mean_variance(diffusion, pred_xstart, x_t, t)
  return dict(mean=mean, variance=variance, log_variance=log_variance,
              pred_xstart=pred_xstart, eps=eps)
