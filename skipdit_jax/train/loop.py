"""The training loop: data -> jitted step -> logs, sample grids and checkpoints.

Resumable: the state and the data position come from the latest checkpoint of the
workdir, so rerunning the same command continues where it stopped. Nothing waits on the
device between log points; batches are prepared one step ahead on a background thread.
"""
from __future__ import annotations

import json
import queue
import threading
import time
from typing import Any, Callable, Optional

import jax
import ml_collections
import numpy as np
from absl import logging

from skipdit_jax import data, models, parallel
from skipdit_jax.train import checkpoint, optim, perf, warm_start, writers
from skipdit_jax.train.build import build_diffusion, build_model, check_workdir
from skipdit_jax.train.guard import GuardedStep
from skipdit_jax.train.preemption import PreemptionWatcher
from skipdit_jax.train.state import TrainState
from skipdit_jax.train.step import train_step

# on_sample(step, ema_params) -> a uint8 (H, W, C) grid for TensorBoard (or None).
SampleHook = Callable[[int, Any], Optional[np.ndarray]]


def init_state(config: ml_collections.ConfigDict, model: models.DiT, tx) -> TrainState:
  """Fresh state from `config.seed` (params and the step rng come from separate keys)."""
  init_key, step_key = jax.random.split(jax.random.PRNGKey(config.seed))
  return TrainState.create(models.init_params(model, init_key), tx, step_key)


def abstract_state(config: ml_collections.ConfigDict, model: models.DiT) -> TrainState:
  """Shapes and dtypes of the train state, nothing allocated (for restoring)."""
  tx = optim.make_optimizer(config.train)
  return jax.eval_shape(lambda: init_state(config, model, tx))


def restore_ema(config: ml_collections.ConfigDict, workdir: str, *, step: int | None = None,
                purpose: str = "sample from") -> tuple[models.DiT, Any, int]:
  """(model, EMA params, step) of the workdir's checkpoint `step` (default: the latest),
  on the run's mesh shardings. Only the EMA is read: params and optimizer state are
  neither restored nor allocated. No complete checkpoint: CheckpointError naming `purpose`."""
  model = build_model(config)
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)  # a missing workdir: an error
  abstract = abstract_state(config, model)
  try:
    restored = ckpt.restore_ema(parallel.MeshRun(config, model, abstract).abstract(abstract),
                                step)
  finally:
    ckpt.close()
  if restored is None:
    raise checkpoint.CheckpointError(
        f"--workdir={workdir!r} holds no checkpoint to {purpose}; train first "
        "(--mode=train) or point --workdir at a trained run")
  ema_params, step = restored
  return model, ema_params, step


class _AotJit:
  """`jax.jit` that compiles ahead of time on the first call and keeps the executable,
  so its XLA cost analysis describes exactly the program that runs."""

  def __init__(self, fn: Callable, **jit_kwargs):
    self.jitted = jax.jit(fn, **jit_kwargs)
    self.compiled = None

  def __call__(self, *args):
    if self.compiled is None:
      self.compiled = self.jitted.lower(*args).compile()
    return self.compiled(*args)


class _Prefetcher:
  """Yields device batches from a BatchIterator, `depth` ahead, from a daemon thread;
  `put(images, labels)` turns this process's rows into the global arrays."""

  def __init__(self, it: data.BatchIterator, put: Callable, depth: int = 2):
    self._put = put
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, args=(it,), daemon=True)
    self._thread.start()

  def _run(self, it):
    try:
      while not self._stop.is_set():
        b = next(it)
        item = self._put(b["image"], b.get("y", b["label"]))  # y: a caption condition
        while not self._stop.is_set():
          try:
            self._queue.put(item, timeout=0.1)
            break
          except queue.Full:
            continue
    except Exception as e:  # surfaced on the training thread by next()
      self._queue.put(e)

  def next(self):
    item = self._queue.get()
    if isinstance(item, Exception):
      raise item
    return item

  def close(self):
    self._stop.set()
    self._thread.join(timeout=5)


