"""Distribution scores of generated images against a dataset: FD, KID, precision/recall
and conditional accuracy, on the features of one extractor.

An extractor is any object with `features(images (N,H,W,C) in [-1,1]) -> (N, F)` and a
`score_name` ("FD-fmnist" for our classifiers, "FID" for Inception-v3). A `Reference`
holds the real features (for KID and precision/recall) and their Gaussian stats, cached
as `.npz` (keys `mu`, `sigma`, plus `features`) so every evaluation of a workdir compares
against the same real set.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import numpy as np

from skipdit_jax.data import load_source
from skipdit_jax.eval import feature_net, frechet, kid, precision_recall


@dataclasses.dataclass
class Reference:
  """Real-data statistics: mu (F,), sigma (F, F), features (M, F) or None (stats only)."""
  name: str
  mu: np.ndarray
  sigma: np.ndarray
  features: Optional[np.ndarray]


def real_images(dataset: str, num: int, seed: int = 0, data: Any = None
                ) -> tuple[np.ndarray, np.ndarray]:
  """`num` images (or clips) of the train split (a seeded subset; all when num <= 0 or
  >= N); `data` is the run's `config.data`, read by video sources."""
  x, y, _ = load_source(dataset, split="train", data=data)
  return feature_net.take(x, y, num, seed)


def build_reference(extractor: Any, dataset: str, cache_dir: str, *, num: int = 10000,
                    seed: int = 0, stats_path: str = "", data: Any = None) -> Reference:
  """The reference of `extractor` on `dataset`, read from / written to `cache_dir`.

  `stats_path` (a user's `.npz` with `mu`/`sigma`, e.g. a standard FID reference) is used
  as is; it has no features, so KID and precision/recall are then skipped.
  """
  if stats_path:
    mu, sigma = frechet.load_stats(stats_path)
    return Reference(extractor.score_name, mu, sigma, None)
  tag = getattr(extractor, "cache_tag", extractor.score_name)
  path = os.path.join(cache_dir, f"ref_{tag}_{dataset}{feature_net.data_digest(data)}_"
                      f"{num}_{seed}.npz")
  if os.path.exists(path):
    with np.load(path) as z:
      return Reference(extractor.score_name, z["mu"], z["sigma"], z["features"])
  feats = extractor.features(real_images(dataset, num, seed, data)[0])
  mu, sigma = frechet.feature_stats(feats)
  frechet.save_stats(path, mu, sigma, features=feats)
  return Reference(extractor.score_name, mu, sigma, feats)


def score_features(ref: Reference, feats: np.ndarray, *, kid_subsets: int = 100,
                   kid_subset_size: int = 1000, pr_k: int = 3) -> dict[str, float]:
  """{FD, KID, KID_std, precision, recall} of generated features (N, F), each key
  suffixed like the score ("FD-fmnist" -> "KID-fmnist"; "FID" -> "KID")."""
  if feats.shape[1] != ref.mu.shape[0]:
    raise ValueError(f"generated features have {feats.shape[1]} dimensions but the "
                     f"reference {ref.name} has {ref.mu.shape[0]}: the reference stats come "
                     "from another feature network; point eval.ref_stats at a matching file")
  out = {ref.name: frechet.frechet_distance(*frechet.feature_stats(feats), ref.mu, ref.sigma)}
  if ref.features is not None:
    # "FD-fmnist" -> "KID-fmnist", "precision-fmnist"; Inception's "FID" -> "KID", ...
    suffix = ref.name[ref.name.index("-"):] if "-" in ref.name else ""
    k_mean, k_std = kid.kid(ref.features, feats, num_subsets=kid_subsets,
                            subset_size=kid_subset_size)
    pr = precision_recall.precision_recall(ref.features, feats, k=pr_k)
    out.update({f"KID{suffix}": k_mean, f"KID{suffix}_std": k_std,
                f"precision{suffix}": pr["precision"], f"recall{suffix}": pr["recall"]})
  return out
