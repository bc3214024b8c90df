"""Read and write flat `{name: numpy array}` weight files: .safetensors, .pt, .npz.

The safetensors format is small enough to read here without the `safetensors` package
(an 8-byte little-endian header length, a JSON header of {name: {dtype, shape,
data_offsets}}, then one raw little-endian buffer), so importing the released DiT /
Skip-DiT weights or the SD VAE needs no extra install. PyTorch pickles (.pt, .pth, .bin)
need torch, an optional extra.
"""
from __future__ import annotations

import json
import os
import struct

import ml_dtypes
import numpy as np

StateDict = dict[str, np.ndarray]

_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype(ml_dtypes.bfloat16), "I64": np.dtype("<i8"), "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"), "I8": np.dtype("i1"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("bool"),
}
_NAMES = {v: k for k, v in _DTYPES.items()}
_MAX_HEADER = 100 * 2 ** 20  # the format's own limit on the JSON header


def load_safetensors(path: str | os.PathLike) -> StateDict:
  """All tensors of a .safetensors file as numpy arrays (memory-mapped, read-only)."""
  path = os.fspath(path)
  with open(path, "rb") as f:
    raw = f.read(8)
    if len(raw) < 8:
      raise ValueError(f"{path}: not a safetensors file (shorter than its 8-byte header)")
    (n,) = struct.unpack("<Q", raw)
    if n > _MAX_HEADER:
      raise ValueError(f"{path}: not a safetensors file (header length {n} is implausible)")
    try:
      header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise ValueError(f"{path}: not a safetensors file (bad JSON header: {e})") from None
  buf = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    if info["dtype"] not in _DTYPES:
      raise ValueError(f"{path}: tensor {name!r} has dtype {info['dtype']}, which this "
                       f"reader does not know; known: {sorted(_DTYPES)}")
    dt = _DTYPES[info["dtype"]]
    begin, end = info["data_offsets"]
    shape = tuple(info["shape"])
    if end - begin != dt.itemsize * int(np.prod(shape)) or end > buf.size:
      raise ValueError(f"{path}: tensor {name!r} has offsets {begin}..{end} that do not fit "
                       f"shape {shape} of {info['dtype']} (file truncated?)")
    out[name] = buf[begin:end].view(dt).reshape(shape)
  return out


def save_safetensors(path: str | os.PathLike, tensors: StateDict,
                     metadata: dict[str, str] | None = None) -> None:
  """Write `tensors` as a .safetensors file (names sorted, data 8-byte aligned)."""
  header: dict = {"__metadata__": dict(metadata)} if metadata else {}
  arrays, offset = [], 0
  for name in sorted(tensors):
    a = np.ascontiguousarray(tensors[name])
    if a.dtype.newbyteorder("<") in _NAMES:
      a = a.astype(a.dtype.newbyteorder("<"), copy=False)
    if a.dtype not in _NAMES:
      raise ValueError(f"tensor {name!r} has dtype {a.dtype}; safetensors takes "
                       f"{sorted(str(d) for d in _NAMES)}")
    header[name] = {"dtype": _NAMES[a.dtype], "shape": list(a.shape),
                    "data_offsets": [offset, offset + a.nbytes]}
    arrays.append(a)
    offset += a.nbytes
  blob = json.dumps(header, separators=(",", ":")).encode()
  blob += b" " * (-len(blob) % 8)  # the format pads the header with spaces to 8 bytes
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(blob)))
    f.write(blob)
    for a in arrays:
      f.write(a.tobytes())


def load_torch(path: str | os.PathLike) -> StateDict:
  """A PyTorch checkpoint's tensors as float32/int numpy arrays (needs torch)."""
  try:
    import torch  # pylint: disable=import-outside-toplevel
  except ImportError:
    raise ImportError(f"reading {os.fspath(path)} needs PyTorch: `pip install torch` "
                      "(CPU wheels suffice), or convert the file to .safetensors") from None
  obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
  # A DiT training checkpoint nests {"model", "ema", "opt", "args"}; DiT samples from "ema".
  for key in ("ema", "model", "state_dict"):
    if isinstance(obj.get(key), dict):
      obj = obj[key]
      break
  out = {}
  for k, v in obj.items():
    if isinstance(v, torch.Tensor):
      # torch's numpy bridge has no bfloat16; float32 holds every bfloat16 value exactly.
      out[k] = (v.float() if v.dtype == torch.bfloat16 else v).numpy()
  return out


def load_state_dict(path: str | os.PathLike) -> StateDict:
  """Read a weight file by its extension: .safetensors, .pt/.pth/.bin (torch), .npz."""
  path = os.fspath(path)
  if not os.path.exists(path):
    raise FileNotFoundError(f"no weight file at {path}")
  ext = os.path.splitext(path)[1].lower()
  if ext == ".safetensors":
    return load_safetensors(path)
  if ext in (".pt", ".pth", ".bin", ".ckpt"):
    return load_torch(path)
  if ext == ".npz":
    with np.load(path) as z:
      return {k: z[k] for k in z.files}
  raise ValueError(f"{path}: unknown weight file extension {ext!r}; use .safetensors, "
                   ".pt/.pth (needs torch) or .npz")
