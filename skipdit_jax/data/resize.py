"""Resize and centre-crop one uint8 frame to a square (the ADM / DiT recipe), shared by
the tfds image source and the video sources."""
from __future__ import annotations

import numpy as np
from PIL import Image


def resize_center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """uint8 (H, W, C) -> (size, size, C): halve with BOX while the short side >= 2 x size,
  BICUBIC to a short side of `size`, centre crop (ADM / DiT). C = 1 or 3 is kept."""
  a = np.asarray(image, np.uint8)
  if a.shape[0] == a.shape[1] == size:
    return a
  img = Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a)
  while min(img.size) >= 2 * size:
    img = img.resize(tuple(s // 2 for s in img.size), resample=Image.BOX)
  scale = size / min(img.size)
  img = img.resize(tuple(max(size, round(s * scale)) for s in img.size),
                   resample=Image.BICUBIC)
  out = np.asarray(img)
  top, left = (out.shape[0] - size) // 2, (out.shape[1] - size) // 2
  out = out[top:top + size, left:left + size]
  return out[..., None] if out.ndim == 2 else out
