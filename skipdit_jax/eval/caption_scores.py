"""Caption accuracy of text-conditioned samples, on held-out caption templates.

The prompts: `eval_prompts` draws, per class, `per_class` captions from the
`heldout` templates (never seen in training; `split="train"` draws the training templates
instead, to tell a model that missed the content from one that does not carry it over to
new phrasings); clips also cycle through the four diagonal
directions moving digits take (balanced over the whole set) and alternate the bounce
phrase. What each prompt asks is read back from its text (`captions.class_from_caption`,
`direction_from_caption`), independently of how it was made.

The readers, fitted on real data: the digit (or Fashion-MNIST class) of an image by the
logistic regression of `class_accuracy`; of a clip by the majority vote of the frame CNN
of `clip_scores` over its frames; the direction of a clip by `DirectionReader`, a small
CNN on whole clips (frames folded into channels) taught the direction of each real clip's
first move (`MovingDigits.motion`, the content its training caption names).
`caption_accuracy` is the fraction of samples whose read content (class, and direction for
clips) is what the caption asks.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import numpy as np

from skipdit_jax.data.moving_digits import DIRECTIONS as MOTIONS
from skipdit_jax.eval import feature_net, video_metrics
from skipdit_jax.text import captions as C

# The directions moving digits take (diagonals only), as caption direction names.
CLIP_DIRECTIONS = tuple(C.direction_name(dy, dx) for dy, dx in MOTIONS)
# Small: 16x16 clips of 8 frames; fits in well under a minute on 2 CPU cores.
DIRECTION_SPEC = feature_net.FeatureNetSpec(widths=(16, 32), feature_dim=32, train_steps=300)


@dataclasses.dataclass
class Prompts:
  """Held-out captions and what they ask: classes (N,) int, directions (N,) str or None."""
  captions: list[str]
  classes: np.ndarray
  directions: Optional[list[str]] = None


def eval_prompts(dataset: str, per_class: int, seed: int = 0,
                 split: str = "heldout") -> Prompts:
  """`per_class` captions per class from the `split` templates (clips: directions cycled
  over CLIP_DIRECTIONS across the whole set, bounce alternating every four)."""
  classes = np.repeat(np.arange(10, dtype=np.int32), per_class)
  if dataset != "moving_digits":
    caps = C.captions_for_labels(classes, dataset, split=split, seed=seed)
  else:
    k = np.arange(len(classes))
    dirs = [CLIP_DIRECTIONS[i % len(CLIP_DIRECTIONS)] for i in k]
    bounced = (k // len(CLIP_DIRECTIONS)) % 2 == 1
    caps = C.clip_captions(classes, dirs, bounced, split=split, seed=seed)
  return read_prompts(caps, dataset)


def read_prompts(captions: list[str], dataset: str) -> Prompts:
  """What each caption asks, read from its words (errors on a caption naming no class)."""
  kind = "digits" if dataset == "moving_digits" else dataset
  classes = [C.class_from_caption(c, kind) for c in captions]
  bad = [c for c, k in zip(captions, classes) if k is None]
  if bad:
    raise ValueError(f"captions {bad[:3]} name no single class of {dataset}")
  dirs = None
  if dataset == "moving_digits":
    dirs = [C.direction_from_caption(c) for c in captions]
    if any(d is None for d in dirs):
      raise ValueError(f"clip captions {[c for c, d in zip(captions, dirs) if d is None][:3]}"
                       " name no single direction")
  return Prompts(list(captions), np.asarray(classes, np.int32), dirs)


# -- the direction reader --------------------------------------------------------------------

def direction_ids(names: list[str]) -> np.ndarray:
  """Caption direction names -> ids into CLIP_DIRECTIONS (-1 for any other direction)."""
  return np.array([CLIP_DIRECTIONS.index(n) if n in CLIP_DIRECTIONS else -1 for n in names],
                  np.int32)


def real_motion(clips: Any, num: int) -> tuple[np.ndarray, np.ndarray]:
  """(clips (n, F, H, W, C), direction ids (n,)) of the first `num` real clips of a
  MovingDigits column, each labelled with the direction of its first move."""
  n = min(num, len(clips))
  dirs = [C.direction_name(dy, dx) for dy, dx, _ in (clips.motion(i) for i in range(n))]
  return np.asarray(clips[np.arange(n)], np.float32), direction_ids(dirs)


@dataclasses.dataclass
class DirectionReader:
  """Reads the direction of a clip's first move: `predict(clips)` -> names (N,)."""
  net: feature_net.FeatureNet

  @property
  def test_accuracy(self) -> float:
    return self.net.test_accuracy

  def predict(self, clips: np.ndarray) -> list[str]:
    return [CLIP_DIRECTIONS[i] for i in self.net.predict(np.asarray(clips, np.float32))]


def fit_direction_reader(clips: np.ndarray, ids: np.ndarray, *, num_train: int, seed: int = 0,
                         log: Callable[[str], None] = print,
                         spec: feature_net.FeatureNetSpec = DIRECTION_SPEC) -> DirectionReader:
  """Fits the direction CNN on clips[:num_train] (ids into CLIP_DIRECTIONS) and scores it on
  the rest."""
  if not 0 < num_train < len(clips):
    raise ValueError(f"num_train={num_train} must lie in (0, {len(clips)}) so that some "
                     "real clips are left to score the direction reader")
  if (ids < 0).any():
    raise ValueError("every clip needs one of the diagonal directions " f"{CLIP_DIRECTIONS}")
  net = feature_net.fit_feature_net((clips[:num_train], ids[:num_train]),
                                    (clips[num_train:], ids[num_train:]),
                                    len(CLIP_DIRECTIONS), spec, name="directions", seed=seed,
                                    log=log)
  return DirectionReader(net)


def clip_classes(frame_reader: feature_net.FeatureNet, clips: np.ndarray) -> np.ndarray:
  """The class of each clip (N,): the majority vote of its frames (ties: the lowest)."""
  f = clips.shape[1]
  per_frame = frame_reader.predict(video_metrics.frames(clips)).reshape(len(clips), f)
  return np.array([np.bincount(p, minlength=1).argmax() for p in per_frame], np.int32)


def caption_accuracy(prompts: Prompts, read_classes: np.ndarray,
                     read_directions: Optional[list[str]] = None) -> dict[str, float]:
  """{"caption_accuracy": fraction of samples whose read class (and, for clips, read
  direction) is what the caption asks; "caption_class_accuracy" and, for clips,
  "caption_direction_accuracy": each part alone}."""
  read_classes = np.asarray(read_classes)
  if read_classes.shape != prompts.classes.shape:
    raise ValueError(f"{read_classes.shape} read classes for {prompts.classes.shape} prompts")
  ok = read_classes == prompts.classes
  out = {"caption_class_accuracy": float(ok.mean())}
  if prompts.directions is not None:
    if read_directions is None or len(read_directions) != len(ok):
      raise ValueError("clip prompts need one read direction per sample")
    ok_dir = np.array([a == b for a, b in zip(read_directions, prompts.directions)])
    out["caption_direction_accuracy"] = float(ok_dir.mean())
    ok = ok & ok_dir
  out["caption_accuracy"] = float(ok.mean())
  return out
