"""The long-skip pairing, in one place: which blocks push a skip, which pop and fuse one.

Blocks `0 … L/2−1` are shallow and push their output; blocks `L/2 … L−1` are deep and,
before running, pop the top of the stack and fuse it (REFERENCE §2): deep block `i` uses
fusion `i − L/2` and the skip of shallow block `L−1−i`. Every block stack — the unrolled
`DiT.run_blocks`, the scanned `BlockStack`, and a video model's block pairs — walks a
range `start … stop−1` through `segments` and pops with `pop`, so the rule lives here once.
"""
from __future__ import annotations

from typing import Any

PLAIN, SHALLOW, DEEP = "plain", "shallow", "deep"


def segments(depth: int, long_skip: bool, start: int, stop: int
             ) -> list[tuple[str, int, int]]:
  """Blocks start..stop-1 as runs (kind, a, b): one PLAIN run without long skips, else a
  SHALLOW run below depth/2 and a DEEP run from depth/2 (empty runs left out)."""
  if not long_skip:
    return [(PLAIN, start, stop)] if start < stop else []
  half = depth // 2
  runs = [(SHALLOW, start, min(stop, half)), (DEEP, max(start, half), stop)]
  return [(kind, a, b) for kind, a, b in runs if a < b]


def fusion_index(block: int, depth: int) -> int:
  """The fusion (norm + linear) that deep block `block` applies."""
  return block - depth // 2


def pop(skips: tuple[Any, ...], a: int, b: int) -> tuple[list[Any], tuple[Any, ...]]:
  """The skips deep blocks a..b-1 fuse, in block order, and the stack left after them.

  Deep block a takes the top of the stack, a+1 the one below it, and so on."""
  n = b - a
  if len(skips) < n:
    raise ValueError(f"deep blocks {a}..{b - 1} need {n} skips but the stack holds "
                     f"{len(skips)}; run the shallow blocks they pair with first")
  return [skips[-1 - j] for j in range(n)], skips[:len(skips) - n]
