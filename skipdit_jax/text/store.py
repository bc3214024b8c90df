"""Write caption-embedding shards (the layout of `text.embeddings`), resumably.

`encode_captions` is the writer behind `python -m skipdit_jax.encode_text` and behind the
caption batches of the training pipeline (`text.caption_batches`), which encode a
dataset's closed caption vocabulary once into a digest-keyed cache folder. Shards are
written as .part files and renamed when complete, so a rerun skips finished shards.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Callable, Sequence

import numpy as np

from skipdit_jax.text import embeddings as E

EncodeFn = Callable[[Sequence[str]], dict]  # captions -> {"tokens", "mask", "pooled"}
STEM = "text"
# Manifest fields that must agree for a rerun to reuse finished shards.
RESUME_KEYS = ("encoder", "max_tokens", "token_dtype", "rows", "shard_rows", "captions_sha256")


def shard_name(stem: str, index: int, count: int) -> str:
  """`text-00002-of-00004` (the format of data.latents.shard_name; text/ sits beside data/)."""
  return f"{stem}-{index:05d}-of-{count:05d}"


def _save(path: str, a: np.ndarray) -> None:
  with open(path + ".part", "wb") as f:
    np.save(f, a)
  os.replace(path + ".part", path)


def _write_manifest(out_dir: str, meta: dict, captions: Sequence[str],
                    labels: np.ndarray | None, encode_fn: EncodeFn, token_dtype: str) -> None:
  null = encode_fn([""])
  for kind, dtype in (("tokens", token_dtype), ("mask", bool), ("pooled", np.float32)):
    _save(E.file_of(out_dir, E.NULL, kind), np.asarray(null[kind][0], dtype))
  if labels is not None:
    _save(os.path.join(out_dir, "labels.npy"), labels)
  with open(os.path.join(out_dir, "captions.json"), "w") as f:
    json.dump(list(captions), f)
  with open(os.path.join(out_dir, E.MANIFEST + ".part"), "w") as f:
    json.dump(meta, f, indent=1)
  os.replace(os.path.join(out_dir, E.MANIFEST + ".part"), os.path.join(out_dir, E.MANIFEST))


def encode_captions(captions: Sequence[str], encode_fn: EncodeFn, out_dir: str, *,
                    labels: np.ndarray | None = None, encoder: str, max_tokens: int,
                    token_dtype: str = "float16", shard_rows: int = 4096,
                    process_index: int = 0, process_count: int = 1,
                    log: Callable[[str], None] | None = None) -> list[str]:
  """Encode this host's shards (i % process_count == process_index) not yet finished;
  returns the shard names this call wrote. encode_fn(list of str) -> {"tokens" (B, T, D),
  "mask" (B, T), "pooled" (B, P)} with T = max_tokens."""
  if token_dtype not in E.TOKEN_DTYPES:
    raise ValueError(f"token_dtype={token_dtype!r}: use one of {E.TOKEN_DTYPES}")
  if shard_rows < 1:
    raise ValueError(f"shard_rows={shard_rows}: need >= 1")
  if labels is not None and len(labels) != len(captions):
    raise ValueError(f"{len(labels)} labels for {len(captions)} captions")
  n = len(captions)
  count = -(-n // shard_rows)
  names = [shard_name(STEM, i, count) for i in range(count)]
  digest = hashlib.sha256(json.dumps([list(captions), None if labels is None else
                                      labels.tolist()]).encode()).hexdigest()
  meta = dict(format="skipdit-text-embeddings/1", encoder=encoder, max_tokens=max_tokens,
              token_dtype=token_dtype, rows=n, shard_rows=shard_rows, shards=names,
              captions_sha256=digest, has_labels=labels is not None)
  os.makedirs(out_dir, exist_ok=True)
  meta_path = os.path.join(out_dir, E.MANIFEST)
  if os.path.exists(meta_path):
    with open(meta_path) as f:
      old = json.load(f)
    diff = [k for k in RESUME_KEYS if old.get(k) != meta[k]]
    if diff:
      raise ValueError(f"{out_dir} holds embeddings of another run ({', '.join(diff)} "
                       f"differ: {[(old.get(k), meta[k]) for k in diff]}); use a fresh --out "
                       "or delete it")
  elif process_index == 0:
    _write_manifest(out_dir, meta, captions, labels, encode_fn, token_dtype)
  written = []
  for i in range(process_index, count, process_count):
    if all(os.path.exists(E.file_of(out_dir, names[i], k)) for k in E.KINDS):
      continue  # finished by an earlier run
    lo, hi = i * shard_rows, min((i + 1) * shard_rows, n)
    out = encode_fn(list(captions[lo:hi]))
    if out["tokens"].shape[:2] != (hi - lo, max_tokens):
      raise ValueError(f"encode_fn returned tokens {out['tokens'].shape}, expected "
                       f"({hi - lo}, max_tokens={max_tokens}, D): pad to max_length")
    for kind, dtype in (("tokens", token_dtype), ("mask", bool), ("pooled", np.float32)):
      _save(E.file_of(out_dir, names[i], kind), np.asarray(out[kind], dtype))
    written.append(names[i])
    if log:
      log(f"encoded shard {names[i]} (rows {lo}..{hi - 1})")
  return written
