"""Sample the released DiT / Skip-DiT weights (optionally with Skip-Cache), decode with the
SD VAE and write a PNG grid and an .npz.

  python -m skipdit_jax.sample_official --ckpt=DiT-XL-2-skip.pt \
      --vae=sd-vae-ft-ema/diffusion_pytorch_model.safetensors --out=samples/ \
      --policy=skip_cache --interval=2 --k=4

Ends with one JSON line: model, steps, cache plan, seconds, output files.
"""
from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
from absl import app, flags

from skipdit_jax import diffusion as dfn
from skipdit_jax import models
from skipdit_jax import sampling
from skipdit_jax.eval.image_grid import save_grid
from skipdit_jax.models import vae as V

FLAGS = flags.FLAGS


def sample_official(ckpt, *, vae_path=None, out="samples", classes=(207,), image_size=256,
                    sampler="ddpm", num_steps=250, cfg_scale=4.0, policy="none",
                    interval=1, k=1, window=(0, 1000), dtype="float32", seed=0) -> dict:
  """The command's work, callable from Python; returns the JSON summary."""
  if image_size % 8:
    raise ValueError(f"--image_size={image_size} must be a multiple of the VAE factor 8")
  module, params = models.load_official(ckpt, input_size=image_size // 8, dtype=dtype)
  diffusion = dfn.Diffusion.create(dfn.betas_for("linear", 1000))
  labels = np.asarray([int(c) for c in classes], np.int32)
  if labels.min() < 0 or labels.max() >= module.num_classes:
    raise ValueError(f"--classes must lie in [0, {module.num_classes})")
  t0 = time.perf_counter()
  latents = sampling.generate(module, params, diffusion, labels, jax.random.key(seed),
                              sampler=sampler, num_steps=num_steps, cfg_scale=cfg_scale,
                              policy=policy, interval=interval, k=k,
                              window=tuple(int(w) for w in window))
  seconds = time.perf_counter() - t0
  os.makedirs(out, exist_ok=True)
  summary = dict(model=f"{'Skip-DiT' if module.long_skip else 'DiT'} depth={module.depth} "
                       f"width={module.hidden_size} patch={module.patch_size}",
                 num_steps=num_steps, sampler=sampler, cfg_scale=cfg_scale, policy=policy,
                 interval=interval, k=k, sample_seconds=round(seconds, 3))
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
      cfg_scale=FLAGS.cfg_scale, policy=FLAGS.policy, interval=FLAGS.interval, k=FLAGS.k,
      window=FLAGS.window, dtype=FLAGS.dtype, seed=FLAGS.seed)
  print(json.dumps(summary))


def define_flags() -> None:
  """Flags are defined only when run as a command, so importing this module (tests,
  other commands) never clashes with other flag definitions."""
  flags.DEFINE_string("ckpt", None, "official DiT/Skip-DiT weights (.safetensors, .pt, .npz)")
  flags.DEFINE_string("vae", None, "diffusers AutoencoderKL weights; without it only latents")
  flags.DEFINE_string("out", "samples", "output directory")
  flags.DEFINE_list("classes", ["207", "360", "387", "974", "88", "979", "417", "279"],
                    "ImageNet class ids to sample (DiT's sample.py defaults)")
  flags.DEFINE_integer("image_size", 256, "image size the checkpoint was trained at")
  flags.DEFINE_enum("sampler", "ddpm", ["ddpm", "ddim"], "update rule")
  flags.DEFINE_integer("num_steps", 250, "sampling steps (respaced from 1000)")
  flags.DEFINE_float("cfg_scale", 4.0, "guidance scale (DiT: 4.0 for pictures, 1.5 for FID)")
  flags.DEFINE_enum("policy", "none", ["none", "skip_cache", "deep_cache", "fora", "delta_dit",
                                       "skip_cache_forecast"], "cache policy")
  flags.DEFINE_integer("interval", 1, "a full step every N steps")
  flags.DEFINE_integer("k", 1, "blocks recomputed at each end on cached steps")
  flags.DEFINE_list("window", ["0", "1000"], "cache only while lo <= t < hi")
  flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype")
  flags.DEFINE_integer("seed", 0, "sampling seed")


if __name__ == "__main__":
  define_flags()
  app.run(main)
