"""The registry of dataset sources and `load_source`.

A source is a function `(split: str) -> (images, labels, num_classes)` with
images float32 (N, H, W, C) — or video clips (N, F, H, W, C) — in [-1, 1] and labels
int32 (N,). Video sources read their fields from `config.data` and are registered with
`configurable=True`: they are called `fn(split, data)` with the `config.data` ConfigDict
(None: the source's defaults). A name ending in ":" registers a family of specs
("clips:" serves "clips:/some/dir"); such a source gets the whole spec as `spec=`.
Images may come back as a `LazyRows` column (built on demand by `BatchIterator`).
Modules add sources with `@register_source("name")`; the package `__init__` imports the
built-in ones so that they are registered before `load_source` runs.
"""
from typing import Any, Callable, Optional

import numpy as np

from skipdit_jax.data.pipeline import LazyRows
from skipdit_jax.errors import ConfigError

Source = Callable[..., tuple[Any, np.ndarray, int]]
VideoCheck = Callable[[Any], list[str]]
SOURCES: dict[str, Source] = {}
CONFIGURABLE: set[str] = set()
# Sources that can make clips, with their config check: `config.data` -> problem lines
# (each naming the field and the fix), run by config_check before anything is loaded.
VIDEO_SOURCES: dict[str, VideoCheck] = {}


def register_source(name: str, *, configurable: bool = False,
                    video_check: Optional[VideoCheck] = None) -> Callable[[Source], Source]:
  """Decorator that adds a source under `name` (unique); see the module docstring.
  `video_check` marks a video source (implies configurable)."""
  def add(fn: Source) -> Source:
    if name in SOURCES:
      raise ValueError(f"dataset source {name!r} is registered twice")
    SOURCES[name] = fn
    if configurable or video_check is not None or name.endswith(":"):
      CONFIGURABLE.add(name)
    if video_check is not None:
      VIDEO_SOURCES[name] = video_check
    return fn
  return add


def source_key(name: str) -> Optional[str]:
  """The registry key serving `name` (itself, or its "prefix:" family), or None."""
  if name in SOURCES:
    return name
  if isinstance(name, str) and ":" in name:
    family = name.split(":", 1)[0] + ":"
    if family in SOURCES and name != family:
      return family
  return None


def load_source(name: str, *, split: str = "train", data: Any = None
                ) -> tuple[Any, np.ndarray, int]:
  """Loads a dataset (in memory, or as a lazy column for large/generated video sets).

  data: the `config.data` ConfigDict, read by video sources (None: their defaults).
  Returns:
    images: float32 (N, H, W, C) or clips (N, F, H, W, C) in [-1, 1] (an ndarray or a
      `LazyRows`); labels: int32 (N,); num_classes.
  """
  key = source_key(name)
  if key is None:
    raise ValueError(f"config.data.name={name!r} is not a known dataset; "
                     f"known: {sorted(SOURCES)}")
  fn = SOURCES[key]
  if key in CONFIGURABLE:
    images, labels, num_classes = (fn(split, data, spec=name) if key.endswith(":")
                                   else fn(split, data))
  else:
    images, labels, num_classes = fn(split)
  if not isinstance(images, LazyRows):
    images = np.asarray(images, np.float32)
  if not isinstance(labels, LazyRows):
    labels = np.asarray(labels, np.int32)
  if len(images.shape) not in (4, 5) or labels.shape != tuple(images.shape[:1]):
    raise AssertionError(f"source {name!r} returned images {images.shape} and labels "
                         f"{labels.shape}; expected (N, H, W, C) or (N, F, H, W, C) and (N,)")
  return images, labels, num_classes


def check_split(name: str, split: str, known: tuple[str, ...]) -> None:
  if split not in known:
    raise ValueError(f"split={split!r} does not exist for dataset {name!r}; "
                     f"known splits: {list(known)}")


def to_unit_range(x: np.ndarray, max_value: float) -> np.ndarray:
  """Maps [0, max_value] linearly to [-1, 1] (float32)."""
  return (np.asarray(x, np.float32) * np.float32(2.0 / max_value) - 1.0).astype(np.float32)


def num_frames(data: Any) -> int:
  """`config.data.num_frames` (0 or absent: images)."""
  get = getattr(data, "get", None)
  return int((get("num_frames", 0) if get else getattr(data, "num_frames", 0)) or 0)


def check_data_shape(config, images_shape: tuple[int, ...], num_classes: int) -> None:
  """After loading: the dataset's (N, H, W, C) or (N, F, H, W, C) and classes must match
  `config.data` (image_size, channels, num_classes, num_frames)."""
  d = config.data
  frames = num_frames(d)
  problems = []
  if len(images_shape) == 5:
    f = images_shape[1]
    if frames != f:
      problems.append(f"config.data.num_frames={frames} but dataset {d.name!r} holds clips "
                      f"of {f} frames: set data.num_frames={f}")
  elif frames:
    problems.append(f"config.data.num_frames={frames} asks for video clips but dataset "
                    f"{d.name!r} holds images {tuple(images_shape[1:])}: set "
                    f"data.num_frames=0 or use a video source (e.g. moving_digits)")
  h, w, c = images_shape[-3:]
  if (h, w, c) != (d.image_size, d.image_size, d.channels):
    problems.append(f"config.data.image_size={d.image_size}, data.channels={d.channels} but "
                    f"dataset {d.name!r} holds {h}x{w}x{c} images: set data.image_size={h}, "
                    f"data.channels={c}")
  if num_classes != d.num_classes:
    problems.append(f"config.data.num_classes={d.num_classes} but dataset {d.name!r} has "
                    f"{num_classes}: set data.num_classes={num_classes}")
  if problems:
    raise ConfigError(problems)
