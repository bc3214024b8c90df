"""Skip-Cache sampler speed: full vs cached 50-step DDIM, measured against the ideal.

Default: Skip-DiT S/4 on 32x32x4 inputs, batch 8, 50 DDIM steps, k = 1, N = 2, 3, 4,
every time from this one process. Runs are interleaved (full, N=2, N=3, N=4, full, ...)
and the fastest of `--repeats` is kept, so a load spike hits all configurations alike.
Prints one line per N and ends with a JSON line:
  {"speedups": [{"N": 2, "k": 1, "measured": ..., "ideal": ...}, ...], ...}

  python bench/sampler_speed.py [--fused] [--repeats 3] [--model SkipDiT-S/4]
  python bench/sampler_speed.py --config configs/digits_skipdit.py --execution both

`--config` takes the model, batch (`sample.batch_size`), steps, CFG scale, x0 clipping,
policy, k and interval from an experiment config (the demo's sampling exactly, on random
weights: the cost does not depend on them); `--execution both` times the step loop and
the fused loops side by side in one process (`fused_vs_loop` in the JSON).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from skipdit_jax import diffusion as D
from skipdit_jax import models, sampling


def _timed(fn, *args) -> float:
  t0 = time.perf_counter()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - t0


def _timed_cpu(fn, *args) -> tuple[float, float]:
  """(wall, process CPU) seconds. CPU time counts this process's threads only, so on a
  shared machine it is less bent by other jobs than wall time (both are reported)."""
  w, c = time.perf_counter(), time.process_time()
  jax.block_until_ready(fn(*args))
  return time.perf_counter() - w, time.process_time() - c


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--model", default="SkipDiT-S/4")
  ap.add_argument("--batch", type=int, default=8)
  ap.add_argument("--steps", type=int, default=50)
  ap.add_argument("--k", type=int, default=1)
  ap.add_argument("--intervals", default="2,3,4")
  ap.add_argument("--policy", default="skip_cache")
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--fused", action="store_true", help="time Sampler.sample_fused")
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--config", default=None,
                  help="an experiment config (configs/*.py[:arg]): its model and sampling")
  ap.add_argument("--execution", default=None, choices=("loop", "fused", "both"),
                  help="the step loop, the fused loops, or both side by side "
                       "(default: fused with --fused, else loop)")
  args = ap.parse_args()
  executions = {"both": ("loop", "fused"), None: ("fused",) if args.fused else ("loop",)}.get(
      args.execution, (args.execution,))

  cfg_scale, clip = 1.0, False
  if args.config:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from study import load_config  # pylint: disable=import-outside-toplevel
    from skipdit_jax.train import build_model  # pylint: disable=import-outside-toplevel
    config = load_config(args.config, {})
    model = build_model(config)
    s = config.sample
    args.model, args.batch, args.steps = config.model.name, s.batch_size, s.num_steps
    cfg_scale, clip = float(s.cfg_scale), bool(s.get("clip_denoised", False))
    if s.cache.policy != "none":
      args.policy, args.k = s.cache.policy, s.cache.k
    num_classes = max(int(config.data.num_classes), 1)
  else:
    model = models.create(args.model, input_size=32, in_channels=4, num_classes=1000,
                          dtype=args.dtype)
    num_classes = 1000
  params = jax.jit(lambda k: models.init_params(model, k))(jax.random.key(0))
  # A fresh model is zero at the output; perturb so the numbers flow as in a trained one
  # (the cost does not depend on it, the cache/no-cache agreement printed below does).
  leaves, tree = jax.tree_util.tree_flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree_util.tree_unflatten(
      tree, [l + 0.02 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)])
  base = D.Diffusion.create(D.betas_for("linear", 1000))
  spaced = D.respace(base, args.steps)
  solver = sampling.SolverConfig(sampler="ddim", eta=0.0, cfg_scale=cfg_scale,
                                 clip_denoised=clip)
  x = jax.random.normal(jax.random.key(2), (args.batch, *model.sample_shape))
  y = jnp.arange(args.batch, dtype=jnp.int32) % num_classes
  rng = jax.random.key(3)

  intervals = [int(n) for n in args.intervals.split(",")]
  configs = {"full": sampling.make_plan(model, spaced, "none")}
  for n in intervals:
    configs[n] = sampling.make_plan(model, spaced, args.policy, interval=n, k=args.k)
  runners, outputs = {}, {}
  t_compile = time.perf_counter()
  for ex in executions:
    for name, plan in configs.items():
      s = sampling.get_sampler(model, spaced, plan, solver)
      runners[ex, name] = s.sample_fused if ex == "fused" else s.sample
      outputs[ex, name] = np.asarray(runners[ex, name](params, x, y, rng))  # compile
  t_compile = time.perf_counter() - t_compile

  # Interleaved (every execution and plan once per repeat), the fastest of the repeats.
  best_all = {key: float("inf") for key in runners}
  best_cpu_all = dict(best_all)
  for _ in range(args.repeats):
    for key, run in runners.items():
      wall, cpu = _timed_cpu(run, params, x, y, rng)
      best_all[key], best_cpu_all[key] = min(best_all[key], wall), min(best_cpu_all[key], cpu)
  by_execution = {ex: {"full_s": round(best_all[ex, "full"], 4), "speedups": {
      str(n): round(best_all[ex, "full"] / best_all[ex, n], 4) for n in intervals}}
                  for ex in executions}
  # The per-N figures below are for the faster execution of the uncached sampler.
  ex0 = min(executions, key=lambda ex: best_all[ex, "full"])
  best = {name: best_all[ex0, name] for name in configs}
  best_cpu = {name: best_cpu_all[ex0, name] for name in configs}
  outputs = {name: outputs[ex0, name] for name in configs}

  # One full and one cached step alone (the plain loop's programs), for the overhead.
  s = sampling.get_sampler(model, spaced, configs[intervals[0]], solver)
  cache = s.empty_cache(params, x, y)
  i = jnp.int32(10)
  _, cache = jax.block_until_ready(s.full_step(params, x, i, y, rng, cache))
  step = s.cached_steps["cached"]
  jax.block_until_ready(step(params, x, i, y, rng, cache, s.aux))
  full_ms = min(_timed(s.full_step, params, x, i, y, rng, cache) for _ in range(5)) * 1e3
  cached_ms = min(_timed(step, params, x, i, y, rng, cache, s.aux) for _ in range(5)) * 1e3

  def flops(fn, *a):
    c = fn.lower(*a).compile().cost_analysis()
    return float((c[0] if isinstance(c, (list, tuple)) else c)["flops"])
  full_flops = flops(s.full_step, params, x, i, y, rng, cache)
  cached_flops = flops(step, params, x, i, y, rng, cache, s.aux)

  print(f"{args.model} batch {args.batch}, {args.steps} DDIM steps, policy {args.policy}, "
        f"k={args.k}, cfg {cfg_scale}, {'fused fori_loop' if ex0 == 'fused' else 'step loop'}, "
        f"{jax.devices()[0].device_kind}; load avg {os.getloadavg()[0]:.2f}")
  print(f"full sampler {best['full']:.3f} s ({best['full'] / args.steps * 1e3:.1f} ms/step);"
        f" one full step {full_ms:.1f} ms, one cached step {cached_ms:.1f} ms")
  speedups = []
  for n in intervals:
    plan = configs[n]
    measured = best["full"] / best[n]
    # The same ratio from XLA's FLOP counts of the two programs (embed, head, update incl.)
    flop_ideal = sum(full_flops if a == sampling.FULL else cached_flops
                     for a in configs["full"].actions) / sum(
                         full_flops if a == sampling.FULL else cached_flops
                         for a in plan.actions)
    # The loop speedup the two single-step times predict: below `ideal` it is the cached
    # step's extra work (embed, head, update, lower efficiency of a small program); the
    # gap from there to `measured` is the loop (dispatch, contention between runs).
    n_full = sum(a == sampling.FULL for a in plan.actions)
    from_steps = plan.num_steps * full_ms / (n_full * full_ms + (plan.num_steps - n_full)
                                             * cached_ms)
    diff = outputs[n] - outputs["full"]
    rel = float(np.linalg.norm(diff) / np.linalg.norm(outputs["full"]))
    speedups.append({"N": n, "k": args.k, "measured": round(measured, 4),
                     "ideal": round(plan.ideal_speedup, 4),
                     "ideal_xla_flops": round(flop_ideal, 4),
                     "predicted_from_step_times": round(from_steps, 4),
                     "fraction_of_ideal": round(measured / plan.ideal_speedup, 4),
                     "cached_s": round(best[n], 4),
                     "measured_cpu_time": round(best_cpu["full"] / best_cpu[n], 4), "rel_diff_vs_full": round(rel, 5)})
    print(f"N={n}: cached {best[n]:.3f} s, measured {measured:.2f}x, ideal "
          f"{plan.ideal_speedup:.2f}x ({100 * measured / plan.ideal_speedup:.0f}% of ideal; "
          f"XLA-FLOP ideal {flop_ideal:.2f}x; from single-step times {from_steps:.2f}x; "
          f"by process CPU time "
          f"{best_cpu['full'] / best_cpu[n]:.2f}x)")
  result = {"bench": "sampler_speed", "model": args.model, "batch": args.batch,
            "steps": args.steps, "policy": args.policy, "fused": ex0 == "fused",
            "cfg_scale": cfg_scale, "config": args.config, "by_execution": by_execution,
            "device": jax.devices()[0].device_kind, "platform": platform.node(),
            "load_avg_1m": round(os.getloadavg()[0], 2), "compile_s": round(t_compile, 1),
            "full_s": round(best["full"], 4), "full_cpu_s": round(best_cpu["full"], 4), "full_step_ms": round(full_ms, 2),
            "cached_step_ms": round(cached_ms, 2), "full_step_gflop": round(full_flops / 1e9, 3),
            "cached_step_gflop": round(cached_flops / 1e9, 3), "speedups": speedups}
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
