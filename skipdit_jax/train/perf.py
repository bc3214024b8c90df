"""Throughput accounting: XLA's FLOP count of a compiled program (the one counter; the
loop and `compile_plan.py` use it) and known device peaks."""
from __future__ import annotations

from typing import Any

import jax

# Dense bf16 peak FLOP/s per chip (vendor figures). MFU is reported against these
# whatever the compute dtype, so float32 runs read low, as they should.
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("tpu v6 lite", 918e12), ("tpu v6e", 918e12), ("tpu v5p", 459e12), ("tpu v5 lite", 197e12), ("tpu v5e", 197e12),
    ("tpu v4", 275e12), ("h200", 989e12), ("h100", 989e12), ("a100", 312e12),
)


def compiled_flops(compiled: Any) -> float | None:
  """FLOPs of one call of a `jax.jit(f).lower(...).compile()` result, per XLA; None if
  the backend does not say."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # some backends do not implement it; throughput is still logged
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  flops = (cost or {}).get("flops")
  return float(flops) if flops and flops > 0 else None


def peak_flops(device: jax.Device | None = None) -> float | None:
  """Peak bf16 FLOP/s of `device` (default: the first) if it is in the table, else None."""
  kind = (device or jax.devices()[0]).device_kind.lower()
  for name, peak in PEAK_BF16_FLOPS:
    if name in kind:
      return peak
  return None


def format_duration(seconds: float) -> str:
  """12345 -> '3h25m45s'; 75 -> '1m15s'."""
  s = int(round(max(seconds, 0.0)))
  h, rem = divmod(s, 3600)
  m, s = divmod(rem, 60)
  return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
