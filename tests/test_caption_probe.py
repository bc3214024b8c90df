"""bench/caption_probe.py labels each caption with the content its own words name."""
import importlib.util
from pathlib import Path

import pytest

from skipdit_jax.eval.caption_scores import CLIP_DIRECTIONS
from skipdit_jax.text import captions as C

_SPEC = importlib.util.spec_from_file_location(
    "caption_probe", Path(__file__).resolve().parents[1] / "bench" / "caption_probe.py")
probe = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(probe)


@pytest.mark.parametrize("split", C.SPLITS)
def test_probe_labels_are_what_the_captions_say(split):
  caps, cls, dirs = probe.content("moving_digits", split)
  assert set(dirs) == set(CLIP_DIRECTIONS)  # the four diagonals clips take, nothing else
  assert [C.class_from_caption(c, "digits") for c in caps] == cls.tolist()
  assert [C.direction_from_caption(c) for c in caps] == dirs
  caps, cls, dirs = probe.content("fashion_mnist", split)
  assert dirs is None and [C.class_from_caption(c, "fashion_mnist") for c in caps] == cls.tolist()
