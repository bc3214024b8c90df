"""Every config field that can be wrong, checked once at start, before compute or disk.

`check_config` gathers all problems and raises one `ConfigError` whose lines each name
the field, its value and the fix. The packages that own a rule keep it (model shapes:
`models.validate_shape` / `models.parse_name`; datasets: the data registry; schedules:
`diffusion.betas_for`; meshes and sharding rules: `parallel`; cache plans: `sampling`);
this module calls them and adds the cross-field rules nobody else can see (batch vs.
mesh, intervals vs. run length). It sits above every package (an entry-point module):
the config -> model mapping and the workdir shape check live in `train.build`, the
loaded-data check in `data.sources`, the error type in `skipdit_jax.errors`.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import ml_collections

from skipdit_jax.errors import ConfigError
from skipdit_jax.train.build import (build_diffusion, check_workdir, get_field as _get,
                                     model_fields)


def _is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _catch(problems: list[str], fn: Callable, *args, **kwargs) -> Any:
  """Runs an owner's check, turning its ValueError into one problem line."""
  try:
    return fn(*args, **kwargs)
  except (ValueError, TypeError, KeyError) as e:
    problems.append(str(e).strip("'\""))
    return None


def _positive_ints(config, paths: tuple[str, ...], problems: list[str], *, zero_ok=False):
  for path in paths:
    v = _get(config, path)
    if v is None:
      continue
    lo = 0 if zero_ok else 1
    if not _is_int(v) or v < lo:
      problems.append(f"config.{path}={v!r} must be an integer >= {lo}")


