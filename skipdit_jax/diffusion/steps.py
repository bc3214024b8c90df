"""One reverse step of the DDPM and DDIM samplers, and classifier-free guidance."""
from __future__ import annotations

from typing import Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from skipdit_jax.diffusion.process import (gather, p_mean_variance,
                                           predict_xstart_from_eps, split_model_out)
from skipdit_jax.diffusion.schedule import Diffusion


def _nonzero_mask(t: jax.Array, ndim: int) -> jax.Array:
  """1.0 where t > 0 (add noise), 0.0 at the final step; shape (N, 1, ..., 1)."""
  return (t != 0).astype(jnp.float32).reshape((-1,) + (1,) * (ndim - 1))


def ddpm_step(diffusion: Diffusion, model_out: jax.Array, x_t: jax.Array,
              t: jax.Array, noise: jax.Array, *, learn_sigma: bool,
              clip_denoised: bool = False) -> jax.Array:
  """Ancestral sample x_{t-1} = mean + exp(log_var / 2) noise; noiseless where t == 0.

  model_out: (N, H, W, C or 2C); x_t, noise: (N, H, W, C); t: (N,) respaced indices.
  """
  out = p_mean_variance(diffusion, model_out, x_t, t, learn_sigma=learn_sigma,
                        clip_denoised=clip_denoised)
  std = jnp.exp(0.5 * out["log_variance"])
  return out["mean"] + _nonzero_mask(t, x_t.ndim) * std * noise


def ddim_step(diffusion: Diffusion, model_out: jax.Array, x_t: jax.Array,
              t: jax.Array, noise: jax.Array, *, eta: float, learn_sigma: bool,
              clip_denoised: bool = False) -> jax.Array:
  """DDIM update (Song et al.) from eps (first C channels; a learned variance is unused).

  x_{t-1} = sqrt(a_prev) x0 + sqrt(1 - a_prev - sigma^2) eps + sigma noise,
  sigma = eta sqrt((1 - a_prev) / (1 - a)) sqrt(1 - a / a_prev). eta = 0 is
  deterministic; eta = 1 matches DDPM's posterior variance.
  """
  if isinstance(eta, bool) or not isinstance(eta, (int, float)) or eta < 0:
    raise ValueError(f"sample.eta={eta!r} must be a float >= 0 (0 = deterministic).")
  eps, _ = split_model_out(model_out, learn_sigma=learn_sigma)
  if eps.shape != x_t.shape:
    raise ValueError(f"model eps {eps.shape} does not match x_t {x_t.shape} with "
                     f"learn_sigma={learn_sigma}; check model.learn_sigma.")
  pred_x0 = predict_xstart_from_eps(diffusion, x_t, t, eps)
  if clip_denoised:
    pred_x0 = jnp.clip(pred_x0, -1.0, 1.0)
    # Re-derive eps from the clipped x0 so the direction term stays consistent.
    s = x_t.shape
    eps = ((gather(diffusion.sqrt_recip_alphas_cumprod, t, s) * x_t - pred_x0)
           / gather(diffusion.sqrt_recipm1_alphas_cumprod, t, s))
  # Coefficients in float64 numpy (eta is static) so that 1 - a_prev - sigma^2
  # cannot round below zero in float32.
  a, a_prev = diffusion.alphas_cumprod, diffusion.alphas_cumprod_prev
  sigma = eta * np.sqrt((1.0 - a_prev) / (1.0 - a)) * np.sqrt(1.0 - a / a_prev)
  direction = np.sqrt(np.maximum(1.0 - a_prev - sigma ** 2, 0.0))
  s = x_t.shape
  x_prev = (gather(np.sqrt(a_prev), t, s) * pred_x0
            + gather(direction, t, s) * eps)
  return x_prev + _nonzero_mask(t, x_t.ndim) * gather(sigma, t, s) * noise


def cfg_combine(model_out: jax.Array, scale: Union[float, jax.Array], *,
                learn_sigma: bool, guided_channels: Optional[int] = None) -> jax.Array:
  """Classifier-free guidance over a [cond; uncond] batch.

  model_out: (2N, H, W, C_out), rows [:N] conditional, [N:] null class.
  Returns (N, H, W, C_out): the first `guided_channels` eps channels (default:
  all C eps channels; DiT's public sampler uses 3) become
  eps_u + scale (eps_c - eps_u); every other channel (the remaining eps
  channels and the variance channels) is the conditional half's.
  """
  if model_out.shape[0] % 2:
    raise ValueError(f"cfg_combine needs a [cond; uncond] batch of even size, got "
                     f"{model_out.shape[0]} rows.")
  eps, _ = split_model_out(model_out, learn_sigma=learn_sigma)
  c = eps.shape[-1]
  g = c if guided_channels is None else guided_channels
  if isinstance(g, bool) or not isinstance(g, (int, np.integer)) or not 1 <= g <= c:
    raise ValueError(f"guided_channels={guided_channels!r} must be an int in "
                     f"[1, {c}] (the eps channels) or None for all.")
  n = model_out.shape[0] // 2
  cond, uncond = model_out[:n], model_out[n:]
  # eps_c + (s - 1)(eps_c - eps_u) equals eps_u + s (eps_c - eps_u) and is
  # exactly eps_c at s = 1.
  guided = cond[..., :g] + (scale - 1.0) * (cond[..., :g] - uncond[..., :g])
  return jnp.concatenate([guided, cond[..., g:]], axis=-1)
