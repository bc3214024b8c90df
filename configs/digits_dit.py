"""The digits demo's vanilla-DiT twin: configs/digits_skipdit.py with model.long_skip off.

Skip-Cache needs long skips, so the cached samples use its vanilla-DiT counterpart,
DeepCache-style reuse of the deep feature (REFERENCE §5), at the same cost (2 of 6 blocks).
"""
import ml_collections

from configs import digits_skipdit


def get_config() -> ml_collections.ConfigDict:
  c = digits_skipdit.get_config()
  c.model.name = "DiT-Tiny/2"
  c.model.long_skip = False
  c.sample.cache.policy, c.sample.cache.k = "deep_cache", 2
  return c
