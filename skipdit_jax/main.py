"""Command line: `python -m skipdit_jax.main --config=configs/<file>.py --workdir=DIR
[--mode=train|sample|eval] [--config.a.b=value ...]`.

train: trains (resuming from DIR), then, when `config.eval.class_accuracy` is on, samples
`sample.num_per_class` images per class with the EMA weights (uncached, and cached when
`sample.cache.policy` names a cache) and scores them with a classifier fitted on the real
images. sample: loads DIR's EMA weights and writes a PNG grid and an .npz of samples.
eval: scores DIR's EMA weights under config.sample's plan (skipdit_jax/eval/run.py) into
DIR/eval/ and TensorBoard.
Every mode ends by printing one JSON object of its figures as the last stdout line.
"""
from __future__ import annotations

import json
import logging as std_logging
import sys
import time
from typing import Any

from absl import app, flags, logging
from ml_collections import config_flags

from skipdit_jax import paths

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "experiment config file (configs/*.py)",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "run folder: config, checkpoints, events, samples")
flags.DEFINE_enum("mode", "train", ["train", "sample", "eval", "compile"],
                  "what to do with the workdir (compile: plan memory/FLOPs, no workdir)")


def _check_extra_fields(config) -> None:
  """Fields only main reads; the rest are checked by skipdit_jax.config_check."""
  from skipdit_jax.config_check import ConfigError
  problems = []
  for path in ("sample.grid_per_class", "sample.seed", "eval.classifier_train"):
    section, key = path.split(".")
    v = config.get(section, {}).get(key)
    if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
      problems.append(f"config.{path}={v!r} must be an integer >= 0")
  if problems:
    raise ConfigError(problems)


def _sample_kwargs(config, cached: bool) -> dict[str, Any]:
  """`generate` kwargs of the uncached or the cached variant (the same execution)."""
  from skipdit_jax import sampling
  return sampling.options_from_config(config.sample, with_cache=cached)


def _generate(model, params, diffusion, labels, seed: int, batch: int, **kw):
  """Samples for `labels` in chunks of `batch`; returns (images (N,H,W,C), seconds).

  Params sharded over a mesh (a multi-device run) sample with the sharded steps. Both
  paths find their compiled steps by value (model, plan, solver, mesh, the params'
  shardings, shapes), so a repeated call compiles nothing (tests/test_mesh_sampling.py)."""
  import functools
  import jax
  import numpy as np
  from skipdit_jax import parallel
  from skipdit_jax.sampling import sharded
  from skipdit_jax.sampling import generate
  mesh = parallel.params_mesh(params)
  run = generate if mesh is None else functools.partial(
      sharded.generate, mesh, jax.tree.map(lambda a: a.sharding, params))
  from skipdit_jax.models import text_cond
  t0 = time.perf_counter()  # labels: (N,) ints or a caption dict (text models), N leading
  out = [run(model, params, diffusion, jax.tree.map(lambda a: a[i:i + batch], labels),
             jax.random.fold_in(jax.random.PRNGKey(seed), i), **kw)
         for i in range(0, text_cond.batch_size(labels), batch)]
  return np.concatenate(out), time.perf_counter() - t0


def _is_main() -> bool:
  """Only process 0 of a multi-host run writes files."""
  import jax
  return jax.process_index() == 0


def _class_labels(config, per_class: int):
  import numpy as np
  return np.repeat(np.arange(config.data.num_classes, dtype=np.int32), per_class)


def _is_video(model) -> bool:
  return len(model.sample_shape) == 4


def _is_text(model) -> bool:
  return getattr(model, "cond", "class") != "class"


def _caption_prompts(config, workdir: str, model, per_class: int, split: str):
  """Caption prompts from the `split` templates (eval/caption_scores.py) and their
  condition `y`, encoded once into the run's caption cache (text/caption_batches.py)."""
  import numpy as np
  from skipdit_jax.eval import caption_scores
  from skipdit_jax.text import caption_batches as CB
  prompts = caption_scores.eval_prompts(config.data.name, per_class, seed=config.sample.seed,
                                        split=split)
  fields = CB.CaptionFields.from_config(config.data)
  vocab = CB.vocabulary(config.data.name, split)
  emb = CB.encode_vocabulary(vocab, fields.cache_root(str(paths.resolve(workdir))),
                             max_tokens=fields.max_tokens)
  index = {c: i for i, c in enumerate(vocab)}
  ids = np.array([index[c] for c in prompts.captions])
  std = (CB.train_standardizer(config.data, str(paths.resolve(workdir)))
         if fields.standardize else None)
  return prompts, CB.CaptionTable(emb, model.cond, std).condition(ids)


