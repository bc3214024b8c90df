"""Metric writers: clu's console writer plus TensorBoard event files via tensorboardX.

clu's own TensorBoard writer needs TensorFlow; `TensorBoardXWriter` implements clu's
`MetricWriter` interface over `tensorboardX.SummaryWriter` instead. A `gs://` logdir
needs no TensorFlow either: tensorboardX writes it with google-cloud-storage (each flush
uploads the whole event file, so the object is always a complete, readable file).
"""
from __future__ import annotations

import importlib.util
import sys
import types
from typing import Any, Mapping, Optional

import numpy as np

from skipdit_jax import paths

TENSORBOARD = "tensorboard"  # the event files' folder in the workdir


def logdir(workdir: str) -> str:
  """`<workdir>/tensorboard` as tensorboardX reads it: a local path or a gs:// URL."""
  return str(paths.resolve(workdir) / TENSORBOARD)


def _import_clu_writers() -> types.ModuleType:
  """`clu.metric_writers`, importable without TensorFlow.

  Its package `__init__` imports the TF summary writer, which fails without TensorFlow.
  When TF is absent, a stand-in for that one module is registered first; its
  `SummaryWriter` raises on use, and every other clu writer works as usual.
  """
  name = "clu.metric_writers.summary_writer"
  if importlib.util.find_spec("tensorflow") is None and name not in sys.modules:
    stub = types.ModuleType(name)

    class SummaryWriter:  # pylint: disable=too-few-public-methods
      def __init__(self, *args, **kwargs):
        raise ImportError("clu's SummaryWriter needs TensorFlow; skipdit_jax writes "
                          "TensorBoard events with TensorBoardXWriter instead")
    stub.SummaryWriter = SummaryWriter
    sys.modules[name] = stub
  from clu import metric_writers as mw  # pylint: disable=g-import-not-at-top
  return mw


metric_writers = _import_clu_writers()
interface = metric_writers.interface


class TensorBoardXWriter(interface.MetricWriter):
  """Scalars, images (HWC, uint8 or [0, 1] floats), texts, histograms and hparams."""

  def __init__(self, logdir: str):
    import tensorboardX  # imported here so that `import skipdit_jax.train` stays light
    if logdir.startswith("gs://"):
      from tensorboardX import record_writer
      if not record_writer.GCS_ENABLED:
        raise ImportError(f"TensorBoard events under {logdir} need google-cloud-storage: "
                          f"pip install 'skipdit-jax[gcs]'")
    elif paths.is_remote(logdir) and not logdir.startswith("s3://"):
      raise ValueError(f"TensorBoard events cannot be written to {logdir}: tensorboardX "
                       f"writes local paths, gs:// and s3:// only")
    self._writer = tensorboardX.SummaryWriter(logdir=logdir)

  def write_summaries(self, step: int, values: Mapping[str, Any],
                      metadata: Optional[Mapping[str, Any]] = None):
    for key, value in values.items():
      value = np.asarray(value)
      if value.ndim == 0:
        self._writer.add_scalar(key, float(value), global_step=step)

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    for key, value in scalars.items():
      self._writer.add_scalar(key, float(value), global_step=step)

  def write_images(self, step: int, images: Mapping[str, Any]):
    for key, value in images.items():
      value = np.asarray(value)
      if value.ndim == 4:
        self._writer.add_images(key, value, global_step=step, dataformats="NHWC")
      else:
        self._writer.add_image(key, value, global_step=step, dataformats="HWC")

  def write_videos(self, step: int, videos: Mapping[str, Any]):
    del step, videos  # not needed by this project

  def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int):
    del step, audios, sample_rate

  def write_texts(self, step: int, texts: Mapping[str, str]):
    for key, value in texts.items():
      self._writer.add_text(key, value, global_step=step)

  def write_histograms(self, step: int, arrays: Mapping[str, Any],
                       num_buckets: Optional[Mapping[str, int]] = None):
    for key, value in arrays.items():
      self._writer.add_histogram(key, np.asarray(value), global_step=step)

  def write_hparams(self, hparams: Mapping[str, Any]):
    # tensorboardX's add_hparams opens a sub-run; a text table keeps one run per workdir.
    rows = "\n".join(f"| {k} | {v} |" for k, v in sorted(hparams.items()))
    self._writer.add_text("hparams", "| field | value |\n|---|---|\n" + rows, global_step=0)

  def flush(self):
    self._writer.flush()

  def close(self):
    self._writer.close()


def create_writer(logdir: str | None, *, asynchronous: bool = True,
                  console: bool = True) -> interface.MetricWriter:
  """Console (absl INFO log) and TensorBoard (`logdir`; None = none) as one writer.

  Asynchronous writing keeps event-file I/O off the training thread.
  """
  writers: list[interface.MetricWriter] = []
  if console:
    writers.append(metric_writers.LoggingWriter())
  if logdir:
    writers.append(TensorBoardXWriter(logdir))
  if asynchronous:
    return metric_writers.AsyncMultiWriter(writers)
  return metric_writers.MultiWriter(writers)
