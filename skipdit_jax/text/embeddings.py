"""Caption-embedding directories: the layout, its checks, and the reader.

`python -m skipdit_jax.encode_text` writes one; a set precomputed by any other encoder
(T5, CLIP, ...) is read as it is if its files follow the same names and shapes:

  {shard}.tokens.npy   (rows, T, D) float16 | float32   token states
  {shard}.mask.npy     (rows, T) bool (or 0/1 ints)     True on real tokens, >= 1 per row
  {shard}.pooled.npy   (rows, P) float                  optional for user sets: default
                                                        the masked mean of tokens, L2-normed
  null.tokens.npy      (T, D)      the empty caption "" (CFG's null condition); required
  null.mask.npy        (T,)
  null.pooled.npy      (P,)        optional as pooled
  labels.npy           (N,) int    optional: the class of each row
  captions.json        [str] * N   optional: the caption of each row
  manifest.json        written by encode_text: {"shards": [...], "rows", "max_tokens", ...}

`{shard}` is any name (encode_text: `text-00000-of-00004`); a single unsharded set may
also be plain `tokens.npy`, `mask.npy`, `pooled.npy`. Without a manifest the shards are
taken in sorted name order. Rows are the concatenation of the shards in that order.
"""
from __future__ import annotations

import dataclasses
import glob
import json
import os
from typing import Any

import numpy as np

MANIFEST = "manifest.json"
NULL = "null"
KINDS = ("tokens", "mask", "pooled")
TOKEN_DTYPES = ("float16", "float32")


class TextEmbeddingError(ValueError):
  """A caption-embedding directory does not have the documented names or shapes."""


@dataclasses.dataclass
class TextEmbeddings:
  """Row i: tokens[i] (T, D), mask[i] (T,) bool, pooled[i] (P,) float32, labels[i]."""
  tokens: np.ndarray
  mask: np.ndarray
  pooled: np.ndarray
  null_tokens: np.ndarray
  null_mask: np.ndarray
  null_pooled: np.ndarray
  labels: np.ndarray | None = None
  captions: list[str] | None = None
  meta: dict[str, Any] = dataclasses.field(default_factory=dict)

  def __len__(self) -> int:
    return len(self.tokens)


def file_of(directory: str, shard: str, kind: str) -> str:
  return os.path.join(directory, f"{shard}.{kind}.npy" if shard else f"{kind}.npy")


def pool(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """Masked mean over T, L2-normalised, float32: (..., T, D), (..., T) -> (..., D)."""
  m = np.asarray(mask, np.float32)[..., None]
  mean = (np.asarray(tokens, np.float32) * m).sum(-2) / np.maximum(m.sum(-2), 1e-9)
  return mean / np.maximum(np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12)


def _mask(a: np.ndarray, where: str) -> np.ndarray:
  if a.dtype == bool:
    return np.asarray(a)
  if not np.issubdtype(a.dtype, np.integer) or not np.isin(a, (0, 1)).all():
    raise TextEmbeddingError(f"{where}: mask must be bool or 0/1 integers, got {a.dtype}")
  return np.asarray(a, bool)


def _json(path: str) -> Any:
  with open(path) as f:
    return json.load(f)


def _load(path: str, mmap: bool = False) -> np.ndarray:
  if not os.path.exists(path):
    raise TextEmbeddingError(f"missing {path}")
  return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)