def _direction_reader(config, out: dict[str, Any]):
  """For caption clips: the direction CNN fitted on real clips (its held-out accuracy into
  `out`)."""
  from skipdit_jax import data
  from skipdit_jax.eval import caption_scores, clip_scores
  clips, _, _ = data.load_source(config.data.name, data=config.data)
  num_train = config.eval.classifier_train
  x, ids = caption_scores.real_motion(clips, clip_scores.reader_rows(num_train))
  reader = caption_scores.fit_direction_reader(x, ids, num_train=num_train, seed=config.seed)
  out["direction_reader_heldout_accuracy"] = reader.test_accuracy
  return reader


def _video_references(config, out: dict[str, Any]):
  """For clips: the frame reader fitted on real frames, and the motion figure of real and
  of frame-shuffled clips (written into `out`). Returns the reader."""
  import numpy as np
  from skipdit_jax import data
  from skipdit_jax.eval import clip_scores, video_metrics
  images, labels, _ = data.load_source(config.data.name, data=config.data)
  num_train = config.eval.classifier_train
  clips = clip_scores.real_clips(images, clip_scores.reader_rows(num_train))
  video_label = config.data.get("video", {}).get("label", "digit")
  classes = clip_scores.frame_classes(np.asarray(labels[:len(clips)]), video_label)
  reader = clip_scores.fit_frame_reader(clips, classes, num_train=num_train, seed=config.seed)
  out["classifier_heldout_accuracy"] = reader.test_accuracy
  out["motion_real"] = video_metrics.motion_figure(clips[:500])
  out["motion_shuffled"] = video_metrics.motion_figure(
      video_metrics.shuffle_frames(clips[:500], seed=config.seed))
  return reader


def _write_samples(model, imgs, labels, stem: str, ncol: int, **extra) -> None:
  if _is_video(model):
    from skipdit_jax.eval import video_io
    video_io.save_gif(imgs, stem + ".gif", ncol=ncol, scale=2)
  else:
    from skipdit_jax.eval import image_grid
    image_grid.save_grid(imgs, stem + ".png", ncol=ncol, scale=2)
  paths.save_npz(stem + ".npz", images=imgs, labels=labels, **extra)


