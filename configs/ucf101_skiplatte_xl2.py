"""UCF101 class-to-video Skip-Latte-XL/2 (the released `ucf101-skip.pt`): 16 frames of 32x32x4
SD-VAE latents (256 px), 101 classes; facts in shared/docs/VIDEO.md §1.

Official sampling (`sample_ddp.py` with the `Latte-skip-cache-N` model, VIDEO.md §1.4-1.5):
250-step DDPM, CFG 7.0 on all 4 latent channels, Skip-Cache recomputing k=1 block pair at
each end, N=2 (the sample scripts' `--deepcache 2`; N=4 / N=5 give the README's 2.2x / 2.4x
ideal speedups). The official schedule is expressed by the cache fields: every step with
t >= 900 is full (window hi 900), a full step whenever the step index is a multiple of N
(counter "global", the official `cache_cont % N`), and every step after the first with
t < 50 full (tail_t 50). `--config.sample.cache.policy=none` samples uncached.

Training follows the official recipe (AdamW 1e-4, no weight decay, EMA 0.9999, clip 0.1);
the video latents come from the video data sources (`data.name`, `data.num_frames`).
Import the released weights with `models.load_official("ucf101-skip.pt", input_size=32,
num_frames=16)` (docs/IMPORT.md).
"""
import ml_collections

from configs import imagenet256_dit_xl2


def get_config(long_skip: bool = True) -> ml_collections.ConfigDict:
  c = imagenet256_dit_xl2.get_config(long_skip=long_skip)
  c.model.name = "SkipLatte-XL/2" if long_skip else "Latte-XL/2"
  c.model.scan_blocks = False        # Latte alternates spatial and temporal blocks
  c.model.remat = "dots_no_batch"
  c.data.image_size, c.data.channels, c.data.num_classes = 32, 4, 101
  c.data.num_frames = 16             # frames per clip (temp_embed's length)

  c.train.num_steps = 1_000_000      # ours: the release does not say
  c.train.grad_clip = 0.1            # the official clip after start_clip_iter
  c.train.batch_size = 32            # local 4 x 8 GPUs

  c.sample.sampler, c.sample.num_steps, c.sample.eta = "ddpm", 250, 0.0
  c.sample.cfg_scale = 7.0
  c.sample.guided_channels = 4       # class-to-video guides all 4 channels (VIDEO.md §8.3)
  c.sample.cache.policy = "skip_cache" if long_skip else "none"
  c.sample.cache.interval = 2
  c.sample.cache.k = 1               # in block pairs
  c.sample.cache.window = (0, 900)   # t >= 900: full
  c.sample.cache.counter = "global"  # full when cache_cont % N == 0
  c.sample.cache.tail_t = 50         # after the first step with t < 50: all full
  c.sample.num_per_class, c.sample.batch_size = 2, 8
  return c
