"""The study's sweep: the two twin runs and what bench/study.py measures on them.

Each run is a config (with its `:variant` argument) plus field overrides; bench/study.py
trains every run in `<root>/<name>` and then sweeps the cache policies of `policies`
over `intervals` on each. Plain data, so a launcher can expand the runs the same way.
"""
import ml_collections


def get_sweep() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.runs = [
      {"name": "skipdit", "config": "configs/study_fmnist.py:skipdit", "overrides": {}},
      {"name": "dit", "config": "configs/study_fmnist.py:dit", "overrides": {}},
  ]
  s.intervals = (2, 3, 4, 5)
  # (policy, plan options, label) per run. Every cached step of skip_cache, forecast,
  # delta_dit (m = L - 2k = 6 reused) and deep_cache (k=2) runs 2 of 8 blocks, so they
  # compare at one ideal speedup; FORA recomputes no block (only modulations and adds).
  s.policies = {
      "skipdit": [("skip_cache", {"k": 1}, "skip_cache k=1"),
                  ("skip_cache_forecast", {"k": 1, "forecast_order": 2}, "forecast o2 k=1"),
                  ("fora", {}, "fora"),
                  ("delta_dit", {"k": 1}, "delta_dit m=6")],
      "dit": [("deep_cache", {"k": 2}, "deep_cache k=2"),
              ("fora", {}, "fora"),
              ("delta_dit", {"k": 1}, "delta_dit m=6")],
  }
  # Stability analyses compare the deep feature entering block L-k at this k and interval.
  s.stability_k = 1
  s.stability_interval = 3
  return s
