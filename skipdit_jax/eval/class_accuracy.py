"""Class accuracy of conditional samples, read by a classifier fitted on real images.

A pixel-space scikit-learn logistic regression: cheap, deterministic, and independent of
the generator. `fit_classifier` reports its own held-out accuracy so a low
`class_accuracy` can be told apart from a weak reader.
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression


def _features(images: np.ndarray) -> np.ndarray:
  """(N, H, W, C) in [-1, 1] -> (N, H*W*C) float64; samples are clipped to the data range."""
  return np.clip(np.asarray(images, np.float64), -1.0, 1.0).reshape(len(images), -1)


def fit_classifier(images: np.ndarray, labels: np.ndarray, *, num_train: int = 1400,
                   seed: int = 0, max_iter: int = 2000) -> tuple[LogisticRegression, float]:
  """Fits on `num_train` real images of a seeded shuffle; returns (classifier, accuracy on
  the remaining ones). images: (N, H, W, C) in [-1, 1]; labels: (N,) ints."""
  n = len(images)
  if labels.shape != (n,):
    raise ValueError(f"labels {labels.shape} do not match images {images.shape}")
  if not 0 < num_train < n:
    raise ValueError(f"config.eval.classifier_train={num_train} must lie in (0, {n}) so "
                     "that some real images are left to score the classifier")
  order = np.random.default_rng(seed).permutation(n)
  train, held = order[:num_train], order[num_train:]
  clf = LogisticRegression(max_iter=max_iter).fit(_features(images[train]), labels[train])
  return clf, float(clf.score(_features(images[held]), labels[held]))


def class_accuracy(clf: LogisticRegression, images: np.ndarray, labels: np.ndarray) -> float:
  """Fraction of `images` (N, H, W, C) that `clf` labels as the asked class `labels` (N,)."""
  return float(np.mean(clf.predict(_features(images)) == np.asarray(labels)))


def predict_classes(clf: LogisticRegression, images: np.ndarray) -> np.ndarray:
  """The class `clf` reads in each of `images` (N, H, W, C): (N,) ints."""
  return np.asarray(clf.predict(_features(images)))
