"""Reader for the IDX format of (Fashion-)MNIST, plain or gzip-compressed.

An IDX file is a big-endian header `0x00 0x00 <dtype code> <ndim>`, then `ndim`
uint32 dimension sizes, then the row-major data.
"""
import gzip
import os

import numpy as np

# dtype code -> big-endian numpy dtype (from the IDX format description).
_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def parse_idx(data: bytes, *, name: str = "<bytes>") -> np.ndarray:
  """Decodes the bytes of one IDX file to an array of its native shape."""
  if len(data) < 4 or data[0] != 0 or data[1] != 0:
    raise ValueError(f"{name}: not an IDX file (the first two bytes must be zero)")
  code, ndim = data[2], data[3]
  if code not in _DTYPES:
    raise ValueError(f"{name}: unknown IDX dtype code 0x{code:02x}; "
                     f"known: {sorted(hex(c) for c in _DTYPES)}")
  header = 4 + 4 * ndim
  if len(data) < header:
    raise ValueError(f"{name}: truncated IDX header ({len(data)} bytes, need {header})")
  shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
  dtype = _DTYPES[code]
  expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
  if len(data) != expected:
    raise ValueError(f"{name}: IDX shape {shape} of {dtype} needs {expected} bytes, "
                     f"file has {len(data)}")
  arr = np.frombuffer(data, dtype, offset=header).reshape(shape)
  return arr.astype(dtype.newbyteorder("="))  # native byte order, writable copy


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an IDX file; a name ending in `.gz` is decompressed first."""
  path = os.fspath(path)
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    return parse_idx(f.read(), name=path)
