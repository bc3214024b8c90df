"""The registry of dataset sources and `load_source`.

A source is a function `(split: str) -> (images, labels, num_classes)` with
images float32 (N, H, W, C) in [-1, 1] and labels int32 (N,). Modules add
sources with `@register_source("name")`; the package `__init__` imports the
built-in ones so that they are registered before `load_source` runs.
"""
from typing import Callable

import numpy as np

from skipdit_jax.errors import ConfigError

Source = Callable[[str], tuple[np.ndarray, np.ndarray, int]]
SOURCES: dict[str, Source] = {}


def register_source(name: str) -> Callable[[Source], Source]:
  """Decorator that adds a source under `name` (unique)."""
  def add(fn: Source) -> Source:
    if name in SOURCES:
      raise ValueError(f"dataset source {name!r} is registered twice")
    SOURCES[name] = fn
    return fn
  return add


def load_source(name: str, *, split: str = "train") -> tuple[np.ndarray, np.ndarray, int]:
  """Loads a whole dataset into memory.

  Returns:
    images: float32 (N, H, W, C) in [-1, 1]; labels: int32 (N,); num_classes.
  """
  if name not in SOURCES:
    raise ValueError(f"config.data.name={name!r} is not a known dataset; "
                     f"known: {sorted(SOURCES)}")
  images, labels, num_classes = SOURCES[name](split)
  images = np.asarray(images, np.float32)
  labels = np.asarray(labels, np.int32)
  if images.ndim != 4 or labels.shape != images.shape[:1]:
    raise AssertionError(f"source {name!r} returned images {images.shape} and labels "
                         f"{labels.shape}; expected (N, H, W, C) and (N,)")
  return images, labels, num_classes


def check_split(name: str, split: str, known: tuple[str, ...]) -> None:
  if split not in known:
    raise ValueError(f"split={split!r} does not exist for dataset {name!r}; "
                     f"known splits: {list(known)}")


def to_unit_range(x: np.ndarray, max_value: float) -> np.ndarray:
  """Maps [0, max_value] linearly to [-1, 1] (float32)."""
  return (np.asarray(x, np.float32) * np.float32(2.0 / max_value) - 1.0).astype(np.float32)


def check_data_shape(config, images_shape: tuple[int, ...], num_classes: int) -> None:
  """After loading: the dataset's (N, H, W, C) and classes must match `config.data`."""
  _, h, w, c = images_shape
  d = config.data
  problems = []
  if (h, w, c) != (d.image_size, d.image_size, d.channels):
    problems.append(f"config.data.image_size={d.image_size}, data.channels={d.channels} but "
                    f"dataset {d.name!r} holds {h}x{w}x{c} images: set data.image_size={h}, "
                    f"data.channels={c}")
  if num_classes != d.num_classes:
    problems.append(f"config.data.num_classes={d.num_classes} but dataset {d.name!r} has "
                    f"{num_classes}: set data.num_classes={num_classes}")
  if problems:
    raise ConfigError(problems)
