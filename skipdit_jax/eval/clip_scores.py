"""Scores for generated clips (N, F, H, W, C): a frame reader fitted on real frames, the
motion figure with its real and shuffled-frame references, and cached-vs-uncached fidelity.

The frame reader is a small CNN (`feature_net.FeatureCNN`) fitted on the frames of real
clips, each frame labelled with its clip's digit: `class_accuracy` is the fraction of
generated frames it reads as the asked digit. With `digit_direction` labels (4·digit +
direction) the frame label is the digit (one frame shows no direction).
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from skipdit_jax.eval import feature_net, video_metrics

# A frame reader small enough to fit in well under a minute here (16x16 frames).
READER_SPEC = feature_net.FeatureNetSpec(widths=(32, 64), feature_dim=64, train_steps=400)


def frame_classes(labels: np.ndarray, video_label: str) -> np.ndarray:
  """The digit each clip label asks for (`data.video.label`: digit | digit_direction)."""
  labels = np.asarray(labels)
  return labels // 4 if video_label == "digit_direction" else labels


def reader_rows(num_train: int) -> int:
  """How many real clips a reader fitted on `num_train` of them draws: those, plus a
  held-out quarter (at least 50) that scores it."""
  return num_train + max(num_train // 4, 50)


def real_clips(images: Any, num: int) -> np.ndarray:
  """The first `num` clips of a source (an ndarray or a lazy column) as an ndarray."""
  return np.asarray(images[np.arange(min(num, len(images)))], np.float32)


def fit_frame_reader(clips: np.ndarray, classes: np.ndarray, *, num_train: int, seed: int = 0,
                     log: Callable[[str], None] = print,
                     spec: feature_net.FeatureNetSpec = READER_SPEC) -> feature_net.FeatureNet:
  """Fits the frame CNN (`spec`) on the frames of `clips[:num_train]` and scores it on the
  rest."""
  if not 0 < num_train < len(clips):
    raise ValueError(f"config.eval.classifier_train={num_train} must lie in (0, "
                     f"{len(clips)}) so that some real clips are left to score the reader")
  f = clips.shape[1]
  frames = video_metrics.frames(clips)
  labels = video_metrics.frame_labels(classes, f).astype(np.int32)
  cut = num_train * f
  num_classes = int(classes.max()) + 1
  return feature_net.fit_feature_net((frames[:cut], labels[:cut]),
                                     (frames[cut:], labels[cut:]), num_classes,
                                     spec, name="frames", seed=seed, log=log)


def frame_accuracy(reader: feature_net.FeatureNet, clips: np.ndarray,
                   classes: np.ndarray) -> float:
  """Fraction of the frames of `clips` read as their clip's asked class."""
  return feature_net.conditional_accuracy(
      reader, video_metrics.frames(clips),
      video_metrics.frame_labels(classes, clips.shape[1]))


def fidelity(cached: np.ndarray, uncached: np.ndarray) -> dict[str, Any]:
  """Per-frame and mean PSNR / SSIM of cached clips against uncached ones."""
  out: dict[str, Any] = {}
  for metric in ("psnr", "ssim"):
    per = video_metrics.per_frame(metric, cached, uncached)
    out[f"{metric}_cached_vs_uncached"] = float(np.mean(per))
    out[f"{metric}_per_frame"] = [float(v) for v in per]
  return out
