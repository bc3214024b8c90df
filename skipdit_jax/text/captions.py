"""Captions made from labels, for still images and moving-digit clips, and their reader.

Every class has a few synonyms and every dataset a few templates; `split="train"`
templates are for training, `split="heldout"` ones (never seen in training) for
evaluation. Synonyms are shared by both splits, so a held-out caption is a new sentence
about a known noun. `class_from_caption` recovers the class by keyword match (used to
score caption accuracy); it returns None when no class, or more than one, is named.
All choices are drawn from a seeded numpy Generator: the same seed gives the same captions.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

SPLITS = ("train", "heldout")
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Per class: the nouns captions use, and the keywords the reader accepts (nouns included).
_DIGIT_NOUNS = [[w, str(i)] for i, w in enumerate(NUMBER_WORDS)]
_FASHION_NOUNS = [
    ["t-shirt", "tee", "top"], ["pair of trousers", "pair of pants", "pair of slacks"],
    ["pullover", "sweater", "jumper"], ["dress", "gown", "frock"],
    ["coat", "jacket", "overcoat"], ["sandal", "flip-flop", "strappy sandal"],
    ["shirt", "button-up shirt", "blouse"], ["sneaker", "trainer", "shoe for running"],
    ["bag", "handbag", "purse"], ["ankle boot", "boot", "short boot"]]
_FASHION_EXTRA_KEYS = [[], ["trousers", "trouser", "pants", "slacks"], [], [], [],
                       ["sandals", "flip-flops"], ["button-up"],
                       ["sneakers", "trainers", "running shoe", "running shoes"],
                       ["bags"], ["boots"]]
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")

# {a_noun}: the noun with its article; {noun}: bare. Digits also have {num} (the numeral).
_TEMPLATES = {
    "digits": {
        "train": ["a handwritten {word}", "the digit {num}", "{a_word}", "the number {word}",
                  "a hand-drawn digit {num}"],
        "heldout": ["a scribbled {word} written by hand", "an image of the numeral {num}",
                    "a picture showing the number {word}"]},
    "fashion": {
        "train": ["a photo of {a_noun}", "{a_noun}", "a grayscale picture of {a_noun}",
                  "{a_noun} on a black background"],
        "heldout": ["a product shot of {a_noun}", "a small image showing {a_noun}",
                    "a catalogue picture of {a_noun}"]},
}
_KIND = {"digits": "digits", "mnist5k": "digits", "fashion_mnist": "fashion"}


def article(noun: str) -> str:
  """'a seven', 'an eight', 'an 8', 'an ankle boot', 'a one'."""
  first = noun.split()[0]
  vowel = first[0] in "aeio" or first.startswith(("8", "11", "18"))
  return ("an " if vowel and first not in ("one",) else "a ") + noun


def _kind(dataset: str) -> str:
  if dataset not in _KIND:
    raise ValueError(f"dataset={dataset!r} has no captions: use one of {sorted(_KIND)}")
  return _KIND[dataset]


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise ValueError(f"split={split!r}: use one of {SPLITS}")


def class_names(dataset: str) -> tuple[str, ...]:
  return NUMBER_WORDS if _kind(dataset) == "digits" else FASHION_CLASSES


def templates(dataset: str, split: str = "train") -> list[str]:
  _check_split(split)
  return list(_TEMPLATES[_kind(dataset)][split])


def _fill(template: str, kind: str, label: int, synonym: int) -> str:
  if kind == "digits":
    word = NUMBER_WORDS[label]
    return template.format(word=word, num=str(label), a_word=article(word))
  noun = _FASHION_NOUNS[label][synonym]
  return template.format(noun=noun, a_noun=article(noun))


def _synonyms(kind: str, label: int) -> int:
  """How many nouns one class has in captions (digits: the template picks word or numeral)."""
  return 1 if kind == "digits" else len(_FASHION_NOUNS[label])


def all_captions(dataset: str, split: str = "train") -> list[tuple[str, int]]:
  """Every (caption, label) of a split, in a fixed order: the closed set to encode once."""
  kind = _kind(dataset)
  return [(_fill(t, kind, c, s), c) for c in range(10) for t in templates(dataset, split)
          for s in range(_synonyms(kind, c))]


def captions_for_labels(labels: Sequence[int], dataset: str, *, split: str = "train",
                        seed: int = 0) -> list[str]:
  """One caption per label: template and synonym drawn uniformly, seeded."""
  kind, temps = _kind(dataset), templates(dataset, split)
  labels = np.asarray(labels)
  if labels.size and (labels.min() < 0 or labels.max() > 9):
    raise ValueError(f"labels must be in 0..9 for {dataset!r}, got {labels.min()}..{labels.max()}")
  rng = np.random.default_rng(seed)
  t = rng.integers(0, len(temps), len(labels))
  s = rng.integers(0, 1 << 30, len(labels))
  return [_fill(temps[ti], kind, int(c), int(si) % _synonyms(kind, int(c)))
          for c, ti, si in zip(labels, t, s)]


# -- the reader ---------------------------------------------------------------------------

def words(caption: str) -> list[str]:
  """Lower-case words; hyphenated words stay one ('t-shirt', 'up-left')."""
  return re.findall(r"[a-z0-9]+(?:-[a-z0-9]+)*", caption.lower())


def _match(caption: str, keys: dict[tuple[str, ...], object]) -> set:
  """Values of the keyword phrases found, longest phrase first, each word used once."""
  w = words(caption)
  used = [False] * len(w)
  found = set()
  for phrase in sorted(keys, key=len, reverse=True):
    n = len(phrase)
    for i in range(len(w) - n + 1):
      if tuple(w[i:i + n]) == phrase and not any(used[i:i + n]):
        used[i:i + n] = [True] * n
        found.add(keys[phrase])
  return found


def _class_keys(kind: str) -> dict[tuple[str, ...], int]:
  if kind == "digits":
    return {tuple(words(k)): c for c, ks in enumerate(_DIGIT_NOUNS) for k in ks}
  keys = {}
  for c, (nouns, extra) in enumerate(zip(_FASHION_NOUNS, _FASHION_EXTRA_KEYS)):
    for k in nouns + extra:
      keys[tuple(words(k.removeprefix("pair of ")))] = c
  return keys


def class_from_caption(caption: str, dataset: str) -> int | None:
  """The one class the caption names, or None (no class word, or words of two classes)."""
  found = _match(caption, _class_keys(_kind(dataset)))
  return found.pop() if len(found) == 1 else None


# -- clips: digit, direction, bounce ------------------------------------------------------

DIRECTIONS = ("left", "right", "up", "down", "up_left", "up_right", "down_left", "down_right")


def _direction_phrases(name: str) -> list[str]:
  if "_" in name:
    v, h = name.split("_")
    return [f"{v} and to the {h}", f"{v}-{h}", f"diagonally {v} and {h}"]
  if name in ("left", "right"):
    return [f"to the {name}", f"{name}wards", name]
  return [name, f"{name}wards"]


_CLIP_TEMPLATES = {
    "train": ["{a_word} moving {dir}{bounce}", "the digit {num} moves {dir}{bounce}",
              "a handwritten {word} drifting {dir}{bounce}"],
    "heldout": ["the number {word} travelling {dir}{bounce}",
                "a scribbled {num} sliding {dir}{bounce}"]}
_BOUNCE = {"train": ", then bouncing", "heldout": " and then bouncing back"}


def clip_caption(digit: int, direction: str, bounced: bool, *, split: str = "train",
                 variant: int = 0) -> str:
  """'a seven moving up and to the left, then bouncing'. direction: one of DIRECTIONS
  (the clip's initial motion); bounced: whether it hits a wall within the clip;
  variant picks the template and phrasing (taken modulo their counts)."""
  _check_split(split)
  if direction not in DIRECTIONS:
    raise ValueError(f"direction={direction!r}: use one of {DIRECTIONS}")
  if not 0 <= digit <= 9:
    raise ValueError(f"digit={digit}: need 0..9")
  temps, phrases = _CLIP_TEMPLATES[split], _direction_phrases(direction)
  word = NUMBER_WORDS[digit]
  return temps[variant % len(temps)].format(
      word=word, num=str(digit), a_word=article(word),
      dir=phrases[(variant // len(temps)) % len(phrases)],
      bounce=_BOUNCE[split] if bounced else "")


def clip_captions(digits: Sequence[int], directions: Sequence[str], bounced: Sequence[bool],
                  *, split: str = "train", seed: int = 0) -> list[str]:
  """One caption per clip, template and phrasing drawn with a seeded Generator."""
  v = np.random.default_rng(seed).integers(0, 1 << 30, len(digits))
  return [clip_caption(int(d), str(r), bool(b), split=split, variant=int(x))
          for d, r, b, x in zip(digits, directions, bounced, v)]


def direction_from_caption(caption: str) -> str | None:
  """The one direction a caption names (a name of DIRECTIONS), or None."""
  keys = {tuple(words(p)): name for name in DIRECTIONS for p in _direction_phrases(name)}
  found = _match(caption, keys)
  return found.pop() if len(found) == 1 else None


def bounced_from_caption(caption: str) -> bool:
  return any(w.startswith("bounc") for w in words(caption))


def direction_name(dy: int, dx: int) -> str:
  """The DIRECTIONS name of a move by signs (dy, dx) (+1 = down / right): (1, -1) ->
  'down_left', (0, 1) -> 'right'."""
  v = {-1: "up", 0: "", 1: "down"}.get(int(np.sign(dy)))
  h = {-1: "left", 0: "", 1: "right"}.get(int(np.sign(dx)))
  if not v and not h:
    raise ValueError("a clip that does not move has no direction to caption")
  return f"{v}_{h}" if v and h else v or h


def clip_variants(direction: str, split: str = "train") -> int:
  """How many distinct phrasings `clip_caption(..., variant=v)` has for a direction."""
  return len(_CLIP_TEMPLATES[split]) * len(_direction_phrases(direction))


def all_clip_captions(split: str = "train", directions: Sequence[str] = DIRECTIONS
                      ) -> list[tuple[str, int, str, bool]]:
  """Every (caption, digit, direction, bounced) of a split, in a fixed order: the closed
  set of clip captions to encode once."""
  _check_split(split)
  return [(clip_caption(d, r, b, split=split, variant=v), d, r, b)
          for d in range(10) for r in directions for b in (False, True)
          for v in range(clip_variants(r, split))]
