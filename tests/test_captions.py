"""Captions from labels (images and clips) and the keyword reader that scores them."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from skipdit_jax.text import captions as C

DATASETS = ("digits", "mnist5k", "fashion_mnist")


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("split", C.SPLITS)
def test_reader_recovers_the_class_of_every_template_and_synonym(dataset, split):
  caps = C.all_captions(dataset, split)
  n_syn = 1 if dataset != "fashion_mnist" else 3
  assert len(caps) == 10 * len(C.templates(dataset, split)) * n_syn
  assert len({c for c, _ in caps}) == len(caps)  # no two the same
  for caption, label in caps:
    assert C.class_from_caption(caption, dataset) == label, caption


@pytest.mark.parametrize("dataset", DATASETS)
def test_heldout_templates_are_new_sentences(dataset):
  train = {c for c, _ in C.all_captions(dataset, "train")}
  held = {c for c, _ in C.all_captions(dataset, "heldout")}
  assert not train & held
  assert not set(C.templates(dataset, "train")) & set(C.templates(dataset, "heldout"))


def test_known_captions():
  assert ("a handwritten seven", 7) in C.all_captions("digits")
  assert ("the digit 7", 7) in C.all_captions("digits")
  assert ("an eight", 8) in C.all_captions("digits")
  assert ("a one", 1) in C.all_captions("digits")
  fashion = C.all_captions("fashion_mnist")
  assert ("a sneaker", 7) in fashion and ("a shoe for running", 7) in fashion
  assert ("an ankle boot", 9) in fashion and ("an overcoat", 4) in fashion
  assert C.article("8") == "an 8" and C.article("t-shirt") == "a t-shirt"


@pytest.mark.parametrize("caption,dataset,want", [
    ("a t-shirt", "fashion_mnist", 0), ("a button-up shirt", "fashion_mnist", 6),
    ("running shoes", "fashion_mnist", 7), ("a leather boot", "fashion_mnist", 9),
    ("black slacks", "fashion_mnist", 1), ("a shirt and a dress", "fashion_mnist", None),
    ("a cat", "fashion_mnist", None), ("a seven and a three", "digits", None),
    ("THE DIGIT 4!", "digits", 4), ("someone wrote it", "digits", None),
    ("a 7 or a seven", "mnist5k", 7),
])
def test_reader_edge_cases(caption, dataset, want):
  assert C.class_from_caption(caption, dataset) == want


@pytest.mark.parametrize("dataset", DATASETS)
def test_captions_for_labels_are_seeded_and_right(dataset):
  labels = np.arange(2000) % 10
  a = C.captions_for_labels(labels, dataset, split="train", seed=3)
  assert a == C.captions_for_labels(labels, dataset, split="train", seed=3)
  assert a != C.captions_for_labels(labels, dataset, split="train", seed=4)
  train = {c for c, _ in C.all_captions(dataset, "train")}
  assert set(a) <= train and len(set(a)) == len(train)  # 2000 draws cover the small set
  assert [C.class_from_caption(c, dataset) for c in a] == labels.tolist()
  held = C.captions_for_labels(labels, dataset, split="heldout", seed=3)
  assert not set(held) & train
  assert [C.class_from_caption(c, dataset) for c in held] == labels.tolist()


def test_clip_captions_read_back():
  assert C.clip_caption(3, "up_left", True) == "a three moving up and to the left, then bouncing"
  assert C.clip_caption(8, "right", False) == "an eight moving to the right"
  seen = {s: set() for s in C.SPLITS}
  for split, d, r, b, v in itertools.product(C.SPLITS, range(10), C.DIRECTIONS,
                                            (False, True), range(9)):
    cap = C.clip_caption(d, r, b, split=split, variant=v)
    seen[split].add(cap)
    assert C.class_from_caption(cap, "digits") == d, cap
    assert C.direction_from_caption(cap) == r, cap
    assert C.bounced_from_caption(cap) == b, cap
  assert not seen["train"] & seen["heldout"]
  caps = C.clip_captions([1, 2], ["down", "up_right"], [True, False], split="heldout", seed=1)
  assert caps == C.clip_captions([1, 2], ["down", "up_right"], [True, False],
                                 split="heldout", seed=1)
  assert [C.direction_from_caption(c) for c in caps] == ["down", "up_right"]
  assert C.direction_from_caption("a seven moving left and right") is None


def test_bad_arguments_are_named():
  with pytest.raises(ValueError, match="dataset='cifar10'"):
    C.all_captions("cifar10")
  with pytest.raises(ValueError, match="split='test'"):
    C.templates("digits", "test")
  with pytest.raises(ValueError, match="direction='sideways'"):
    C.clip_caption(1, "sideways", False)
  with pytest.raises(ValueError, match="labels must be in 0..9"):
    C.captions_for_labels([3, 10], "digits")
