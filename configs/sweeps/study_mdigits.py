"""The video study's sweep: Latte vs Skip-Latte twins on moving digits (issue 15 item 6).

The twins are the video demo configs (configs/moving_digits_skiplatte.py and its vanilla
twin: depth 8 = 4 spatial+temporal pairs, width 64, patch 4, 8 frames of 12x12, digits
starting in the centre, 2,400 steps, CFG 4), one seed,
so the same init noise stream, data order, sampling noise and labels; they differ only in
`model.long_skip`. `python bench/study.py --sweep configs/sweeps/study_mdigits.py --root R`
trains both (FD-mdigits and held-out eps-MSE every `train.sample_every` steps), sweeps the
cache policies below over `intervals`, and runs the stability analyses per pair.

Sizing for about an hour on an idle 2-core CPU (measured figures in bench/study.py): FD
points every 600 steps (4 per twin) on 200 clips (20 per class), KID on subsets of 100,
a 2,000-clip real reference. 200 clips against 128-dim features is a biased FD: compare
rows with each other, not with other studies.
"""
import ml_collections

# Shared by both twins. `ema_warmup` (the demo configs' own setting, kept explicit): a
# plain 0.999 EMA lags the early FD points (the image study's finding).
_OVERRIDES = {
    "train.ema_warmup": True,
    "train.sample_every": 600,
    "sample.batch_size": 50,      # 4 chunks per 200 clips: the first compiles, 3 are timed
    "eval.num_samples": 200,
    "eval.num_ref": 2000,
    "eval.kid_subsets": 20,
    "eval.kid_subset_size": 100,
}


def get_sweep() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.runs = [
      {"name": "skiplatte", "config": "configs/moving_digits_skiplatte.py",
       "overrides": dict(_OVERRIDES)},
      {"name": "latte", "config": "configs/moving_digits_latte.py",
       "overrides": dict(_OVERRIDES)},
  ]
  # (with long skips, vanilla): the convergence comparison reads these two runs.
  s.twins = ("skiplatte", "latte")
  s.intervals = (2, 3, 4, 5)
  # (policy, plan options, label) per run, in pair units (L = 4 pairs). Every cached step
  # of skip_cache k=1 (pairs 0 and 3), the forecast, delta_dit (m = L - 2k = 2 reused) and
  # deep_cache k=2 (CachePlan cost k: the last 2 pairs) runs 2 of 4 pairs, so they compare
  # at one ideal speedup; FORA recomputes no pair (only modulations and adds).
  s.policies = {
      "skiplatte": [("skip_cache", {"k": 1}, "skip_cache k=1"),
                    ("skip_cache_forecast", {"k": 1, "forecast_order": 2}, "forecast o2 k=1"),
                    ("fora", {}, "fora"),
                    ("delta_dit", {"k": 1}, "delta_dit m=2")],
      "latte": [("deep_cache", {"k": 2}, "deep_cache k=2"),
                ("fora", {}, "fora"),
                ("delta_dit", {"k": 1}, "delta_dit m=2")],
  }
  # Stability analyses compare the deep feature entering pair L-k at this k and interval.
  s.stability_k = 1
  s.stability_interval = 3
  return s
