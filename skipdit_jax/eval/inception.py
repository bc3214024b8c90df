"""Inception-v3 pool features for standard FID, from pytorch-fid's weights.

The network is the FID variant of Inception-v3 that pytorch-fid builds around the
`pt_inception-2015-12-05` weights (the TF FID graph ported to PyTorch): average pools in
blocks A, C and E_1 exclude padding from the count, block E_2 max-pools, BatchNorm eps is
1e-3, convolutions have no bias. Images are resized to 299x299 (bilinear, half-pixel
centres, as `F.interpolate(align_corners=False)`) and fed in [-1, 1]; grey images are
repeated to 3 channels. The output is the 2048-d global average pool.

Weights come as a flat {PyTorch state_dict name: array} file, `.npz` or `.safetensors`.
Offline there is no torch; convert once where torch exists:
  python -c "import torch, numpy as np; sd = torch.load('pt_inception-2015-12-05-6726825d.pth');
             np.savez('pt_inception.npz', **{k: v.numpy() for k, v in sd.items()})"
The forward follows pytorch-fid's architecture; it has been checked for shapes and the
pooling rules here, but not against pytorch-fid's numbers (no weights or torch offline).
"""
from __future__ import annotations

import json
import os
import struct
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

Params = dict[str, jax.Array]

# (name, in, out, kernel (h, w), stride, padding (h, w)) of every BasicConv2d.
_STEM = [("Conv2d_1a_3x3", 3, 32, (3, 3), 2, (0, 0)),
         ("Conv2d_2a_3x3", 32, 32, (3, 3), 1, (0, 0)),
         ("Conv2d_2b_3x3", 32, 64, (3, 3), 1, (1, 1)),
         ("Conv2d_3b_1x1", 64, 80, (1, 1), 1, (0, 0)),
         ("Conv2d_4a_3x3", 80, 192, (3, 3), 1, (0, 0))]


def _block_a(i, pool):
  return [("branch1x1", i, 64, (1, 1), 1, (0, 0)), ("branch5x5_1", i, 48, (1, 1), 1, (0, 0)),
          ("branch5x5_2", 48, 64, (5, 5), 1, (2, 2)),
          ("branch3x3dbl_1", i, 64, (1, 1), 1, (0, 0)),
          ("branch3x3dbl_2", 64, 96, (3, 3), 1, (1, 1)),
          ("branch3x3dbl_3", 96, 96, (3, 3), 1, (1, 1)),
          ("branch_pool", i, pool, (1, 1), 1, (0, 0))]


def _block_b(i):
  return [("branch3x3", i, 384, (3, 3), 2, (0, 0)),
          ("branch3x3dbl_1", i, 64, (1, 1), 1, (0, 0)),
          ("branch3x3dbl_2", 64, 96, (3, 3), 1, (1, 1)),
          ("branch3x3dbl_3", 96, 96, (3, 3), 2, (0, 0))]


def _block_c(i, c7):
  r, c = ((1, 7), (0, 3)), ((7, 1), (3, 0))
  return [("branch1x1", i, 192, (1, 1), 1, (0, 0)), ("branch7x7_1", i, c7, (1, 1), 1, (0, 0)),
          ("branch7x7_2", c7, c7, r[0], 1, r[1]), ("branch7x7_3", c7, 192, c[0], 1, c[1]),
          ("branch7x7dbl_1", i, c7, (1, 1), 1, (0, 0)), ("branch7x7dbl_2", c7, c7, c[0], 1, c[1]),
          ("branch7x7dbl_3", c7, c7, r[0], 1, r[1]), ("branch7x7dbl_4", c7, c7, c[0], 1, c[1]),
          ("branch7x7dbl_5", c7, 192, r[0], 1, r[1]), ("branch_pool", i, 192, (1, 1), 1, (0, 0))]


def _block_d(i):
  return [("branch3x3_1", i, 192, (1, 1), 1, (0, 0)), ("branch3x3_2", 192, 320, (3, 3), 2, (0, 0)),
          ("branch7x7x3_1", i, 192, (1, 1), 1, (0, 0)),
          ("branch7x7x3_2", 192, 192, (1, 7), 1, (0, 3)),
          ("branch7x7x3_3", 192, 192, (7, 1), 1, (3, 0)),
          ("branch7x7x3_4", 192, 192, (3, 3), 2, (0, 0))]


