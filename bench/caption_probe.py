"""How much of a caption's content does its pooled embedding carry to new phrasings?

Encodes a dataset's train and held-out caption vocabularies with the bundled MiniLM
(cached under --cache), z-scores the pooled vectors by the train vocabulary (as
`data.captions.standardize`), fits a logistic regression on the train captions for the
class (and, for moving digits, the direction of motion, the four diagonals the clips take),
and reads the held-out captions with it. A linear reader that misses held-out captions
marks content the pooled vector does not carry over from one phrasing to another; a
conditioned model reading the same vectors meets the same limit. Prints one JSON object.

  python bench/caption_probe.py --dataset moving_digits
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from skipdit_jax.eval.caption_scores import CLIP_DIRECTIONS  # noqa: E402
from skipdit_jax.text import caption_batches as CB  # noqa: E402
from skipdit_jax.text import captions as C  # noqa: E402


def content(dataset: str, split: str) -> tuple[list[str], np.ndarray, list[str] | None]:
  """(captions, class (N,), direction names or None) of a split's vocabulary."""
  if dataset == "moving_digits":
    rows = C.all_clip_captions(split, directions=CLIP_DIRECTIONS)
    return [r[0] for r in rows], np.array([r[1] for r in rows]), [r[2] for r in rows]
  rows = C.all_captions(dataset, split)
  return [r[0] for r in rows], np.array([r[1] for r in rows]), None


def probe(train_x: np.ndarray, train_y, test_x: np.ndarray, test_y) -> dict[str, float]:
  from sklearn.linear_model import LogisticRegression  # pylint: disable=import-outside-toplevel
  clf = LogisticRegression(C=1.0, max_iter=5000).fit(train_x, train_y)
  return {"train": float(clf.score(train_x, train_y)),
          "heldout": float(clf.score(test_x, test_y))}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--dataset", default="moving_digits", choices=CB.DATASETS)
  ap.add_argument("--cache", default="/tmp/skipdit_caption_probe",
                  help="folder for the encoded vocabularies (reused by reruns)")
  ap.add_argument("--max_tokens", type=int, default=24)
  a = ap.parse_args()
  t0 = time.time()
  out: dict = {"dataset": a.dataset, "encoder": "bundled all-MiniLM-L6-v2 (pooled)"}
  pooled = {}
  labels = {}
  for split in C.SPLITS:
    caps, cls, dirs = content(a.dataset, split)
    vocab = CB.vocabulary(a.dataset, split)  # the run's own vocabulary, encoded once
    emb = CB.encode_vocabulary(vocab, a.cache, max_tokens=a.max_tokens)
    index = {c: i for i, c in enumerate(vocab)}
    pooled[split] = np.asarray(emb.pooled, np.float64)[[index[c] for c in caps]]
    labels[split] = (cls, dirs)
    out[f"{split}_captions"] = len(caps)
  std = CB.Standardizer.fit(pooled["train"])
  x = {s: std(p) * np.sqrt(p.shape[1]) for s, p in pooled.items()}  # unit variance per dim
  norms = {s: float(np.linalg.norm(v, axis=1).mean()) for s, v in x.items()}
  out["heldout_norm_ratio"] = norms["heldout"] / norms["train"]
  out["class"] = probe(x["train"], labels["train"][0], x["heldout"], labels["heldout"][0])
  if labels["train"][1] is not None:
    out["direction"] = probe(x["train"], labels["train"][1], x["heldout"], labels["heldout"][1])
  out["time_s"] = round(time.time() - t0, 1)
  for k in ("class", "direction"):
    if k in out:
      print(f"{k:9s}: linear reader on train captions {out[k]['train']:.3f}, "
            f"on held-out captions {out[k]['heldout']:.3f}")
  print(json.dumps(out))


if __name__ == "__main__":
  main()
