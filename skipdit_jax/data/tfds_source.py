"""tensorflow-datasets sources: `config.data.name = "tfds:<name>"` (ImageNet, CIFAR-10,
CelebA, LSUN, ... as prepared in $TFDS_DATA_DIR), read through `tfds.data_source` — random
access to the prepared ArrayRecord files, no TensorFlow needed.

Two ways in:
  - `make_iterator(config, ...)` streams: each process decodes only its rows of every
    global batch and resizes / centre-crops them to `config.data.image_size` (the ADM/DiT
    recipe). The stream is exactly `BatchIterator`'s (same order, flips and per-process
    slices for a seed), so runs are deterministic and resumable by position.
  - the data registry: `tfds:<name>` is registered for datasets found in the data dir
    (and by `register_tfds`); `load_source` then decodes a whole split into memory at
    its native size, which suits CIFAR-10 / MNIST-sized sets with one image shape.
Datasets without labels (CelebA, LSUN) get label 0 and one class (unconditional).
Video sets (ucf101, bair_robot_pushing_small, ...): with `config.data.num_frames > 0`
the registered source reads clips of `config.data.video.feature` lazily (`load_clips`).
"""
from __future__ import annotations

import concurrent.futures as futures
import os
import re
from typing import Any

import numpy as np

from skipdit_jax.data import clips
from skipdit_jax.data.pipeline import BatchIterator
from skipdit_jax.data.resize import resize_center_crop
from skipdit_jax.data.sources import SOURCES, num_frames, register_source, to_unit_range

PREFIX = "tfds:"


def _tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError("tfds: datasets need tensorflow-datasets (and array_record): "
                      "`pip install tensorflow-datasets array_record`") from e
  return tfds


def data_dir() -> str:
  return os.environ.get("TFDS_DATA_DIR", os.path.expanduser("~/tensorflow_datasets"))


def open_split(name: str, split: str) -> tuple[Any, int]:
  """(random-access source of {"image": uint8 HWC, "label"?: int}, num_classes)."""
  tfds = _tfds()
  try:
    ds = tfds.data_source(name, split=split, data_dir=os.environ.get("TFDS_DATA_DIR"))
  except Exception as e:  # not prepared, unknown name or split: say how to fix it
    raise ValueError(f"config.data.name='{PREFIX}{name}' split {split!r}: tfds could not "
                     f"open it ({type(e).__name__}: {e}). Prepare it once with `tfds build "
                     f"{name} --file_format=array_record` into $TFDS_DATA_DIR "
                     f"(now {data_dir()!r}).") from e
  features = ds.dataset_info.features
  label = features["label"] if "label" in features else None
  return ds, int(getattr(label, "num_classes", 0) or 1)


class _Rows:
  """Decodes rows of a tfds source on demand (threads: PIL and the reader release the
  GIL). Images and labels of one request share one read."""

  def __init__(self, ds: Any, image_size: int, channels: int, workers: int):
    self.ds, self.size, self.channels = ds, image_size, channels
    self._pool = futures.ThreadPoolExecutor(max(1, workers))
    self._key, self._value = None, None

  def _one(self, i: int) -> tuple[np.ndarray, int]:
    ex = self.ds[int(i)]
    img = np.asarray(ex["image"])
    img = img[..., None] if img.ndim == 2 else img
    if img.shape[-1] != self.channels:
      raise ValueError(f"config.data.channels={self.channels} but the tfds images have "
                       f"{img.shape[-1]} channels: set data.channels={img.shape[-1]}")
    return resize_center_crop(img, self.size), int(ex.get("label", 0))

  def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    key = np.asarray(rows).tobytes()
    if key != self._key:
      pairs = list(self._pool.map(self._one, np.asarray(rows)))
      images = np.stack([p[0] for p in pairs]) if pairs else np.zeros(
          (0, self.size, self.size, self.channels), np.uint8)
      self._key = key
      self._value = (to_unit_range(images, 255.0),
                     np.asarray([p[1] for p in pairs], np.int32))
    return self._value


class _LazyColumn:
  """What `BatchIterator` indexes: `column[rows]` decodes just those rows."""

  def __init__(self, rows: _Rows, n: int, which: int):
    self._rows, self._which = rows, which
    self.shape = ((n, rows.size, rows.size, rows.channels) if which == 0 else (n,))

  def __getitem__(self, rows: np.ndarray) -> np.ndarray:
    return self._rows.read(rows)[self._which]


