"""The `config.data.video` fields shared by the video sources, and clip-window sampling.

Video sources read `config.data.num_frames` (clip length F; 0 = images),
`config.data.image_size` (square canvas) and `config.data.channels`, plus the fields
below under `config.data.video` (any may be absent; DEFAULTS fill in).
"""
from __future__ import annotations

from typing import Any

import numpy as np

DEFAULTS: dict[str, Any] = dict(
    # moving_digits (skipdit_jax/data/moving_digits.py)
    digit_source="digits",   # digits (8x8) | mnist5k (28x28)
    digit_size=0,            # side of a pasted digit in pixels; 0 = the source's own size
    speed=1.0,               # pixels per frame along each axis (motion is diagonal)
    num_digits=1,            # digits per clip; the label is the first digit's
    colour="grey",           # grey (1 channel) | rgb (3 channels, a random colour per digit)
    label="digit",           # digit (10 classes) | digit_direction (digit x 4 directions)
    start="random",          # random: any top-left corner | center: every clip starts centred
    num_clips=2048,          # clips in the train split (generated lazily)
    num_test_clips=256,      # clips in the test split
    seed=0,                  # clip i is a function of (seed, split, i) only
    # clip folders and tfds video sets
    frame_stride=1,          # take every k-th frame (the official `frame_interval`, 3 there)
    random_start=False,      # False: the first window; True: a seeded random start per clip
    feature="video",         # tfds:NAME video sets: the (T, H, W, C) feature to read
)
DEFAULT_NUM_FRAMES = 8
DEFAULT_IMAGE_SIZE = 32


def _get(cfg: Any, key: str, default: Any) -> Any:
  if cfg is None:
    return default
  if hasattr(cfg, "get"):
    return cfg.get(key, default)
  return getattr(cfg, key, default)


def video_fields(data: Any) -> dict[str, Any]:
  """DEFAULTS overridden by `data.video` (a ConfigDict/dict or None); unknown keys error."""
  video = _get(data, "video", None)
  given = dict(video) if video is not None else {}
  unknown = sorted(set(given) - set(DEFAULTS))
  if unknown:
    raise ValueError(f"config.data.video has unknown field(s) {unknown}; known: "
                     f"{sorted(DEFAULTS)}")
  return {**DEFAULTS, **given}


def clip_shape(data: Any, *, who: str) -> tuple[int, int]:
  """(num_frames, image_size) for a video source; errors name the field to set."""
  frames = int(_get(data, "num_frames", 0) or 0) if data is not None else DEFAULT_NUM_FRAMES
  size = int(_get(data, "image_size", DEFAULT_IMAGE_SIZE))
  if frames <= 0:
    raise ValueError(f"config.data.num_frames={frames} but {who} makes video clips: set "
                     f"data.num_frames to the clip length (e.g. {DEFAULT_NUM_FRAMES})")
  if size <= 0:
    raise ValueError(f"config.data.image_size={size} must be a positive integer")
  return frames, size


def window(total: int, num_frames: int, stride: int, rng: np.random.Generator | None
           ) -> np.ndarray:
  """Frame indices [s, s + stride, ..., s + (num_frames - 1) * stride] inside `total`
  frames: s = 0, or uniform over the valid starts when `rng` is given (random start)."""
  span = (num_frames - 1) * stride + 1
  if stride < 1:
    raise ValueError(f"config.data.video.frame_stride={stride} must be >= 1")
  if total < span:
    raise ValueError(f"a clip of {total} frames is too short for data.num_frames="
                     f"{num_frames} at data.video.frame_stride={stride} (needs {span}): "
                     f"lower one of them")
  start = 0 if rng is None else int(rng.integers(0, total - span + 1))
  return start + stride * np.arange(num_frames)
