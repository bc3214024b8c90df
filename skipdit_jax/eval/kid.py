"""Kernel Inception Distance: the unbiased MMD² with the cubic polynomial kernel.

KID (Bińkowski et al., 2018) uses k(x, y) = (x·y / F + 1)³ on features (F dimensions) and
averages the unbiased MMD² estimate over random subsets of both sets, which keeps the
cost bounded and gives a spread. Float64 numpy throughout.
"""
from __future__ import annotations

import numpy as np


def polynomial_kernel(a: np.ndarray, b: np.ndarray, *, degree: int = 3,
                      coef0: float = 1.0) -> np.ndarray:
  """(a @ b.T / F + coef0) ** degree for a (N, F), b (M, F) -> (N, M)."""
  return (a @ b.T / a.shape[1] + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, *, degree: int = 3,
                  coef0: float = 1.0) -> float:
  """Unbiased MMD² between samples x (m, F) and y (n, F): off-diagonal means of K_xx and
  K_yy minus twice the mean of K_xy."""
  m, n = x.shape[0], y.shape[0]
  if m < 2 or n < 2:
    raise ValueError(f"the unbiased MMD needs at least 2 samples per set, got {m} and {n}")
  kxx = polynomial_kernel(x, x, degree=degree, coef0=coef0)
  kyy = polynomial_kernel(y, y, degree=degree, coef0=coef0)
  kxy = polynomial_kernel(x, y, degree=degree, coef0=coef0)
  xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
  yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
  return float(xx + yy - 2.0 * kxy.mean())


def kid(real: np.ndarray, fake: np.ndarray, *, num_subsets: int = 100,
        subset_size: int = 1000, seed: int = 0, degree: int = 3,
        coef0: float = 1.0) -> tuple[float, float]:
  """KID of features real (N, F) and fake (M, F): (mean, std) of the unbiased MMD² over
  `num_subsets` pairs of subsets of min(subset_size, N, M) rows drawn without replacement."""
  real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f"KID needs features (N, F) and (M, F), got {real.shape} and "
                     f"{fake.shape}")
  if num_subsets < 1:
    raise ValueError(f"num_subsets={num_subsets} must be >= 1")
  size = min(subset_size, real.shape[0], fake.shape[0])
  rng = np.random.default_rng(seed)
  vals = [mmd2_unbiased(real[rng.choice(real.shape[0], size, replace=False)],
                        fake[rng.choice(fake.shape[0], size, replace=False)],
                        degree=degree, coef0=coef0)
          for _ in range(num_subsets)]
  return float(np.mean(vals)), float(np.std(vals))
