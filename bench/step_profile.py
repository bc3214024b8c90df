"""Where the S/4 train step's time goes on XLA:CPU: wall time per piece, then per HLO op.

Times, in one process, the jitted forward, `jax.grad` of a plain MSE, and the full train
step (bench/train_throughput.py's) of DiT and Skip-DiT; then traces `--profile` of them with
`jax.profiler` and sums the trace's events by HLO op name (each fusion / dot / copy the
XLA:CPU runtime runs is one event), printing the top ops with their HLO kind and shape.
`--dump DIR` also writes each compiled module's optimised HLO text there.

  python bench/step_profile.py [--size S/4] [--batch 8] [--profile step] [--top 25]

Prints one JSON object last: {"dit": {"fwd_ms", "grad_ms", "step_ms"}, ..., "ops": [...]}.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import sys
import tempfile
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


def build(name: str, args, kinds: tuple[str, ...]):
  """(compiled fwd, grad, step) and their inputs for one model."""
  model = models.create(name, input_size=args.image_size, in_channels=4, num_classes=1000,
                        learn_sigma=True)
  params = models.init_params(model, jax.random.PRNGKey(0))
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((args.batch, args.image_size, args.image_size, 4),
                                      np.float32))
  y = jnp.asarray(rng.integers(0, 1000, args.batch), jnp.int32)
  t = jnp.asarray(rng.integers(0, 1000, args.batch), jnp.int32)
  target = jnp.asarray(rng.standard_normal((args.batch, args.image_size, args.image_size, 8),
                                           np.float32))

  def fwd(p):
    return model.apply({"params": p}, x, t, y)

  def mse(p):
    return jnp.mean(jnp.square(fwd(p) - target))

  train = ml_collections.ConfigDict(dict(
      lr=1e-4, warmup_steps=0, num_steps=1000, lr_schedule="constant", weight_decay=0.0,
      grad_clip=1.0, b1=0.9, b2=0.999))
  tx = make_optimizer(train)
  diffusion = dfn.Diffusion.create(dfn.betas_for("linear", 1000))
  # The step donates its state: give it its own copy of the parameters.
  state = TrainState.create(jax.tree_util.tree_map(jnp.copy, params), tx,
                            jax.random.PRNGKey(1))
  step = make_train_step(model, diffusion, tx, lr_schedule(train), 0.9999)
  lower = {"fwd": lambda: (jax.jit(fwd).lower(params).compile(), (params,)),
           "grad": lambda: (jax.jit(jax.grad(mse)).lower(params).compile(), (params,)),
           "step": lambda: (step.lower(state, x, y).compile(), None)}
  fns = {k: lower[k]() for k in kinds}
  holder = {"state": state}

  def run(kind):
    c, a = fns[kind]
    if kind == "step":
      holder["state"], m = c(holder["state"], x, y)
      return jax.block_until_ready(m)
    return jax.block_until_ready(c(*a))
  return fns, run


def hlo_index(text: str) -> dict[str, str]:
  """op name -> 'opcode shape' (fusions: their kind, calls and root) from HLO text."""
  out = {}
  for line in text.splitlines():
    m = re.match(r"\s*(?:ROOT\s+)?%?([\w.\-]+) = (\S+(?: \S+)?) ([\w\-]+)\((.*)", line)
    if m:
      name, shape, opcode, rest = m.groups()
      kind = re.search(r"kind=(\w+)", rest)
      calls = re.search(r"calls=%?([\w.\-]+)", rest)
      out[name] = " ".join(filter(None, [opcode, kind and kind.group(1), shape[:60],
                                         calls and calls.group(1)]))
  return out


def trace_ops(run, kind: str, n: int) -> dict[str, float]:
  """Seconds per call by trace event name, over `n` calls under the profiler."""
  d = tempfile.mkdtemp(prefix="step_profile_")
  jax.profiler.start_trace(d, create_perfetto_trace=True)
  for _ in range(n):
    run(kind)
  jax.profiler.stop_trace()
  files = glob.glob(f"{d}/**/*.trace.json.gz", recursive=True)
  if not files:
    raise SystemExit(f"no perfetto trace under {d}")
  with gzip.open(files[0]) as f:
    events = json.load(f)
  events = events["traceEvents"] if isinstance(events, dict) else events
  tot = collections.defaultdict(float)
  for e in events:
    if e.get("ph") == "X" and "dur" in e:
      tot[e["name"]] += e["dur"] * 1e-6 / n
  return dict(tot)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--size", default="S/4")
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--image_size", type=int, default=32)
  ap.add_argument("--repeats", type=int, default=5)
  ap.add_argument("--models", default="dit,skipdit")
  ap.add_argument("--kinds", default="fwd,grad,step", help="what to time")
  ap.add_argument("--profile", default="step", help="fwd | grad | step | none")
  ap.add_argument("--top", type=int, default=25)
  ap.add_argument("--dump", default="", help="write each optimised HLO here")
  args = ap.parse_args()
  names = {"dit": f"DiT-{args.size}", "skipdit": f"SkipDiT-{args.size}"}
  result: dict = {"size": args.size, "batch": args.batch}
  kinds = tuple(args.kinds.split(","))
  built = {k: build(names[k], args, kinds) for k in args.models.split(",")}
  times = {k: {kind: [] for kind in kinds} for k in built}
  for k, (_, run) in built.items():
    for kind in kinds:
      run(kind)
  for _ in range(args.repeats):
    for k, (_, run) in built.items():
      for kind in kinds:
        t0 = time.perf_counter()
        run(kind)
        times[k][kind].append(time.perf_counter() - t0)
  for k in built:
    result[k] = {f"{kind}_ms": float(np.median(v)) * 1e3 for kind, v in times[k].items()}
    print(k, json.dumps(result[k]), flush=True)
  if args.dump:
    Path(args.dump).mkdir(parents=True, exist_ok=True)
    for k, (fns, _) in built.items():
      for kind, (c, _) in fns.items():
        Path(args.dump, f"{k}_{kind}.hlo.txt").write_text(c.as_text())
  if args.profile != "none":
    result["ops"] = {}
    for k, (fns, run) in built.items():
      index = hlo_index(fns[args.profile][0].as_text())
      ops = trace_ops(run, args.profile, max(args.repeats, 2))
      top = sorted(ops.items(), key=lambda kv: -kv[1])[:args.top]
      result["ops"][k] = [(name, round(s * 1e3, 2), index.get(name, "")) for name, s in top]
      print(f"--- {k} {args.profile}: top ops (ms per call)")
      for name, ms, what in result["ops"][k]:
        print(f"{ms:9.2f}  {name:40s} {what}")
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
