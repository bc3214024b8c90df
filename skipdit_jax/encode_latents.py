"""Encode an image dataset into SD-VAE latent shards, once, every host its own slice.

  python -m skipdit_jax.encode_latents --source=tfds:imagenet2012 \
      --vae=sd-vae-ft-ema/diffusion_pytorch_model.safetensors --out=DIR [--image_size=256]

Then train with `config.data.name = "latents"` and `SKIPDIT_LATENTS_DIR=DIR`. On a pod,
start the same command on every host (launch/); each writes one shard of its contiguous
slice, and `--merge` (run once, after all hosts finished) joins them into one file.
"""
from __future__ import annotations

import json

import jax
import numpy as np
from absl import app, flags

from skipdit_jax.data import latents as lat
from skipdit_jax.models import vae as V

FLAGS = flags.FLAGS


def make_encode_fn(vae: V.AutoencoderKL, params: dict, *, sample: bool, seed: int):
  """(images, first_row) -> latents; the noise key depends only on the row index."""
  @jax.jit
  def enc(p, x, key):
    return V.encode_latents(vae, p, x, key if sample else None)

  def encode_fn(images: np.ndarray, first_row: int) -> np.ndarray:
    key = jax.random.fold_in(jax.random.key(seed), first_row)
    return np.asarray(enc(params, images, key))
  return encode_fn


def main(argv) -> None:
  del argv
  if FLAGS.merge:
    lat.merge_shards(FLAGS.out, FLAGS.split)
    return
  for name in ("source", "vae", "out"):
    if not getattr(FLAGS, name):
      raise app.UsageError(f"--{name} is required")
  source, num_classes = lat.open_source(FLAGS.source, FLAGS.split)
  vae, params, report = V.load_vae(FLAGS.vae)
  prefix = lat.encode_dataset(
      source, make_encode_fn(vae, params, sample=FLAGS.sample, seed=FLAGS.seed), FLAGS.out,
      num_classes=num_classes, split=FLAGS.split, image_size=FLAGS.image_size,
      batch_size=FLAGS.batch_size, flip=FLAGS.flip, process_index=jax.process_index(),
      process_count=jax.process_count(), log_every=50)
  print(json.dumps({"shard": prefix, "unexpected_vae_keys": len(report.unexpected)}))


def define_flags() -> None:
  """Flags are defined only when run as a command, so importing this module (tests,
  other commands) never clashes with other flag definitions."""
  flags.DEFINE_string("source", None, "tfds:NAME or folder:DIR (DIR/<class>/<image>)")
  flags.DEFINE_string("split", "train", "dataset split")
  flags.DEFINE_string("vae", None, "diffusers AutoencoderKL weights (.safetensors)")
  flags.DEFINE_string("out", None, "output directory of the latent shards")
  flags.DEFINE_integer("image_size", 256, "centre-crop size (latents are size / 8)")
  flags.DEFINE_integer("batch_size", 32, "images per VAE call on this host")
  flags.DEFINE_bool("flip", True, "also store each image's mirror (DiT's flip augmentation)")
  flags.DEFINE_bool("sample", True, "store a posterior sample (as fast-DiT); else the mean")
  flags.DEFINE_integer("seed", 0, "seed of the posterior samples")
  flags.DEFINE_bool("merge", False, "only join existing shards of --out into one file")


if __name__ == "__main__":
  define_flags()
  app.run(main)
