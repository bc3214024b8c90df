"""Does a moving-digits model move its digit the way its label asks? Per-axis agreement.

Reads a samples file that main writes (`samples/final_*.npz`: `images` (N, F, H, W, 1) in
[-1, 1] and `labels`) of a model trained with `data.video.label = digit_direction` (label =
4 * digit + direction id, directions `moving_digits.DIRECTIONS`), takes each clip's
intensity-weighted centre of mass per frame, and correlates its track with the track of a
centre-start digit moving each way (+1, +2, ..., bouncing): the sign says which way the
clip moves along each axis. Prints one JSON object: agreement with the label per axis and
both together (chance 0.5 / 0.5 / 0.25), the mean |projection| (how far the digit moves),
and the fraction moving down / right per asked direction.

  python bench/clip_direction.py /tmp/run/samples/final_0002400.npz [--limit 4]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from skipdit_jax.data.moving_digits import DIRECTIONS, bounce  # noqa: E402


def centre_tracks(clips: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(N, F) row and column of each frame's intensity-weighted centre of mass."""
  img = (np.asarray(clips, np.float64)[..., 0] + 1.0) / 2.0
  h, w = img.shape[2:4]
  yy, xx = np.mgrid[:h, :w]
  mass = img.sum((2, 3)) + 1e-9
  return (img * yy).sum((2, 3)) / mass, (img * xx).sum((2, 3)) / mass


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("samples")
  ap.add_argument("--limit", type=int, default=4,
                  help="the digit's travel (canvas - digit size): 12 - 8 for the demo")
  a = ap.parse_args()
  d = np.load(a.samples)
  clips, labels = d["images"], np.asarray(d["labels"])
  f = clips.shape[1]
  # The +1 track of a centre-start digit, centred: its sign pattern is what "down"/"right"
  # looks like over these frames.
  ref = bounce(a.limit // 2, 1.0, f, a.limit)
  ref = ref - ref.mean()
  cy, cx = centre_tracks(clips)
  proj_v = (cy - cy.mean(1, keepdims=True)) @ ref
  proj_h = (cx - cx.mean(1, keepdims=True)) @ ref
  asked = DIRECTIONS[labels % len(DIRECTIONS)]  # (N, 2) (dy, dx)
  ok_v, ok_h = np.sign(proj_v) == asked[:, 0], np.sign(proj_h) == asked[:, 1]
  per = {}
  for i, (dy, dx) in enumerate(DIRECTIONS.tolist()):
    sel = labels % len(DIRECTIONS) == i
    per[f"{dy:+d},{dx:+d}"] = {"n": int(sel.sum()),
                               "down": float((proj_v[sel] > 0).mean()) if sel.any() else None,
                               "right": float((proj_h[sel] > 0).mean()) if sel.any() else None}
  print(json.dumps({"bench": "clip_direction", "samples": a.samples, "n": int(len(labels)),
                    "vertical_agree": float(ok_v.mean()), "horizontal_agree": float(ok_h.mean()),
                    "both_agree": float((ok_v & ok_h).mean()),
                    "mean_abs_projection": [float(np.abs(proj_v).mean()),
                                            float(np.abs(proj_h).mean())],
                    "by_asked_direction": per}))


if __name__ == "__main__":
  main()
