"""Video data sources: load time, memory held and clip-generation throughput.

`moving_digits` is lazy: memory holds the digit pool and the labels, not the clips. This
prints, for one moving-digits setting, the seconds to load (labels of every clip), the
peak Python memory of that load (tracemalloc), what the clips would take if
materialised, and clips/s of `BatchIterator` batches. One JSON object.

  PYTHONPATH=. python bench/video_data.py --num_frames 16 --image_size 32 --num_clips 10000
"""
from __future__ import annotations

import argparse
import json
import time
import tracemalloc

import numpy as np

from skipdit_jax import data


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--num_frames", type=int, default=16)
  ap.add_argument("--image_size", type=int, default=32)
  ap.add_argument("--num_clips", type=int, default=10000)
  ap.add_argument("--digit_source", default="mnist5k")
  ap.add_argument("--digit_size", type=int, default=14)
  ap.add_argument("--num_digits", type=int, default=2)
  ap.add_argument("--colour", default="rgb")
  ap.add_argument("--batch", type=int, default=64)
  ap.add_argument("--batches", type=int, default=20)
  a = ap.parse_args()
  cfg = dict(num_frames=a.num_frames, image_size=a.image_size, video=dict(
      num_clips=a.num_clips, digit_source=a.digit_source, digit_size=a.digit_size,
      num_digits=a.num_digits, colour=a.colour))
  data.load_source(a.digit_source)  # the bundled digits: imported once, outside the timing
  t0 = time.perf_counter()
  clips, labels, k = data.load_source("moving_digits", data=cfg)
  load_s = time.perf_counter() - t0
  tracemalloc.start()  # a second load measures memory (tracemalloc slows it down)
  data.load_source("moving_digits", data=cfg)
  _, peak = tracemalloc.get_traced_memory()
  tracemalloc.stop()
  it = data.BatchIterator(clips, labels, a.batch, 0, random_flip=True)
  next(it)
  t0 = time.perf_counter()
  for _ in range(a.batches):
    next(it)
  per_s = a.batch * a.batches / (time.perf_counter() - t0)
  print(json.dumps(dict(
      source="moving_digits", shape=list(clips.shape), num_classes=k, load_s=round(load_s, 3),
      load_peak_mib=round(peak / 2**20, 1),
      materialised_mib=round(float(np.prod(clips.shape)) * 4 / 2**20, 1),
      clips_per_s=round(per_s, 1), batch=a.batch)))


if __name__ == "__main__":
  main()
