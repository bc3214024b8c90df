"""bench/clip_direction.py reads real moving-digit clips' motion as their labels say."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from skipdit_jax.data.moving_digits import DIRECTIONS, MovingDigits, MovingDigitsSpec

ROOT = Path(__file__).resolve().parents[1]


def _run(path):
  out = subprocess.run([sys.executable, "bench/clip_direction.py", str(path)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, check=True).stdout
  return json.loads(out.strip().splitlines()[-1])


def test_real_clips_agree_with_their_label_and_reversed_labels_do_not(tmp_path):
  spec = MovingDigitsSpec(num_frames=8, canvas=12, start="center", label="digit_direction",
                          num_clips=64, num_test_clips=8)
  clips = MovingDigits(spec, "train")
  x, labels = clips[np.arange(64)], clips.labels
  assert len(set((labels % 4).tolist())) == 4  # every direction is asked
  np.savez(tmp_path / "real.npz", images=x, labels=labels)
  got = _run(tmp_path / "real.npz")
  assert got["vertical_agree"] == got["horizontal_agree"] == got["both_agree"] == 1.0
  # The same clips labelled with the opposite direction (both axes reversed): never agree.
  k = len(DIRECTIONS)
  opposite = np.array([[tuple(d) for d in DIRECTIONS.tolist()].index((-dy, -dx))
                       for dy, dx in DIRECTIONS.tolist()])
  np.savez(tmp_path / "flipped.npz", images=x, labels=(labels // k) * k + opposite[labels % k])
  got = _run(tmp_path / "flipped.npz")
  assert got["vertical_agree"] == got["horizontal_agree"] == 0.0
  # A still digit (every frame the first) has no direction: its projection is zero.
  still = np.repeat(x[:, :1], 8, axis=1)
  np.savez(tmp_path / "still.npz", images=still, labels=labels)
  got = _run(tmp_path / "still.npz")
  assert max(got["mean_abs_projection"]) < 1e-6 and got["both_agree"] == 0.0
