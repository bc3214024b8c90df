"""Clips from stored videos: `ClipColumn` (window, resize, [-1, 1], on demand) and the
`clips:DIR` source over folders in the official datasets' layout.

  DIR/<class>/<clip>/frame_*.png       a clip as a folder of frames (natural sort order)
  DIR/<class>/<clip>.gif | .npy        a clip as one file (.npy: uint8 (T, H, W[, C]))
  DIR/<class>/<clip>.mp4 | ...         only with PyAV installed (`pip install av`)

`TfdsClips` reads tfds video sets the same way (`tfds:NAME` with data.num_frames > 0).

Classes are the sorted class folders (labels 0..K-1). A clip of `config.data.num_frames`
frames takes every `data.video.frame_stride`-th frame from the first frame, or from a
seeded random start (`data.video.random_start`; fixed per clip: f(seed, i)). Frames are
converted to `data.channels` (L or RGB) and resized / centre-cropped to
`data.image_size` as the image sources are (`resize.resize_center_crop`).
"""
from __future__ import annotations

import importlib.util
import os
import re
from typing import Any, Protocol

import numpy as np
from PIL import Image

from skipdit_jax.data.latents import class_folder_items
from skipdit_jax.data.pipeline import LazyRows
from skipdit_jax.data.resize import resize_center_crop
from skipdit_jax.data.sources import check_split, register_source, to_unit_range
from skipdit_jax.data.video_fields import clip_shape, video_fields, window

PREFIX = "clips:"
FRAME_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
FILE_EXTS = (".gif", ".npy")
DECODED_EXTS = (".mp4", ".avi", ".mkv", ".webm", ".mov")


class ClipReader(Protocol):
  """Random access to stored clips."""

  def __len__(self) -> int: ...
  def length(self, i: int) -> int: ...                            # frames in clip i
  def frames(self, i: int, idx: np.ndarray) -> np.ndarray: ...    # uint8 (len(idx), H, W[, C])
  def label(self, i: int) -> int: ...


class ClipColumn(LazyRows):
  """`column[rows]` -> float32 (len(rows), F, S, S, C) in [-1, 1]; `column.labels` is the
  matching lazy label column (one read serves both, as BatchIterator asks for the same
  rows twice)."""

  def __init__(self, reader: ClipReader, *, num_frames: int, size: int, channels: int,
               stride: int = 1, random_start: bool = False, seed: int = 0):
    if channels not in (1, 3):
      raise ValueError(f"config.data.channels={channels}: video sources make 1 (grey) or 3 "
                       f"(RGB) channels")
    self.reader, self.num_frames, self.size, self.channels = reader, num_frames, size, channels
    self.stride, self.random_start, self.seed = int(stride), bool(random_start), int(seed)
    self.shape = (len(reader), num_frames, size, size, channels)
    self.labels = _Labels(self)
    self._key, self._value = None, None

  def clip(self, i: int) -> np.ndarray:
    """uint8 (F, S, S, C) of clip i."""
    rng = np.random.default_rng([self.seed, int(i)]) if self.random_start else None
    idx = window(self.reader.length(i), self.num_frames, self.stride, rng)
    mode = "L" if self.channels == 1 else "RGB"
    out = []
    for frame in self.reader.frames(i, idx):
      a = np.asarray(frame)
      a = a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a
      a = np.asarray(Image.fromarray(a.astype(np.uint8)).convert(mode))
      out.append(resize_center_crop(a[..., None] if a.ndim == 2 else a, self.size))
    return np.stack(out)

  def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.atleast_1d(np.asarray(rows))
    key = rows.tobytes()
    if key != self._key:
      clips, labels = [], []
      for i in rows:  # clip then label of one row: a reader may cache one example
        clips.append(self.clip(int(i)))
        labels.append(self.reader.label(int(i)))
      clips = np.stack(clips) if clips else np.zeros((0,) + self.shape[1:], np.uint8)
      self._key = key
      self._value = (to_unit_range(clips, 255.0), np.asarray(labels, np.int32))
    return self._value

  def __getitem__(self, rows: np.ndarray) -> np.ndarray:
    return self.read(rows)[0]


class _Labels(LazyRows):
  def __init__(self, column: ClipColumn):
    self._column, self.shape = column, (len(column.reader),)

  def __getitem__(self, rows: np.ndarray) -> np.ndarray:
    return self._column.read(rows)[1]


def _natural(name: str) -> list:
  return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _decoder_error(path: str) -> ValueError:
  ext = os.path.splitext(path)[1]
  return ValueError(f"{path}: reading {ext} video needs a decoder, and none is installed: "
                    f"`pip install av` (PyAV), or store the clips as frame folders "
                    f"(<clip>/frame_*.png), .npy (uint8 (T, H, W, C)) or .gif")


