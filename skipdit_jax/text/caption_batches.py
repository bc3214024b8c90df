"""Caption batches: every training example gets a caption made from its content and that
caption's embedding, the `y` of a text model (`model.cond` "text_pooled" | "text_tokens").

- Content: images -> their class; moving-digit clips -> digit, the direction of the first
  move and whether the digit bounces (`MovingDigits.motion`). Captions use the `train`
  templates (`text.captions`), one per example, drawn from `config.data.captions.seed`:
  example i keeps its caption for the whole run, so the stream stays a pure function of
  (seed, position) and resumes exactly.
- Embeddings: the caption vocabulary is closed and small (digits 50, Fashion-MNIST 120,
  clips 720 captions), so it is encoded once with the bundled MiniLM into a folder keyed
  by a digest of (encoder, max tokens, captions) under `data.captions.cache_dir` (default
  `<workdir>/caption_embeddings`); every host encodes (or reuses) its own copy and reruns
  reuse it. A batch looks its rows up by caption index.
- `y` is a dict of numpy arrays, batch leading, including the null caption (the empty
  caption's embedding, CFG's null and the caption-dropout target) repeated per row, so the
  trainer shards it over the batch axes like the labels (models/text_cond.py).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Optional, Sequence

import numpy as np

from skipdit_jax.text import captions as C
from skipdit_jax.text import embeddings as E
from skipdit_jax.text.bundled import MissingTextEncoder, bundled_model_dir
from skipdit_jax.text.store import encode_captions

DEFAULTS: dict[str, Any] = dict(
    enabled=False,  # attach captions + embeddings (needs model.cond text_pooled|text_tokens)
    max_tokens=24,  # tokens per caption incl. [CLS]/[SEP]; longer captions are an error
    seed=0,         # which train template / phrasing each example gets
    cache_dir="",   # encoded vocabularies; "" = <workdir>/caption_embeddings
    standardize=False,  # text_pooled: z-score each dim by the train vocabulary (Standardizer)
)
DATASETS = ("digits", "mnist5k", "fashion_mnist", "moving_digits")
# The condition keys a text model reads (models.text_cond.KEYS; text/ sits below models/).
COND_KEYS = {"text_pooled": ("pooled", "null_pooled"),
             "text_tokens": ("tokens", "mask", "null_tokens", "null_mask")}
ENCODER_WIDTH = 384  # all-MiniLM-L6-v2's hidden size (model.caption_channels)
CACHE_SUBDIR = "caption_embeddings"


def _get(cfg: Any, key: str, default: Any = None) -> Any:
  if cfg is None:
    return default
  return cfg.get(key, default) if hasattr(cfg, "get") else getattr(cfg, key, default)


@dataclasses.dataclass(frozen=True)
class CaptionFields:
  """`config.data.captions` with DEFAULTS filled in."""
  enabled: bool = False
  max_tokens: int = 24
  seed: int = 0
  cache_dir: str = ""
  standardize: bool = False

  @classmethod
  def from_config(cls, data: Any) -> "CaptionFields":
    given = _get(data, "captions")
    given = dict(given) if given is not None else {}
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
      raise ValueError(f"config.data.captions has unknown field(s) {unknown}; known: "
                       f"{sorted(DEFAULTS)}")
    return cls(**{**DEFAULTS, **given})

  def cache_root(self, workdir: str) -> str:
    return self.cache_dir or os.path.join(str(workdir), CACHE_SUBDIR)


def check_config(config: Any) -> list[str]:
  """Problem lines (each naming the field and the fix) of `config.data.captions` against
  `model.cond`, the dataset and the encoder; no loading, no compute."""
  data = _get(config, "data")
  try:
    f = CaptionFields.from_config(data)
  except ValueError as e:
    return [str(e)]
  p = "config.data.captions."
  problems = []
  if not isinstance(f.enabled, bool):
    problems.append(f"{p}enabled={f.enabled!r} must be True or False")
  if not isinstance(f.max_tokens, int) or isinstance(f.max_tokens, bool) or \
      not 4 <= f.max_tokens <= 512:
    problems.append(f"{p}max_tokens={f.max_tokens!r} must be an integer in [4, 512] (the "
                    "captions here need about 20)")
  if not isinstance(f.seed, int) or isinstance(f.seed, bool) or f.seed < 0:
    problems.append(f"{p}seed={f.seed!r} must be an integer >= 0")
  if not isinstance(f.standardize, bool):
    problems.append(f"{p}standardize={f.standardize!r} must be True or False")
  if f.standardize is True and _get(_get(config, "model"), "cond", "class") != "text_pooled":
    problems.append(f"{p}standardize=True applies to pooled captions only: set model.cond="
                    "'text_pooled' or data.captions.standardize=False")
  if not isinstance(f.cache_dir, str):
    problems.append(f"{p}cache_dir={f.cache_dir!r} must be a path string ('' = "
                    f"<workdir>/{CACHE_SUBDIR})")
  split = _get(_get(config, "eval"), "caption_templates", "heldout")
  if split not in C.SPLITS:
    problems.append(f"config.eval.caption_templates={split!r} must be one of "
                    f"{list(C.SPLITS)} (heldout: the caption_accuracy score; train: the "
                    "templates seen in training)")
  cond = _get(_get(config, "model"), "cond", "class")
  name = _get(data, "name")
  if f.enabled is True and cond == "class":
    problems.append(f"{p}enabled=True but model.cond='class' reads labels: set model.cond="
                    "'text_pooled' or 'text_tokens' (or data.captions.enabled=False)")
  if f.enabled is not True and cond in COND_KEYS:
    problems.append(f"model.cond={cond!r} trains on captions: set {p}enabled=True (captions "
                    f"made from the data's content; datasets {list(DATASETS)})")
  if f.enabled is True:
    if name not in DATASETS:
      problems.append(f"{p}enabled=True but data.name={name!r} has no captions: use one of "
                      f"{list(DATASETS)}")
    if name == "moving_digits":
      video = _get(data, "video")
      if _get(video, "num_digits", 1) != 1:
        problems.append(f"{p}enabled=True on moving_digits needs data.video.num_digits=1 "
                        f"(a caption names one digit), got {_get(video, 'num_digits')}")
      if _get(video, "label", "digit") != "digit":
        problems.append(f"{p}enabled=True on moving_digits needs data.video.label='digit' "
                        "(the caption carries the direction)")
      if not _get(video, "speed", 1.0):
        problems.append(f"{p}enabled=True on moving_digits needs data.video.speed > 0 "
                        "(captions name the direction of motion)")
    width = _get(_get(config, "model"), "caption_channels", ENCODER_WIDTH)
    if width != ENCODER_WIDTH:
      problems.append(f"model.caption_channels={width} but the bundled MiniLM gives "
                      f"{ENCODER_WIDTH}-d captions: set model.caption_channels="
                      f"{ENCODER_WIDTH}")
    try:
      bundled_model_dir()
    except MissingTextEncoder as e:
      problems.append(f"{p}enabled=True needs the bundled text encoder: {e}")
  return problems


# -- captions of a dataset ------------------------------------------------------------------

def clip_content(clips: Any, rows: Sequence[int]) -> tuple[list[str], np.ndarray]:
  """(direction names, bounced (N,) bool) of clips with a `motion(i)` (MovingDigits)."""
  moves = [clips.motion(int(i)) for i in rows]
  return ([C.direction_name(dy, dx) for dy, dx, _ in moves],
          np.array([b for _, _, b in moves], bool))


def vocabulary(dataset: str, split: str = "train") -> list[str]:
  """Every caption the split can give an example of `dataset`, in a fixed order."""
  if dataset == "moving_digits":
    return [c for c, *_ in C.all_clip_captions(split)]
  return [c for c, _ in C.all_captions(dataset, split)]


def example_captions(dataset: str, labels: np.ndarray, source: Any, *, seed: int,
                     split: str = "train") -> tuple[list[str], np.ndarray]:
  """(vocabulary, caption index (N,) int32 per example): example i's caption is
  vocabulary[ids[i]], drawn from its label (and, for clips, `source.motion(i)`)."""
  labels = np.asarray(labels)
  if dataset == "moving_digits":
    dirs, bounced = clip_content(source, range(len(labels)))
    caps = C.clip_captions(labels, dirs, bounced, split=split, seed=seed)
  else:
    caps = C.captions_for_labels(labels, dataset, split=split, seed=seed)
  vocab = vocabulary(dataset, split)
  index = {c: i for i, c in enumerate(vocab)}
  missing = [c for c in caps if c not in index]
  if missing:  # a template change that left the vocabulary behind
    raise AssertionError(f"captions {missing[:3]} are not in the {dataset} vocabulary")
  return vocab, np.array([index[c] for c in caps], np.int32)


# -- encoding, cached ------------------------------------------------------------------------

def vocab_dir(cache_root: str, captions: Sequence[str], *, encoder: str,
              max_tokens: int) -> str:
  """The folder of one encoded vocabulary: keyed by (encoder, max tokens, captions)."""
  key = json.dumps([encoder, max_tokens, list(captions)])
  return os.path.join(cache_root, "captions-" + hashlib.sha256(key.encode()).hexdigest()[:16])


def encode_vocabulary(captions: Sequence[str], cache_root: str, *, max_tokens: int,
                      encoder: Optional[Callable] = None,
                      log: Callable[[str], None] | None = None) -> E.TextEmbeddings:
  """The embeddings of `captions` (row i = captions[i]) and of the empty caption, encoded
  once into `vocab_dir(...)` and read back from there on every later call. `encoder`: a
  callable list[str] -> {"tokens", "mask", "pooled"} with a `name` (default: the bundled
  MiniLM, built only when something is left to encode)."""
  name = getattr(encoder, "name", None) or "all-MiniLM-L6-v2"
  out = vocab_dir(cache_root, captions, encoder=name, max_tokens=max_tokens)
  built: list[Callable] = [] if encoder is None else [encoder]

  def encode(batch: Sequence[str]) -> dict:
    if not built:
      from skipdit_jax.text.minilm import MiniLMEncoder  # pylint: disable=import-outside-toplevel
      built.append(MiniLMEncoder(max_tokens=max_tokens, padding="max_length",
                                 truncation=False, batch_size=64))
    return built[0](batch)
  encode_captions(list(captions), encode, out, encoder=name, max_tokens=max_tokens,
                  token_dtype="float32", shard_rows=max(len(captions), 1), log=log)
  emb = E.load_text_embeddings(out)
  if emb.captions is not None and list(emb.captions) != list(captions):
    raise E.TextEmbeddingError(f"{out} holds other captions than asked (a digest clash?): "
                               "delete the folder")
  return emb


@dataclasses.dataclass(frozen=True)
class Standardizer:
  """Pooled caption vectors z-scored per dimension by the *train* vocabulary's statistics,
  then divided by sqrt(D), so a caption's vector has an expected squared norm of 1 (as the
  L2-normed MiniLM vectors) but no component shared by every caption.

  Why (docs/RESULTS.md, "Text"): MiniLM's pooled captions of one dataset share a large
  common direction (mean pairwise cosine 0.58 on the clip captions); Adam's per-weight
  steps on the projection are then led by it, and what tells a digit or a direction apart
  is learned slowly. Train captions, the null caption and held-out prompts all take the
  same (train) statistics."""
  mean: np.ndarray
  std: np.ndarray

  @classmethod
  def fit(cls, pooled: np.ndarray) -> "Standardizer":
    pooled = np.asarray(pooled, np.float64)
    if pooled.ndim != 2 or len(pooled) < 2:
      raise ValueError(f"standardizing needs >= 2 pooled rows (R, D), got {pooled.shape}")
    return cls(pooled.mean(0), np.maximum(pooled.std(0), 1e-6))

  def __call__(self, pooled: np.ndarray) -> np.ndarray:
    d = self.mean.shape[-1]
    return ((np.asarray(pooled, np.float64) - self.mean) / self.std / np.sqrt(d)).astype(
        np.float32)


def train_standardizer(data: Any, workdir: str) -> Standardizer:
  """The Standardizer of `data`'s train caption vocabulary (encoded once into the run's
  caption cache; the same call in training and sampling gives the same statistics)."""
  f = CaptionFields.from_config(data)
  emb = encode_vocabulary(vocabulary(_get(data, "name"), "train"), f.cache_root(workdir),
                          max_tokens=f.max_tokens)
  return Standardizer.fit(emb.pooled)


class CaptionTable:
  """The encoded vocabulary of one `model.cond`: `condition(ids)` -> `y` (numpy).
  `standardize`: a Standardizer applied to the pooled rows and the null (text_pooled)."""

  def __init__(self, emb: E.TextEmbeddings, cond: str,
               standardize: Optional[Standardizer] = None):
    if cond not in COND_KEYS:
      raise ValueError(f"model.cond={cond!r} takes no captions; use one of {list(COND_KEYS)}")
    if standardize is not None and cond != "text_pooled":
      raise ValueError(f"data.captions.standardize applies to pooled captions, not "
                       f"model.cond={cond!r}")
    self.cond = cond
    if cond == "text_pooled":
      fix = standardize or (lambda a: np.asarray(a, np.float32))
      self.rows = {"pooled": fix(emb.pooled)}
      self.null = {"pooled": fix(emb.null_pooled)}
    else:
      self.rows = {"tokens": np.asarray(emb.tokens, np.float32),
                   "mask": np.asarray(emb.mask, bool)}
      self.null = {"tokens": np.asarray(emb.null_tokens, np.float32),
                   "mask": np.asarray(emb.null_mask, bool)}

  def __len__(self) -> int:
    return len(next(iter(self.rows.values())))

  def condition(self, ids: np.ndarray) -> dict[str, np.ndarray]:
    """ids (N,) vocabulary rows -> {key: (N, ...)} with the null repeated per row."""
    ids = np.asarray(ids)
    y = {k: v[ids] for k, v in self.rows.items()}
    for k, v in self.null.items():
      y["null_" + k] = np.broadcast_to(v, (len(ids),) + v.shape).copy()
    return y


class CaptionedBatches:
  """A `data.BatchIterator` whose batches also hold "caption" (B,) vocabulary ids and "y",
  the caption condition of those rows. Position, state and restore are the wrapped
  iterator's, so checkpoints and resume are unchanged."""

  def __init__(self, it: Any, caption_ids: np.ndarray, table: CaptionTable):
    if len(caption_ids) != it.num_examples:
      raise ValueError(f"{len(caption_ids)} captions for {it.num_examples} examples")
    self._it, self.caption_ids, self.table = it, np.asarray(caption_ids), table

  def __getattr__(self, name: str) -> Any:  # position, epoch, batch_size, ...
    if name == "_it":  # not set yet (copy / unpickle): no recursion
      raise AttributeError(name)
    return getattr(self._it, name)

  def state(self) -> dict[str, int]:
    return self._it.state()

  def restore(self, state: dict[str, Any]) -> None:
    self._it.restore(state)

  def _attach(self, b: dict[str, np.ndarray]) -> dict[str, Any]:
    ids = self.caption_ids[b["index"]]
    return {**b, "caption": ids, "y": self.table.condition(ids)}

  def batch_at(self, position: int) -> dict[str, Any]:
    return self._attach(self._it.batch_at(position))

  def __iter__(self) -> "CaptionedBatches":
    return self

  def __next__(self) -> dict[str, Any]:
    return self._attach(next(self._it))


def attach(it: Any, data: Any, cond: str, labels: np.ndarray, source: Any, workdir: str,
           *, encoder: Optional[Callable] = None,
           log: Callable[[str], None] | None = None) -> CaptionedBatches:
  """`it` with caption batches per `config.data` (its `captions` fields) for `model.cond`."""
  f = CaptionFields.from_config(data)
  vocab, ids = example_captions(_get(data, "name"), labels, source, seed=f.seed)
  emb = encode_vocabulary(vocab, f.cache_root(workdir), max_tokens=f.max_tokens,
                          encoder=encoder, log=log)
  std = Standardizer.fit(emb.pooled) if f.standardize else None
  return CaptionedBatches(it, ids, CaptionTable(emb, cond, std))
