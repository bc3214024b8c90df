"""Sample the released DiT / Skip-DiT weights (optionally with Skip-Cache), decode with the
SD VAE and write a PNG grid and an .npz.

  python -m skipdit_jax.sample_official --ckpt=DiT-XL-2-skip.pt \
      --vae=sd-vae-ft-mse/diffusion_pytorch_model.safetensors --out=samples/ \
      --policy=skip_cache --interval=2

The defaults are the official Skip-DiT class-to-image sampler's (`OFFICIAL`, facts from
OpenSparseLLMs/Skip-DiT class-to-image: `sample_ddp.py` and `models.py` `DiT_cache`):
250-step DDPM, CFG 1.5 on the first 3 latent channels, Skip-Cache recomputing k=4 blocks
at each end and every step after the first one with t <= 20 full (`official_window`).
`--policy=skip_cache --interval=N` is their `DiT-cache-N` model. Every departure is a
flag (docs/IMPORT.md). Ends with one JSON line: model, steps, cache plan, seconds, files.
"""
from __future__ import annotations

import json
import os
import time
from typing import Optional, Sequence

import jax
import numpy as np
from absl import app, flags

from skipdit_jax import diffusion as dfn
from skipdit_jax import models
from skipdit_jax import sampling
from skipdit_jax.eval.image_grid import save_grid
from skipdit_jax.models import vae as V

FLAGS = flags.FLAGS


# The official sampling of the released class-to-image weights.
OFFICIAL = dict(sampler="ddpm", num_steps=250, cfg_scale=1.5, guided_channels=3, k=4,
                tail_t=20)


def official_window(timesteps: Sequence[int], tail_t: int = OFFICIAL["tail_t"],
                    num_train_steps: int = 1000) -> tuple[int, int]:
  """Our cache window (lo, hi) that reproduces the official tail rule on these steps.

  The official cached model counts calls and, after any call with t <= tail_t, drops its
  cache and resets the count: the first step with t <= tail_t still follows the interval,
  every later step is full. A step may be cached iff lo <= t < hi, so lo is the largest
  sampled timestep <= tail_t (20 itself on the 250-step DDPM respacing), and hi is
  num_train_steps (no upper cut: the official `start_deepcache_at=1000` never triggers).
  """
  tail = [int(t) for t in timesteps if int(t) <= tail_t]
  return (max(tail) if tail else 0), int(num_train_steps)


