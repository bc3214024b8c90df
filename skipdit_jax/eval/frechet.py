"""Fréchet distance between Gaussians fitted to features, and the `.npz` stats format.

The `.npz` reference-statistics format is the one pytorch-fid and ADM's evaluation suite
read: arrays `mu` (F,) and `sigma` (F, F). Everything here runs in float64 numpy; the
feature network that produced the features decides what the number means ("FID" only
for the standard Inception-v3 pool features, "FD-<dataset>" for our own classifiers).
"""
from __future__ import annotations

import os
import warnings

import numpy as np
import scipy.linalg


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """features (N, F) -> (mu (F,), sigma (F, F)), the unbiased (N-1) covariance, float64."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise ValueError(f"features must be (N, F) with N >= 2 to fit a covariance, got "
                     f"shape {f.shape}")
  return f.mean(axis=0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray,
                     sigma2: np.ndarray, *, eps: float = 1e-6) -> float:
  """d² = |mu1 - mu2|² + Tr(S1 + S2 - 2 (S1 S2)^{1/2}), in float64.

  When the product is singular enough that sqrtm returns non-finite values, `eps` is added
  to both diagonals and the root retried. A complex root whose diagonal has an imaginary
  part above 1e-3 means the covariances are broken (too few samples for the feature
  size, or NaNs), and raises; smaller imaginary parts are round-off and are dropped.
  """
  mu1 = np.atleast_1d(np.asarray(mu1, np.float64))
  mu2 = np.atleast_1d(np.asarray(mu2, np.float64))
  s1 = np.atleast_2d(np.asarray(sigma1, np.float64))
  s2 = np.atleast_2d(np.asarray(sigma2, np.float64))
  if mu1.shape != mu2.shape:
    raise ValueError(f"mu shapes differ: {mu1.shape} vs {mu2.shape} (features of different "
                     "networks or layers?)")
  f = mu1.shape[0]
  if s1.shape != (f, f) or s2.shape != (f, f):
    raise ValueError(f"sigma shapes {s1.shape}, {s2.shape} do not match mu ({f},): "
                     f"expected ({f}, {f})")
  for name, a in (("mu1", mu1), ("mu2", mu2), ("sigma1", s1), ("sigma2", s2)):
    if not np.all(np.isfinite(a)):
      raise ValueError(f"{name} has non-finite entries; check the features it came from")
  diff = mu1 - mu2
  covmean = scipy.linalg.sqrtm(s1 @ s2)
  if not np.all(np.isfinite(covmean)):
    warnings.warn(f"frechet_distance: singular product of covariances; adding {eps} to "
                  "the diagonals")
    offset = np.eye(f) * eps
    covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
  if np.iscomplexobj(covmean):
    imag = np.max(np.abs(np.diagonal(covmean).imag))
    if imag > 1e-3:
      raise ValueError(f"frechet_distance: sqrtm has an imaginary component {imag:.3g} on "
                       "its diagonal; use more samples than feature dimensions")
    covmean = covmean.real
  return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))


def frechet_distance_features(a: np.ndarray, b: np.ndarray) -> float:
  """Fréchet distance between the Gaussians fitted to features a (N, F) and b (M, F)."""
  return frechet_distance(*feature_stats(a), *feature_stats(b))


def save_stats(path: str | os.PathLike, mu: np.ndarray, sigma: np.ndarray, **extra) -> None:
  """Writes `mu` (F,) and `sigma` (F, F) as float64 (plus any `extra` arrays) to `path`."""
  mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
  if mu.ndim != 1 or sigma.shape != (mu.shape[0],) * 2:
    raise ValueError(f"stats need mu (F,) and sigma (F, F), got {mu.shape} and {sigma.shape}")
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "wb") as f:  # a file object keeps numpy from appending ".npz"
    np.savez(f, mu=mu, sigma=sigma, **extra)


def load_stats(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
  """Reads (mu, sigma) from an `.npz` holding keys `mu` and `sigma`, as float64."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"reference statistics {path} do not exist; write them with "
                            "skipdit_jax.eval.frechet.save_stats or pytorch-fid --save-stats")
  with np.load(path) as z:
    missing = [k for k in ("mu", "sigma") if k not in z.files]
    if missing:
      raise ValueError(f"{path} lacks keys {missing} (has {z.files}); a reference-stats "
                       "file holds `mu` (F,) and `sigma` (F, F)")
    mu, sigma = np.asarray(z["mu"], np.float64), np.asarray(z["sigma"], np.float64)
  if mu.ndim != 1 or sigma.shape != (mu.shape[0],) * 2:
    raise ValueError(f"{path}: mu {mu.shape} and sigma {sigma.shape} are not (F,), (F, F)")
  return mu, sigma
