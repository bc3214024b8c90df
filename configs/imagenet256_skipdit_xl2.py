"""ImageNet 256 Skip-DiT-XL/2: `configs/imagenet256_dit_xl2.py` with long skips.

The released `DiT-XL-2-skip.pt` was trained 2.9M steps from scratch with this recipe; the
paper samples it with Skip-Cache (`--config.sample.cache.policy=skip_cache
--config.sample.cache.interval=2`; k=4 and the t <= 20 full tail are the sample defaults).

Config argument (`--config=configs/imagenet256_skipdit_xl2.py:ARG`):
  (none)   from scratch, the released run's recipe.
  stage1   upcycling stage 1 (REFERENCE §6): start from the vanilla `DiT-XL-2-256x256.pt`
           (fresh skip fusions) and train only the fusions (`train.trainable="skip_only"`).
  stage2   stage 2: start from stage 1's workdir and train everything.
  bf16     the mixed-precision recipe (`imagenet256_dit_xl2.bf16_recipe`); combine with a
           stage as `:stage1,bf16`.
REFERENCE gives no stage lengths: the `num_steps` below are ours (override them). The
paths are defaults to override with `--config.train.init_from=...`; a missing one is
refused before any compute. Both stages read latents like the main recipe.
"""
import ml_collections

from configs import imagenet256_dit_xl2

STAGES = ("stage1", "stage2")
STAGE1_INIT = "DiT-XL-2-256x256.pt"        # the released vanilla DiT-XL/2 (or .safetensors)
STAGE1_WORKDIR = "runs/skipdit_xl2_stage1"  # stage 2 reads stage 1's latest params here


def get_config(arg: str = "") -> ml_collections.ConfigDict:
  options = imagenet256_dit_xl2.parse_options(arg, STAGES + ("bf16",),
                                              "configs/imagenet256_skipdit_xl2.py")
  stages = options & set(STAGES)
  if len(stages) > 1:
    raise ValueError(f"configs/imagenet256_skipdit_xl2.py:{arg}: give one stage of "
                     f"{list(STAGES)}, not {sorted(stages)}")
  stage = stages.pop() if stages else ""
  c = imagenet256_dit_xl2.get_config("bf16" if "bf16" in options else "", long_skip=True)
  if stage == "stage1":
    c.train.init_from = STAGE1_INIT
    c.train.trainable = "skip_only"   # 14 fusions train; the DiT weights stay bit-identical
    c.train.num_steps = 100_000
  elif stage == "stage2":
    c.train.init_from = STAGE1_WORKDIR
    c.train.trainable = "all"
    c.train.num_steps = 400_000
  return c
