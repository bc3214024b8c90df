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
  c.model.scan_blocks = False       # lax.scan over stacked blocks (large models; compile time)
  c.model.remat = "none"            # none | full | dots | dots_no_batch (activation memory)
  # Attention kernel (skipdit_jax/models/attention.py): xla (everywhere) | cudnn (NVIDIA GPU,
  # model.dtype=bfloat16) | flash (Pallas TPU kernel). Logits and softmax are float32.
  c.model.attention = "xla"

  c.data = ml_collections.ConfigDict()
  # digits | mnist5k | fashion_mnist | moving_digits | clips:DIR | tfds:NAME
  c.data.name = "digits"
  c.data.image_size = 8             # square side (video: the canvas / frame size)
  c.data.channels = 1
  c.data.num_classes = 10
  c.data.random_flip = False
  c.data.num_frames = 0             # clip length F of video data (N, F, H, W, C); 0 = images
  # Video sources (skipdit_jax/data/video_fields.py holds the same defaults for configs
  # without these fields).
  c.data.video = ml_collections.ConfigDict()
  # moving_digits: bouncing digits generated on demand, clip i = f(seed, split, i).
  c.data.video.digit_source = "digits"  # digits (8x8) | mnist5k (28x28)
  c.data.video.digit_size = 0       # pasted digit side in px; 0 = the source's own size
  c.data.video.speed = 1.0          # px per frame along each axis (diagonal motion)
  c.data.video.num_digits = 1       # digits per clip; the label is the first one's
  c.data.video.colour = "grey"      # grey (channels=1) | rgb (channels=3, random per digit)
  c.data.video.label = "digit"      # digit (10 classes) | digit_direction (x 4 diagonals: 40)
  c.data.video.start = "random"     # random: any top-left corner | center: clips start centred
  c.data.video.num_clips = 2048     # clips in the train split
  c.data.video.num_test_clips = 256  # clips in the test split
  c.data.video.seed = 0
  # clips:DIR folders and tfds video sets: which frames make a clip of data.num_frames.
  c.data.video.frame_stride = 1     # every k-th frame (the official frame_interval: 3)
  c.data.video.random_start = False  # False: the first window; True: seeded random start
  c.data.video.feature = "video"    # tfds:NAME with num_frames > 0: its (T, H, W, C) feature
  # Captions for text models (model.cond = text_pooled | text_tokens;
  # skipdit_jax/text/caption_batches.py): each example gets a caption made from its
  # content (class; clips: digit, direction, bounce) from the train templates, and its
  # bundled-MiniLM embedding. digits | mnist5k | fashion_mnist | moving_digits.
  c.data.captions = ml_collections.ConfigDict()
  c.data.captions.enabled = False   # True with a text model.cond
  c.data.captions.max_tokens = 24   # tokens per caption incl. [CLS]/[SEP] (longer: error)
  c.data.captions.seed = 0          # which template / phrasing each example gets
  c.data.captions.cache_dir = ""    # encoded caption vocabularies; "" = <workdir>/caption_embeddings
  c.data.captions.standardize = False  # text_pooled: z-score by the train vocabulary

  c.diffusion = ml_collections.ConfigDict()
  c.diffusion.schedule = "linear"   # linear | cosine
  c.diffusion.num_train_steps = 1000
  c.diffusion.snr_shift = 1.0       # >1 divides every timestep's SNR (diffusion.shift_snr)
  c.diffusion.prediction = "eps"    # eps (official) | v: the model predicts v, loss on v

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
  c.train.ema_warmup = False        # True: decay min(ema_decay, (1+t)/(10+t)) for short runs
  c.train.log_every = 100
  c.train.ckpt_every = 1000
  c.train.sample_every = 1000
  # Reliability (skipdit_jax/train/guard.py, checkpoint manager, config_check.py).
  c.train.ckpt_keep = 3             # keep the last N checkpoints ...
  c.train.ckpt_keep_every = 0       # ... and every M-th step for good (0: none)
  c.train.ckpt_async = True         # write checkpoints in the background
  c.train.nonfinite = "skip"        # NaN/Inf loss or grad: skip (drop + count) | stop
  c.train.allow_new_model = False   # True: a workdir of another model shape starts fresh
  # Warm start and the two-stage upcycling recipe (REFERENCE §6; skipdit_jax/train/warm_start.py).
  # init_from: an official .pt/.pth/.safetensors/.npz file or the workdir of a run trained
  # here; read only when the workdir has no checkpoint (resuming never re-imports). A
  # vanilla DiT given to a Skip-DiT model is upcycled (fresh skip fusions). "" = random init.
  c.train.init_from = ""
  # trainable: "all" | "skip_only" (stage 1: only the skip fusions train; every other
  # weight gets exactly zero updates, weight decay included; needs model.long_skip=True).
  c.train.trainable = "all"

  c.sample = ml_collections.ConfigDict()
  c.sample.sampler = "ddim"         # ddim | ddpm
  c.sample.num_steps = 50
  c.sample.eta = 0.0
  c.sample.cfg_scale = 1.0
  c.sample.num_per_class = 50       # final samples: this many per class (0: none)
  c.sample.batch_size = 500         # images per sampler call
  c.sample.grid_per_class = 10      # periodic PNG grids while training (0: none)
  c.sample.seed = 0
  # auto | loop | fused: how the sampler walks its plan (sampling.resolve_execution):
  # one dispatch per step, or one compiled fori_loop per run of identical segments.
  c.sample.execution = "auto"
  # main: after the first (compiling) run of each variant, the variants take turns this
  # many times; each one's fastest run gives sample*_steady_s and cache_speedup.
  c.sample.timing_runs = 3
  # Clip the predicted x0 to the data range [-1, 1] in each step (pixel data). Without it
  # 50-step DDIM on the digits demo sends ~30 % of samples far outside [-1, 1] (max |x| 70).
  # Latent configs turn it off (latents are not bounded), as the official DiT sampler does.
  c.sample.clip_denoised = True
  # Cache plan of the sampler (skipdit_jax/sampling): a full step every `interval` steps
  # inside the timestep window [lo, hi); cached steps run the policy's cheap path.
  c.sample.cache = ml_collections.ConfigDict()
  c.sample.cache.policy = "none"    # none | skip_cache | skip_cache_forecast | deep_cache | fora | delta_dit
  c.sample.cache.interval = 1       # N; 1 = every step full
  c.sample.cache.k = 1              # blocks recomputed at each end (Skip-Cache: 2k of L)
  c.sample.cache.window = (0, 1000)  # (lo, hi) timesteps; cache only while lo <= t < hi
  c.sample.cache.counter = "since_full"  # or "global": full when step index % N == 0 (Latte)
  c.sample.cache.tail_t = 0         # >0: every step after the first with t < tail_t is full
  c.sample.cache.forecast_order = 2  # skip_cache_forecast: 0, 1 or 2
  c.sample.cache.delta_blocks = 0   # delta_dit: blocks reused; 0 = depth - 2k
  c.sample.cache.delta_switch_t = 500  # delta_dit: rear blocks while t >= this, front after
  # (main: after training, the final samples are drawn uncached and, when the policy is
  # not "none", also with this cache.)

  # Scoring of the final samples: a logistic regression fitted on real images reads them.
  c.eval = ml_collections.ConfigDict()
  c.eval.class_accuracy = True
  c.eval.classifier_train = 1400    # real images to fit on; the rest score the classifier
  # --mode=eval (skipdit_jax/eval/run.py): FD-<dataset> on our own classifier's features
  # (not comparable to Inception FID), KID, precision/recall, accuracy, stability.
  c.eval.num_samples = 1000         # generated images, class-balanced
  c.eval.num_ref = 10000            # real train images for the reference stats (<= 0: all)
  c.eval.inception_weights = ""     # pytorch-fid pt_inception weights (.npz/.safetensors): FID
  c.eval.ref_stats = ""             # .npz with mu/sigma for FID instead of real-data stats
  c.eval.kid_subsets = 100
  c.eval.kid_subset_size = 1000
  c.eval.pr_k = 3                   # k of the k-NN manifolds of precision/recall
  c.eval.stability = True           # per-step similarity, perturbation grid, spectral norms
  c.eval.stability_samples = 16
  c.eval.stability_steps = 0        # sampling steps of the step-similarity run; 0 = sample's
  c.eval.spectral_iters = 30
  c.eval.perturb_scales = (0.0, 0.01, 0.02, 0.05, 0.1)
  # Text models: the caption templates of the prompts. heldout (never trained on) gives
  # caption_accuracy; train re-scores on the training templates (a phrasing-transfer check).
  c.eval.caption_templates = "heldout"

  # Device mesh (axes data, fsdp, tensor; one may be -1 = the rest of the devices) and the
  # logical-axis -> mesh-axis rules: a preset (data | fsdp | tensor | fsdp_tensor) and
  # optional (logical, mesh axes) pairs that take precedence. See skipdit_jax/parallel.
  c.mesh = ml_collections.ConfigDict()
  c.mesh.data = -1
  c.mesh.fsdp = 1
  c.mesh.tensor = 1
  c.mesh.preset = "fsdp_tensor"
  c.mesh.rules = ()

  # Multi-host: jax.distributed.initialize runs when `enabled` is True, when a coordinator
  # address is given, or when auto-detected (TPU pod, SLURM job with several tasks).
  c.distributed = ml_collections.ConfigDict()
  c.distributed.enabled = False
  c.distributed.auto = True         # detect TPU pods / SLURM as JAX documents
  c.distributed.coordinator_address = ""  # host:port of process 0
  c.distributed.num_processes = 0   # 0 = let JAX detect
  c.distributed.process_id = -1     # -1 = let JAX detect
  return c
