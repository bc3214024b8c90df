"""Gaussian diffusion (ADM / IDDPM as DiT uses it) as pure functions.

Tables are float64 numpy in a frozen, hashable `Diffusion`; the jnp functions
gather them as float32. This package knows nothing of models or caching: the
caller runs the model and passes its output (eps, or [eps, v] with learned sigma,
channels last) to these functions; a v-prediction model's output is read as eps through
`model_eps` first.
"""
from skipdit_jax.diffusion.gaussian import (approx_standard_normal_cdf,
                                            discretized_gaussian_log_likelihood,
                                            normal_kl)
from skipdit_jax.diffusion.losses import sample_t, training_losses, vb_terms_bpd
from skipdit_jax.diffusion.process import (model_eps, model_timesteps, p_mean_variance,
                                           predict_xstart_from_eps, q_posterior_mean_variance,
                                           q_sample, split_model_out)
from skipdit_jax.diffusion.schedule import (PREDICTIONS, SCHEDULES, Diffusion, betas_for,
                                            respace, shift_snr, space_timesteps)
from skipdit_jax.diffusion.steps import cfg_combine, ddim_step, ddpm_step

__all__ = [
    "PREDICTIONS", "SCHEDULES", "Diffusion", "approx_standard_normal_cdf", "betas_for",
    "cfg_combine", "ddim_step", "ddpm_step", "discretized_gaussian_log_likelihood",
    "model_eps", "model_timesteps", "normal_kl", "p_mean_variance",
    "predict_xstart_from_eps", "q_posterior_mean_variance", "q_sample", "respace", "sample_t",
    "space_timesteps", "shift_snr", "split_model_out", "training_losses", "vb_terms_bpd",
]
