"""Train-step throughput of DiT and Skip-DiT beside a plain matmul, in one process.

Default: S/4 at 32x32x4, batch 8, learned sigma, 1000 classes, float32; the full train
step (forward with label dropout, hybrid loss, backward, clipped AdamW, EMA). FLOPs are
XLA's cost analysis of the compiled step; time is the median of `--repeats` timed steps
after `--warmup` untimed ones. The matmul ceiling is a float32 (n, n) @ (n, n) on random
data, measured before and after the models; the higher of the two is the reference.
`cpu_flops_fraction` repeats the comparison per CPU-second of this process, which other
jobs on a shared machine disturb far less than wall time.
Timed runs alternate between the models so that a load spike hits both alike. Ends with
  {"matmul_gflops": ..., "dit": {"img_per_s", "gflops", "flops_fraction", ...},
   "skipdit": {...}}

`--peer` also times our own PyTorch step (bench/peer_torch.py: the same model from the
same initial weights, the same hybrid loss, clipping, AdamW and EMA; eager float32) in
this process, interleaved with ours (JAX dit, torch dit, JAX skipdit, torch skipdit, per
repeat) on as many torch threads as JAX's CPU client has cores, and adds
  "torch": {"dit": {"img_per_s", "step_ms"}, ...}, "vs_torch": {"dit": r, "skipdit": r}
r = our images/s over torch's: the median over repeats of the two steps timed
back to back (a load spike then hits a pair alike). Needs torch (`pip install -e '.[peer]'`).

  python bench/train_throughput.py [--size S/4] [--batch 8] [--repeats 7] [--peer]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from skipdit_jax import diffusion as dfn  # noqa: E402
from skipdit_jax import models  # noqa: E402
from skipdit_jax.train import TrainState, lr_schedule, make_optimizer, make_train_step  # noqa: E402,E501
from skipdit_jax.train.perf import compiled_flops  # noqa: E402


def cpu_seconds() -> float:
  """CPU time of this process, all threads (user + system)."""
  r = resource.getrusage(resource.RUSAGE_SELF)
  return r.ru_utime + r.ru_stime


def matmul_gflops(n: int, repeats: int) -> tuple[float, float]:
  """Best-of-`repeats` float32 (n, n) @ (n, n): (GFLOP/s of wall time, GFLOP per
  CPU-second). The second is what a shared machine's load changes least."""
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.standard_normal((n, n), np.float32))
  b = jnp.asarray(rng.standard_normal((n, n), np.float32))
  f = jax.jit(jnp.matmul)
  jax.block_until_ready(f(a, b))
  best, best_cpu = float("inf"), float("inf")
  for _ in range(repeats):
    t0, c0 = time.perf_counter(), cpu_seconds()
    jax.block_until_ready(f(a, b))
    best = min(best, time.perf_counter() - t0)
    best_cpu = min(best_cpu, cpu_seconds() - c0)
  return 2.0 * n ** 3 / best / 1e9, 2.0 * n ** 3 / best_cpu / 1e9


class StepBench:
  """One model's compiled train step and its state, ready to time."""

  def __init__(self, name: str, args):
    self.model = models.create(name, input_size=args.image_size, in_channels=args.channels,
                               num_classes=1000, learn_sigma=True, dtype=args.dtype)
    train = ml_collections.ConfigDict(dict(
        lr=1e-4, warmup_steps=0, num_steps=1000, lr_schedule="constant", weight_decay=0.0,
        grad_clip=1.0, b1=0.9, b2=0.999))
    tx = make_optimizer(train)
    diffusion = dfn.Diffusion.create(dfn.betas_for("linear", 1000))
    self.state = TrainState.create(models.init_params(self.model, jax.random.PRNGKey(0)),
                                   tx, jax.random.PRNGKey(1))
    rng = np.random.default_rng(1)
    shape = (args.batch, args.image_size, args.image_size, args.channels)
    self.x = jnp.asarray(rng.standard_normal(shape, np.float32))
    self.y = jnp.asarray(rng.integers(0, 1000, args.batch), jnp.int32)
    step = make_train_step(self.model, diffusion, tx, lr_schedule(train), 0.9999)
    t0 = time.perf_counter()
    self.compiled = step.lower(self.state, self.x, self.y).compile()
    self.compile_s = time.perf_counter() - t0
    self.flops = compiled_flops(self.compiled)
    self.times: list[float] = []
    self.cpu_times: list[float] = []

  def run(self, timed: bool) -> None:
    t0, c0 = time.perf_counter(), cpu_seconds()
    self.state, metrics = self.compiled(self.state, self.x, self.y)
    jax.block_until_ready(metrics)
    if timed:
      self.times.append(time.perf_counter() - t0)
      self.cpu_times.append(cpu_seconds() - c0)