def sample_and_score(config, workdir: str, model, ema_params, tag: str) -> dict[str, Any]:
  """Class-conditional samples of every variant, written to the workdir and scored.

  Images: `class_accuracy` from a logistic regression on real images. Clips: from a frame
  CNN on real frames (`eval/clip_scores.py`), plus the motion figure (`motion`, with
  `motion_real` / `motion_shuffled` beside it). With a cache, the cached samples'
  PSNR/SSIM against the uncached ones and the measured and ideal speedups.
  Text models (`model.cond` != "class") are prompted with held-out caption templates,
  balanced over classes (clips: and directions), and scored by `caption_accuracy`
  (eval/caption_scores.py): the class (clips: and direction) read back from each sample
  must be the one its caption names."""
  import numpy as np
  from skipdit_jax import data
  from skipdit_jax.eval import class_accuracy, clip_scores, image_metrics, video_metrics
  from skipdit_jax.train import build_diffusion
  s, diffusion = config.sample, build_diffusion(config)
  video, text = _is_video(model), _is_text(model)
  prompts = direction_reader = None
  if text:  # held-out caption templates; `asked` = the classes they name
    templates = config.get("eval", {}).get("caption_templates", "heldout")
    prompts, labels = _caption_prompts(config, workdir, model, s.num_per_class, templates)
    asked = prompts.classes
  else:
    labels = asked = _class_labels(config, s.num_per_class)
  variants = {"": False}
  if s.get("cache") is not None and s.cache.get("policy", "none") != "none":
    variants["_cached"] = True
  out: dict[str, Any] = {"num_samples": int(len(asked)), "sampler": s.sampler,
                         "sample_steps": s.num_steps, "cfg_scale": s.cfg_scale}
  if text:
    out["caption_templates"] = templates
  scorer = reader = None
  if config.get("eval", {}).get("class_accuracy", False):
    if video:
      reader = _video_references(config, out)
    else:
      images, real_labels, _ = data.load_source(config.data.name)
      scorer, held = class_accuracy.fit_classifier(
          images, real_labels, num_train=config.eval.classifier_train, seed=config.seed)
      out["classifier_heldout_accuracy"] = held
    if text and video:
      direction_reader = _direction_reader(config, out)
  samples, kws = {}, {}
  for suffix, cached in variants.items():
    kw = _sample_kwargs(config, cached)
    imgs, first_s = _generate(model, ema_params, diffusion, labels, s.seed, s.batch_size, **kw)
    kws[suffix] = kw
    stem = str(paths.resolve(workdir) / "samples" / f"{tag}{suffix}")
    if _is_main():  # every process samples (collectives); process 0 writes
      _write_samples(model, imgs, asked, stem, s.num_per_class,
                     **({"captions": np.asarray(prompts.captions)} if text else {}))
    samples[suffix] = imgs
    out[f"sample{suffix}_s"] = first_s
    out[f"samples{suffix}_file"] = stem + ".npz"
    if cached:
      from skipdit_jax.sampling import describe, respaced_plan
      _, plan = respaced_plan(model, diffusion, **kw)
      print(describe(plan), flush=True)
      out["cache_policy"] = kw.get("policy")
      out["cache_ideal_speedup"] = plan.ideal_speedup
    if text and (scorer is not None or reader is not None):
      from skipdit_jax.eval import caption_scores
      read = (class_accuracy.predict_classes(scorer, imgs) if scorer is not None
              else caption_scores.clip_classes(reader, imgs))
      dirs = direction_reader.predict(imgs) if direction_reader is not None else None
      out.update({f"{k}{suffix}": v for k, v in
                  caption_scores.caption_accuracy(prompts, read, dirs).items()})
    elif scorer is not None:
      out[f"class_accuracy{suffix}"] = class_accuracy.class_accuracy(scorer, imgs, labels)
    elif reader is not None:
      video_label = config.data.get("video", {}).get("label", "digit")
      out[f"class_accuracy{suffix}"] = clip_scores.frame_accuracy(
          reader, imgs, clip_scores.frame_classes(labels, video_label))
    if video:
      out[f"motion{suffix}"] = video_metrics.motion_figure(imgs)
  out.update(_steady_times(model, ema_params, diffusion, labels, s, kws))
  if "_cached" in samples:
    if video:
      out.update(clip_scores.fidelity(samples["_cached"], samples[""]))
    else:
      out["psnr_cached_vs_uncached"] = float(np.mean(image_metrics.psnr(samples["_cached"],
                                                                        samples[""])))
  if "sample_cached_steady_s" in out:
    out["cache_speedup"] = out["sample_steady_s"] / out["sample_cached_steady_s"]
    print(f"cache speedup: measured {out['cache_speedup']:.2f}x, ideal "
          f"{out['cache_ideal_speedup']:.2f}x (block counts)", flush=True)
  return out


def _steady_times(model, params, diffusion, labels, s, kws: dict[str, dict]) -> dict:
  """`sample{suffix}_steady_s`: each variant's compiled sampler alone (its first run, which
  compiled, is over). The variants take turns, `s.timing_runs` times, and each keeps its
  fastest run, so a load spike hits them alike and does not decide `cache_speedup`."""
  best = {suffix: float("inf") for suffix in kws}
  for _ in range(s.get("timing_runs", 3)):
    for suffix, kw in kws.items():
      seconds = _generate(model, params, diffusion, labels, s.seed, s.batch_size, **kw)[1]
      best[suffix] = min(best[suffix], seconds)
  return {f"sample{suffix}_steady_s": t for suffix, t in best.items()}


