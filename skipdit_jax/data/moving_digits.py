"""Moving digits: a seeded Moving-MNIST-style video source (`config.data.name =
"moving_digits"`), built from the bundled digit images, no files and no download.

Each clip holds `num_digits` digits of `digit_source` (sklearn `digits` 8x8 or `mnist5k`
28x28, optionally resized to `digit_size`) that start at a random integer position (or,
with `start = "center"`, in the middle of the canvas) and move diagonally by `speed`
pixels per frame along each axis, reflecting off the canvas walls. Digits are composited
by per-pixel maximum (as Moving MNIST), grey or in a random RGB colour per digit. Clip i
is a pure function of (seed, split, i), so clips are made on
demand (a `LazyRows` column): `BatchIterator`'s order, resume and per-process slices work
unchanged and memory holds only the digit pool and the labels.

Splits: "train" draws digits from the pool images whose index % 5 != 0, "test" from the
others (held-out digit images). Labels: `digit` -> the first digit's class (10 classes);
`digit_direction` -> 4 * digit + its initial direction id (40 classes), directions
(dy, dx) = DIRECTIONS[id]. Fields: `skipdit_jax/data/video_fields.py`.

Preview: `python -m skipdit_jax.eval.video_io --out DIR` writes clips as an animated GIF.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from PIL import Image

from skipdit_jax.data.pipeline import LazyRows
from skipdit_jax.data.sources import load_source, register_source
from skipdit_jax.data.video_fields import (DEFAULT_IMAGE_SIZE, DEFAULT_NUM_FRAMES, clip_shape,
                                           video_fields)

NAME = "moving_digits"
DIRECTIONS = np.array([(1, 1), (1, -1), (-1, 1), (-1, -1)])  # (dy, dx): down-right, ...
SPLITS = {"train": 0, "test": 1}
DIGIT_SOURCES = ("digits", "mnist5k")
LABEL_MODES = {"digit": 1, "digit_direction": len(DIRECTIONS)}
STARTS = ("random", "center")
COLOURS = {"grey": 1, "rgb": 3}


@dataclasses.dataclass(frozen=True)
class MovingDigitsSpec:
  """Everything a clip depends on besides (split, index)."""
  num_frames: int = DEFAULT_NUM_FRAMES
  canvas: int = DEFAULT_IMAGE_SIZE
  digit_source: str = "digits"
  digit_size: int = 0
  speed: float = 1.0
  num_digits: int = 1
  colour: str = "grey"
  label: str = "digit"
  start: str = "random"
  num_clips: int = 2048
  num_test_clips: int = 256
  seed: int = 0

  @property
  def channels(self) -> int:
    return COLOURS[self.colour]

  @property
  def num_classes(self) -> int:
    return 10 * LABEL_MODES[self.label]

  @classmethod
  def from_config(cls, data: Any) -> "MovingDigitsSpec":
    """From `config.data` (None: defaults); raises ValueError naming the bad field."""
    v = video_fields(data)
    frames, size = clip_shape(data, who=NAME)
    keys = [f.name for f in dataclasses.fields(cls)]
    spec = cls(num_frames=frames, canvas=size,
               **{k: v[k] for k in keys if k not in ("num_frames", "canvas")})
    spec.validate()
    return spec

  def validate(self) -> None:
    p = "config.data.video."
    if self.digit_source not in DIGIT_SOURCES:
      raise ValueError(f"{p}digit_source={self.digit_source!r}; use one of {DIGIT_SOURCES}")
    if self.colour not in COLOURS:
      raise ValueError(f"{p}colour={self.colour!r}; use one of {list(COLOURS)}")
    if self.start not in STARTS:
      raise ValueError(f"{p}start={self.start!r}; use one of {list(STARTS)}")
    if self.label not in LABEL_MODES:
      raise ValueError(f"{p}label={self.label!r}; use one of {list(LABEL_MODES)}")
    for k in ("num_digits", "num_clips", "num_test_clips"):
      if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
        raise ValueError(f"{p}{k}={getattr(self, k)!r} must be an integer >= 1")
    if not isinstance(self.seed, int) or self.seed < 0:
      raise ValueError(f"{p}seed={self.seed!r} must be a non-negative integer")
    if not isinstance(self.digit_size, int) or self.digit_size < 0:
      raise ValueError(f"{p}digit_size={self.digit_size!r} must be an integer >= 0 "
                       "(0: the source's own size)")
    if not isinstance(self.speed, (int, float)) or not 0 <= self.speed < 1e6:
      raise ValueError(f"{p}speed={self.speed!r} must be a number >= 0 (pixels per frame)")
    side = self.digit_size or (8 if self.digit_source == "digits" else 28)
    if side >= self.canvas:
      raise ValueError(f"digits of {side}px do not move on a {self.canvas}px canvas: raise "
                       f"config.data.image_size above {side} or lower {p}digit_size")


def bounce(start: float, velocity: float, num_frames: int, limit: int) -> np.ndarray:
  """(F,) positions stepping by `velocity` per frame inside [0, limit], reflecting off
  both walls (velocity flips sign at each reflection)."""
  out = np.empty(num_frames, np.float64)
  p, v = float(start), float(velocity)
  for f in range(num_frames):
    out[f] = p
    p += v
    while p < 0 or p > limit:  # more than one wall per step only when |v| > limit
      if p < 0:
        p, v = -p, -v
      else:
        p, v = 2 * limit - p, -v
  return out


def _digit_pool(source: str, size: int, split: str) -> tuple[np.ndarray, np.ndarray]:
  """(intensities float32 (M, s, s) in [0, 1], labels (M,)) of this split's digit images."""
  images, labels, _ = load_source(source)
  keep = np.arange(len(labels)) % 5 != 0 if split == "train" else np.arange(len(labels)) % 5 == 0
  x = (np.asarray(images)[keep, ..., 0] + 1.0) * 0.5
  if size and size != x.shape[1]:
    x = np.stack([np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize(
        (size, size), Image.BILINEAR)) for a in x])
  return np.clip(x, 0.0, 1.0).astype(np.float32), labels[keep].astype(np.int32)


