"""ImageNet 256 Skip-DiT-XL/2: `configs/imagenet256_dit_xl2.py` with long skips.

The released `DiT-XL-2-skip.pt` was trained 2.9M steps with this recipe; the paper
samples it with Skip-Cache (`--config.sample.cache.policy=skip_cache
--config.sample.cache.interval=2 --config.sample.cache.k=4`).
"""
import ml_collections

from configs import imagenet256_dit_xl2


def get_config() -> ml_collections.ConfigDict:
  return imagenet256_dit_xl2.get_config(long_skip=True)