def _read_shard(directory: str, shard: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  tok_path = file_of(directory, shard, "tokens")
  tokens = _load(tok_path, mmap=True)
  if tokens.ndim != 3 or tokens.dtype.name not in TOKEN_DTYPES:
    raise TextEmbeddingError(f"{tok_path}: tokens must be (rows, T, D) float16|float32, got "
                             f"{tokens.shape} {tokens.dtype}")
  mask_path = file_of(directory, shard, "mask")
  mask = _mask(_load(mask_path), mask_path)
  if mask.shape != tokens.shape[:2]:
    raise TextEmbeddingError(f"{mask_path}: mask shape {mask.shape} != tokens (rows, T) "
                             f"{tokens.shape[:2]} of {tok_path}")
  empty = np.flatnonzero(~mask.any(1))
  if empty.size:
    raise TextEmbeddingError(f"{mask_path}: rows {empty[:5].tolist()} have no real token "
                             "(every caption keeps at least its start token)")
  pooled_path = file_of(directory, shard, "pooled")
  if os.path.exists(pooled_path):
    pooled = _load(pooled_path)
    if pooled.ndim != 2 or len(pooled) != len(tokens):
      raise TextEmbeddingError(f"{pooled_path}: pooled must be (rows={len(tokens)}, P), got "
                               f"{pooled.shape}")
    pooled = np.asarray(pooled, np.float32)
  else:
    pooled = pool(tokens, mask)
  return tokens, mask, pooled


def _shard_names(directory: str, meta: dict) -> list[str]:
  if "shards" in meta:
    missing = [s for s in meta["shards"] if not all(
        os.path.exists(file_of(directory, s, k)) for k in KINDS)]
    if missing:
      raise TextEmbeddingError(
          f"{directory}: {len(missing)} of {len(meta['shards'])} shards are unfinished "
          f"({missing[:3]}...); run the same encode_text command again (on every host) "
          "to finish them")
    return list(meta["shards"])
  found = sorted(glob.glob(os.path.join(directory, "*.tokens.npy")))
  names = [os.path.basename(f)[:-len(".tokens.npy")] for f in found]
  names = [n for n in names if n != NULL]
  if os.path.exists(os.path.join(directory, "tokens.npy")):
    names = [""] + names
  if not names:
    raise TextEmbeddingError(f"{directory} has no tokens.npy or *.tokens.npy: encode "
                             "captions with `python -m skipdit_jax.encode_text`")
  return names


def load_text_embeddings(directory: str) -> TextEmbeddings:
  """Read and check a caption-embedding directory (layout in the module docstring)."""
  meta_path = os.path.join(directory, MANIFEST)
  meta = _json(meta_path) if os.path.exists(meta_path) else {}
  names = _shard_names(directory, meta)
  parts = [_read_shard(directory, s) for s in names]
  t, d = parts[0][0].shape[1:]
  p = parts[0][2].shape[1]
  for s, (tok, _, pol) in zip(names, parts):
    if tok.shape[1:] != (t, d) or tok.dtype != parts[0][0].dtype or pol.shape[1] != p:
      raise TextEmbeddingError(f"shard {s!r}: tokens {tok.shape[1:]} {tok.dtype}, pooled "
                               f"{pol.shape[1]} differ from the first shard's {(t, d)} "
                               f"{parts[0][0].dtype}, {p}")
  cat = lambda i: parts[0][i] if len(parts) == 1 else np.concatenate([x[i] for x in parts])
  tokens, mask, pooled = cat(0), cat(1), cat(2)
  n = len(tokens)
  if "rows" in meta and meta["rows"] != n:
    raise TextEmbeddingError(f"{meta_path} says rows={meta['rows']}, the shards hold {n}")

  null_tokens = _load(file_of(directory, NULL, "tokens")) if os.path.exists(
      file_of(directory, NULL, "tokens")) else None
  if null_tokens is None:
    raise TextEmbeddingError(
        f"{directory}: missing null.tokens.npy (T, D) and null.mask.npy (T,): the CFG null "
        "condition is the same encoder's embedding of the empty caption \"\"")
  null_mask = _mask(_load(file_of(directory, NULL, "mask")), file_of(directory, NULL, "mask"))
  if null_tokens.shape != (t, d) or null_mask.shape != (t,) or not null_mask.any():
    raise TextEmbeddingError(f"null.tokens.npy {null_tokens.shape} / null.mask.npy "
                             f"{null_mask.shape}: expected ({t}, {d}) / ({t},) with a real "
                             "token, as one row of the shards")
  np_path = file_of(directory, NULL, "pooled")
  null_pooled = (np.asarray(_load(np_path), np.float32) if os.path.exists(np_path)
                 else pool(null_tokens, null_mask))
  if null_pooled.shape != (p,):
    raise TextEmbeddingError(f"{np_path}: shape {null_pooled.shape}, expected ({p},)")

  labels = None
  lab_path = os.path.join(directory, "labels.npy")
  if os.path.exists(lab_path):
    labels = _load(lab_path)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
      raise TextEmbeddingError(f"{lab_path}: labels must be ints of shape ({n},), got "
                               f"{labels.shape} {labels.dtype}")
    labels = labels.astype(np.int32)
  captions = None
  cap_path = os.path.join(directory, "captions.json")
  if os.path.exists(cap_path):
    captions = _json(cap_path)
    if len(captions) != n:
      raise TextEmbeddingError(f"{cap_path}: {len(captions)} captions for {n} rows")
  return TextEmbeddings(tokens, mask, pooled, np.asarray(null_tokens), null_mask, null_pooled,
                        labels, captions, meta)