class MovingDigits(LazyRows):
  """The clips of one split: `self[rows]` -> float32 (len(rows), F, S, S, C) in [-1, 1]."""

  def __init__(self, spec: MovingDigitsSpec, split: str = "train"):
    if split not in SPLITS:
      raise ValueError(f"split={split!r} does not exist for dataset {NAME!r}; known splits: "
                       f"{list(SPLITS)}")
    self.spec, self.split = spec, split
    self.pool, self.pool_labels = _digit_pool(spec.digit_source, spec.digit_size, split)
    n = spec.num_clips if split == "train" else spec.num_test_clips
    self.shape = (n, spec.num_frames, spec.canvas, spec.canvas, spec.channels)
    self.labels = np.array([self.params(i)["class"] for i in range(n)], np.int32)

  @property
  def limit(self) -> int:
    """Largest top-left coordinate of a digit (positions lie in [0, limit])."""
    return self.spec.canvas - self.pool.shape[1]

  def params(self, i: int) -> dict[str, Any]:
    """Clip i's draws: pool rows, digit labels, start (K, 2) as (y, x), direction ids,
    velocity (K, 2), colour (K, C), and its class label."""
    s, k = self.spec, self.spec.num_digits
    rng = np.random.default_rng([s.seed, SPLITS[self.split], int(i)])
    rows = rng.integers(0, len(self.pool), size=k)
    start = rng.integers(0, self.limit + 1, size=(k, 2))
    if s.start == "center":  # drawn all the same, so the other draws do not change
      start = np.full((k, 2), self.limit // 2)
    direction = rng.integers(0, len(DIRECTIONS), size=k)
    colour = (rng.uniform(0.35, 1.0, size=(k, 3)) if s.colour == "rgb"
              else np.ones((k, 1)))
    digit = self.pool_labels[rows]
    cls = int(digit[0])
    if s.label == "digit_direction":
      cls = cls * len(DIRECTIONS) + int(direction[0])
    return dict(rows=rows, digit=digit, start=start, direction=direction,
                velocity=DIRECTIONS[direction] * float(s.speed), colour=colour, **{"class": cls})

  def positions(self, i: int) -> np.ndarray:
    """(K, F, 2) integer (y, x) top-left corners of clip i's digits per frame."""
    p = self.params(i)
    f = self.spec.num_frames
    out = np.stack([np.stack([bounce(p["start"][j, a], p["velocity"][j, a], f, self.limit)
                              for a in range(2)], -1) for j in range(len(p["rows"]))])
    return np.floor(out + 0.5).astype(np.int64)

  def motion(self, i: int) -> tuple[int, int, bool]:
    """What clip i's first digit visibly does: (dy, dx) the signs of its first move along
    each axis (+1 = down / right, 0 = never moves; a digit drawn at a wall moving into it
    has already turned) and whether it bounces later (some axis reverses). The content
    its caption names."""
    step = np.sign(np.diff(self.positions(i)[0], axis=0))  # (F - 1, 2)
    first, bounced = [0, 0], False
    for a in range(2):
      moves = step[:, a][step[:, a] != 0]
      if len(moves):
        first[a] = int(moves[0])
        bounced = bounced or bool(np.any(moves != moves[0]))
    return first[0], first[1], bounced

  def clip(self, i: int) -> np.ndarray:
    """float32 (F, S, S, C) in [-1, 1]."""
    s, p = self.spec, self.params(i)
    canvas = np.zeros((s.num_frames, s.canvas, s.canvas, s.channels), np.float32)
    side = self.pool.shape[1]
    for j, pos in enumerate(self.positions(i)):
      glyph = self.pool[p["rows"][j]][..., None] * p["colour"][j].astype(np.float32)
      for f, (y, x) in enumerate(pos):
        view = canvas[f, y:y + side, x:x + side]
        np.maximum(view, glyph, out=view)
    return canvas * 2.0 - 1.0

  def __getitem__(self, rows: np.ndarray) -> np.ndarray:
    rows = np.atleast_1d(np.asarray(rows))
    if len(rows) == 0:
      return np.zeros((0,) + self.shape[1:], np.float32)
    return np.stack([self.clip(int(i)) for i in rows])


def check_config(data: Any) -> list[str]:
  """Problems of `config.data` for moving_digits (fields, channels, classes), no loading."""
  try:
    spec = MovingDigitsSpec.from_config(data)
  except ValueError as e:
    return [str(e)]
  problems = []
  if data.get("channels") != spec.channels:
    other = "rgb" if spec.channels == 1 else "grey"
    problems.append(f"config.data.channels={data.get('channels')} but data.video.colour="
                    f"{spec.colour!r} makes {spec.channels}-channel clips: set "
                    f"data.channels={spec.channels} (or data.video.colour={other!r})")
  if data.get("num_classes") != spec.num_classes:
    problems.append(f"config.data.num_classes={data.get('num_classes')} but data.video.label="
                    f"{spec.label!r} has {spec.num_classes} classes: set "
                    f"data.num_classes={spec.num_classes}")
  return problems


@register_source(NAME, video_check=check_config)
def moving_digits(split: str, data: Any = None):
  """`config.data.name = "moving_digits"`: (MovingDigits clips, labels, num_classes)."""
  spec = MovingDigitsSpec.from_config(data)
  clips = MovingDigits(spec, split)
  return clips, clips.labels, spec.num_classes