def train_to_end(config: ml_collections.ConfigDict, workdir: str, what: str = "training",
                 **kwargs) -> tuple[dict[str, Any], TrainState]:
  """`train`, for callers that go on to score the final weights: a preempted run (SIGTERM;
  its checkpoint is saved) stops the process with an error naming the step, so weights
  cut short are never scored as final. Rerunning the same command resumes."""
  summary, state = train(config, workdir, **kwargs)
  if summary.get("preempted"):
    raise SystemExit(f"{what}: training was preempted at step {summary.get('steps')} of "
                     f"{config.train.num_steps}; its checkpoint is saved, so rerun the same "
                     "command to resume")
  return summary, state


def train(config: ml_collections.ConfigDict, workdir: str, *,
          on_sample: Optional[SampleHook] = None) -> tuple[dict[str, Any], TrainState]:
  """Trains to `config.train.num_steps`, resuming from `workdir`.

  Returns (summary, final state): the summary holds steps, times, images/s, FLOP/s and
  the final loss (JSON-ready); the final checkpoint is saved before returning.
  `on_sample(step, ema_params)` runs every `train.sample_every` steps and at the end.
  """
  tc = config.train
  images, labels, num_classes = data.load_source(config.data.name, data=config.data)
  data.check_data_shape(config, images.shape, num_classes)
  model = build_model(config)
  diffusion = build_diffusion(config)
  tx = optim.make_optimizer(tc)
  schedule = optim.lr_schedule(tc)

  # The mesh of config.mesh (one device: a 1x1x1 mesh, the plain path); skipdit_jax/parallel.
  abstract = abstract_state(config, model)
  run = parallel.MeshRun(config, model, abstract)
  if check_workdir(config, workdir) and run.is_main:  # other shape: fresh start
    checkpoint.move_aside(workdir)
  run.sync("workdir")
  ckpt = checkpoint.Checkpointer(workdir, keep=tc.get("ckpt_keep", 3),
                                 keep_every=tc.get("ckpt_keep_every", 0),
                                 async_save=tc.get("ckpt_async", True))
  # A resume restores straight into the run's shardings (ShapeDtypeStructs: the state is
  # allocated once, by orbax); only a run with no checkpoint builds a fresh state.
  last = ckpt.latest_step()
  restored = None if last is None else ckpt.restore(run.abstract(abstract), last)
  meta: dict[str, Any] = {}
  if restored is not None:
    state, meta = restored
    logging.info("resumed from %s at step %d", ckpt.directory, int(state.step))
  else:
    state = run.init(lambda: init_state(config, model, tx))  # born sharded
  if restored is None and tc.get("init_from"):  # a fresh run seeded from another model
    state = warm_start.seed_state(state, config, model, tx)
    logging.info("initialised the params from train.init_from=%s", tc.init_from)
  # Fresh, restored and imported states all carry the run's shardings, so they lower to
  # one program (and share the compilation cache).
  state = run.place(state)
  if run.is_main:  # only process 0 writes files; orbax coordinates the checkpoint itself
    checkpoint.save_config(config, workdir)
  start_step = int(state.step)
  position = int(meta.get("data", {}).get("position", start_step))
  index, count = run.rows  # this process reads only its rows of every global batch
  it = data.BatchIterator(images, labels, tc.batch_size, config.seed,
                          random_flip=config.data.random_flip, start_position=position,
                          process_index=index, process_count=count)
  if config.data.get("captions", {}).get("enabled", False):  # text models: y = captions
    from skipdit_jax.text import caption_batches
    it = caption_batches.attach(it, config.data, model.cond, labels, images, workdir,
                                log=logging.info)

  def raw_step(s, x, y):
    return train_step(s, x, y, model=model, diffusion=diffusion, tx=tx, schedule=schedule,
                      ema_decay=tc.ema_decay,
                      ema_warmup=tc.get("ema_warmup", False))
  aot: dict[str, _AotJit] = {}

  def make_jit(fn, **kw):
    aot["step"] = _AotJit(fn, **kw)
    return aot["step"]
  step_fn = GuardedStep(run.constrained(raw_step), tc.get("nonfinite", "skip"), jit=make_jit,
                        **run.step_jit_kwargs())
  step_fn.restore(meta.get("guard"))

  writer = writers.create_writer(writers.logdir(workdir) if run.is_main else None,
                                 console=run.is_main)
  if start_step == 0:
    writer.write_hparams({k: v for k, v in _flatten(config.to_dict()).items()})
  n_dev = run.num_devices
  peak = perf.peak_flops()
  total = tc.num_steps
  summary: dict[str, Any] = {"start_step": start_step, "steps": start_step,
                             "mesh": dict(run.mesh.shape)}
  if start_step >= total:
    logging.info("workdir already holds step %d >= train.num_steps=%d; nothing to train",
                 start_step, total)
    ckpt.close()
    writer.close()
    summary.update(train_time_s=0.0, img_per_s=None, final_loss=meta.get("loss"))
    return summary, state

  resolved = json.loads(config.to_json_best_effort())  # saved beside every state

  def save(step_now: int, loss: float | None):
    step_fn.check()  # never write a state frozen by a non-finite step
    ckpt.save(step_now, state, {"data": {"position": position + step_now - start_step},
                                "guard": step_fn.counters(), "loss": loss,
                                "config": resolved})

  prefetch = _Prefetcher(it, run.global_batch)
  pending: list[dict] = []
  flops = None
  t_start = time.perf_counter()
  t_log, step_log, t_first, loss = t_start, start_step, None, None
  step = start_step
  preempted = False
  t_paused = 0.0
  try:
    with PreemptionWatcher() as watcher:
      while step < total:
        x, y = prefetch.next()
        state, metrics = step_fn(state, x, y)
        step += 1
        pending.append(metrics)
        if t_first is None:  # the first call compiled; time the rest only
          jax.block_until_ready(metrics)
          t_first = time.perf_counter()
          flops = perf.compiled_flops(aot["step"].compiled)  # one device's program
          flops = flops * n_dev if flops else None
          logging.info("compiled the train step in %.1fs (%s GFLOP per step)",
                       t_first - t_start, f"{flops / 1e9:.3f}" if flops else "?")
          t_log, step_log = t_first, step
          pending = []
        last = step == total
        if pending and (step % tc.log_every == 0 or last):
          means = {k: float(np.mean([m[k] for m in jax.device_get(pending)]))
                   for k in pending[0]}
          now = time.perf_counter()
          rate = (step - step_log) / max(now - t_log, 1e-9)
          scalars = dict(means, steps_per_s=rate, images_per_s=rate * tc.batch_size)
          if flops:
            scalars["tflops_per_device"] = flops * rate / n_dev / 1e12
            if peak:
              scalars["mfu"] = flops * rate / n_dev / peak
          writer.write_scalars(step, scalars)
          loss = means["loss"]
          logging.info("step %d/%d  loss %.4f  %.1f img/s  %s  ETA %s", step, total, loss,
                       rate * tc.batch_size,
                       (f"{scalars['tflops_per_device'] * 1e3:.1f} GFLOP/s/device"
                        + (f" MFU {scalars['mfu']:.1%}" if "mfu" in scalars else ""))
                       if flops else "", perf.format_duration((total - step) / rate))
          pending, t_log, step_log = [], now, step
        t_pause = time.perf_counter()
        if on_sample and (step % tc.sample_every == 0 or last):
          grid = on_sample(step, state.ema_params)
          if grid is not None:
            writer.write_images(step, {"samples": grid[None]})
        if step % tc.ckpt_every == 0 or last:
          save(step, loss)
        paused = time.perf_counter() - t_pause  # sampling and saving are not train speed
        t_log += paused
        t_paused += paused
        if not last and watcher.should_stop(step):
          save(step, loss)
          preempted = True
          break
  finally:
    prefetch.close()
    ckpt.wait()
    ckpt.close()
    writer.flush()
    writer.close()
  t_end = time.perf_counter()
  timed = step - start_step - 1
  rate = timed / (t_end - t_first - t_paused) if t_first and timed > 0 else None
  summary.update(
      steps=step, preempted=preempted, train_time_s=t_end - t_start,
      compile_s=(t_first - t_start) if t_first else None,
      img_per_s=rate * tc.batch_size if rate else None,
      gflop_per_step=flops / 1e9 if flops else None,
      gflops_per_device=flops * rate / n_dev / 1e9 if flops and rate else None,
      final_loss=loss, skipped_steps=step_fn.counters()["skipped"],
      sample_and_save_s=t_paused)
  return summary, state


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in d.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = v
  return out
