"""Encode a caption file into caption-embedding shards, once per dataset, every host its own.

  python -m skipdit_jax.encode_text --captions=FILE --out=DIR [--max_tokens=32]
      [--token_dtype=float16|float32] [--truncation] [--shard_rows=4096]
  python -m skipdit_jax.encode_text --check=DIR     # validate a set (ours or user .npy)

FILE: one caption per line, or a JSON list of strings or of {"caption": str, "label": int}.
The encoder is the bundled all-MiniLM-L6-v2 (skipdit_jax.text.minilm). Rows are cut into
shards of `shard_rows`; on a pod start the same command on every host (launch/): host p
writes shards p, p + P, ... (P = jax.process_count()). A shard is written as .part files
and renamed when complete, so a rerun skips finished shards (resume) and redoes the rest.
Host 0 writes manifest.json, captions.json, labels.npy and the empty caption's embedding
(null.*.npy, CFG's null condition). The layout and the reader are in
skipdit_jax.text.embeddings (`load_text_embeddings(DIR)`); a set precomputed by another
encoder (T5, ...) with those names is used as it is.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Callable, Sequence

import jax
import numpy as np
from absl import app, flags

from skipdit_jax.data.latents import shard_name
from skipdit_jax.text import embeddings as E

FLAGS = flags.FLAGS
EncodeFn = Callable[[Sequence[str]], dict]  # captions -> {"tokens", "mask", "pooled"}
STEM = "text"
# Manifest fields that must agree for a rerun to reuse finished shards.
RESUME_KEYS = ("encoder", "max_tokens", "token_dtype", "rows", "shard_rows", "captions_sha256")


def read_captions(path: str) -> tuple[list[str], np.ndarray | None]:
  """(captions, labels int32 (N,) or None) from a text or JSON caption file."""
  with open(path, encoding="utf-8") as f:
    text = f.read()
  if path.endswith(".json") or text.lstrip().startswith("["):
    items = json.loads(text)
    if not isinstance(items, list) or not items:
      raise ValueError(f"--captions={path}: expected a non-empty JSON list")
    if all(isinstance(x, str) for x in items):
      return items, None
    bad = [i for i, x in enumerate(items) if not (isinstance(x, dict) and isinstance(
        x.get("caption"), str) and isinstance(x.get("label"), int))]
    if bad:
      raise ValueError(f"--captions={path}: item {bad[0]} is {items[bad[0]]!r}; items must "
                       'all be strings or all {"caption": str, "label": int}')
    return [x["caption"] for x in items], np.asarray([x["label"] for x in items], np.int32)
  lines = text.split("\n")
  if lines and lines[-1] == "":
    lines.pop()
  empty = [i + 1 for i, s in enumerate(lines) if not s.strip()]
  if empty or not lines:
    raise ValueError(f"--captions={path}: line {empty[0] if empty else 1} is empty; give one "
                     "caption per line (the empty caption is added as the CFG null "
                     "condition by itself)")
  return lines, None


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


def main(argv) -> None:
  del argv
  if FLAGS.check:
    emb = E.load_text_embeddings(FLAGS.check)
    print(json.dumps({"rows": len(emb), "tokens": list(emb.tokens.shape),
                      "token_dtype": emb.tokens.dtype.name, "pooled": list(emb.pooled.shape),
                      "labels": emb.labels is not None}))
    return
  for name in ("captions", "out"):
    if not getattr(FLAGS, name):
      raise app.UsageError(f"--{name} is required")
  captions, labels = read_captions(FLAGS.captions)
  from skipdit_jax.text.minilm import MiniLMEncoder  # pylint: disable=import-outside-toplevel
  enc = MiniLMEncoder(max_tokens=FLAGS.max_tokens, padding="max_length",
                      truncation=FLAGS.truncation, batch_size=FLAGS.batch_size)
  written = encode_captions(
      captions, enc, FLAGS.out, labels=labels, encoder=enc.name, max_tokens=FLAGS.max_tokens,
      token_dtype=FLAGS.token_dtype, shard_rows=FLAGS.shard_rows,
      process_index=jax.process_index(), process_count=jax.process_count(),
      log=lambda s: print(s, flush=True))
  print(json.dumps({"out": FLAGS.out, "rows": len(captions), "written": len(written)}))


def define_flags() -> None:
  """Flags are defined only when run as a command (as encode_latents)."""
  flags.DEFINE_string("captions", None, "caption file: lines, or a JSON list")
  flags.DEFINE_string("out", None, "output directory of the embedding shards")
  flags.DEFINE_integer("max_tokens", 32, "tokens per caption incl. [CLS]/[SEP] (padded)")
  flags.DEFINE_bool("truncation", True, "cut longer captions; else fail on them")
  flags.DEFINE_enum("token_dtype", "float16", list(E.TOKEN_DTYPES), "token-state dtype")
  flags.DEFINE_integer("shard_rows", 4096, "captions per shard (the unit of resume)")
  flags.DEFINE_integer("batch_size", 64, "captions per encoder call")
  flags.DEFINE_string("check", None, "only validate an embedding directory and print it")


if __name__ == "__main__":
  define_flags()
  app.run(main)
