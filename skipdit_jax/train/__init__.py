"""Training: the train state, AdamW schedule, the jitted step, the loop and checkpoints.

`train(config, workdir, on_sample=None) -> (summary, state)` is the entry point; it
resumes from the workdir's latest checkpoint. `train_step` is the pure update that
`make_train_step` jits (state donated).
"""
from skipdit_jax.train.checkpoint import Checkpointer, save_config
from skipdit_jax.train.build import build_diffusion, build_model
from skipdit_jax.train.loop import abstract_state, init_state, restore_ema, train, train_to_end
from skipdit_jax.train.optim import lr_schedule, make_optimizer
from skipdit_jax.train.state import TrainState
from skipdit_jax.train.step import ema_decay_at, ema_update, make_train_step, train_step

__all__ = ["Checkpointer", "TrainState", "abstract_state", "build_diffusion", "build_model",
           "ema_decay_at", "ema_update", "init_state", "lr_schedule", "make_optimizer",
           "make_train_step", "restore_ema", "save_config", "train", "train_step",
           "train_to_end"]