def train_mode(config, workdir: str) -> dict[str, Any]:
  from skipdit_jax.eval import image_grid
  from skipdit_jax.train import build_diffusion, build_model, train
  model, diffusion = build_model(config), build_diffusion(config)
  # Text models draw no periodic class grids (their final samples are captioned).
  labels = _class_labels(config, 0 if _is_text(model) else config.sample.grid_per_class)

  def on_sample(step: int, ema_params):
    if not len(labels):
      return None
    imgs, _ = _generate(model, ema_params, diffusion, labels, config.sample.seed,
                        config.sample.batch_size, **_sample_kwargs(config, False))
    if not _is_main():
      return None
    grid = paths.resolve(workdir) / "samples" / f"grid_{step:07d}.png"
    if _is_video(model):  # a filmstrip: one row per clip, its frames left to right
      from skipdit_jax.eval import video_metrics
      return image_grid.save_grid(video_metrics.frames(imgs), grid, ncol=imgs.shape[1],
                                  scale=2)
    return image_grid.save_grid(imgs, grid, ncol=config.sample.grid_per_class, scale=2)

  summary, state = train(config, workdir, on_sample=on_sample)
  result = {"mode": "train", "model": config.model.name, "long_skip": model.long_skip,
            "dataset": config.data.name, **summary}
  if summary.get("preempted"):
    return result
  if config.get("eval", {}).get("class_accuracy", False) or config.sample.num_per_class:
    result.update(sample_and_score(config, workdir, model, state.ema_params,
                                   f"final_{summary['steps']:07d}"))
  return result


def sample_mode(config, workdir: str) -> dict[str, Any]:
  from skipdit_jax.train import restore_ema
  model, ema_params, step = restore_ema(config, workdir)
  out = {"mode": "sample", "model": config.model.name, "step": step}
  out.update(sample_and_score(config, workdir, model, ema_params,
                              f"sample_{step:07d}_{config.sample.sampler}"
                              f"{config.sample.num_steps}_cfg{config.sample.cfg_scale:g}"))
  return out


def eval_mode(config, workdir: str) -> dict[str, Any]:
  """FD/KID, precision/recall, accuracy and stability of the workdir (skipdit_jax.eval.run)."""
  from skipdit_jax.eval.run import evaluate
  return {"mode": "eval", "model": config.model.name, **evaluate(config, workdir)}


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  from skipdit_jax.config_check import ConfigError, check_config
  config, workdir = FLAGS.config, FLAGS.workdir
  if config is None:
    raise app.UsageError("--config is required, e.g. --config=configs/digits_skipdit.py")
  from skipdit_jax.parallel import maybe_initialize_distributed
  try:  # multi-host: join the other processes before anything touches the devices
    maybe_initialize_distributed(config)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if FLAGS.mode == "compile":  # shapes only: no data, no workdir (skipdit_jax/compile_plan.py)
    from skipdit_jax import compile_plan
    try:
      compile_plan.main(config)
    except ConfigError as e:
      print(f"error: {e}", file=sys.stderr)
      sys.exit(2)
    return
  if not workdir:
    raise app.UsageError("--workdir is required: the run folder (rerunning resumes)")
  t0 = time.perf_counter()
  try:  # a gs:// bucket that is missing or unreachable: one line, before any compute
    paths.check_access(workdir)
  except paths.WorkdirError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  try:
    check_config(config, workdir=workdir)
    _check_extra_fields(config)
  except ConfigError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  from skipdit_jax.train.checkpoint import CheckpointError
  from skipdit_jax.train.guard import NonFiniteError
  try:
    modes = {"train": train_mode, "sample": sample_mode, "eval": eval_mode}
    result = modes[FLAGS.mode](config, workdir)
  except (CheckpointError, NonFiniteError) as e:  # a clear message, not a traceback
    print(f"error: {e}", file=sys.stderr)
    sys.exit(3 if isinstance(e, NonFiniteError) else 2)
  result["total_time_s"] = time.perf_counter() - t0
  result["workdir"] = str(paths.resolve(workdir))
  if _is_main():
    paths.write_text(paths.resolve(workdir) / f"result_{FLAGS.mode}.json",
                     json.dumps(result, indent=2, default=float))
  print(json.dumps(result, default=float), flush=True)
  if result.get("preempted"):
    from skipdit_jax.train.preemption import PREEMPTED_EXIT_CODE
    sys.exit(PREEMPTED_EXIT_CODE)


class _QuietLibraries(std_logging.Filter):
  """Keeps our INFO lines (progress, metric lines) and drops the INFO chatter of
  orbax and JAX internals; their warnings and errors still show."""
  NOISY = ("/orbax/", "/jax/_src/", "/absl/", "/etils/")

  def filter(self, record: std_logging.LogRecord) -> bool:
    return record.levelno >= std_logging.WARNING or not any(
        p in record.pathname for p in self.NOISY)


def run() -> None:
  """Console entry point `skipdit`."""
  logging.set_verbosity(logging.INFO)
  logging.get_absl_handler().addFilter(_QuietLibraries())
  app.run(main)


if __name__ == "__main__":
  run()
