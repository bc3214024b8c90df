"""The two compiled step functions of a sampler: a full step and a cached step.

A step maps `x_t -> x_{t-1}` for one respaced index `i`: it doubles the batch for
classifier-free guidance, runs the model (all of it, or the cheap path of a cache
policy), combines the guided halves and applies the DDPM or DDIM update. Everything
static (model, diffusion tables, policy, solver options) is closed over, so each
function compiles once; the per-step index `i` is a traced int32 scalar, so one
program serves every step.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from skipdit_jax import diffusion as D

SAMPLERS = ("ddim", "ddpm")


@dataclasses.dataclass(frozen=True)
class SolverConfig:
  """Static options of the reverse-process update (hashable; a jit cache key)."""
  sampler: str = "ddim"
  eta: float = 0.0
  cfg_scale: float = 1.0
  guided_channels: Optional[int] = None
  clip_denoised: bool = False

  def __post_init__(self):
    if self.sampler not in SAMPLERS:
      raise ValueError(f"sample.sampler={self.sampler!r} is not one of {list(SAMPLERS)}.")
    if isinstance(self.eta, bool) or not isinstance(self.eta, (int, float)) or self.eta < 0:
      raise ValueError(f"sample.eta={self.eta!r} must be a float >= 0 (0 = deterministic).")
    if not isinstance(self.cfg_scale, (int, float)) or self.cfg_scale < 0:
      raise ValueError(f"sample.cfg_scale={self.cfg_scale!r} must be a float >= 0 "
                       "(1.0 disables guidance).")
    g = self.guided_channels
    if g is not None and (isinstance(g, bool) or not isinstance(g, (int, np.integer)) or g < 1):
      raise ValueError(f"sample.guided_channels={g!r} must be an int >= 1 (CFG on the first "
                       "C' eps channels; the official DiT/Skip-DiT sampler uses 3) or None "
                       "(all channels).")

  @property
  def guided(self) -> bool:
    # Scale 1 is exactly the conditional model, so the null half is not computed at all.
    return float(self.cfg_scale) != 1.0


def check_model(model: Any, solver: SolverConfig) -> None:
  """Errors that name the field, before anything is traced."""
  # A text model's null is the empty caption carried in y (models/text_cond.py), so
  # guidance needs no null class.
  labelled = getattr(model, "cond", "class") == "class"
  if labelled and solver.guided and getattr(model, "num_classes", 1) == 0:
    raise ValueError(f"sample.cfg_scale={solver.cfg_scale} needs labels, but the model is "
                     "unconditional (data.num_classes=0): use sample.cfg_scale=1.0.")
  if labelled and solver.guided and not model.class_dropout_prob > 0:
    raise ValueError(f"sample.cfg_scale={solver.cfg_scale} needs the null class, but the "
                     "model has model.class_dropout_prob=0 (no null row); use "
                     "sample.cfg_scale=1.0 or a model trained with label dropout.")
  g = solver.guided_channels
  if g is not None and g > model.in_channels:
    raise ValueError(f"sample.guided_channels={g} exceeds the model's {model.in_channels} "
                     f"eps channels (model.in_channels); use 1..{model.in_channels} "
                     f"({model.in_channels} guides all).")


def model_inputs(x: jax.Array, y: Any, solver: SolverConfig
                 ) -> tuple[jax.Array, Any, Optional[jax.Array]]:
  """(x, y, force_drop_ids) for the model: [cond; null] halves when guided, else as is.

  y: (N,) labels, or any pytree with batch-leading leaves (a caption dict, whose null
  rows the model selects where force_drop_ids is set)."""
  if not solver.guided:
    return x, y, None
  n = x.shape[0]
  drop = jnp.concatenate([jnp.zeros((n,), bool), jnp.ones((n,), bool)])
  return (jnp.concatenate([x, x]), jax.tree_util.tree_map(lambda a: jnp.concatenate([a, a]), y),
          drop)


def solve(diffusion: D.Diffusion, solver: SolverConfig, learn_sigma: bool,
          model_out: jax.Array, x: jax.Array, i: jax.Array, rng: jax.Array) -> jax.Array:
  """CFG-combine `model_out` ((2)N, H, W, C_out), read it as eps (`diffusion.prediction`)
  and take one DDPM / DDIM step from x."""
  if solver.guided:
    model_out = D.cfg_combine(model_out, solver.cfg_scale, learn_sigma=learn_sigma,
                              guided_channels=solver.guided_channels)
  t = jnp.full((x.shape[0],), i, jnp.int32)
  model_out = D.model_eps(diffusion, model_out, x, t, learn_sigma=learn_sigma)
  stochastic = solver.sampler == "ddpm" or solver.eta > 0
  # Noise depends only on (rng, i), so every policy sees the same noise at a step.
  noise = (jax.random.normal(jax.random.fold_in(rng, i), x.shape, x.dtype)
           if stochastic else jnp.zeros_like(x))
  if solver.sampler == "ddpm":
    return D.ddpm_step(diffusion, model_out, x, t, noise, learn_sigma=learn_sigma,
                       clip_denoised=solver.clip_denoised)
  return D.ddim_step(diffusion, model_out, x, t, noise, eta=float(solver.eta),
                     learn_sigma=learn_sigma, clip_denoised=solver.clip_denoised)


def _model_time(diffusion: D.Diffusion, i: jax.Array, batch: int) -> jax.Array:
  return D.model_timesteps(diffusion, jnp.full((batch,), i, jnp.int32))


def full_step_fn(model: Any, diffusion: D.Diffusion, solver: SolverConfig,
                 policy: Any) -> Callable:
  """full_step(params, x, i, y, rng, cache) -> (x_prev, cache), not yet jitted.

  x: (N, H, W, C); i: () int32 respaced index; y: (N,) int labels or a caption dict
  (models/text_cond.py); rng: a key;
  cache: the policy's cache pytree (its previous value matters only to policies
  that keep a history). Runs every block.
  """
  def full_step(params, x, i, y, rng, cache):
    xin, yin, drop = model_inputs(x, y, solver)
    t = _model_time(diffusion, i, xin.shape[0])
    out, cache = model.apply({"params": params}, xin, t, yin, drop, cache,
                             method=policy.full)
    return solve(diffusion, solver, model.learn_sigma, out, x, i, rng), cache
  return full_step


def cached_step_fn(model: Any, diffusion: D.Diffusion, solver: SolverConfig,
                   policy: Any, variant: str) -> Callable:
  """cached_step(params, x, i, y, rng, cache, aux) -> x_prev, not yet jitted.

  Runs only the policy's cheap path (`variant` picks among a policy's static
  shapes, e.g. Δ-DiT's front or rear range); `aux` holds per-step host-computed
  tables (e.g. forecast weights, indexed by `i` inside).
  """
  method = policy.cached_method(variant)

  def cached_step(params, x, i, y, rng, cache, aux):
    xin, yin, drop = model_inputs(x, y, solver)
    t = _model_time(diffusion, i, xin.shape[0])
    out = model.apply({"params": params}, xin, t, yin, drop, cache, i, aux, method=method)
    return solve(diffusion, solver, model.learn_sigma, out, x, i, rng)
  return cached_step


@functools.lru_cache(maxsize=64)
def make_full_step(model: Any, diffusion: D.Diffusion, solver: SolverConfig,
                   policy: Any) -> Callable:
  """The compiled full step (see `full_step_fn`)."""
  return jax.jit(full_step_fn(model, diffusion, solver, policy))


@functools.lru_cache(maxsize=64)
def make_cached_step(model: Any, diffusion: D.Diffusion, solver: SolverConfig,
                     policy: Any, variant: str) -> Callable:
  """The compiled cached step (see `cached_step_fn`)."""
  return jax.jit(cached_step_fn(model, diffusion, solver, policy, variant))
