"""An independent float64 numpy Latte / Skip-Latte forward in the official layout
(shared/docs/VIDEO.md §1.2-1.3): frames folded into the batch, spatial blocks on
(N·F, P, D), temporal blocks on (N·P, F, D), the conditioning repeated per frame or per
patch, `temp_embed` added after spatial block 0, one skip fusion per deep block pair.

Reads official state_dict names and layouts, shares no code with `skipdit_jax.models`
(only the DiT block / fusion / head maths of `reference_dit`). Inputs (N, F, H, W, C).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

import reference_dit as R


def temp_embed(dim: int, frames: int) -> np.ndarray:
  """MAE 1-D sin-cos over frame index 0..F-1: (F, dim), sin half first."""
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  out = np.outer(np.arange(frames, dtype=np.float64), omega)
  return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def forward(sd: dict, x, t, y, *, patch: int, heads: int, long_skip: bool,
            replace: Optional[dict] = None, record: Optional[dict] = None) -> np.ndarray:
  """x (N, F, H, W, C) -> (N, F, H, W, C_out), float64.

  replace: {u: (N·F, P, D)} sets the hidden state entering block pair u (before its
    fusion; u = pairs means entering the final layer). record receives the state
    entering every pair (after any replacement). Both in the official (N·F, P, D) layout.
  """
  x = np.asarray(x, np.float64)
  n, f = x.shape[:2]
  depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
  pairs = depth // 2
  d = np.shape(sd["x_embedder.proj.weight"])[0]
  if "y_embedder.embedding_table.weight" not in sd:  # unconditional: c = t embedding
    sd = dict(sd, **{"y_embedder.embedding_table.weight": np.zeros((1, d))})
    y = np.zeros((n,), np.int64)
  # timestep_spatial / y_spatial: one copy per frame, (N·F, D)
  h, c_sp = R.embed(sd, x.reshape((n * f,) + x.shape[2:]), np.repeat(np.asarray(t), f),
                    np.repeat(np.asarray(y), f), patch)
  p = h.shape[1]
  c_tm = np.repeat(c_sp.reshape(n, f, d)[:, 0], p, axis=0)  # one copy per patch, (N·P, D)
  replace = replace or {}
  stack = []

  def enter(u, h):
    h = np.asarray(replace[u], np.float64) if u in replace else h
    if record is not None:
      record[u] = h
    return h

  for u in range(pairs):
    h = enter(u, h)
    if long_skip and u >= pairs // 2:
      h = R.fuse(sd, u - pairs // 2, h, stack.pop())
    h = R.block(sd, 2 * u, h, c_sp, heads)
    h = h.reshape(n, f, p, d).transpose(0, 2, 1, 3).reshape(n * p, f, d)
    if u == 0:
      h = h + temp_embed(d, f)[None]
    h = R.block(sd, 2 * u + 1, h, c_tm, heads)
    h = h.reshape(n, p, f, d).transpose(0, 2, 1, 3).reshape(n * f, p, d)
    if long_skip and u < pairs // 2:
      stack.append(h)
  out = R.head(sd, enter(pairs, h), c_sp, patch)
  return out.reshape((n, f) + out.shape[1:])


def random_state_dict(rng: np.random.Generator, *, hidden: int, depth: int, frames: int,
                      input_size: int, channels: int, patch: int, num_classes: int,
                      long_skip: bool, learn_sigma: bool = True) -> dict:
  """A random official-format Latte state_dict (key list of VIDEO.md §1.6), every tensor
  non-zero so that each weight reaches the output; float32 as the released files."""
  d, c = hidden, channels
  shapes = {"x_embedder.proj.weight": (d, c, patch, patch), "x_embedder.proj.bias": (d,),
            "t_embedder.mlp.0.weight": (d, 256), "t_embedder.mlp.0.bias": (d,),
            "t_embedder.mlp.2.weight": (d, d), "t_embedder.mlp.2.bias": (d,)}
  if num_classes:
    shapes["y_embedder.embedding_table.weight"] = (num_classes + 1, d)
  for j in range(depth // 4 if long_skip else 0):
    shapes.update({f"skip_norms.{j}.weight": (2 * d,), f"skip_norms.{j}.bias": (2 * d,),
                   f"skip_linears.{j}.linear.weight": (d, 2 * d),
                   f"skip_linears.{j}.linear.bias": (d,)})
  for i in range(depth):
    for name, shape in (("attn.qkv", (3 * d, d)), ("attn.proj", (d, d)),
                        ("mlp.fc1", (4 * d, d)), ("mlp.fc2", (d, 4 * d)),
                        ("adaLN_modulation.1", (6 * d, d))):
      shapes[f"blocks.{i}.{name}.weight"] = shape
      shapes[f"blocks.{i}.{name}.bias"] = shape[:1]
  c_out = 2 * c if learn_sigma else c
  shapes.update({"final_layer.linear.weight": (patch * patch * c_out, d),
                 "final_layer.linear.bias": (patch * patch * c_out,),
                 "final_layer.adaLN_modulation.1.weight": (2 * d, d),
                 "final_layer.adaLN_modulation.1.bias": (2 * d,)})
  sd = {}
  for k, shape in shapes.items():
    scale = 1.0 if k.startswith("skip_norms") and k.endswith("weight") else 0.0
    fan_in = shape[1] if len(shape) > 1 else 1
    sd[k] = (scale + rng.normal(0, 1 / np.sqrt(max(fan_in, 4)), shape)).astype(np.float32)
  grid = input_size // patch
  sd["pos_embed"] = R.pos_embed_2d(d, grid)[None].astype(np.float32)
  sd["temp_embed"] = temp_embed(d, frames)[None].astype(np.float32)
  return sd
