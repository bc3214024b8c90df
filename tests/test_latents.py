"""Latent pipeline: encode a mock tfds ImageNet into shards, stream them, train 3 steps."""
from __future__ import annotations

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from skipdit_jax import data
from skipdit_jax import diffusion as dfn
from skipdit_jax import models
from skipdit_jax.data import latents as lat
from skipdit_jax.encode_latents import make_encode_fn
from skipdit_jax.models import vae as V
from skipdit_jax.train import lr_schedule, make_optimizer, make_train_step
from skipdit_jax.train.state import TrainState
from test_train import train_cfg

N_IMAGES, SIZE = 10, 32
VAE = V.AutoencoderKL(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4)


def test_center_crop_is_the_adm_recipe():
  img = np.zeros((40, 100, 3), np.uint8)
  img[:, 50] = 255                       # a bright column at the horizontal centre
  out = lat.center_crop(img, 16)         # short side 40 -> 16 (BOX 40->20, BICUBIC 20->16)
  assert out.shape == (16, 16, 3) and out.dtype == np.uint8
  col = out[8, :, 0].astype(int)
  assert abs(int(np.argmax(col)) - 8) <= 1
  # Equal to PIL's own resize chain on a random photo-sized array.
  rng = np.random.default_rng(0)
  big = rng.integers(0, 256, (70, 50, 3), np.uint8)
  # W=50 >= 2*16: one BOX halving to 25x35, then BICUBIC to 16x22, crop rows 3..18.
  im = Image.fromarray(big).resize((25, 35), Image.BOX).resize((16, 22), Image.BICUBIC)
  want = np.asarray(im)[3:19]
  np.testing.assert_array_equal(lat.center_crop(big, 16), want)


@pytest.fixture(scope="module")
def encoded(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("latents"))
  params = V.init_vae(VAE, jax.random.key(0, impl="unsafe_rbg"), image_size=SIZE)
  encode_fn = make_encode_fn(VAE, params, sample=True, seed=0)
  with tfds.testing.mock_data(num_examples=N_IMAGES):
    source, num_classes = lat.open_source("tfds:imagenet2012", "train")
    examples = [source[i] for i in range(len(source))]
    for host in range(2):  # two hosts, each its contiguous half
      lat.encode_dataset(source, encode_fn, out, num_classes=num_classes, image_size=SIZE,
                         batch_size=5, process_index=host, process_count=2)
  return out, examples, num_classes, encode_fn


def test_shards_hold_every_image_and_its_mirror(encoded, monkeypatch):
  out, examples, num_classes, encode_fn = encoded
  assert num_classes == 1000
  monkeypatch.setenv(lat.ENV_DIR, out)
  latents, labels, nc = data.load_source("latents")
  assert nc == 1000 and latents.shape == (2 * N_IMAGES, SIZE // 8, SIZE // 8, 4)
  assert labels.dtype == np.int32 and latents.dtype == np.float32
  # Host 0 holds images 0..4 (one batch), as originals then mirrors; host 1 images 5..9.
  want = [e["label"] for e in examples]
  np.testing.assert_array_equal(labels, want[0:5] * 2 + want[5:10] * 2)
  # Row 5 is image 0 mirrored: the same encoder (and noise key of its batch) on the
  # flipped crops gives the rows back.
  crops = np.stack([lat.center_crop(e["image"], SIZE) for e in examples[:5]])
  x = crops.astype(np.float32) / 127.5 - 1.0
  again = encode_fn(np.concatenate([x, x[:, :, ::-1]]), 0)
  np.testing.assert_allclose(latents[:10], again, rtol=1e-5, atol=1e-6)
  assert np.abs(latents[5] - latents[0]).max() > 1e-4
  lat.merge_shards(out)
  merged, labels2, _ = lat.load_latents(out)
  assert isinstance(merged, np.memmap)
  np.testing.assert_array_equal(merged, latents)
  np.testing.assert_array_equal(labels2, labels)


def test_three_train_steps_from_latents(encoded, monkeypatch):
  out = encoded[0]
  monkeypatch.setenv(lat.ENV_DIR, out)
  latents, labels, nc = data.load_source("latents")
  model = models.create("SkipDiT-Tiny/1", input_size=SIZE // 8, num_classes=nc, depth=2,
                        hidden_size=32, num_heads=2)
  cfg = train_cfg(warmup_steps=0)
  tx = make_optimizer(cfg)
  diffusion = dfn.Diffusion.create(dfn.betas_for("linear", 1000))
  step = make_train_step(model, diffusion, tx, lr_schedule(cfg), 0.9999)
  init = jax.jit(lambda r: models.init_params(model, r))  # rbg: a quick compile on CPU
  state = TrainState.create(init(jax.random.key(0, impl="unsafe_rbg")), tx,
                            jax.random.PRNGKey(1))
  it = data.BatchIterator(latents, labels, 4, seed=0)
  for _ in range(3):
    b = next(it)
    state, m = step(state, b["image"], b["label"])
    assert np.isfinite(float(m["loss"]))
  assert int(state.step) == 3


def test_missing_directory_and_shards_say_what_to_do(tmp_path, monkeypatch):
  monkeypatch.delenv(lat.ENV_DIR, raising=False)
  with pytest.raises(ValueError, match=lat.ENV_DIR):
    data.load_source("latents")
  (tmp_path / "meta.json").write_text('{"num_classes": 3}')
  np.save(tmp_path / "train-00000-of-00002.latents.npy", np.zeros((1, 2, 2, 4), np.float32))
  with pytest.raises(FileNotFoundError, match="1 of 2 train shards"):
    lat.load_latents(str(tmp_path))
  with pytest.raises(ValueError, match="tfds:NAME or folder:DIR"):
    lat.open_source("imagenet", "train")


def test_folder_source(tmp_path):
  for c, color in (("cat", 10), ("dog", 200)):
    (tmp_path / c).mkdir()
    Image.fromarray(np.full((12, 20, 3), color, np.uint8)).save(tmp_path / c / "a.png")
  src, n = lat.open_source(f"folder:{tmp_path}", "train")
  assert n == 2 and len(src) == 2
  assert src[1]["label"] == 1 and src[1]["image"][0, 0, 0] == 200