def _block_e(i):
  return [("branch1x1", i, 320, (1, 1), 1, (0, 0)), ("branch3x3_1", i, 384, (1, 1), 1, (0, 0)),
          ("branch3x3_2a", 384, 384, (1, 3), 1, (0, 1)),
          ("branch3x3_2b", 384, 384, (3, 1), 1, (1, 0)),
          ("branch3x3dbl_1", i, 448, (1, 1), 1, (0, 0)),
          ("branch3x3dbl_2", 448, 384, (3, 3), 1, (1, 1)),
          ("branch3x3dbl_3a", 384, 384, (1, 3), 1, (0, 1)),
          ("branch3x3dbl_3b", 384, 384, (3, 1), 1, (1, 0)),
          ("branch_pool", i, 192, (1, 1), 1, (0, 0))]


_MIXED = [("Mixed_5b", "A", _block_a(192, 32)), ("Mixed_5c", "A", _block_a(256, 64)),
          ("Mixed_5d", "A", _block_a(288, 64)), ("Mixed_6a", "B", _block_b(288)),
          ("Mixed_6b", "C", _block_c(768, 128)), ("Mixed_6c", "C", _block_c(768, 160)),
          ("Mixed_6d", "C", _block_c(768, 160)), ("Mixed_6e", "C", _block_c(768, 192)),
          ("Mixed_7a", "D", _block_d(768)), ("Mixed_7b", "E1", _block_e(1280)),
          ("Mixed_7c", "E2", _block_e(2048))]


def conv_specs() -> dict[str, tuple]:
  """{"Mixed_5b.branch1x1": (in, out, kernel, stride, padding), ...} for every conv."""
  out = {c[0]: c[1:] for c in _STEM}
  for block, _, convs in _MIXED:
    for c in convs:
      out[f"{block}.{c[0]}"] = c[1:]
  return out


def expected_shapes() -> dict[str, tuple[int, ...]]:
  """Every state_dict entry the forward reads, with its PyTorch shape."""
  shapes = {}
  for name, (cin, cout, k, _, _) in conv_specs().items():
    shapes[f"{name}.conv.weight"] = (cout, cin) + tuple(k)
    for p in ("weight", "bias", "running_mean", "running_var"):
      shapes[f"{name}.bn.{p}"] = (cout,)
  return shapes


# ----------------------------------------------------------------------------- loading

_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
              "I32": np.int32}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """Reads a .safetensors file (u64 little-endian header size, JSON header, raw data)."""
  with open(path, "rb") as f:
    (size,) = struct.unpack("<Q", f.read(8))
    header = json.loads(f.read(size))
    blob = f.read()
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    dtype = info["dtype"]
    if dtype == "BF16":
      import ml_dtypes
      np_dtype = ml_dtypes.bfloat16
    elif dtype in _ST_DTYPES:
      np_dtype = _ST_DTYPES[dtype]
    else:
      raise ValueError(f"{path}: tensor {name} has dtype {dtype}, which this reader does "
                       f"not know ({sorted(_ST_DTYPES) + ['BF16']})")
    lo, hi = info["data_offsets"]
    out[name] = np.frombuffer(blob[lo:hi], np_dtype).reshape(info["shape"])
  return out


