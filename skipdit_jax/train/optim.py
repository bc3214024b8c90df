"""AdamW with linear warm-up, a constant or cosine schedule and global-norm clipping."""
from __future__ import annotations

import jax
import ml_collections
import optax

from skipdit_jax import models

LR_SCHEDULES = ("constant", "cosine")


def lr_schedule(train: ml_collections.ConfigDict) -> optax.Schedule:
  """lr(step): linear 0 -> train.lr over train.warmup_steps, then constant or cosine to 0.

  optax evaluates the schedule at the update count before incrementing, so update k
  (0-based) uses lr(k) = lr * k / warmup_steps during warm-up.
  """
  lr, warm, total = float(train.lr), int(train.warmup_steps), int(train.num_steps)
  if train.lr_schedule == "constant":
    after = optax.constant_schedule(lr)
  elif train.lr_schedule == "cosine":
    after = optax.cosine_decay_schedule(lr, decay_steps=max(total - warm, 1))
  else:
    raise ValueError(f"config.train.lr_schedule={train.lr_schedule!r}; use one of "
                     f"{list(LR_SCHEDULES)}")
  if warm <= 0:
    return after
  return optax.join_schedules([optax.linear_schedule(0.0, lr, warm), after], [warm])


# `model.scan_blocks=True` stores the blocks and fusions under this key with a leading
# layers axis (models/scan.py `stack_params`); their per-block rank is one less.
STACKED_KEY = "block_stack"


def _decay_mask(params):
  """True for the leaves AdamW decays: matrices (kernels, embedding tables); biases and
  norm scales are left alone (the usual AdamW use). Decided on the rank of one block's
  parameter, so a scanned model (stacked (L, ...) leaves) gets the unrolled model's mask."""
  def decays(path, p) -> bool:
    stacked = any(getattr(k, "key", None) == STACKED_KEY for k in path)
    return p.ndim - int(stacked) >= 2
  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(train: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """optax chain: optional clip_by_global_norm(train.grad_clip), then AdamW, on the
  parameters `train.trainable` selects ("all", or "skip_only": stage 1 of upcycling,
  where every other parameter gets exactly zero updates and no optimizer state)."""
  tx = optax.adamw(lr_schedule(train), b1=float(train.b1), b2=float(train.b2),
                   weight_decay=float(train.weight_decay), mask=_decay_mask)
  if train.grad_clip and train.grad_clip > 0:
    # Inside the mask: stage 1 clips the norm of the gradients it applies, not the frozen ones.
    tx = optax.chain(optax.clip_by_global_norm(float(train.grad_clip)), tx)
  return models.with_trainable(tx, train.get("trainable", "all"))
