"""Improved precision and recall (Kynkäänniemi et al., 2019) on feature sets.

Each set's manifold is the union of balls around its points whose radius is the distance
to the point's k-th nearest neighbour in its own set. Precision is the fraction of fake
points inside the real manifold; recall the fraction of real points inside the fake one.
"""
from __future__ import annotations

import numpy as np


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Squared Euclidean distances (N, M), clipped at 0 against round-off."""
  d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
  return np.maximum(d, 0.0)


def knn_radii(x: np.ndarray, k: int, *, chunk: int = 2048) -> np.ndarray:
  """Distance of each row of x (N, F) to its k-th nearest other row -> (N,)."""
  if not 1 <= k < x.shape[0]:
    raise ValueError(f"k={k} nearest neighbours need 1 <= k < N={x.shape[0]} points")
  out = np.empty(x.shape[0])
  for s in range(0, x.shape[0], chunk):
    d = _sq_dists(x[s:s + chunk], x)
    # Index k, not k-1: position 0 of each sorted row is the point itself (distance 0).
    out[s:s + chunk] = np.sqrt(np.partition(d, k, axis=1)[:, k])
  return out


def coverage_fraction(manifold: np.ndarray, radii: np.ndarray, queries: np.ndarray, *,
                      chunk: int = 2048) -> float:
  """Fraction of queries (M, F) within radii[i] of some manifold[i] (N, F)."""
  inside = np.zeros(queries.shape[0], bool)
  r2 = radii ** 2
  for s in range(0, queries.shape[0], chunk):
    inside[s:s + chunk] = (_sq_dists(queries[s:s + chunk], manifold) <= r2[None]).any(1)
  return float(inside.mean())


def precision_recall(real: np.ndarray, fake: np.ndarray, *, k: int = 3) -> dict[str, float]:
  """{"precision", "recall"} of fake (M, F) against real (N, F) with k-NN manifolds."""
  real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
  if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
    raise ValueError(f"precision/recall need features (N, F) and (M, F), got {real.shape} "
                     f"and {fake.shape}")
  return {"precision": coverage_fraction(real, knn_radii(real, k), fake),
          "recall": coverage_fraction(fake, knn_radii(fake, k), real)}