def read_weights(path: str) -> dict[str, np.ndarray]:
  """{state_dict name: array} from `.npz` or `.safetensors`."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"config.eval.inception_weights={path!r} does not exist")
  if path.endswith(".safetensors"):
    return read_safetensors(path)
  if path.endswith(".npz"):
    with np.load(path) as z:
      return {k: z[k] for k in z.files}
  raise ValueError(f"config.eval.inception_weights={path!r}: use a .npz or .safetensors of "
                   "pytorch-fid's pt_inception state_dict (see skipdit_jax/eval/inception.py "
                   "for the one-line conversion from the .pth file)")


def convert(state_dict: dict[str, np.ndarray]) -> Params:
  """Checks names/shapes and folds each BatchNorm into a per-channel scale and shift;
  conv kernels go from (out, in, kh, kw) to HWIO."""
  want = expected_shapes()
  missing = sorted(set(want) - set(state_dict))
  wrong = [f"{k}: {tuple(state_dict[k].shape)} != {v}" for k, v in want.items()
           if k in state_dict and tuple(state_dict[k].shape) != v]
  if missing or wrong:
    raise ValueError("these are not pytorch-fid's FID Inception weights: "
                     + (f"{len(missing)} entries missing (e.g. {missing[:3]}); " if missing else "")
                     + (f"shape mismatches: {wrong[:3]}" if wrong else ""))
  params = {}
  for name in conv_specs():
    g = lambda p: np.asarray(state_dict[f"{name}.{p}"], np.float64)
    scale = g("bn.weight") / np.sqrt(g("bn.running_var") + 1e-3)
    params[f"{name}.kernel"] = jnp.asarray(g("conv.weight").transpose(2, 3, 1, 0), jnp.float32)
    params[f"{name}.scale"] = jnp.asarray(scale, jnp.float32)
    params[f"{name}.shift"] = jnp.asarray(g("bn.bias") - g("bn.running_mean") * scale,
                                          jnp.float32)
  return params


# ----------------------------------------------------------------------------- forward

def _conv(params: Params, name: str, x: jax.Array) -> jax.Array:
  _, _, _, stride, (ph, pw) = conv_specs()[name]
  y = jax.lax.conv_general_dilated(x, params[f"{name}.kernel"], (stride, stride),
                                   ((ph, ph), (pw, pw)),
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return jax.nn.relu(y * params[f"{name}.scale"] + params[f"{name}.shift"])


def avg_pool_exclude_pad(x: jax.Array) -> jax.Array:
  """3x3, stride 1, pad 1 average that divides by the in-image count
  (PyTorch `count_include_pad=False`)."""
  pad = ((0, 0), (1, 1), (1, 1), (0, 0))
  win, ones = (1, 3, 3, 1), jnp.ones(x.shape[:3] + (1,), x.dtype)
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, win, (1, 1, 1, 1), pad)
  count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, win, (1, 1, 1, 1), pad)
  return total / count


def _max_pool(x: jax.Array, stride: int, pad: int = 0) -> jax.Array:
  p = ((0, 0), (pad, pad), (pad, pad), (0, 0))
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, stride, stride, 1), p)


def _mixed(params: Params, block: str, kind: str, x: jax.Array) -> jax.Array:
  c = lambda n, h: _conv(params, f"{block}.{n}", h)
  if kind == "A":
    return jnp.concatenate([
        c("branch1x1", x), c("branch5x5_2", c("branch5x5_1", x)),
        c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x))),
        c("branch_pool", avg_pool_exclude_pad(x))], -1)
  if kind == "B":
    return jnp.concatenate([
        c("branch3x3", x), c("branch3x3dbl_3", c("branch3x3dbl_2", c("branch3x3dbl_1", x))),
        _max_pool(x, 2)], -1)
  if kind == "C":
    b7 = c("branch7x7_3", c("branch7x7_2", c("branch7x7_1", x)))
    d = x
    for j in range(1, 6):
      d = c(f"branch7x7dbl_{j}", d)
    return jnp.concatenate([c("branch1x1", x), b7, d,
                            c("branch_pool", avg_pool_exclude_pad(x))], -1)
  if kind == "D":
    b7 = x
    for j in range(1, 5):
      b7 = c(f"branch7x7x3_{j}", b7)
    return jnp.concatenate([c("branch3x3_2", c("branch3x3_1", x)), b7, _max_pool(x, 2)], -1)
  b3 = c("branch3x3_1", x)
  dd = c("branch3x3dbl_2", c("branch3x3dbl_1", x))
  pool = avg_pool_exclude_pad(x) if kind == "E1" else _max_pool(x, 1, 1)
  return jnp.concatenate([c("branch1x1", x), c("branch3x3_2a", b3), c("branch3x3_2b", b3),
                          c("branch3x3dbl_3a", dd), c("branch3x3dbl_3b", dd),
                          c("branch_pool", pool)], -1)


def forward(params: Params, images: jax.Array, size: int = 299) -> jax.Array:
  """images (N, H, W, 1 or 3) in [-1, 1] -> pool features (N, 2048)."""
  x = images.astype(jnp.float32)
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  if x.shape[1:3] != (size, size):
    x = jax.image.resize(x, (x.shape[0], size, size, 3), "bilinear", antialias=False)
  for name, *_ in _STEM[:3]:
    x = _conv(params, name, x)
  x = _max_pool(x, 2)
  x = _conv(params, "Conv2d_3b_1x1", x)
  x = _max_pool(_conv(params, "Conv2d_4a_3x3", x), 2)
  for block, kind, _ in _MIXED:
    x = _mixed(params, block, kind, x)
  return x.mean(axis=(1, 2))


class InceptionFeatures:
  """Extractor for `eval.sample_quality`: `features(images) -> (N, 2048)` float64."""
  score_name = "FID"
  cache_tag = "FID-inception"

  def __init__(self, params: Params, batch_size: int = 50, size: int = 299):
    self.params, self.batch_size = params, batch_size
    self._fn: Callable = jax.jit(lambda p, x: forward(p, x, size))

  def features(self, images: np.ndarray) -> np.ndarray:
    outs = [np.asarray(self._fn(self.params, jnp.asarray(images[i:i + self.batch_size])),
                       np.float64) for i in range(0, len(images), self.batch_size)]
    return np.concatenate(outs)


def load_inception(path: str, **kwargs: Any) -> InceptionFeatures:
  """The extractor for a weights file (see the module docstring for the format)."""
  return InceptionFeatures(convert(read_weights(path)), **kwargs)
