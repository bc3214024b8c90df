"""caption_accuracy (eval/caption_scores.py) on hand-built cases: exact fractions on
hand-made reads, real images scored against their own captions (about the reader's
accuracy) and against mismatched ones (about chance), the held-out prompts' balance, and
the direction reader fitted on real clips."""
from __future__ import annotations

import numpy as np
import pytest

from skipdit_jax import data
from skipdit_jax.eval import caption_scores as S
from skipdit_jax.eval import class_accuracy
from skipdit_jax.text import captions as C


def test_caption_accuracy_exact_fractions():
  p = S.read_prompts(["a handwritten one", "the digit 2", "an image of the numeral 3",
                      "a four"], "digits")
  np.testing.assert_array_equal(p.classes, [1, 2, 3, 4])
  out = S.caption_accuracy(p, np.array([1, 2, 0, 0]))
  assert out == {"caption_class_accuracy": 0.5, "caption_accuracy": 0.5}
  clips = S.read_prompts(["a one moving up and to the left", "the digit 2 moves down-right",
                          "a scribbled 3 sliding diagonally up and right",
                          "a four moving down and to the left"], "moving_digits")
  assert clips.directions == ["up_left", "down_right", "up_right", "down_left"]
  out = S.caption_accuracy(clips, np.array([1, 2, 3, 0]),
                           ["up_left", "up_left", "up_right", "down_left"])
  # class right on 0, 1, 2; direction right on 0, 2, 3; both on 0 and 2
  assert out == {"caption_class_accuracy": 0.75, "caption_direction_accuracy": 0.75,
                 "caption_accuracy": 0.5}
  with pytest.raises(ValueError, match="read direction"):
    S.caption_accuracy(clips, np.zeros(4, int))


def test_eval_prompts_are_heldout_and_balanced():
  p = S.eval_prompts("digits", 5, seed=1)
  np.testing.assert_array_equal(np.bincount(p.classes), [5] * 10)
  train = {c for c, _ in C.all_captions("digits", "train")}
  assert not set(p.captions) & train
  v = S.eval_prompts("moving_digits", 10)
  np.testing.assert_array_equal(np.bincount(v.classes), [10] * 10)
  counts = {d: v.directions.count(d) for d in S.CLIP_DIRECTIONS}
  assert counts == {d: 25 for d in S.CLIP_DIRECTIONS}
  train = {c for c, *_ in C.all_clip_captions("train")}
  assert not set(v.captions) & train
  assert 0 < sum(C.bounced_from_caption(c) for c in v.captions) < 100
  t = S.eval_prompts("moving_digits", 10, split="train")  # the template-overfitting check
  assert set(t.captions) <= train and t.directions == v.directions
  np.testing.assert_array_equal(t.classes, v.classes)


def test_real_images_against_own_and_mismatched_captions():
  images, labels, _ = data.load_source("digits")
  clf, held = class_accuracy.fit_classifier(images, labels, num_train=1000, seed=0)
  x, y = images[1000:], labels[1000:]
  own = S.read_prompts(C.captions_for_labels(y, "digits", split="heldout", seed=0), "digits")
  read = class_accuracy.predict_classes(clf, x)
  acc = S.caption_accuracy(own, read)["caption_accuracy"]
  assert acc == pytest.approx(float(np.mean(read == y)))  # the reader's own accuracy
  assert acc > 0.9
  wrong = np.random.default_rng(0).permutation(y)
  bad = S.read_prompts(C.captions_for_labels(wrong, "digits", split="heldout"), "digits")
  assert abs(S.caption_accuracy(bad, read)["caption_accuracy"] - 0.1) < 0.05


@pytest.mark.slow
def test_direction_reader_reads_real_clips():
  from skipdit_jax.data.moving_digits import MovingDigits, MovingDigitsSpec
  clips = MovingDigits(MovingDigitsSpec(num_frames=8, canvas=16, num_clips=1500), "train")
  x, ids = S.real_motion(clips, 1500)
  assert np.bincount(ids, minlength=4).min() > 250  # all four diagonals occur
  reader = S.fit_direction_reader(x, ids, num_train=1200, log=lambda s: None)
  assert reader.test_accuracy > 0.95
  names = [S.CLIP_DIRECTIONS[i] for i in ids[1200:]]
  read = reader.predict(x[1200:])
  assert np.mean([a == b for a, b in zip(read, names)]) == pytest.approx(reader.test_accuracy)
  # against the wrong direction (rotated by one): about never right
  rotated = [S.CLIP_DIRECTIONS[(i + 1) % 4] for i in ids[1200:]]
  assert np.mean([a == b for a, b in zip(read, rotated)]) < 0.05
