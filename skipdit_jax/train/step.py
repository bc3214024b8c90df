"""The jitted train step: noise, forward with label dropout, hybrid loss, AdamW, EMA."""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from skipdit_jax import diffusion as dfn
from skipdit_jax.train.state import TrainState

Metrics = dict[str, jax.Array]
StepFn = Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, Metrics]]


def ema_update(ema: dict, params: dict, decay: float) -> dict:
  """ema <- decay * ema + (1 - decay) * params, leaf by leaf.

  Written as ema + (1 - decay) * (params - ema): a leaf whose params equal its EMA (a
  frozen weight of `train.trainable="skip_only"`) keeps it bit for bit.
  """
  return jax.tree_util.tree_map(lambda e, p: e + (1.0 - decay) * (p - e), ema, params)


def ema_decay_at(step: jax.Array, decay: float, warmup: bool) -> jax.Array | float:
  """The EMA decay for the update after `step` completed updates.

  With `warmup`, min(decay, (1 + step) / (10 + step)): the first updates average over
  few steps, so a short run's EMA is not dominated by the random initialisation (at
  decay 0.999 and no warmup, 0.999**3000 = 5 % of the EMA is still the init after 3,000
  steps). Without it, the constant `decay` (the DiT recipe).
  """
  if not warmup:
    return decay
  s = jnp.asarray(step, jnp.float32)
  return jnp.minimum(jnp.float32(decay), (1.0 + s) / (10.0 + s))


def train_step(state: TrainState, images: jax.Array, labels: jax.Array, *,
               model: nn.Module, diffusion: dfn.Diffusion,
               tx: optax.GradientTransformation, schedule: optax.Schedule,
               ema_decay: float, ema_warmup: bool = False
               ) -> tuple[TrainState, Metrics]:
  """One update. images (N, H, W, C) in [-1, 1]; labels (N,) int, or for a text model
  the caption dict (text_cond.caption_condition; the model drops captions to its null).

  Returns the new state and scalar metrics (loss, mse, vb, grad_norm, lr) as device
  arrays; nothing here waits on the host.
  """
  rng, k_t, k_noise, k_drop = jax.random.split(state.rng, 4)
  n = images.shape[0]
  t = dfn.sample_t(k_t, n, diffusion)
  noise = jax.random.normal(k_noise, images.shape, images.dtype)
  x_t = dfn.q_sample(diffusion, images, t, noise)
  t_model = dfn.model_timesteps(diffusion, t)

  def loss_fn(params):
    out = model.apply({"params": params}, x_t, t_model, labels, train=True,
                      rngs={"dropout": k_drop})
    losses = dfn.training_losses(diffusion, out, images, x_t, t, noise,
                                 learn_sigma=model.learn_sigma)
    return losses["loss"].mean(), losses

  grads, losses = jax.grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  decay = ema_decay_at(state.step, ema_decay, ema_warmup)
  new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state,
                            ema_params=ema_update(state.ema_params, params, decay),
                            rng=rng)
  metrics = {k: v.mean() for k, v in losses.items()}
  metrics["grad_norm"] = optax.tree.norm(grads)
  metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
  return new_state, metrics


def make_train_step(model: nn.Module, diffusion: dfn.Diffusion,
                    tx: optax.GradientTransformation, schedule: optax.Schedule,
                    ema_decay: float, ema_warmup: bool = False) -> StepFn:
  """`train_step` with the static pieces bound, jitted, the state donated."""
  def step(state, images, labels):
    return train_step(state, images, labels, model=model, diffusion=diffusion, tx=tx,
                      schedule=schedule, ema_decay=ema_decay, ema_warmup=ema_warmup)
  return jax.jit(step, donate_argnums=0)
