"""The small-scale Skip-DiT study on Fashion-MNIST (28x28x1): DiT and Skip-DiT twins.

`--config=configs/study_fmnist.py:skipdit` or `:dit`; the twins differ only in
`model.long_skip` (and the cache each supports). Sized so that `bench/study.py` (both
trainings, FD vs step, the cache sweep and the stability analyses) finishes in < 2 h on
an idle 2-core CPU; see the estimate in bench/study.py. Patch 4 gives 49 tokens (patch 2's
196 tokens cost ~8x per step here); depth 8 makes Skip-Cache's k=1 recompute 2 of 8 blocks.
"""
import ml_collections

from configs import default


def get_config(variant: str = "skipdit") -> ml_collections.ConfigDict:
  if variant not in ("skipdit", "dit"):
    raise ValueError(f"configs/study_fmnist.py:{variant} — the variant must be 'skipdit' "
                     "or 'dit'")
  skip = variant == "skipdit"
  c = default.get_config()
  c.model.name = "SkipDiT-Tiny/4" if skip else "DiT-Tiny/4"
  c.model.long_skip = skip
  c.model.depth, c.model.hidden_size, c.model.num_heads, c.model.patch_size = 8, 64, 4, 4
  c.model.learn_sigma = False
  c.data.name, c.data.image_size, c.data.channels, c.data.num_classes = (
      "fashion_mnist", 28, 1, 10)
  c.train.batch_size = 128
  c.train.num_steps = 3000
  c.train.lr, c.train.warmup_steps, c.train.lr_schedule = 2e-3, 200, "constant"
  c.train.ema_decay = 0.999
  # Without warmup, 0.999**3000 = 5 % of the EMA is still the random init at the end and
  # FD-vs-step measures the EMA's lag, not training (the first study: eval eps-MSE 0.75
  # at step 500 while the raw params' train loss was 0.077).
  c.train.ema_warmup = True
  # The study scores FD every `sample_every` steps through the loop's sample hook.
  c.train.log_every, c.train.ckpt_every, c.train.sample_every = 100, 500, 250
  c.sample.sampler, c.sample.num_steps, c.sample.cfg_scale = "ddim", 50, 1.0
  c.sample.num_per_class, c.sample.batch_size, c.sample.grid_per_class = 10, 250, 10
  # Equal cost for the twins: Skip-Cache recomputes 2k = 2 of 8 blocks, DeepCache the last 2.
  c.sample.cache.policy = "skip_cache" if skip else "deep_cache"
  c.sample.cache.interval, c.sample.cache.k = 2, 1 if skip else 2
  c.eval.class_accuracy = False      # main's logistic-regression reader; eval mode scores
  c.eval.num_samples = 1000          # generated images per FD (class-balanced)
  c.eval.num_ref = 10000             # real train images for the FD-fmnist reference
  c.eval.kid_subsets = 50
  c.eval.kid_subset_size = 500
  return c
