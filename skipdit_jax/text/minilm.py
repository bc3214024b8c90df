"""all-MiniLM-L6-v2 in Flax: a small BERT encoder that loads the bundled safetensors.

BERT (post-LayerNorm): embeddings = LN(word + position + token_type); each layer
  h = LN(h + Dense(MHA(h, mask)));  h = LN(h + Dense(gelu_exact(Dense(h))))
then sentence-transformers' pooling: the mean of the token states over the attention
mask, L2-normalised. Shapes: ids/mask (N, T) -> tokens (N, T, 384), pooled (N, 384).
Weights are HF BertModel names (`encoder.layer.{i}.attention.self.query.weight`, torch
Linear (out, in), transposed here); the pooler (`pooler.dense`) is unused by the
sentence pipeline and not loaded.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from skipdit_jax.text.bundled import bundled_model_dir, require

HIGHEST = jax.lax.Precision.HIGHEST  # fp32 matmuls also on TPU/GPU (no bf16/TF32 passes)


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """A BERT encoder's sizes, named as ours; `HF_KEYS` gives each one's config.json key."""
  vocab_size: int
  hidden_size: int
  num_layers: int
  num_heads: int
  intermediate_size: int
  max_positions: int
  type_vocab_size: int
  layer_norm_eps: float

  HF_KEYS = {"num_layers": "num_hidden_layers", "num_heads": "num_attention_heads",
             "max_positions": "max_position_embeddings"}  # the rest share the name

  @classmethod
  def from_hf(cls, path: str | Path) -> "BertConfig":
    """From a HF BertModel config.json (gelu must be the exact one)."""
    c = json.loads(Path(path).read_text())
    if c.get("hidden_act", "gelu") != "gelu":
      raise ValueError(f"{path}: hidden_act={c['hidden_act']!r}; only exact 'gelu' is built")
    return cls(**{f.name: c[cls.HF_KEYS.get(f.name, f.name)] for f in dataclasses.fields(cls)})


# all-MiniLM-L6-v2's sizes (its config.json): the default encoder.
MINILM_L6 = BertConfig(vocab_size=30522, hidden_size=384, num_layers=6, num_heads=12,
                       intermediate_size=1536, max_positions=512, type_vocab_size=2,
                       layer_norm_eps=1e-12)


def _dense(features: int, name: str) -> nn.Dense:
  return nn.Dense(features, precision=HIGHEST, name=name)


class BertLayer(nn.Module):
  cfg: BertConfig

  @nn.compact
  def __call__(self, h: jax.Array, mask: jax.Array) -> jax.Array:
    c = self.cfg
    n, t, d = h.shape
    dh = d // c.num_heads
    split = lambda x: x.reshape(n, t, c.num_heads, dh)
    q, k, v = (split(_dense(d, name)(h)) for name in ("query", "key", "value"))
    scores = jnp.einsum("nqhd,nkhd->nhqk", q, k, precision=HIGHEST) / np.sqrt(dh)
    # Padded keys get no weight; padded query rows still compute (and are ignored later).
    scores = jnp.where(mask[:, None, None, :], scores, jnp.finfo(scores.dtype).min)
    att = jnp.einsum("nhqk,nkhd->nqhd", jax.nn.softmax(scores, axis=-1), v,
                     precision=HIGHEST).reshape(n, t, d)
    ln = lambda name: nn.LayerNorm(epsilon=c.layer_norm_eps, name=name)
    h = ln("attention_LayerNorm")(h + _dense(d, "attention_output")(att))
    ff = jax.nn.gelu(_dense(c.intermediate_size, "intermediate")(h), approximate=False)
    return ln("output_LayerNorm")(h + _dense(d, "output")(ff))


class BertEncoder(nn.Module):
  """`apply(params, ids (N, T) int, mask (N, T) bool) -> token states (N, T, D)`."""
  cfg: BertConfig = MINILM_L6

  @nn.compact
  def __call__(self, ids: jax.Array, mask: jax.Array) -> jax.Array:
    c = self.cfg
    t = ids.shape[1]
    emb = lambda n, name: nn.Embed(n, c.hidden_size, name=name)
    h = (emb(c.vocab_size, "word_embeddings")(ids)
         + emb(c.max_positions, "position_embeddings")(jnp.arange(t))[None]
         + emb(c.type_vocab_size, "token_type_embeddings")(jnp.zeros_like(ids)))
    h = nn.LayerNorm(epsilon=c.layer_norm_eps, name="embeddings_LayerNorm")(h)
    mask = mask.astype(bool)
    for i in range(c.num_layers):
      h = BertLayer(c, name=f"layer_{i}")(h, mask)
    return h


def mean_pool(tokens: jax.Array, mask: jax.Array) -> jax.Array:
  """sentence-transformers' pooling: masked mean (count clamped at 1e-9), then L2
  normalisation (norm clamped at 1e-12). (N, T, D), (N, T) -> (N, D)."""
  m = mask.astype(tokens.dtype)[..., None]
  mean = (tokens * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)
  return mean / jnp.maximum(jnp.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)


def _linear(ours: str, hf: str) -> list[tuple]:
  """A torch Linear `hf` as our Dense `ours`: the weight transposed, the bias as is."""
  return [((ours, "kernel"), f"{hf}.weight", True), ((ours, "bias"), f"{hf}.bias", False)]


def _norm(ours: str, hf: str) -> list[tuple]:
  """A torch LayerNorm `hf` as our LayerNorm `ours`."""
  return [((ours, "scale"), f"{hf}.weight", False), ((ours, "bias"), f"{hf}.bias", False)]


# (our path, HF name, transpose) per layer (HF names below `encoder.layer.{i}.`).
_LAYER_MAP = [
    *[e for n in ("query", "key", "value") for e in _linear(n, f"attention.self.{n}")],
    *_linear("attention_output", "attention.output.dense"),
    *_norm("attention_LayerNorm", "attention.output.LayerNorm"),
    *_linear("intermediate", "intermediate.dense"),
    *_linear("output", "output.dense"),
    *_norm("output_LayerNorm", "output.LayerNorm"),
]
_EMB_MAP = [
    *[((f"{n}_embeddings", "embedding"), f"embeddings.{n}_embeddings.weight", False)
      for n in ("word", "position", "token_type")],
    *_norm("embeddings_LayerNorm", "embeddings.LayerNorm"),
]
_IGNORED = ("pooler.", "embeddings.position_ids")  # unused by the sentence pipeline


def params_from_state_dict(sd: dict[str, np.ndarray], cfg: BertConfig) -> dict:
  """HF BertModel tensors -> BertEncoder params (float32); every key checked both ways."""
  want = jax.eval_shape(lambda: BertEncoder(cfg).init(
      jax.random.key(0), jnp.zeros((1, 2), jnp.int32), jnp.ones((1, 2), bool)))["params"]
  entries = [((), *e) for e in _EMB_MAP] + [
      ((f"layer_{i}",), ours, f"encoder.layer.{i}.{hf}", tr)
      for i in range(cfg.num_layers) for ours, hf, tr in _LAYER_MAP]
  params: dict = {}
  problems, used = [], set()
  for scope, ours, hf, transpose in entries:
    path = scope + ours
    target = want
    for p in path:
      target = target[p]
    if hf not in sd:
      problems.append(f"missing {hf} (for {'/'.join(path)})")
      continue
    a = np.asarray(sd[hf], np.float32)
    a = a.T if transpose else a
    if a.shape != target.shape:
      problems.append(f"{hf}: shape {np.shape(sd[hf])}, expected "
                      f"{target.shape[::-1] if transpose else target.shape}")
      continue
    used.add(hf)
    node = params
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = jnp.asarray(a)
  extra = sorted(k for k in sd if k not in used and not k.startswith(_IGNORED))
  if extra:
    problems.append(f"unexpected tensors {extra[:5]}{' ...' if len(extra) > 5 else ''}")
  if problems:
    raise ValueError("BERT state dict does not match BertConfig "
                     f"{dataclasses.asdict(cfg)}:\n  " + "\n  ".join(problems))
  return params


def load_state_dict(path: str | Path) -> dict[str, np.ndarray]:
  require("safetensors")
  from safetensors.numpy import load_file  # pylint: disable=import-outside-toplevel
  return load_file(str(path))


def load_minilm(model_dir: str | Path | None = None) -> tuple[BertEncoder, dict]:
  """(module, params) from a HF BERT folder (config.json + model.safetensors); default:
  the bundled all-MiniLM-L6-v2."""
  d = Path(model_dir) if model_dir is not None else bundled_model_dir()
  cfg = BertConfig.from_hf(d / "config.json")
  return BertEncoder(cfg), params_from_state_dict(load_state_dict(d / "model.safetensors"),
                                                  cfg)


class MiniLMEncoder:
  """Captions -> {"tokens" (N, T, D) float32, "mask" (N, T) bool, "pooled" (N, D)}.

  Tokenises with CaptionTokenizer(max_tokens, padding, truncation) and runs the jitted
  encoder; `batch_size` rows per call, every call padded to it (one compile per T).
  """
  name = "all-MiniLM-L6-v2"

  def __init__(self, model_dir: str | Path | None = None, *, max_tokens: int = 32,
               padding: str = "max_length", truncation: bool = True, batch_size: int = 64):
    from skipdit_jax.text.tokenize import CaptionTokenizer  # pylint: disable=import-outside-toplevel
    d = Path(model_dir) if model_dir is not None else bundled_model_dir()
    self.tokenizer = CaptionTokenizer(d / "tokenizer.json", max_tokens=max_tokens,
                                      padding=padding, truncation=truncation)
    self.module, self.params = load_minilm(d)
    self.dim = self.module.cfg.hidden_size
    self.batch_size = batch_size

    @jax.jit
    def run(params, ids, mask):
      tokens = self.module.apply({"params": params}, ids, mask)
      return tokens, mean_pool(tokens, mask)
    self._run = run

  def __call__(self, captions: Sequence[str]) -> dict[str, np.ndarray]:
    ids, mask = self.tokenizer(captions)
    n, b = len(ids), self.batch_size
    toks, pooled = [], []
    for s in range(0, n, b):
      i, m = ids[s:s + b], mask[s:s + b]
      k = len(i)
      if k < b:  # pad to the full batch: one compiled shape, so a caption's embedding
        # does not depend on how many others came with it (XLA's sums differ by shape)
        i = np.concatenate([i, np.zeros((b - k, i.shape[1]), i.dtype)])
        m = np.concatenate([m, np.zeros((b - k, m.shape[1]), bool)])
        m[k:, 0] = True
      t, p = self._run(self.params, i, m)
      toks.append(np.asarray(t)[:k])
      pooled.append(np.asarray(p)[:k])
    d = self.dim
    return {"tokens": np.concatenate(toks) if toks else np.zeros((0, ids.shape[1], d), np.float32),
            "mask": mask,
            "pooled": np.concatenate(pooled) if pooled else np.zeros((0, d), np.float32)}