def sample_official(ckpt: str, *, vae_path: Optional[str] = None, out: str = "samples",
                    classes: Sequence[int] = (207,), image_size: int = 256,
                    sampler: str = OFFICIAL["sampler"], num_steps: int = OFFICIAL["num_steps"],
                    cfg_scale: float = OFFICIAL["cfg_scale"],
                    guided_channels: Optional[int] = OFFICIAL["guided_channels"],
                    policy: str = "none", interval: int = 1, k: int = OFFICIAL["k"],
                    window: Optional[Sequence[int]] = None, dtype: str = "float32",
                    seed: int = 0) -> dict:
  """The command's work, callable from Python; returns the JSON summary.

  guided_channels: CFG on the first C' eps channels (official 3; the model's in_channels,
  4, guides all; None also all). window: (lo, hi) cache only while lo <= t < hi; None is
  the official tail rule (`official_window`) on this run's timesteps.
  """
  if image_size % 8:
    raise ValueError(f"--image_size={image_size} must be a multiple of the VAE factor 8")
  module, params = models.load_official(ckpt, input_size=image_size // 8, dtype=dtype)
  if isinstance(module, models.Latte):
    raise ValueError(f"--ckpt={ckpt} is a Latte (video) checkpoint; this CLI samples DiT "
                     "images only: sample Latte from Python (docs/IMPORT.md)")
  diffusion = dfn.Diffusion.create(dfn.betas_for("linear", 1000))
  labels = np.asarray([int(c) for c in classes], np.int32)
  if labels.min() < 0 or labels.max() >= module.num_classes:
    raise ValueError(f"--classes must lie in [0, {module.num_classes})")
  if guided_channels is not None and not 1 <= int(guided_channels) <= module.in_channels:
    raise ValueError(f"--guided_channels={guided_channels} must lie in [1, "
                     f"{module.in_channels}] (the official sampler guides 3; "
                     f"{module.in_channels} guides every latent channel)")
  if window is None:
    spaced = dfn.respace(diffusion, num_steps)
    window = official_window(spaced.timestep_map, num_train_steps=diffusion.num_timesteps)
  window = tuple(int(w) for w in window)
  t0 = time.perf_counter()
  latents = sampling.generate(module, params, diffusion, labels, jax.random.key(seed),
                              sampler=sampler, num_steps=num_steps, cfg_scale=cfg_scale,
                              guided_channels=guided_channels, policy=policy,
                              interval=interval, k=k, window=window)
  seconds = time.perf_counter() - t0
  os.makedirs(out, exist_ok=True)
  summary = dict(model=f"{'Skip-DiT' if module.long_skip else 'DiT'} depth={module.depth} "
                       f"width={module.hidden_size} patch={module.patch_size}",
                 num_steps=num_steps, sampler=sampler, cfg_scale=cfg_scale,
                 guided_channels=guided_channels, policy=policy, interval=interval, k=k,
                 window=list(window), sample_seconds=round(seconds, 3))
  arrays = {"latents": latents, "labels": labels}
  if vae_path:
    vae, vparams, _ = V.load_vae(vae_path)
    images = np.asarray(jax.jit(lambda p, z: V.decode_latents(vae, p, z))(vparams, latents))
    arrays["images"] = images
    summary["grid"] = os.path.join(out, "samples.png")
    save_grid(images, summary["grid"], ncol=min(8, len(labels)))
  summary["npz"] = os.path.join(out, "samples.npz")
  np.savez(summary["npz"], **arrays)
  return summary


def main(argv) -> None:
  del argv
  if not FLAGS.ckpt:
    raise app.UsageError("--ckpt is required")
  summary = sample_official(
      FLAGS.ckpt, vae_path=FLAGS.vae, out=FLAGS.out, classes=FLAGS.classes,
      image_size=FLAGS.image_size, sampler=FLAGS.sampler, num_steps=FLAGS.num_steps,
      cfg_scale=FLAGS.cfg_scale, guided_channels=FLAGS.guided_channels, policy=FLAGS.policy,
      interval=FLAGS.interval, k=FLAGS.k, window=FLAGS.window or None, dtype=FLAGS.dtype,
      seed=FLAGS.seed)
  print(json.dumps(summary))


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Flags are defined only when run as a command, so importing this module (tests,
  other commands) never clashes with other flag definitions. Defaults: `OFFICIAL`."""
  fv = dict(flag_values=flag_values)
  flags.DEFINE_string("ckpt", None, "official DiT/Skip-DiT weights (.safetensors, .pt, .npz)",
                      **fv)
  flags.DEFINE_string("vae", None, "diffusers AutoencoderKL weights; without it only latents "
                      "(the official sampler decodes with sd-vae-ft-mse)", **fv)
  flags.DEFINE_string("out", "samples", "output directory", **fv)
  flags.DEFINE_list("classes", ["207", "360", "387", "974", "88", "979", "417", "279"],
                    "ImageNet class ids to sample (DiT's sample.py defaults)", **fv)
  flags.DEFINE_integer("image_size", 256, "image size the checkpoint was trained at", **fv)
  flags.DEFINE_enum("sampler", OFFICIAL["sampler"], ["ddpm", "ddim"], "update rule", **fv)
  flags.DEFINE_integer("num_steps", OFFICIAL["num_steps"],
                       "sampling steps (respaced from 1000 as ADM)", **fv)
  flags.DEFINE_float("cfg_scale", OFFICIAL["cfg_scale"],
                     "guidance scale (official FID setting 1.5; DiT's sample.py pictures 4.0)",
                     **fv)
  flags.DEFINE_integer("guided_channels", OFFICIAL["guided_channels"],
                       "CFG on the first C' latent channels (official 3; 4 guides all)", **fv)
  flags.DEFINE_enum("policy", "none", ["none", "skip_cache", "deep_cache", "fora", "delta_dit",
                                       "skip_cache_forecast"], "cache policy", **fv)
  flags.DEFINE_integer("interval", 1, "a full step every N steps (official DiT-cache-N)", **fv)
  flags.DEFINE_integer("k", OFFICIAL["k"], "blocks recomputed at each end on cached steps "
                       "(official 4)", **fv)
  flags.DEFINE_list("window", [], "lo,hi: cache only while lo <= t < hi; empty: the "
                    "official tail (every step after the first with t <= 20 full; on "
                    "250-step DDPM that is 20,1000)", **fv)
  flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype", **fv)
  flags.DEFINE_integer("seed", 0, "sampling seed", **fv)


if __name__ == "__main__":
  define_flags()
  app.run(main)