class TfdsBatchIterator(BatchIterator):
  """`BatchIterator`'s stream over a tfds split, decoding only this process's rows."""

  def __init__(self, ds: Any, batch_size: int, seed: int, *, image_size: int,
               channels: int, random_flip: bool = False, start_position: int = 0,
               process_index: int = 0, process_count: int = 1, workers: int = 8):
    n = len(ds)
    # Validate exactly as BatchIterator does, on a stand-in of the same length.
    BatchIterator.__init__(self, np.zeros((n, 1, 1, 1), np.uint8), np.zeros((n,), np.int32),
                           batch_size, seed, random_flip=random_flip,
                           start_position=start_position, process_index=process_index,
                           process_count=process_count)
    rows = _Rows(ds, image_size, channels, workers)
    self._images, self._labels = _LazyColumn(rows, n, 0), _LazyColumn(rows, n, 1)


def make_iterator(config: Any, *, split: str = "train", start_position: int = 0,
                  process_index: int = 0, process_count: int = 1) -> TfdsBatchIterator:
  """The streaming iterator for `config.data.name = "tfds:<name>"`; also checks
  `config.data.num_classes` against the dataset."""
  name = config.data.name
  if not name.startswith(PREFIX):
    raise ValueError(f"config.data.name={name!r} is not a tfds dataset ({PREFIX}<name>)")
  ds, num_classes = open_split(name[len(PREFIX):], split)
  if config.data.num_classes != num_classes:
    raise ValueError(f"config.data.num_classes={config.data.num_classes} but {name} has "
                     f"{num_classes}: set data.num_classes={num_classes}")
  return TfdsBatchIterator(
      ds, config.train.batch_size, config.seed, image_size=config.data.image_size,
      channels=config.data.channels, random_flip=config.data.random_flip,
      start_position=start_position, process_index=process_index,
      process_count=process_count, workers=config.data.get("num_workers", 8))


def load_whole(name: str, split: str) -> tuple[np.ndarray, np.ndarray, int]:
  """A whole split in memory at native size (the registry's in-memory source)."""
  ds, num_classes = open_split(name, split)
  shape = ds.dataset_info.features["image"].shape
  if any(s is None for s in shape):
    raise ValueError(f"{PREFIX}{name} has images of varying size {shape}; it is streamed "
                     f"and resized to config.data.image_size by "
                     f"skipdit_jax.data.tfds_source.make_iterator, not loaded whole")
  rows = _Rows(ds, shape[0], shape[-1], os.cpu_count() or 1)
  if shape[0] != shape[1]:
    raise ValueError(f"{PREFIX}{name} images are {shape[0]}x{shape[1]}; use the streaming "
                     "iterator (make_iterator), which centre-crops to data.image_size")
  images, labels = rows.read(np.arange(len(ds)))
  return images, labels, num_classes


def load_clips(name: str, split: str, data: Any):
  """A tfds video set as lazy clips: `data.video.feature` (T, H, W, C) windowed by
  data.num_frames / video.frame_stride / random_start and resized to data.image_size."""
  from skipdit_jax.data.video_fields import video_fields  # pylint: disable=import-outside-toplevel
  ds, num_classes = open_split(name, split)
  column = clips.column_for(clips.TfdsClips(ds, video_fields(data)["feature"], name), data)
  return column, column.labels, num_classes


def _load(name: str, split: str, data: Any = None):
  if num_frames(data):
    return load_clips(name, split, data)
  return load_whole(name, split)


def _video_check(data: Any) -> list[str]:
  if not num_frames(data):
    return []
  return clips.check_config(data)


def register_tfds(name: str) -> str:
  """Registers `tfds:<name>` as a data source (idempotent); returns the registry key.
  With config.data.num_frames > 0 it reads clips of a video feature (`load_clips`)."""
  key = PREFIX + name
  if key not in SOURCES:
    register_source(key, video_check=_video_check)(
        lambda split, data=None, _n=name: _load(_n, split, data))
  return key


def prepared_names(root: str | None = None) -> list[str]:
  """Dataset names prepared under the tfds data dir (`name` or `name/config`)."""
  root = data_dir() if root is None else root
  found = []
  version = re.compile(r"^\d+\.\d+\.\d+$")
  for dirpath, dirnames, _ in os.walk(root) if os.path.isdir(root) else ():
    rel = os.path.relpath(dirpath, root)
    if rel.count(os.sep) >= 2:
      dirnames[:] = []
    if any(version.match(d) for d in dirnames) and rel != ".":
      found.append(rel.replace(os.sep, "/"))
  return sorted(found)


for _name in prepared_names():
  register_tfds(_name)