class FolderClips:
  """A `ClipReader` over DIR/<class>/<clip>{/, .gif, .npy, .mp4...} (module docstring)."""

  def __init__(self, root: str):
    layout = "DIR/<class>/<clip>/frame_*.png or DIR/<class>/<clip>.gif|.npy"
    items, self.classes = class_folder_items(root, spec=PREFIX, layout=layout)
    self.items: list[tuple[str, int]] = []
    for path, label in items:
      ext = os.path.splitext(path)[1].lower()
      if not os.path.isdir(path) and ext not in FILE_EXTS + DECODED_EXTS:
        raise ValueError(f"{path}: not a clip (a folder of {'/'.join(FRAME_EXTS)} frames or "
                         f"a {'/'.join(FILE_EXTS + DECODED_EXTS)} file)")
      if ext in DECODED_EXTS and importlib.util.find_spec("av") is None:
        raise _decoder_error(path)  # before training starts, not at the first batch
      self.items.append((path, label))
    if not self.items:
      raise ValueError(f"{PREFIX}{root} holds no clips (expected {layout})")

  def __len__(self) -> int:
    return len(self.items)

  def label(self, i: int) -> int:
    return self.items[i][1]

  def _frame_files(self, path: str) -> list[str]:
    names = sorted((f for f in os.listdir(path) if f.lower().endswith(FRAME_EXTS)),
                   key=_natural)
    if not names:
      raise ValueError(f"{path}: a clip folder without {'/'.join(FRAME_EXTS)} frames")
    return [os.path.join(path, f) for f in names]

  def length(self, i: int) -> int:
    path = self.items[i][0]
    ext = os.path.splitext(path)[1].lower()
    if os.path.isdir(path):
      return len(self._frame_files(path))
    if ext == ".npy":
      return int(np.load(path, mmap_mode="r").shape[0])
    if ext == ".gif":
      with Image.open(path) as im:
        return int(getattr(im, "n_frames", 1))
    return len(self._decode(path))

  def frames(self, i: int, idx: np.ndarray) -> np.ndarray:
    path = self.items[i][0]
    ext = os.path.splitext(path)[1].lower()
    if os.path.isdir(path):
      files = self._frame_files(path)
      out = []
      for k in idx:
        with Image.open(files[int(k)]) as im:
          out.append(np.asarray(im.convert("RGB")))
      return np.stack(out)
    if ext == ".npy":
      a = np.load(path, mmap_mode="r")
      if a.dtype != np.uint8 or a.ndim not in (3, 4):
        raise ValueError(f"{path}: .npy clips must be uint8 (T, H, W) or (T, H, W, C), got "
                         f"{a.dtype} {a.shape}")
      return np.asarray(a[np.asarray(idx)])
    if ext == ".gif":
      out = []
      with Image.open(path) as im:
        for k in idx:
          im.seek(int(k))
          out.append(np.asarray(im.convert("RGB")))
      return np.stack(out)
    return self._decode(path)[np.asarray(idx)]

  @staticmethod
  def _decode(path: str) -> np.ndarray:
    """All frames of a video file via PyAV, uint8 (T, H, W, 3)."""
    try:
      import av  # pylint: disable=import-outside-toplevel
    except ImportError as e:
      raise _decoder_error(path) from e
    with av.open(path) as container:
      return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


class TfdsClips:
  """A `ClipReader` over a tfds random-access source whose `feature` is a video
  (T, H, W, C) uint8 (e.g. ucf101's "video", bair_robot_pushing_small's "image_main");
  rows without "label" get 0. The last example read is kept (length, frames, label)."""

  def __init__(self, ds: Any, feature: str, name: str):
    features = ds.dataset_info.features
    if feature not in features:
      # a Video is (T, H, W, C); a Sequence of Image lists its frames' (H, W, C)
      videos = [k for k in features.keys()
                if len(getattr(features[k], "shape", ()) or ()) >= 3]
      raise ValueError(f"config.data.video.feature={feature!r} is not a feature of tfds:"
                       f"{name}; its image/video features: {videos or 'none'}")
    self.ds, self.feature = ds, feature
    self._i, self._ex = None, None

  def _get(self, i: int) -> Any:
    if i != self._i:
      self._i, self._ex = i, self.ds[int(i)]
    return self._ex

  def __len__(self) -> int:
    return len(self.ds)

  def length(self, i: int) -> int:
    return int(np.shape(self._get(i)[self.feature])[0])

  def frames(self, i: int, idx: np.ndarray) -> np.ndarray:
    return np.asarray(self._get(i)[self.feature])[np.asarray(idx)]

  def label(self, i: int) -> int:
    return int(self._get(i).get("label", 0))


def check_config(data: Any) -> list[str]:
  """Field problems of a video source's `config.data` (no files read)."""
  try:
    v = video_fields(data)
    clip_shape(data, who="a video source")
  except ValueError as e:
    return [str(e)]
  stride = v["frame_stride"]
  if not isinstance(stride, int) or isinstance(stride, bool) or stride < 1:
    return [f"config.data.video.frame_stride={stride!r} must be an integer >= 1 "
            f"(the official frame_interval is 3)"]
  if not isinstance(v["random_start"], bool):
    return [f"config.data.video.random_start={v['random_start']!r} must be True or False"]
  return []


def column_for(reader: ClipReader, data: Any) -> ClipColumn:
  """The `ClipColumn` of `reader` shaped by `config.data` (num_frames, image_size,
  channels, video.frame_stride / random_start / seed)."""
  problems = check_config(data)
  if problems:
    raise ValueError("; ".join(problems))
  v = video_fields(data)
  frames, size = clip_shape(data, who="a video source")
  channels = data.get("channels", 3) if hasattr(data, "get") else 3
  return ClipColumn(reader, num_frames=frames, size=size, channels=channels,
                    stride=v["frame_stride"], random_start=v["random_start"], seed=v["seed"])


@register_source(PREFIX, video_check=check_config)
def clip_folders(split: str, data: Any = None, *, spec: str):
  """`config.data.name = "clips:DIR"`: (ClipColumn, labels, number of class folders)."""
  check_split(spec, split, ("train",))
  reader = FolderClips(spec[len(PREFIX):])
  column = column_for(reader, data)
  return column, np.asarray([reader.label(i) for i in range(len(reader))], np.int32), \
      len(reader.classes)
