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

import json

import jax
import numpy as np
from absl import app, flags

from skipdit_jax.text import embeddings as E
# The writer lives in text.store (the training pipeline uses it too); re-exported here.
from skipdit_jax.text.store import (RESUME_KEYS, STEM, EncodeFn, encode_captions,  # noqa: F401
                                    shard_name)

FLAGS = flags.FLAGS


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
