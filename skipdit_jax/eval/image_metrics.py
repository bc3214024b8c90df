"""Full-reference image metrics: PSNR, SSIM and cosine similarity, float64 numpy.

Used to score cached samples against uncached ones from the same noise and labels.
Images are (N, H, W, C) in a known data range (samples here live in [-1, 1]: range 2).
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.shape != b.shape or a.ndim != 4:
    raise ValueError(f"images must be two (N, H, W, C) arrays of one shape, got "
                     f"{a.shape} and {b.shape}")
  return a, b


def psnr(a, b, *, data_range: float = 2.0) -> np.ndarray:
  """(N,) PSNR in dB, 10 log10(range^2 / MSE) per image; inf where identical."""
  a, b = _pair(a, b)
  mse = np.mean((a - b) ** 2, axis=(1, 2, 3))
  with np.errstate(divide="ignore"):
    return 10.0 * np.log10(data_range ** 2 / mse)


def gaussian_window(size: int, sigma: float = 1.5) -> np.ndarray:
  """(size,) normalised 1-D Gaussian (SSIM uses its outer product)."""
  x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  w = np.exp(-0.5 * (x / sigma) ** 2)
  return w / w.sum()


def ssim(a, b, *, data_range: float = 2.0, window: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> np.ndarray:
  """(N,) mean SSIM per image (Wang et al. 2004: Gaussian window, population moments,
  valid positions only, averaged over positions and channels).

  The window shrinks to the largest odd size that fits images smaller than it (8x8
  digits get 7x7), keeping `sigma`.
  """
  a, b = _pair(a, b)
  size = min(window, a.shape[1], a.shape[2])
  size -= 1 - size % 2
  if size < 1:
    raise ValueError(f"images of {a.shape[1]}x{a.shape[2]} are too small for SSIM")
  g = gaussian_window(size, sigma)

  def blur(x):  # separable valid filter over H then W: (N, H', W', C)
    x = np.einsum("nhwck,k->nhwc", sliding_window_view(x, size, axis=1), g)
    return np.einsum("nhwck,k->nhwc", sliding_window_view(x, size, axis=2), g)

  mu_a, mu_b = blur(a), blur(b)
  var_a = blur(a * a) - mu_a ** 2
  var_b = blur(b * b) - mu_b ** 2
  cov = blur(a * b) - mu_a * mu_b
  c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
  s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)
       / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2)))
  return s.mean(axis=(1, 2, 3))


def cosine_similarity(a, b) -> np.ndarray:
  """(N,) cosine of the angle between a[n] and b[n], each flattened."""
  a = np.asarray(a, np.float64).reshape(len(a), -1)
  b = np.asarray(b, np.float64).reshape(len(b), -1)
  den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
  return np.sum(a * b, axis=1) / np.maximum(den, 1e-300)
