"""`train.init_from`: seed a fresh run with the weights of another model.

The source is an official-format file (`.pt`/`.pth`/`.safetensors`/`.npz`, REFERENCE §2)
or the workdir of a run trained here (its latest checkpoint's raw, not EMA, params, read
with the model and optimizer of that run's saved `config.json`). Either way the weights
go through the official layout and `models.init_from_official`, so a vanilla DiT given to
a Skip-DiT model is upcycled (fresh fusions) and every shape field is checked by name.
Only a run with no checkpoint of its own is seeded: on resume the checkpoint wins.
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import jax
import ml_collections

from skipdit_jax import models, paths
from skipdit_jax.train import checkpoint, optim
from skipdit_jax.train.build import build_model
from skipdit_jax.train.state import TrainState

OFFICIAL_SUFFIXES = (".pt", ".pth", ".safetensors", ".npz")


def is_workdir(path: str) -> bool:
  """A directory written by `train` (local or gs://): it holds `config.json` and
  `checkpoints/`."""
  root = paths.resolve(path)
  return (root / checkpoint.CHECKPOINTS).is_dir() and (root / checkpoint.CONFIG_JSON).exists()


def _workdir_state_dict(workdir: str) -> dict:
  """The latest checkpoint's params of `workdir`, as an official-named state_dict."""
  saved = ml_collections.ConfigDict(json.loads(
      (paths.resolve(workdir) / checkpoint.CONFIG_JSON).read_text()))
  model = build_model(saved)
  tx = optim.make_optimizer(saved.train)
  key = jax.random.PRNGKey(0)
  target = jax.eval_shape(lambda: TrainState.create(models.init_params(model, key), tx, key))
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)
  try:
    restored = ckpt.restore(target)
  finally:
    ckpt.close()
  if restored is None:
    raise checkpoint.CheckpointError(
        f"config.train.init_from={workdir!r} holds no complete checkpoint; train it first "
        f"or point train.init_from at another run or an official .pt/.safetensors file")
  return models.to_official(jax.device_get(restored[0].params), model)


def initial_params(config: ml_collections.ConfigDict, model: models.DiT,
                   rng: jax.Array) -> Any:
  """Params for `model` from `config.train.init_from` (see the module docstring).

  rng draws the fusion layers when a vanilla DiT is upcycled.
  """
  path = paths.resolve(str(config.train.init_from))
  if path.is_dir():
    return models.init_from_official(_workdir_state_dict(str(path)), model, rng)
  if not paths.is_remote(path):
    return models.init_from_official(os.fspath(path), model, rng)
  # The official-file readers take local files: copy the object down once.
  with tempfile.TemporaryDirectory(prefix="skipdit_init_from_") as tmp:
    local = os.path.join(tmp, path.name)
    with open(local, "wb") as f:
      f.write(path.read_bytes())
    return models.init_from_official(local, model, rng)


def seed_state(state: TrainState, config: ml_collections.ConfigDict, model: models.DiT,
               tx) -> TrainState:
  """`state` (fresh, step 0) with params and EMA from `train.init_from` and a matching
  fresh optimizer state; the step rng is kept."""
  rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), 1)  # not init_state's keys
  params = initial_params(config, model, rng)
  return TrainState.create(params, tx, state.rng)
