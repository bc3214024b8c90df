"""Multi-head attention kernels selected by `model.attention`, and their availability.

  xla    `jax.nn.dot_product_attention(implementation="xla")`: runs everywhere; logits
         and softmax in float32 (`preferred_element_type`), probabilities cast back to
         the compute dtype for the value matmul.
  cudnn  the same call with `implementation="cudnn"`: cuDNN's fused (flash) attention on
         an NVIDIA GPU; 16-bit inputs only, head dim a multiple of 8 (<= 128, 256 on Hopper+).
  flash  the Pallas TPU flash-attention kernel shipped in `jax.experimental.pallas.ops.tpu`
         (float32 accumulation inside the kernel); TPU only.

`check_available` is the one place that says whether a choice can run here; the model
calls it when it is traced and config_check calls it at start, so an unavailable kernel
is a ValueError naming `model.attention` before any compute.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

ATTENTION_CHOICES = ("xla", "cudnn", "flash")
_FIX = "use model.attention='xla' (runs on every backend)"


def validate_name(name: str) -> None:
  if name not in ATTENTION_CHOICES:
    raise ValueError(f"model.attention={name!r} is not one of {', '.join(ATTENTION_CHOICES)}: "
                     f"{_FIX}")


def _is_nvidia_gpu(backend: str) -> bool:
  if backend != "gpu":
    return False
  try:
    return "cuda" in jax.devices("gpu")[0].client.platform_version.lower()
  except Exception:  # noqa: BLE001 -- an odd client: trust the backend name
    return True


def check_available(name: str, dtype: str, head_dim: int, backend: str | None = None) -> None:
  """Raise a ValueError naming `model.attention` (and the fix) when `name` cannot run with
  this compute `dtype` and `head_dim` on `backend` (default: JAX's default backend)."""
  validate_name(name)
  backend = jax.default_backend() if backend is None else backend
  if name == "cudnn":
    if not _is_nvidia_gpu(backend):
      raise ValueError(f"model.attention='cudnn' needs an NVIDIA GPU, but JAX's backend is "
                       f"{backend!r}: {_FIX}")
    if dtype not in ("bfloat16", "float16"):
      raise ValueError(f"model.attention='cudnn' takes 16-bit inputs only, but model.dtype="
                       f"{dtype!r}: set model.dtype='bfloat16' or {_FIX}")
    if head_dim % 8 or head_dim > 256:
      raise ValueError(f"model.attention='cudnn' needs a head dim (hidden_size/num_heads) "
                       f"that is a multiple of 8 and <= 256, got {head_dim}: {_FIX}")
  elif name == "flash":
    if backend != "tpu":
      raise ValueError(f"model.attention='flash' is the Pallas TPU kernel, but JAX's "
                       f"backend is {backend!r}: {_FIX} (or 'cudnn' on an NVIDIA GPU)")
    try:
      from jax.experimental.pallas.ops.tpu import flash_attention  # noqa: F401
    except ImportError as e:
      raise ValueError(f"model.attention='flash': this JAX ({jax.__version__}) ships no "
                       f"Pallas TPU flash attention ({e}): {_FIX}") from e


def best_available(dtype: str, head_dim: int) -> str:
  """The fastest choice that `check_available` accepts here (cudnn > flash > xla)."""
  for name in ("cudnn", "flash"):
    try:
      check_available(name, dtype, head_dim)
      return name
    except ValueError:
      pass
  return "xla"


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array, name: str = "xla"
                          ) -> jax.Array:
  """Softmax(q k^T / sqrt(hd)) v over the token axis. q, k, v: (B, T, H, hd) -> (B, T, H, hd)
  in q's dtype; the logits and the softmax are float32 whatever the input dtype."""
  if name in ("xla", "cudnn"):
    return jax.nn.dot_product_attention(q, k, v, implementation=name)
  validate_name(name)
  from jax.experimental.pallas.ops.tpu.flash_attention import flash_attention
  hd = q.shape[-1]
  to_bhtd = lambda a: jnp.swapaxes(a, 1, 2)
  out = flash_attention(to_bhtd(q), to_bhtd(k), to_bhtd(v), sm_scale=hd ** -0.5)
  return to_bhtd(out).astype(q.dtype)
