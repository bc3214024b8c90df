"""How fast the train step could be if only its matmuls cost time, in JAX and in torch.

Lists every matmul of the S/4 train step from the model's own parameters (each 2-D
kernel, or the patch embedding read as one: rows = batch x tokens for token-wise layers,
batch for the conditioning ones; forward, input gradient and weight gradient) and the
attention's batched products (q k^T and p v, forward and both gradients), times each shape
alone (as a plain row-major product of its sizes; the step's transposed operands are not
reproduced), jitted in JAX (under the XLA_FLAGS of the process) and eager in torch on the same
threads, and sums shape time x count. Then times the two full train steps side by side
(bench/train_throughput.py's StepBench and TorchPeer, interleaved).

  ceiling = torch step time / our matmul-only time: the best `vs_torch` our step could
  reach if everything but its matmuls took no time at all on this host.

  python bench/dot_ceiling.py [--size S/4] [--batch 8] [--models dit,skipdit]

Needs torch (`pip install -e '.[peer]'`). Ends with one JSON object.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import train_throughput as tt  # noqa: E402  -- bench/ is sys.path[0]

# Conditioning layers: one row per example, not per token.
PER_EXAMPLE = ("adaLN_modulation", "t_embedder", "y_embedder")


def step_matmuls(params: dict, batch: int, tokens: int, heads: int, head_dim: int
                 ) -> collections.Counter:
  """(kind, shape) -> count per train step. kind "mm": (M, K) @ (K, N);
  kind "bmm": (B, T, d) @ (B, d, T') batched."""
  out: collections.Counter = collections.Counter()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    names = [str(getattr(k, "key", k)) for k in path]
    if names[-1] != "kernel":
      continue
    k, n = int(np.prod(leaf.shape[:-1])), int(leaf.shape[-1])
    m = batch if any(p in "/".join(names) for p in PER_EXAMPLE) else batch * tokens
    out[("mm", (m, k, n))] += 1                      # forward
    out[("mm", (k, m, n))] += 1                      # weight gradient: x^T g
    if "x_embedder" not in names:                    # the image needs no gradient
      out[("mm", (m, n, k))] += 1                    # input gradient: g W^T
  blocks = sum(1 for p in params if p.startswith("blocks_"))
  b = batch * heads
  # per block: S = q k^T and dP = dO v^T are (T, d) @ (d, T); O = P v and the gradients
  # dv = P^T dO, dq = dS k, dk = dS^T q are (T, T) @ (T, d).
  out[("bmm", (b, tokens, head_dim, tokens))] += 2 * blocks
  out[("bmm", (b, tokens, tokens, head_dim))] += 4 * blocks
  return out


def _median_time(fn, repeats: int) -> float:
  fn()
  ts = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    fn()
    ts.append(time.perf_counter() - t0)
  return float(np.median(ts))


def time_shapes(shapes, repeats: int) -> dict:
  """(kind, shape) -> {"jax_s", "torch_s", "gflop"} for one call."""
  import torch  # noqa: PLC0415
  rng = np.random.default_rng(0)
  f = jax.jit(jnp.matmul)
  out = {}
  for kind, shape in shapes:
    lead, (m, k, n) = (shape[:-3], shape[-3:]) if kind == "bmm" else ((), shape)
    a = rng.standard_normal((*lead, m, k), np.float32)
    b = rng.standard_normal((*lead, k, n), np.float32)
    gflop = 2 * int(np.prod(lead, dtype=np.int64)) * m * k * n / 1e9
    ja, jb = jnp.asarray(a), jnp.asarray(b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    out[(kind, shape)] = {
        "jax_s": _median_time(lambda: jax.block_until_ready(f(ja, jb)), repeats),
        "torch_s": _median_time(lambda: torch.matmul(ta, tb), repeats),
        "gflop": gflop}
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--size", default="S/4")
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--image_size", type=int, default=32)
  ap.add_argument("--channels", type=int, default=4)
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--models", default="dit,skipdit")
  ap.add_argument("--repeats", type=int, default=5, help="timed train steps per model")
  ap.add_argument("--shape_repeats", type=int, default=30)
  args = ap.parse_args()
  try:
    import torch  # noqa: PLC0415
  except ImportError as e:
    raise SystemExit(f"dot_ceiling needs torch ({e}): pip install -e '.[peer]'") from e
  torch.set_num_threads(len(os.sched_getaffinity(0)))
  names = {"dit": f"DiT-{args.size}", "skipdit": f"SkipDiT-{args.size}"}
  keys = args.models.split(",")
  benches = {k: tt.StepBench(names[k], args) for k in keys}
  peers = {k: tt.TorchPeer(b) for k, b in benches.items()}
  for _ in range(2):
    for k in keys:
      benches[k].run(timed=False)
      peers[k].run(timed=False)
  for _ in range(args.repeats):
    for k in keys:
      benches[k].run(timed=True)
      peers[k].run(timed=True)
  counts = {}
  for k, b in benches.items():
    m = b.model
    tokens = (m.input_size // m.patch_size) ** 2
    counts[k] = step_matmuls(b.state.params, args.batch, tokens, m.num_heads,
                             m.hidden_size // m.num_heads)
  shapes = sorted({s for c in counts.values() for s in c})
  timed = time_shapes(shapes, args.shape_repeats)
  result: dict = {"size": args.size, "batch": args.batch, "torch_threads":
                  torch.get_num_threads(), "xla_flags": os.environ.get("XLA_FLAGS", ""),
                  "load_avg_1m": os.getloadavg()[0]}
  for k in keys:
    jax_mm = sum(timed[s]["jax_s"] * c for s, c in counts[k].items())
    torch_mm = sum(timed[s]["torch_s"] * c for s, c in counts[k].items())
    gflop = sum(timed[s]["gflop"] * c for s, c in counts[k].items())
    ours = float(np.median(benches[k].times))
    theirs = float(np.median(peers[k].times))
    result[k] = {
        "matmul_gflop": gflop, "matmuls": sum(counts[k].values()),
        "ours_step_ms": ours * 1e3, "torch_step_ms": theirs * 1e3,
        "ours_matmul_only_ms": jax_mm * 1e3, "torch_matmul_only_ms": torch_mm * 1e3,
        "ours_matmul_gflops": gflop / jax_mm, "torch_matmul_gflops": gflop / torch_mm,
        "ours_rest_ms": (ours - jax_mm) * 1e3, "torch_rest_ms": (theirs - torch_mm) * 1e3,
        "vs_torch": theirs / ours, "ceiling_vs_torch": theirs / jax_mm}
    r = result[k]
    print(f"{k:8s} step ours {r['ours_step_ms']:6.0f} ms  torch {r['torch_step_ms']:6.0f} ms"
          f"  (vs_torch {r['vs_torch']:.2f}x) | matmuls alone ({gflop:.1f} GFLOP): ours "
          f"{r['ours_matmul_only_ms']:5.0f} ms ({r['ours_matmul_gflops']:.0f} GFLOP/s), torch "
          f"{r['torch_matmul_only_ms']:5.0f} ms ({r['torch_matmul_gflops']:.0f} GFLOP/s) | "
          f"rest ours {r['ours_rest_ms']:4.0f} ms, torch {r['torch_rest_ms']:4.0f} ms | "
          f"ceiling vs_torch {r['ceiling_vs_torch']:.2f}x", flush=True)
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
