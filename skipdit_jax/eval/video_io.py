"""Video clips to files: an animated GIF of a grid of clips (Pillow) and an .npz.

Clips are float (N, F, H, W, C) in [-1, 1], as the data sources and the sampler produce.
Frame f of the GIF is the grid of every clip's frame f (`image_grid.make_grid`).
"""
from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from skipdit_jax import paths
from skipdit_jax.eval.image_grid import make_grid


def _check_clips(clips: np.ndarray) -> np.ndarray:
  clips = np.asarray(clips)
  if clips.ndim != 5 or clips.shape[-1] not in (1, 3):
    raise ValueError(f"clips must be (N, F, H, W, C) with C = 1 or 3, got {clips.shape}")
  return clips


def grid_frames(clips: np.ndarray, ncol: int, *, pad: int = 1, scale: int = 1) -> np.ndarray:
  """(N, F, H, W, C) in [-1, 1] -> uint8 (F, rows*(H+pad)+pad, ncol*(W+pad)+pad, C)."""
  clips = _check_clips(clips)
  return np.stack([make_grid(clips[:, f], ncol, pad=pad, scale=scale)
                   for f in range(clips.shape[1])])


def gif_bytes(frames: np.ndarray, fps: float = 8.0) -> bytes:
  """uint8 (F, H, W, C) -> an animated GIF that loops forever."""
  pics = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in frames]
  buf = io.BytesIO()
  pics[0].save(buf, format="GIF", save_all=True, append_images=pics[1:],
               duration=max(1, round(1000.0 / fps)), loop=0, optimize=False)
  return buf.getvalue()


def save_gif(clips: np.ndarray, path: str | os.PathLike, ncol: int, *, scale: int = 1,
             fps: float = 8.0) -> np.ndarray:
  """Writes the grid of `clips` (N, F, H, W, C) in [-1, 1] as an animated GIF to `path`
  (local or gs://); returns the uint8 frames (F, h, w, C) written."""
  frames = grid_frames(clips, ncol, scale=scale)
  paths.write_bytes(path, gif_bytes(frames, fps))
  return frames


def save_npz(path: str | os.PathLike, clips: np.ndarray, labels: np.ndarray | None = None
             ) -> None:
  """Writes clips (float32, as given) and optional labels to an .npz (local or gs://)."""
  arrays = {"clips": np.asarray(_check_clips(clips), np.float32)}
  if labels is not None:
    arrays["labels"] = np.asarray(labels)
  buf = io.BytesIO()
  np.savez_compressed(buf, **arrays)
  paths.write_bytes(path, buf.getvalue())


def read_gif(path: str | os.PathLike) -> np.ndarray:
  """All frames of a (local) GIF as uint8 (F, H, W, C), C = 3 (RGB)."""
  with Image.open(path) as im:
    frames = []
    for k in range(getattr(im, "n_frames", 1)):
      im.seek(k)
      frames.append(np.asarray(im.convert("RGB")))
  return np.stack(frames)
