"""bench/accelerator.py in its CI size: runs, and its JSON line documents the figures."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_accelerator_bench_smoke_json():
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "bench/accelerator.py", "--smoke"], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert out["bench"] == "accelerator" and out["dtype"] == "bfloat16" and out["smoke"]
  for key in ("step_ms", "img_per_s", "compile_s"):
    assert isinstance(out[key], float) and out[key] > 0, key
  assert out["img_per_s"] == pytest.approx(out["batch"] / out["step_ms"] * 1e3)
  assert out["attention"] in ("xla", "cudnn", "flash") and out["loss_finite"] is True
  for key in ("flops_per_step", "peak_bf16_flops", "mfu", "peak_memory_bytes"):
    assert key in out and (out[key] is None or out[key] > 0), key
  if out["platform"] == "cpu":
    assert out["peak_bf16_flops"] is None and out["mfu"] is None  # CPU is not in the table
  s = out["sampler"]
  assert s["full_s"] > 0
  got = {(r["N"], r["k"]) for r in s["speedups"]}
  assert got == {(n, k) for n in (2, 3, 4) for k in (1, 2)}  # Tiny: depth 6, k < 3
  for r in s["speedups"]:
    # Skip-Cache ideal from block counts: every N-th of the steps full (6 blocks), the
    # others run 2k blocks
    full = -(-s["steps"] // r["N"])
    want = s["steps"] * 6 / (full * 6 + (s["steps"] - full) * 2 * r["k"])
    assert r["ideal"] == pytest.approx(want, rel=0.05) and r["measured"] > 0
