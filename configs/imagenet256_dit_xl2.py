"""ImageNet 256x256 class-conditional DiT-XL/2 in SD-VAE latent space: the paper recipe.

Latents: 32x32x4 (SD KL-f8 VAE, x0.18215), encoded once with
  python -m skipdit_jax.encode_latents --source=tfds:imagenet2012 --vae=VAE.safetensors \
      --out=$SKIPDIT_LATENTS_DIR
(originals and mirrors stand in for random flips). Training: AdamW 1e-4 constant, no weight
decay, no warm-up, global batch 256, EMA 0.9999, learned sigma, 1000 linear-beta steps.
Sampling: 250-step DDPM, CFG 1.5 on 3 latent channels, 50 images per class (50k for FID)
from the EMA weights; Skip-Cache k=4 with the official t <= 20 tail when a policy is set.
`configs/imagenet256_skipdit_xl2.py` differs only in `model.long_skip`.

Fine-tune the released weights with `--config.train.init_from=DiT-XL-2-256x256.pt`; the
two-stage upcycling recipe (REFERENCE §6) is `configs/imagenet256_skipdit_xl2.py:stage1`
then `:stage2` (docs/IMPORT.md).

Config argument `bf16` (`--config=configs/imagenet256_dit_xl2.py:bf16`): the mixed-precision
recipe instead of the paper's float32 (see `bf16_recipe`).
"""
import ml_collections

from configs import default

OPTIONS = ("bf16",)


def parse_options(arg: str, allowed: tuple[str, ...], path: str) -> set[str]:
  """The comma-separated config argument (`:stage1,bf16`) as a set, every token checked."""
  tokens = {t.strip() for t in (arg or "").split(",") if t.strip()}
  bad = sorted(tokens - set(allowed))
  if bad:
    raise ValueError(f"{path}:{arg}: unknown option(s) {bad}; use a comma-separated subset "
                     f"of {list(allowed)} or no argument")
  return tokens


def bf16_recipe(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Mixed precision: float32 params, optimizer state and EMA (always: `layers.dense`
  keeps param_dtype float32); bfloat16 matmuls and activations (`model.dtype`); float32
  LayerNorms (`layers.layer_norm`, the skip fusion's), logits and softmax
  (`models/attention.py`), model output and loss. Same as the override
  `--config.model.dtype=bfloat16`. float16 is refused: it would need loss scaling."""
  c.model.dtype = "bfloat16"
  return c


def get_config(arg: str = "", long_skip: bool = False) -> ml_collections.ConfigDict:
  options = parse_options(arg, OPTIONS, "configs/imagenet256_dit_xl2.py")
  c = default.get_config()
  c.model.name = "SkipDiT-XL/2" if long_skip else "DiT-XL/2"
  c.model.long_skip = long_skip
  c.model.depth, c.model.hidden_size, c.model.num_heads, c.model.patch_size = 28, 1152, 16, 2
  c.model.learn_sigma = True
  c.model.class_dropout_prob = 0.1
  c.model.dtype = "float32"          # the paper's precision; `:bf16` is the mixed recipe
  c.model.scan_blocks = True         # 28 blocks: scan keeps compile time short
  # Keep the weight matmuls' outputs, recompute attention and the elementwise work:
  # --mode=compile at batch 256 on fsdp=8 plans 72.4 GB per device for DiT-XL/2 and
  # 49.4 GB for Skip-DiT-XL/2, +1.5% FLOPs (none: 191.5 GB; "dots": 110.9 GB for DiT;
  # full: 14.9 GB at 1.31x the FLOPs; docs/SCALING.md).
  c.model.remat = "dots_no_batch"

  c.data.name = "latents"            # reads $SKIPDIT_LATENTS_DIR (skipdit_jax/data/latents.py)
  c.data.image_size, c.data.channels, c.data.num_classes = 32, 4, 1000
  c.data.random_flip = False         # mirrors are encoded; flipping latents would be wrong

  c.diffusion.schedule, c.diffusion.num_train_steps = "linear", 1000

  c.train.batch_size = 256
  c.train.num_steps = 7_000_000 if not long_skip else 2_900_000  # released checkpoints
  c.train.lr, c.train.warmup_steps, c.train.lr_schedule = 1e-4, 0, "constant"
  c.train.weight_decay = 0.0
  c.train.grad_clip = 0.0            # DiT does not clip
  c.train.b1, c.train.b2 = 0.9, 0.999
  c.train.ema_decay = 0.9999
  c.train.log_every, c.train.ckpt_every, c.train.sample_every = 100, 50_000, 50_000
  c.train.ckpt_keep, c.train.ckpt_keep_every = 2, 500_000

  # The official sampling (skipdit_jax/sample_official.py OFFICIAL; docs/IMPORT.md): 250-step
  # DDPM, CFG 1.5 on the first 3 latent channels (DiT's forward_with_cfg; 4 guides all).
  c.sample.sampler, c.sample.num_steps, c.sample.eta = "ddpm", 250, 0.0
  c.sample.cfg_scale = 1.5
  c.sample.guided_channels = 3
  # With a cache policy: k=4 blocks at each end (the official DiT_cache), and every step
  # after t=20 full -- on the 250-step respacing t=20 is sampled and the first step with
  # t <= 20, so window (20, 1000) is exactly the official tail rule. Policy stays "none".
  c.sample.cache.k = 4
  c.sample.cache.window = (20, 1000)
  c.sample.clip_denoised = False    # latents are unbounded (as the official sampler)
  c.sample.num_per_class, c.sample.batch_size = 50, 256
  c.sample.grid_per_class = 0        # latent grids are not images without the VAE
  c.eval.class_accuracy = False      # the digits classifier does not apply; FID is eval/'s
  c.mesh.data, c.mesh.fsdp = -1, 1
  return bf16_recipe(c) if "bf16" in options else c
