"""Image grids as PNG files (pillow): samples -> one picture."""
from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image

from skipdit_jax import paths


def to_uint8(images: np.ndarray) -> np.ndarray:
  """(N, H, W, C) in [-1, 1] -> uint8 in [0, 255] (clipped)."""
  x = (np.clip(np.asarray(images, np.float32), -1.0, 1.0) + 1.0) * 127.5
  return np.round(x).astype(np.uint8)


def make_grid(images: np.ndarray, ncol: int, *, pad: int = 1, scale: int = 1) -> np.ndarray:
  """(N, H, W, C) in [-1, 1] -> (rows*(H+pad)+pad, ncol*(W+pad)+pad, C) uint8, row-major,
  each image upscaled `scale`x (nearest) so that tiny images stay visible."""
  x = to_uint8(images)
  if scale > 1:
    x = x.repeat(scale, axis=1).repeat(scale, axis=2)
  n, h, w, c = x.shape
  ncol = max(1, min(ncol, n))
  nrow = -(-n // ncol)
  grid = np.zeros((nrow * (h + pad) + pad, ncol * (w + pad) + pad, c), np.uint8)
  for i in range(n):
    r, q = divmod(i, ncol)
    y0, x0 = pad + r * (h + pad), pad + q * (w + pad)
    grid[y0:y0 + h, x0:x0 + w] = x[i]
  return grid


def save_grid(images: np.ndarray, path: str | os.PathLike, ncol: int, *,
              scale: int = 1) -> np.ndarray:
  """Writes `make_grid(images, ncol)` to `path` (local or gs://) as PNG; returns the grid."""
  grid = make_grid(images, ncol, scale=scale)
  buf = io.BytesIO()
  Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(buf, format="PNG")
  paths.write_bytes(path, buf.getvalue())
  return grid
