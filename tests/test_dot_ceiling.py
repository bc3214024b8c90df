"""bench/dot_ceiling.py lists the train step's matmuls: their FLOPs against the hand count
of the DiT / Skip-DiT architecture (forward 2MKN per dense layer, backward twice that but
for the image's input gradient, six batched attention products per block)."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import dot_ceiling  # noqa: E402

import tiny_models  # noqa: E402


def _flops(counts) -> int:
  total = 0
  for (kind, shape), c in counts.items():
    if kind == "mm":
      m, k, n = shape
      total += 2 * m * k * n * c
    else:
      b, t, d, t2 = shape
      total += 2 * b * t * d * t2 * c
  return total


@pytest.mark.parametrize("long_skip", [False, True])
def test_step_matmul_flops_match_the_hand_count(long_skip):
  depth, width, size, channels, patch, heads, batch = 4, 32, 4, 2, 2, 2, 3
  model, params = tiny_models.tiny(long_skip=long_skip, depth=depth, width=width,
                                   size=size, channels=channels)
  tokens = (size // patch) ** 2
  m, d, n = batch * tokens, width, batch
  pc = patch * patch * channels
  # forward, token-wise: patch embedding, qkv + proj + fc1 + fc2 per block, final linear
  fwd_tok = 2 * m * pc * d + depth * 2 * m * (3 * d * d + d * d + 4 * d * d + 4 * d * d) \
      + 2 * m * d * 2 * pc
  if long_skip:  # one Linear(2D -> D) per skip: depth // 2 of them
    fwd_tok += (depth // 2) * 2 * m * 2 * d * d
  # forward, per example: t embedder MLP (256 -> D -> D), adaLN per block and final layer
  fwd_ex = 2 * n * (256 * d + d * d) + depth * 2 * n * d * 6 * d + 2 * n * d * 2 * d
  forward = fwd_tok + fwd_ex
  dense = 3 * forward - 2 * m * pc * d          # no input gradient for the image
  attention = depth * 6 * 2 * (batch * heads) * tokens * tokens * (width // heads)
  counts = dot_ceiling.step_matmuls(params, batch, tokens, heads, width // heads)
  assert _flops(counts) == dense + attention
  assert sum(c for (kind, _), c in counts.items() if kind == "bmm") == 6 * depth


def test_time_shapes_reports_each_shape_with_its_flops():
  pytest.importorskip("torch")
  shapes = [("mm", (6, 5, 4)), ("bmm", (3, 4, 8, 2))]
  timed = dot_ceiling.time_shapes(shapes, repeats=2)
  assert timed[shapes[0]]["gflop"] == pytest.approx(2 * 6 * 5 * 4 / 1e9)
  assert timed[shapes[1]]["gflop"] == pytest.approx(2 * 3 * 4 * 8 * 2 / 1e9)
  for s in shapes:
    assert timed[s]["jax_s"] > 0 and timed[s]["torch_s"] > 0