def _check_model(config, problems: list[str]) -> None:
  from skipdit_jax import models
  if _catch(problems, models.parse_name, _get(config, "model.name", "")) is None:
    return
  before = len(problems)
  video = models.is_video(_get(config, "model.name", ""))  # Latte: 0 classes = unconditional
  _positive_ints(config, ("model.depth", "model.hidden_size", "model.num_heads",
                          "model.patch_size", "data.image_size", "data.channels")
                 + (() if video else ("data.num_classes",)), problems)
  _positive_ints(config, ("data.num_classes",) if video else (), problems, zero_ok=True)
  mlp = _get(config, "model.mlp_ratio")
  if mlp is not None and (not _is_real(mlp) or mlp <= 0):
    problems.append(f"config.model.mlp_ratio={mlp!r} must be a positive number (4.0 in DiT)")
  p = _get(config, "model.class_dropout_prob")
  if p is not None and (not _is_real(p) or not 0 <= p < 1):
    problems.append(f"config.model.class_dropout_prob={p!r} must lie in [0, 1) (0.1 in DiT)")
  if len(problems) == before:  # validate_shape divides by these fields; only call it once they are sane
    model = _catch(problems, models.create, config.model.name, **model_fields(config))
    if model is not None:  # the kernel must run on this backend (models/attention.py)
      from skipdit_jax.models.attention import check_available
      _catch(problems, check_available, model.attention, model.dtype,
             model.hidden_size // model.num_heads)


def _check_data(config, problems: list[str]) -> None:
  from skipdit_jax import data
  name = _get(config, "data.name")
  key = data.source_key(name) if isinstance(name, str) else None
  if key is None:
    problems.append(f"config.data.name={name!r} is not a known dataset; use one of "
                    f"{sorted(data.SOURCES)}")
    return
  frames = _get(config, "data.num_frames", 0)
  if not _is_int(frames) or frames < 0:
    problems.append(f"config.data.num_frames={frames!r} must be an integer >= 0 "
                    f"(0 = images, F = clips of F frames)")
    return
  video = data.VIDEO_SOURCES.get(key)
  if frames and video is None:
    problems.append(f"config.data.num_frames={frames} asks for video clips but "
                    f"data.name={name!r} holds images: set data.num_frames=0 or use a video "
                    f"source ({', '.join(sorted(data.VIDEO_SOURCES))})")
  elif video is not None:  # the source's own field checks, before anything is loaded
    problems.extend(video(config.data))
  from skipdit_jax.text import caption_batches  # captions vs model.cond, dataset, encoder
  problems.extend(caption_batches.check_config(config))


def _check_diffusion(config, problems: list[str]) -> None:
  from skipdit_jax import diffusion
  _catch(problems, diffusion.betas_for, _get(config, "diffusion.schedule"),
         _get(config, "diffusion.num_train_steps"), _get(config, "diffusion.snr_shift", 1.0))
  pred = _get(config, "diffusion.prediction", "eps")
  if pred not in diffusion.PREDICTIONS:
    problems.append(f"config.diffusion.prediction={pred!r} is not one of "
                    f"{list(diffusion.PREDICTIONS)} (eps: the official recipe and its "
                    "weights; v: v-prediction)")


def _check_train(config, problems: list[str]) -> None:
  from skipdit_jax.train.guard import NONFINITE_MODES
  from skipdit_jax.train.optim import LR_SCHEDULES
  _positive_ints(config, ("seed",), problems, zero_ok=True)
  _positive_ints(config, ("train.batch_size", "train.num_steps", "train.log_every",
                          "train.ckpt_every", "train.sample_every", "train.ckpt_keep"),
                 problems)
  _positive_ints(config, ("train.warmup_steps", "train.ckpt_keep_every"), problems,
                 zero_ok=True)
  lr = _get(config, "train.lr")
  if not _is_real(lr) or lr <= 0:
    problems.append(f"config.train.lr={lr!r} must be a positive finite number (e.g. 1e-4)")
  for key, lo in (("weight_decay", 0.0), ("grad_clip", 0.0)):
    v = _get(config, f"train.{key}")
    if v is not None and (not _is_real(v) or v < lo):
      problems.append(f"config.train.{key}={v!r} must be a finite number >= {lo} "
                      f"(0 disables it)")
  for key, typical in (("b1", 0.9), ("b2", 0.999), ("ema_decay", 0.9999)):
    v = _get(config, f"train.{key}")
    if v is not None and (not _is_real(v) or not 0 <= v < 1):
      problems.append(f"config.train.{key}={v!r} must lie in [0, 1) (typically {typical})")
  warm = _get(config, "train.ema_warmup", False)
  if not isinstance(warm, bool):
    problems.append(f"config.train.ema_warmup={warm!r} must be True or False")
  if _get(config, "train.lr_schedule") not in LR_SCHEDULES:
    problems.append(f"config.train.lr_schedule={_get(config, 'train.lr_schedule')!r}; use "
                    f"one of {list(LR_SCHEDULES)}")
  mode = _get(config, "train.nonfinite", "skip")
  if mode not in NONFINITE_MODES:
    problems.append(f"config.train.nonfinite={mode!r}; use one of {list(NONFINITE_MODES)}")
  every, keep_every = _get(config, "train.ckpt_every"), _get(config, "train.ckpt_keep_every")
  if _is_int(every) and _is_int(keep_every) and every > 0 and keep_every > 0 \
      and keep_every % every:
    problems.append(f"config.train.ckpt_keep_every={keep_every} is not a multiple of "
                    f"train.ckpt_every={every}, so no saved step would be kept: use "
                    f"{every * max(1, round(keep_every / every))}")


def _has_checkpoints(workdir: str | None) -> bool:
  if not workdir:
    return False
  from skipdit_jax import paths
  ckpts = paths.resolve(workdir) / "checkpoints"
  return ckpts.is_dir() and any(True for _ in ckpts.iterdir())


def _check_warm_start(config, problems: list[str], workdir: str | None) -> None:
  """train.trainable and train.init_from (the two-stage upcycling recipe, REFERENCE §6)."""
  from skipdit_jax.models.upcycle import TRAINABLE
  trainable = _get(config, "train.trainable", "all")
  if trainable not in TRAINABLE:
    problems.append(f"config.train.trainable={trainable!r} is not one of {list(TRAINABLE)}: "
                    f"use 'skip_only' for stage 1 (only the skip fusions train) or 'all'")
  elif trainable == "skip_only" and not _get(config, "model.long_skip", False):
    problems.append("config.train.trainable='skip_only' trains only the skip fusions, but "
                    "model.long_skip=False has none: set model.long_skip=True (a Skip-DiT) "
                    "or train.trainable='all'")
  path = _get(config, "train.init_from", "")
  if not path:
    return
  if not isinstance(path, str):
    problems.append(f"config.train.init_from={path!r} must be a path string ('' = none)")
    return
  if _has_checkpoints(workdir):
    return  # resuming: the workdir's checkpoint wins and the source is never read
  from skipdit_jax import paths
  from skipdit_jax.train.warm_start import OFFICIAL_SUFFIXES, is_workdir
  full = paths.resolve(path)  # local or gs://
  ext = full.suffix.lower()
  if full.is_dir():
    if not is_workdir(str(full)):
      problems.append(f"config.train.init_from={path!r} is a directory but not a training "
                      f"workdir (no config.json and checkpoints/): point it at a run's "
                      f"--workdir or at an official {'/'.join(OFFICIAL_SUFFIXES)} file")
  elif not full.exists():
    problems.append(f"config.train.init_from={path!r} does not exist: give the path of an "
                    f"official {'/'.join(OFFICIAL_SUFFIXES)} checkpoint or a run's workdir, "
                    f"or '' to start from random weights")
  elif ext not in OFFICIAL_SUFFIXES:
    problems.append(f"config.train.init_from={path!r} has an unknown extension {ext!r}: "
                    f"use one of {list(OFFICIAL_SUFFIXES)} or a run's workdir")
  elif ext in (".pt", ".pth"):
    import importlib.util
    if importlib.util.find_spec("torch") is None:
      problems.append(f"config.train.init_from={path!r} is a PyTorch file but torch is not "
                      f"installed: `pip install torch` (CPU wheels suffice), or convert it "
                      f"once to .safetensors (docs/IMPORT.md)")


def _check_sample(config, problems: list[str]) -> None:
  """The sampler's own checks: solver options, CFG vs. label dropout, the cache plan."""
  if _get(config, "sample") is None:
    return
  from skipdit_jax import models, sampling
  from skipdit_jax.sampling.step_fns import SolverConfig, check_model
  before = len(problems)
  _positive_ints(config, ("sample.num_steps", "sample.batch_size", "sample.timing_runs"),
                 problems)
  _positive_ints(config, ("sample.num_per_class",), problems, zero_ok=True)  # 0: no samples
  steps, total = _get(config, "sample.num_steps"), _get(config, "diffusion.num_train_steps")
  if _is_int(steps) and _is_int(total) and 0 < total < steps:
    problems.append(f"config.sample.num_steps={steps} exceeds diffusion.num_train_steps="
                    f"{total}: use at most {total}")
  solver = _catch(problems, SolverConfig, sampler=_get(config, "sample.sampler"),
                  eta=_get(config, "sample.eta", 0.0),
                  cfg_scale=_get(config, "sample.cfg_scale", 1.0),
                  guided_channels=_get(config, "sample.guided_channels", None))
  _catch(problems, sampling.resolve_execution, _get(config, "sample.execution", "auto"))
  if len(problems) > before:
    return
  try:  # the plan needs a valid model and schedule; their own checks report them
    model = models.create(config.model.name, **model_fields(config))
    train_diffusion = build_diffusion(config)
  except (ValueError, TypeError, ZeroDivisionError):
    return
  _catch(problems, check_model, model, solver)
  cache = _get(config, "sample.cache")
  if cache is not None:  # the plan exactly as `generate` builds it from these fields
    _catch(problems, sampling.respaced_plan, model, train_diffusion, steps, **dict(cache))


def _check_mesh(config, problems: list[str], num_devices: int | None) -> None:
  """The mesh's own checks (parallel/): sizes vs devices, rule names, and that every
  sharded parameter dimension splits evenly; then the batch vs the data axes."""
  if _get(config, "mesh") is None or num_devices is None:
    return
  from skipdit_jax import models, parallel
  shape = _catch(problems, parallel.mesh_shape, config.mesh, num_devices)
  rules = _catch(problems, parallel.axis_rules, config.mesh)
  if shape is None:
    return
  sizes = dict(zip(parallel.AXES, shape))
  batch_ways = math.prod(sizes[a] for a in parallel.BATCH_AXES)
  batch = _get(config, "train.batch_size")
  if _is_int(batch) and batch > 0 and batch % batch_ways:
    shown = " x ".join(f"mesh.{a}" for a in parallel.BATCH_AXES)
    problems.append(f"config.train.batch_size={batch} is not divisible by the data axes "
                    f"({shown} = {batch_ways}): use a multiple of {batch_ways}, e.g. "
                    f"{batch_ways * max(1, batch // batch_ways)}")
  if rules is None or any(p.startswith(("model.", "config.model.", "unknown model"))
                          for p in problems):
    return
  if all(v == 1 for v in sizes.values()) and not _get(config, "mesh.rules"):
    return  # nothing is split, and the preset names only known axes: skip the shapes pass
  try:
    model = models.create(config.model.name, **model_fields(config))
  except (ValueError, TypeError, ZeroDivisionError):
    return
  _catch(problems, parallel.param_specs, model, rules, sizes)


def check_config(config: ml_collections.ConfigDict, *, num_devices: int | None = None,
                 workdir: str | None = None) -> None:
  """Raises `ConfigError` listing every invalid field; returns None when all are valid.

  `num_devices` (default: `jax.device_count()`) sizes the mesh checks; `workdir`, when
  given, must not hold a model of another shape (see `check_workdir`).
  """
  if num_devices is None:
    import jax
    num_devices = jax.device_count()
  problems: list[str] = []
  for check in (_check_model, _check_data, _check_diffusion, _check_train, _check_sample):
    check(config, problems)
  _check_mesh(config, problems, num_devices)
  _check_warm_start(config, problems, workdir)
  if problems:
    raise ConfigError(problems)
  check_workdir(config, workdir)
