"""Cached sampling of a scanned model vs the same weights unrolled: compile and step time.

For each cache policy the sampler runs twice on the scanned model (`model.scan_blocks`,
stacked parameters: the cached ranges slice the stack; FORA unstacks inside its steps)
and twice on the unrolled model with the unstacked parameters (what a sampler that
unstacks once would run). The first call compiles, the second is steady; compile =
first - second. Both layouts start from the same noise; `max_rel_diff` is their largest
sample difference over the sample scale. Prints one JSON object.

  python bench/scan_sampler.py [--depth 28] [--width 128] [--steps 10] [--batch 4]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

import jax
import jax.numpy as jnp
import numpy as np

from skipdit_jax import diffusion as D
from skipdit_jax import models, sampling
from skipdit_jax.models import scan

POLICIES = {True: ("none", "skip_cache", "skip_cache_forecast", "fora", "delta_dit"),
            False: ("deep_cache",)}


def _run(smp, params, x, y) -> tuple[float, np.ndarray]:
  t0 = time.perf_counter()
  out = jax.block_until_ready(smp.sample(params, x, y, jax.random.key(1)))
  return time.perf_counter() - t0, np.asarray(out)


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("--depth", type=int, default=28)
  ap.add_argument("--width", type=int, default=128)
  ap.add_argument("--size", type=int, default=8)
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--batch", type=int, default=4)
  ap.add_argument("--interval", type=int, default=2)
  ap.add_argument("--k", type=int, default=2)
  a = ap.parse_args()
  base = D.Diffusion.create(D.betas_for("linear", 1000))
  spaced = D.respace(base, a.steps)
  solver = sampling.SolverConfig(sampler="ddim", cfg_scale=1.5)
  rows = []
  for long_skip, policies in POLICIES.items():
    model = models.create("SkipDiT-S/2" if long_skip else "DiT-S/2", input_size=a.size,
                          in_channels=4, num_classes=10, depth=a.depth, hidden_size=a.width,
                          num_heads=4)
    params = models.init_params(model, jax.random.key(0))
    # adaLN-Zero starts every block as the identity; perturb so the blocks do something.
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(2), len(leaves))
    params = jax.tree.unflatten(tree, [p + 0.02 * jax.random.normal(k, p.shape)
                                       for p, k in zip(leaves, keys)])
    scanned = model.clone(scan_blocks=True)
    stacked = scan.stack_params(params, model.depth, long_skip)
    x = jax.random.normal(jax.random.key(3), (a.batch, a.size, a.size, 4))
    y = jnp.arange(a.batch, dtype=jnp.int32) % 10
    for policy in policies:
      row = {"policy": policy}
      outs = {}
      for name, m, p in (("unrolled", model, params), ("scanned", scanned, stacked)):
        plan = sampling.make_plan(m, spaced, policy, interval=a.interval, k=a.k,
                                  delta_blocks=a.k, delta_switch_t=500)
        smp = sampling.Sampler(m, spaced, plan, solver)
        first, _ = _run(smp, p, x, y)
        steady, outs[name] = _run(smp, p, x, y)
        row[f"{name}_compile_s"] = round(first - steady, 2)
        row[f"{name}_step_ms"] = round(1e3 * steady / a.steps, 2)
      row["ideal_speedup"] = round(plan.ideal_speedup, 3)
      ref = outs["unrolled"]
      row["max_rel_diff"] = float(np.abs(outs["scanned"] - ref).max() / np.abs(ref).max())
      rows.append(row)
      print(row, flush=True)
  print(json.dumps({"bench": "scan_sampler", "args": vars(a), "rows": rows,
                    "backend": jax.default_backend(), "cpus": os.cpu_count(),
                    "machine": platform.machine(), "load_avg": os.getloadavg()[0]}))


if __name__ == "__main__":
  main()
