"""Video metrics on clips (N, F, H, W, C) in [-1, 1]: per-frame fidelity, and motion.

- `per_frame`: a full-reference image metric (PSNR, SSIM from `image_metrics`) per frame
  index, averaged over clips: how cached samples drift from uncached ones along a clip.
- `frames` / `frame_labels`: a clip batch as a frame batch, so image readers (class
  accuracy, feature nets) score every frame against its clip's label.
- `motion_figure`: do the clips show an object moving smoothly? The track of each frame's
  centre of mass (intensity above a threshold) must move (mean step ≥ `min_step` pixels)
  and be smooth: the median size of its second difference (acceleration) is at most
  `max_ratio` of the mean step. Constant-velocity motion has zero acceleration except at a
  bounce (the median ignores a few), while frames in random order jump back and forth
  (for independent positions the ratio is about √3), and a still clip does not move.
  `shuffle_frames` builds that control from real clips.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from skipdit_jax.eval.image_metrics import psnr, ssim

METRICS: dict[str, Callable[..., np.ndarray]] = {"psnr": psnr, "ssim": ssim}


def _clips(x, name: str = "clips") -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 5:
    raise ValueError(f"{name} must be (N, F, H, W, C), got shape {x.shape}")
  return x


def frames(clips) -> np.ndarray:
  """(N, F, H, W, C) -> (N·F, H, W, C), clip-major (frame f of clip n at n·F + f)."""
  c = _clips(clips)
  return c.reshape((-1,) + c.shape[2:])


def frame_labels(labels, num_frames: int) -> np.ndarray:
  """(N,) clip labels -> (N·F,) labels of `frames(clips)`."""
  return np.repeat(np.asarray(labels), num_frames)


def per_frame(metric: str, a, b, *, data_range: float = 2.0) -> np.ndarray:
  """(F,) `metric` ("psnr" or "ssim") between a[n, f] and b[n, f], mean over the clips n."""
  if metric not in METRICS:
    raise ValueError(f"unknown video metric {metric!r}; known: {sorted(METRICS)}")
  a, b = _clips(a, "a"), _clips(b, "b")
  if a.shape != b.shape:
    raise ValueError(f"clips must have one shape, got {a.shape} and {b.shape}")
  n, f = a.shape[:2]
  vals = METRICS[metric](frames(a), frames(b), data_range=data_range).reshape(n, f)
  return vals.mean(axis=0)


def center_of_mass(clips, *, threshold: float = 0.25) -> np.ndarray:
  """(N, F, 2) (row, col) centre of each frame's intensity above `threshold`.

  Intensity is the channel mean mapped from [-1, 1] to [0, 1]; subtracting the threshold
  keeps faint background noise from pulling the centre towards the middle. A frame with
  nothing above the threshold gets the canvas centre."""
  c = _clips(clips).astype(np.float64)
  w = np.clip((c.mean(axis=-1) + 1.0) / 2.0 - threshold, 0.0, None)  # (N, F, H, W)
  h, wd = w.shape[2:]
  rows, cols = np.arange(h, dtype=np.float64), np.arange(wd, dtype=np.float64)
  mass = w.sum(axis=(2, 3))
  safe = np.where(mass > 0, mass, 1.0)
  r = np.where(mass > 0, (w.sum(axis=3) * rows).sum(axis=2) / safe, (h - 1) / 2.0)
  q = np.where(mass > 0, (w.sum(axis=2) * cols).sum(axis=2) / safe, (wd - 1) / 2.0)
  return np.stack([r, q], axis=-1)


def motion_figure(clips, *, min_step: float = 0.5, max_ratio: float = 0.5,
                  threshold: float = 0.25) -> dict[str, float]:
  """Fraction of clips whose centre of mass moves smoothly (module docstring), with the
  mean step (pixels per frame) and mean smoothness ratio behind it. Needs F >= 3."""
  c = _clips(clips)
  if c.shape[1] < 3:
    raise ValueError(f"the motion figure needs clips of at least 3 frames, got {c.shape[1]}")
  track = center_of_mass(c, threshold=threshold)
  step = np.linalg.norm(np.diff(track, axis=1), axis=-1).mean(axis=1)          # (N,)
  accel = np.median(np.linalg.norm(np.diff(track, n=2, axis=1), axis=-1), axis=1)
  ratio = accel / np.maximum(step, 1e-12)
  ok = (step >= min_step) & (ratio <= max_ratio)
  return {"motion_pass": float(ok.mean()), "mean_step": float(step.mean()),
          "mean_accel_ratio": float(ratio.mean())}


def shuffle_frames(clips, seed: int = 0) -> np.ndarray:
  """The clips with each one's frames in a random order (a control the motion figure
  must fail); a permutation that leaves a clip in order is redrawn."""
  c = _clips(clips)
  rng = np.random.default_rng(seed)
  out = np.empty_like(c)
  f = c.shape[1]
  for n in range(len(c)):
    perm = np.arange(f)
    while f > 1 and np.array_equal(perm, np.arange(f)):
      perm = rng.permutation(f)
    out[n] = c[n, perm]
  return out
