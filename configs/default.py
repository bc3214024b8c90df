"""Default experiment: a tiny Skip-DiT on scikit-learn's 8x8 digits.

Every other config starts from this one and overrides fields. Any field can be
overridden from the command line: ``--config.model.depth=8``.
"""
import ml_collections


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 0

  c.model = ml_collections.ConfigDict()
  c.model.name = "SkipDiT-Tiny/2"   # registry name; fields below override it
  c.model.long_skip = True          # Skip-DiT when True, vanilla DiT when False
  c.model.depth = 6
  c.model.hidden_size = 64
  c.model.num_heads = 4
  c.model.patch_size = 2
  c.model.mlp_ratio = 4.0
  c.model.learn_sigma = False
  c.model.class_dropout_prob = 0.1
  c.model.dtype = "float32"         # compute dtype: float32 | bfloat16 (params stay float32)

  c.data = ml_collections.ConfigDict()
  c.data.name = "digits"            # digits | mnist5k | fashion_mnist
  c.data.image_size = 8
  c.data.channels = 1
  c.data.num_classes = 10
  c.data.random_flip = False

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.schedule = "linear"   # linear | cosine
  c.diffusion.num_train_steps = 1000

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 256          # global batch
  c.train.num_steps = 3000
  c.train.lr = 2e-3
  c.train.warmup_steps = 200
  c.train.lr_schedule = "constant"  # constant | cosine
  c.train.weight_decay = 0.0
  c.train.grad_clip = 1.0           # global-norm clip; 0 disables
  c.train.b1 = 0.9
  c.train.b2 = 0.999
  c.train.ema_decay = 0.999
  c.train.log_every = 100
  c.train.ckpt_every = 1000
  c.train.sample_every = 1000

  c.sample = ml_collections.ConfigDict()
  c.sample.sampler = "ddim"         # ddim | ddpm
  c.sample.num_steps = 50
  c.sample.eta = 0.0
  c.sample.cfg_scale = 1.0
  c.sample.num_per_class = 50
  c.sample.batch_size = 500
  return c