class TorchPeer:
  """The PyTorch peer of one StepBench: same model and initial weights, NCHW inputs."""

  def __init__(self, bench: StepBench):
    import peer_torch  # noqa: PLC0415 -- bench/ is on sys.path; torch is optional
    from skipdit_jax.models import convert  # noqa: PLC0415
    import torch  # noqa: PLC0415
    m = bench.model
    model = peer_torch.PeerDiT(input_size=m.input_size, patch=m.patch_size,
                               channels=m.in_channels, dim=m.hidden_size, depth=m.depth,
                               heads=m.num_heads, num_classes=m.num_classes,
                               learn_sigma=m.learn_sigma, long_skip=m.long_skip)
    peer_torch.load_official(model, convert.to_official(bench.state.params, m))
    self.step = peer_torch.PeerStep(model, num_classes=m.num_classes)
    self.x = torch.from_numpy(np.asarray(bench.x).transpose(0, 3, 1, 2).copy())
    self.y = torch.from_numpy(np.asarray(bench.y).astype(np.int64))
    self.times: list[float] = []

  def run(self, timed: bool) -> None:
    t0 = time.perf_counter()
    self.step.step(self.x, self.y)
    if timed:
      self.times.append(time.perf_counter() - t0)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--size", default="S/4", help="registry size/patch, e.g. S/4, B/2")
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--image_size", type=int, default=32)
  ap.add_argument("--channels", type=int, default=4)
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--warmup", type=int, default=2)
  ap.add_argument("--repeats", type=int, default=7)
  ap.add_argument("--matmul_n", type=int, default=2048)
  ap.add_argument("--peer", action="store_true",
                  help="also time our PyTorch step (bench/peer_torch.py) side by side")
  ap.add_argument("--torch_threads", type=int, default=0,
                  help="torch intra-op threads for --peer (default: the cores JAX uses)")
  args = ap.parse_args()
  if args.peer:
    try:
      import torch  # noqa: PLC0415
    except ImportError as e:
      raise SystemExit(f"--peer needs torch ({e}): pip install -e '.[peer]'") from e
    torch.set_num_threads(args.torch_threads or len(os.sched_getaffinity(0)))

  mm_before = matmul_gflops(args.matmul_n, 5)
  benches = {"dit": StepBench(f"DiT-{args.size}", args),
             "skipdit": StepBench(f"SkipDiT-{args.size}", args)}
  peers = {k: TorchPeer(b) for k, b in benches.items()} if args.peer else {}
  runners = [r for k in benches for r in (benches[k], peers.get(k)) if r is not None]
  for r in runners:
    for _ in range(args.warmup):
      r.run(timed=False)
  for _ in range(args.repeats):
    for r in runners:
      r.run(timed=True)
  mm_after = matmul_gflops(args.matmul_n, 5)
  mm = max(mm_before[0], mm_after[0])
  mm_cpu = max(mm_before[1], mm_after[1])

  result = {"matmul_gflops": mm,
            "matmul_gflops_before_after": [mm_before[0], mm_after[0]],
            "matmul_gflop_per_cpu_s": mm_cpu,
            "device": jax.devices()[0].device_kind, "host": platform.machine(),
            "batch": args.batch, "size": args.size, "dtype": args.dtype}
  for key, b in benches.items():
    t = float(np.median(b.times))
    gflops = b.flops / t / 1e9 if b.flops else None
    cpu_rate = b.flops / float(np.median(b.cpu_times)) / 1e9 if b.flops else None
    result[key] = {"img_per_s": args.batch / t, "step_ms": t * 1e3,
                   "gflops": gflops, "flops_fraction": gflops / mm if gflops else None,
                   "cpu_flops_fraction": cpu_rate / mm_cpu if cpu_rate else None,
                   "gflop_per_step": b.flops / 1e9 if b.flops else None,
                   "params": models.param_count(b.model), "compile_s": b.compile_s}
    print(f"{key:8s} {b.model.depth} blocks: {t * 1e3:7.1f} ms/step  "
          f"{args.batch / t:6.2f} img/s  {gflops or 0:6.1f} GFLOP/s "
          f"({(gflops or 0) / mm:.0%} of the {mm:.0f} GFLOP/s matmul; per CPU-second "
          f"{result[key]['cpu_flops_fraction'] or 0:.0%})", flush=True)
  if peers:
    import torch  # noqa: PLC0415
    result["torch"] = {"version": torch.__version__, "threads": torch.get_num_threads()}
    result["vs_torch"] = {}
    for key, p in peers.items():
      t = float(np.median(p.times))
      result["torch"][key] = {"img_per_s": args.batch / t, "step_ms": t * 1e3}
      ratio = float(np.median(np.asarray(p.times) / np.asarray(benches[key].times)))
      result["vs_torch"][key] = ratio
      print(f"{key:8s} torch: {t * 1e3:7.1f} ms/step  {args.batch / t:6.2f} img/s  "
            f"ours/torch images/s {ratio:.2f}x", flush=True)
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
