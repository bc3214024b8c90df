"""Metric writers: TensorBoard event files (tensorboardX) and console lines (absl INFO).

clu's writers are not used: `clu.metric_writers/__init__.py` imports its TensorFlow
summary writer, so no module of that package (not even the `MetricWriter` interface)
imports without TensorFlow, which this project does not install. tensorboardX already
writes events from its own thread, so no asynchronous wrapper is needed. A `gs://` logdir
needs no TensorFlow either: tensorboardX writes it with google-cloud-storage (each flush
uploads the whole event file, so the object is always a complete, readable file).
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from absl import logging

from skipdit_jax import paths

TENSORBOARD = "tensorboard"  # the event files' folder in the workdir


def logdir(workdir: str) -> str:
  """`<workdir>/tensorboard` as tensorboardX reads it: a local path or a gs:// URL."""
  return str(paths.resolve(workdir) / TENSORBOARD)


def _event_writer(logdir: str):
  import tensorboardX  # imported here so that `import skipdit_jax.train` stays light
  if logdir.startswith("gs://"):
    from tensorboardX import record_writer
    if not record_writer.GCS_ENABLED:
      raise ImportError(f"TensorBoard events under {logdir} need google-cloud-storage: "
                        f"pip install 'skipdit-jax[gcs]'")
  elif paths.is_remote(logdir) and not logdir.startswith("s3://"):
    raise ValueError(f"TensorBoard events cannot be written to {logdir}: tensorboardX "
                     f"writes local paths, gs:// and s3:// only")
  return tensorboardX.SummaryWriter(logdir=logdir)


class MetricWriter:
  """Scalars, images (HWC or NHWC; uint8 or [0, 1] floats) and hparams to TensorBoard
  (`logdir`; None = none) and, when `console`, one INFO line per call.

  `asynchronous=False` flushes after every call, so the events are in the file when it
  returns; otherwise tensorboardX's thread writes them (at the latest on `flush`/`close`).
  """

  def __init__(self, logdir: str | None, *, console: bool = True,
               asynchronous: bool = True):
    self._events = _event_writer(logdir) if logdir else None
    self._console = console
    self._sync = not asynchronous

  def _done(self) -> None:
    if self._sync:
      self.flush()

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    scalars = {k: float(v) for k, v in scalars.items()}
    if self._console:
      line = ", ".join(f"{k}={v:.6g}" for k, v in sorted(scalars.items()))
      logging.info("[%d] %s", step, line)
    if self._events:
      for key, value in scalars.items():
        self._events.add_scalar(key, value, global_step=step)
    self._done()

  def write_images(self, step: int, images: Mapping[str, Any]) -> None:
    images = {k: np.asarray(v) for k, v in images.items()}
    if self._console:
      logging.info("[%d] images %s", step, {k: v.shape for k, v in images.items()})
    if self._events:
      for key, value in images.items():
        if value.ndim == 4:
          self._events.add_images(key, value, global_step=step, dataformats="NHWC")
        else:
          self._events.add_image(key, value, global_step=step, dataformats="HWC")
    self._done()

  def write_hparams(self, hparams: Mapping[str, Any]) -> None:
    if self._console:
      logging.info("[hparams] %s", dict(hparams))
    if self._events:
      # tensorboardX's add_hparams opens a sub-run; a text table keeps one run per workdir.
      rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(hparams.items()))
      self._events.add_text("hparams", "| field | value |\n|---|---|\n" + rows, global_step=0)
    self._done()

  def flush(self) -> None:
    if self._events:
      self._events.flush()

  def close(self) -> None:
    if self._events:
      self._events.close()
      self._events = None


def create_writer(logdir: str | None, *, asynchronous: bool = True,
                  console: bool = True) -> MetricWriter:
  """Console (absl INFO log) and TensorBoard (`logdir`; None = none) as one writer."""
  return MetricWriter(logdir, console=console, asynchronous=asynchronous)
