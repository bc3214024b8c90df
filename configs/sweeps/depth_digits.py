"""The depth study's grid (issue 18): DiT and Skip-DiT twins on 8x8 digits at depths 8, 16
and 28, three seeds each, all trained to one fixed budget.

A piece is one (depth, seed): `get_sweep(depth, seed)` returns it in bench/study.py's sweep
format (its two twin runs, the cache policies per run, the intervals, the stability k and
N), so `python bench/study.py --sweep configs/sweeps/depth_digits.py` also runs the default
piece as an ordinary study. bench/depth_study.py runs every piece of DEPTHS x SEEDS and
merges them.

The twins are configs/digits_skipdit.py and configs/digits_dit.py (width 64, 4 heads, patch
2: 16 tokens) with `model.depth` and `seed` set; they differ only in `model.long_skip` (and
the cache each supports). One seed drives the init, the data order and the train-step
noise of both twins; every FD point and cache row samples the same labels from the same
noise (key 0, as bench/study.py does). The budget (BATCH x NUM_STEPS) and its cost are
sized in bench/depth_study.py's docstring.
"""
import ml_collections

DEPTHS = (8, 16, 28)
SEEDS = (0, 1, 2)
# --smoke (CI, <= 3 min): the smallest depth where Skip-Cache k=1 still leaves a middle
# (k < depth / 2), two seeds so the spread and the verdicts are computed. One depth: each
# depth costs its own compiles (~80 s here); merging across depths is tested on hand-built
# pieces (tests/test_depth_study.py).
SMOKE_DEPTHS = (4,)
SMOKE_SEEDS = (0, 1)
# The feature net, its reference and the eps-MSE set come from this seed for every piece,
# so FD and eps-MSE compare across seeds and depths.
SCORING_SEED = 0

BATCH = 128
NUM_STEPS = 2000
SAMPLE_EVERY = 250

# Shared by every run. `ema_warmup`: with decay 0.999 a plain EMA still holds 0.999**2000
# = 13 % of the random init after 2,000 steps (the image study's finding).
_OVERRIDES = {
    "train.batch_size": BATCH,
    "train.num_steps": NUM_STEPS,
    "train.ema_warmup": True,
    "train.log_every": 100,
    "train.sample_every": SAMPLE_EVERY,
    "train.ckpt_every": SAMPLE_EVERY,   # a killed piece loses at most one interval
    "sample.cfg_scale": 1.0,            # FD of the model itself (the image study's choice)
    "sample.batch_size": 250,           # 2 chunks per 500 samples: the first compiles
    "eval.num_samples": 500,            # 50 per class
    "eval.num_ref": 0,                  # all 1,797 real digits
    "eval.kid_subsets": 20,
    "eval.kid_subset_size": 250,
}


def _check(depth: int, seed: int) -> None:
  if isinstance(depth, bool) or not isinstance(depth, int) or depth < 4 or depth % 2:
    raise ValueError(f"depth={depth!r}: the twins need an even model.depth >= 4 "
                     "(Skip-Cache k=1 recomputes 1 block at each end and needs k < depth/2)")
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
    raise ValueError(f"seed={seed!r}: the piece's seed must be an integer >= 0")


def get_sweep(depth: int = 8, seed: int = 0) -> ml_collections.ConfigDict:
  """The piece (depth, seed) in bench/study.py's sweep format."""
  _check(depth, seed)
  s = ml_collections.ConfigDict()
  run = dict(_OVERRIDES, **{"model.depth": depth, "seed": seed})
  s.runs = [
      {"name": "skipdit", "config": "configs/digits_skipdit.py", "overrides": dict(run)},
      {"name": "dit", "config": "configs/digits_dit.py", "overrides": dict(run)},
  ]
  # (with long skips, vanilla): the convergence comparison reads these two runs.
  s.twins = ("skipdit", "dit")
  s.intervals = (2, 3, 4, 5)
  # (policy, plan options, label) per run. Every cached step of skip_cache k=1, the
  # forecast, delta_dit (m = L - 2k reused) and deep_cache k=2 runs 2 of L blocks, so
  # they compare at one ideal speedup at every N; FORA recomputes no block.
  m = f"delta_dit m={depth - 2}"
  s.policies = {
      "skipdit": [("skip_cache", {"k": 1}, "skip_cache k=1"),
                  ("skip_cache_forecast", {"k": 1, "forecast_order": 2}, "forecast o2 k=1"),
                  ("fora", {}, "fora"),
                  ("delta_dit", {"k": 1}, m)],
      "dit": [("deep_cache", {"k": 2}, "deep_cache k=2"),
              ("fora", {}, "fora"),
              ("delta_dit", {"k": 1}, m)],
  }
  # Stability analyses compare the deep feature entering block L-k at this k and interval.
  s.stability_k = 1
  s.stability_interval = 3
  return s
