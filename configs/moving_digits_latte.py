"""The vanilla twin of `moving_digits_skiplatte.py`: Latte without long skips, sampled
uncached and with DeepCache (the last k = 1 pair recomputed, N = 2)."""
import ml_collections

from configs import moving_digits_skiplatte


def get_config() -> ml_collections.ConfigDict:
  return moving_digits_skiplatte.get_config(long_skip=False)
