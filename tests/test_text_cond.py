"""Text conditioning (models/text_cond.py, models/latte_t2v.py): the official Latte-T2V
parameter count, its official weights against an independent float64 numpy forward
(reference_latte_t2v), the exact export, the pooled path against a second code path,
caption dropout / CFG's null, the sampler and every cache policy on caption dicts, the T2V
cache schedule against a transcription of the official counter, and errors."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference_latte_t2v as ref
from skipdit_jax import diffusion as D
from skipdit_jax import models, sampling
from skipdit_jax.models import text_cond
from skipdit_jax.sampling import CachePlan

TOL = 1e-5


def _rel(got, want) -> float:
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (got.shape, want.shape)
  return float(np.abs(got - want).max() / np.abs(want).max())


# --- sizes ----------------------------------------------------------------------------------
def test_official_t2v_parameter_count():
  # VIDEO.md §2.1 [derived]: 28 x (21,255,552 + 15,942,528) + 37,239,552 + 15,700,640
  m = models.create("SkipLatteT2V-XL/2", input_size=64, in_channels=4, num_frames=16,
                    caption_channels=4096)
  assert isinstance(m, models.LatteT2V) and (m.depth, m.num_units) == (56, 28)
  assert models.param_count(m) == 1_094_486_432
  assert models.size_of("SkipLatteT2V-XL/2") == (56, 1152, 16)
  assert models.size_of("SkipLatte-XL/2") == (28, 1152, 16)


# --- official weights ---------------------------------------------------------------------------
SMALL = dict(hidden=32, channels=4, patch=2, caption=12)


@functools.lru_cache(maxsize=None)
def _official(layers: int, long_skip: bool, video: bool):
  return ref.random_state_dict(np.random.default_rng(layers), layers=layers,
                               long_skip=long_skip, video=video, **SMALL)


def _caption(rng, n=2, length=5, width=12):
  tokens = rng.normal(size=(n, length, width)).astype(np.float32)
  mask = np.ones((n, length), bool)
  mask[0, 3:] = False  # a padded caption
  null = rng.normal(size=(length, width)).astype(np.float32)
  null_mask = np.arange(length) < 2
  return tokens, mask, null, null_mask


@pytest.mark.parametrize("layers,long_skip,video", [(4, True, True), (2, False, True),
                                                     (4, True, False)])
def test_load_official_matches_numpy_forward(layers, long_skip, video):
  sd = _official(layers, long_skip, video)
  frames = 3 if video else None
  m, params = models.load_official(sd, input_size=8, num_heads=4, num_frames=frames)
  assert isinstance(m, models.LatteT2V if video else models.DiTT2V)
  assert (m.caption_channels, m.long_skip, m.learn_sigma) == (12, long_skip, True)
  rng = np.random.default_rng(1)
  n = 2
  x = rng.normal(size=(n, 4, frames or 1, 8, 8))  # official (N, C, F, H, W)
  t = np.array([3, 700])
  tokens, mask, null, null_mask = _caption(rng)
  want = ref.forward(sd, x, t, tokens, mask, heads=4)
  y = models.caption_condition(tokens=tokens, mask=mask, null_tokens=null,
                               null_mask=null_mask)
  xin = np.moveaxis(x, 1, -1)  # (N, F, H, W, C)
  xin = xin if video else xin[:, 0]
  got = m.apply({"params": params}, jnp.asarray(xin, jnp.float32), jnp.asarray(t), y)
  got = np.moveaxis(np.asarray(got) if video else np.asarray(got)[:, None], -1, 1)
  assert _rel(got, want) <= TOL
  # CFG's null half: force_drop_ids rows see the null caption (and its mask)
  want_null = ref.forward(sd, x, t, np.broadcast_to(null, tokens.shape),
                          np.broadcast_to(null_mask, mask.shape), heads=4)
  got_null = m.apply({"params": params}, jnp.asarray(xin, jnp.float32), jnp.asarray(t), y,
                     force_drop_ids=jnp.ones((n,), bool))
  got_null = np.moveaxis(np.asarray(got_null) if video else np.asarray(got_null)[:, None], -1, 1)
  assert _rel(got_null, want_null) <= TOL


def test_save_official_is_exact_inverse(tmp_path):
  sd = _official(4, True, True)
  m, params = models.load_official(sd, input_size=8, num_heads=4, num_frames=3)
  back = models.to_official(params, m)
  assert sorted(back) == sorted(sd)
  assert all(np.array_equal(back[k], sd[k]) for k in sd)
  models.save_official(tmp_path / "t2v.npz", params, m)
  m2, p2 = models.load_official(str(tmp_path / "t2v.npz"), input_size=8, num_heads=4,
                                num_frames=3)
  assert m2 == m
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, p2, params))


def test_load_official_t2v_buffers_and_errors():
  sd = dict(_official(4, True, True))
  sd["temp_pos_embed"] = ref.temp_pos_embed(32, 3)[None].astype(np.float32)
  sd["caption_projection.y_embedding"] = np.zeros((7, 12), np.float32)  # unused buffer
  m, _ = models.load_official(sd, input_size=8, num_heads=4)
  assert m.num_frames == 3
  with pytest.raises(ValueError, match="num_frames=5"):
    models.load_official(sd, input_size=8, num_heads=4, num_frames=5)
  bad = dict(_official(4, True, True))
  bad["transformer_blocks.1.attn2.to_k.weight"] = np.zeros((32, 31), np.float32)
  with pytest.raises(ValueError, match="misshaped keys"):
    models.load_official(bad, input_size=8, num_heads=4, num_frames=3)
  with pytest.raises(ValueError, match="pass num_heads"):
    models.load_official(_official(4, True, True), input_size=8, num_frames=3)
