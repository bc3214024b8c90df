"""The 'sample the released weights' command, end to end on tiny stand-in files."""
from __future__ import annotations

import json

import jax
import numpy as np
from PIL import Image

from skipdit_jax import sample_official as so
from skipdit_jax.models import state_dict_io
from skipdit_jax.models import vae as V
from test_convert import official_dict

VAE = V.AutoencoderKL(block_out_channels=(32, 32, 32, 32), layers_per_block=1)


def test_sample_released_format_with_skip_cache(tmp_path):
  # A tiny Skip-DiT (8x8x4 latents, 10 classes) and VAE in the released file formats.
  ckpt = tmp_path / "DiT-tiny-skip.safetensors"
  state_dict_io.save_safetensors(ckpt, official_dict(True))
  vae_params = V.init_vae(VAE, jax.random.key(0, impl="unsafe_rbg"), image_size=32)
  vae_file = tmp_path / "diffusion_pytorch_model.safetensors"
  state_dict_io.save_safetensors(vae_file, V.vae_to_diffusers(vae_params))
  out = tmp_path / "out"
  summary = so.sample_official(str(ckpt), vae_path=str(vae_file), out=str(out),
                               classes=[3, 7], image_size=64, sampler="ddim", num_steps=4,
                               cfg_scale=1.5, policy="skip_cache", interval=2, k=1)
  json.dumps(summary)
  assert summary["model"].startswith("Skip-DiT depth=6")
  with np.load(summary["npz"]) as z:
    assert z["latents"].shape == (2, 8, 8, 4) and z["images"].shape == (2, 64, 64, 3)
    assert np.all(np.isfinite(z["images"])) and list(z["labels"]) == [3, 7]
  assert Image.open(summary["grid"]).size == (2 * 65 + 1, 65 + 1)
