"""Config -> the objects a run is made of: the model's fields, the model, the diffusion,
and the check that a workdir's saved config trained a model of the same shape."""
from __future__ import annotations

import dataclasses
import json
from typing import Any

import ml_collections

from skipdit_jax import diffusion as dfn, models, paths
from skipdit_jax.errors import ConfigError
from skipdit_jax.train.checkpoint import CONFIG_JSON

# DiT fields that change the parameter tree; a checkpoint of one shape cannot seed another.
SHAPE_FIELDS = ("input_size", "patch_size", "in_channels", "hidden_size", "depth",
                "num_heads", "mlp_ratio", "num_classes", "learn_sigma", "long_skip",
                "scan_blocks", "cond", "caption_channels", "pooled_projection")
_MODEL_OVERRIDES = ("cond", "caption_channels", "pooled_projection", "long_skip", "depth",
                    "hidden_size", "num_heads", "patch_size", "mlp_ratio", "learn_sigma",
                    "class_dropout_prob", "dtype", "scan_blocks", "remat", "attention")


def get_field(config: Any, path: str, default: Any = None) -> Any:
  """`config` at the dotted `path` (e.g. "model.depth"), or `default` where it is absent."""
  node = config
  for key in path.split("."):
    if node is None or key not in node:
      return default
    node = node[key]
  return node


def model_fields(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The DiT fields a config asks for: the registry name, then `model.*` overrides."""
  long_skip, size, patch = models.parse_name(config.model.name)
  depth, width, heads = models.size_of(config.model.name)
  fields = dict(input_size=get_field(config, "data.image_size"),
                in_channels=get_field(config, "data.channels"),
                num_classes=get_field(config, "data.num_classes"), patch_size=patch, depth=depth,
                hidden_size=width, num_heads=heads, long_skip=long_skip)
  if models.is_video(config.model.name):  # Latte: frames per clip
    fields["num_frames"] = get_field(config, "data.num_frames", 16)
  for key in _MODEL_OVERRIDES:
    value = get_field(config, f"model.{key}")
    if value is not None:
      fields[key] = value
  return fields


def build_model(config: ml_collections.ConfigDict) -> models.DiT | models.Latte:
  """The DiT or Latte of `config.model.name`, `config.model.*` / `config.data.*` overriding."""
  return models.create(config.model.name, **model_fields(config))


def build_diffusion(config: ml_collections.ConfigDict) -> dfn.Diffusion:
  """The training diffusion of `config.diffusion` (schedule, steps, SNR shift, what the
  model predicts)."""
  return dfn.Diffusion.create(dfn.betas_for(config.diffusion.schedule,
                                            config.diffusion.num_train_steps,
                                            get_field(config, "diffusion.snr_shift", 1.0)),
                              prediction=get_field(config, "diffusion.prediction", "eps"))


def check_workdir(config: ml_collections.ConfigDict, workdir: str | None) -> bool:
  """Refuses a workdir whose saved config trained a model of another shape.

  Returns True when the shape differs and `config.train.allow_new_model=True` accepts
  it: the caller then moves the old checkpoints aside and starts fresh.
  """
  if not workdir:
    return False
  path = paths.resolve(workdir) / CONFIG_JSON
  if not path.exists():
    return False
  try:
    saved = ml_collections.ConfigDict(json.loads(path.read_text()))
    old = model_fields(saved)
  except (OSError, ValueError, KeyError, AttributeError) as e:
    raise ConfigError([f"workdir {workdir!r}: cannot read its saved config {path} ({e}); "
                       f"use a new --workdir or remove the file"]) from e
  new = model_fields(config)
  # A field a config leaves out takes the model's default (older workdirs predate fields).
  default = {f.name: f.default for f in dataclasses.fields(models.DiT)}
  old, new = ({k: f.get(k, default.get(k)) for k in SHAPE_FIELDS} for f in (old, new))
  diff = [f"{k}: saved {old[k]!r} -> new {new[k]!r}" for k in SHAPE_FIELDS if old[k] != new[k]]
  # Same shapes, another meaning: a v model read as eps (or back) samples noise.
  pred = [get_field(c, "diffusion.prediction", "eps") for c in (saved, config)]
  if pred[0] != pred[1]:
    diff.append(f"diffusion.prediction: saved {pred[0]!r} -> new {pred[1]!r}")
  if diff and not get_field(config, "train.allow_new_model", False):
    raise ConfigError([
        f"workdir {workdir!r} holds a model of another shape or output ({'; '.join(diff)}); "
        f"resuming or sampling it would use the wrong model. Use a new --workdir, restore "
        f"the old fields, or pass --config.train.allow_new_model=True to move the old checkpoints aside "
        f"and start fresh"])
  return bool(diff)
