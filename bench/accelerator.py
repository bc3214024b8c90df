"""Accelerator figures: bf16 train step (best attention kernel) and Skip-Cache speedups.

On whatever devices JAX sees (the first device; single-device program): the largest size
in `SIZES` whose train step fits (DiT-XL/2-class Skip-DiT at batch 256 first on a GPU/TPU;
a tiny model on CPU or with --smoke), in bfloat16 with `attention.best_available`
(cudnn > flash > xla). Reports step time, images/s, MFU against `perf.PEAK_BF16_FLOPS`
(unknown device kinds: null), peak device memory (`memory_stats`, null where absent), and
the Skip-Cache sampler's measured vs ideal speedups at N = 2, 3, 4 and k = 1..4 (k below
depth/2). Ends with one JSON line.

  python bench/accelerator.py            # auto: XL/2 on an accelerator, --smoke on CPU
  python bench/accelerator.py --smoke    # CI size, < 3 min on a 2-core CPU
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from skipdit_jax import diffusion as D
from skipdit_jax import models, sampling, train
from skipdit_jax.models import attention
from skipdit_jax.train import perf

# (registry name, global batch, remat), largest first; the first that compiles and runs wins.
SIZES = (("SkipDiT-XL/2", 256, "dots_no_batch"), ("SkipDiT-XL/2", 64, "dots_no_batch"),
         ("SkipDiT-L/2", 64, "dots_no_batch"), ("SkipDiT-B/2", 64, "none"),
         ("SkipDiT-S/2", 32, "none"))
SMOKE = (("SkipDiT-Tiny/4", 4, "none"),)


def _train_config(lr: float = 1e-4) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(lr=lr, warmup_steps=0, lr_schedule="constant",
                                        weight_decay=0.0, grad_clip=0.0, b1=0.9, b2=0.999,
                                        num_steps=1000, ema_decay=0.9999))


def _model(name: str, remat: str, smoke: bool) -> models.DiT:
  _, size, _ = models.parse_name(name)
  hd = models.SIZES[size][1] // models.SIZES[size][2]
  return models.create(name, input_size=32, in_channels=4, num_classes=1000,
                       dtype="bfloat16", remat=remat, attention=attention.best_available(
                           "bfloat16", hd))


def _peak_memory() -> int | None:
  try:
    stats = jax.devices()[0].memory_stats() or {}
  except Exception:  # noqa: BLE001 -- backends without memory stats
    return None
  v = stats.get("peak_bytes_in_use")
  return int(v) if v is not None else None


def bench_train(model: models.DiT, batch: int, steps: int) -> dict:
  """Median step time of the trainer's own jitted step (hybrid loss, AdamW, EMA)."""
  tc = _train_config()
  tx, schedule = train.make_optimizer(tc), train.lr_schedule(tc)
  diffusion = D.Diffusion.create(D.betas_for("linear", 1000))
  state = jax.jit(lambda: train.TrainState.create(
      models.init_params(model, jax.random.PRNGKey(0)), tx, jax.random.PRNGKey(1)))()
  fn = jax.jit(lambda s, x, y: train.train_step(
      s, x, y, model=model, diffusion=diffusion, tx=tx, schedule=schedule,
      ema_decay=tc.ema_decay), donate_argnums=0)
  x = jax.random.normal(jax.random.PRNGKey(2), (batch, 32, 32, 4), jnp.float32)
  y = jnp.arange(batch, dtype=jnp.int32) % 1000
  t0 = time.perf_counter()
  compiled = fn.lower(state, x, y).compile()
  compile_s = time.perf_counter() - t0
  flops = perf.compiled_flops(compiled)
  state, m = compiled(state, x, y)  # warm-up (and the out-of-memory test)
  jax.block_until_ready(m)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    state, m = compiled(state, x, y)
    jax.block_until_ready(m)
    times.append(time.perf_counter() - t0)
  t = float(np.median(times))
  peak = perf.peak_flops()
  return {"step_ms": t * 1e3, "img_per_s": batch / t, "compile_s": compile_s,
          "flops_per_step": flops, "peak_bf16_flops": peak,
          "mfu": flops / t / peak if flops and peak else None,
          "loss_finite": bool(np.isfinite(float(m["loss"])))}


def bench_sampler(model: models.DiT, batch: int, steps: int, repeats: int) -> dict:
  """Full vs Skip-Cache DDIM (`steps` steps), best of `repeats`, N = 2..4, k = 1..4."""
  params = jax.jit(lambda k: models.init_params(model, k))(jax.random.PRNGKey(0))
  leaves, tree = jax.tree.flatten(params)  # open the zero-initialised gates
  keys = jax.random.split(jax.random.PRNGKey(1), len(leaves))
  params = jax.tree.unflatten(tree, [p + 0.02 * jax.random.normal(k, p.shape)
                                     for p, k in zip(leaves, keys)])
  spaced = D.respace(D.Diffusion.create(D.betas_for("linear", 1000)), steps)
  solver = sampling.SolverConfig(sampler="ddim", eta=0.0, cfg_scale=1.0)
  x = jax.random.normal(jax.random.PRNGKey(2), (batch, 32, 32, 4))
  y = jnp.arange(batch, dtype=jnp.int32) % 1000
  rng = jax.random.PRNGKey(3)
  plans = {"full": sampling.make_plan(model, spaced, "none")}
  for n in (2, 3, 4):
    for k in range(1, 5):
      if 2 * k < model.depth:
        plans[(n, k)] = sampling.make_plan(model, spaced, "skip_cache", interval=n, k=k)
  runs = {key: sampling.get_sampler(model, spaced, plan, solver).sample
          for key, plan in plans.items()}
  for run in runs.values():
    jax.block_until_ready(run(params, x, y, rng))  # compile + warm up
  best = {key: float("inf") for key in runs}
  for _ in range(repeats):  # interleaved, so a load spike hits every configuration
    for key, run in runs.items():
      t0 = time.perf_counter()
      jax.block_until_ready(run(params, x, y, rng))
      best[key] = min(best[key], time.perf_counter() - t0)
  speedups = [{"N": n, "k": k, "measured": best["full"] / best[(n, k)],
               "ideal": plans[(n, k)].ideal_speedup,
               "fraction_of_ideal": best["full"] / best[(n, k)] / plans[(n, k)].ideal_speedup}
              for (n, k) in [key for key in runs if key != "full"]]
  return {"batch": batch, "steps": steps, "full_s": best["full"], "speedups": speedups}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--smoke", action="store_true", help="CI size (the default on CPU)")
  ap.add_argument("--steps", type=int, default=0, help="timed train steps (0: auto)")
  args = ap.parse_args()
  smoke = args.smoke or jax.default_backend() == "cpu"
  train_steps = args.steps or (3 if smoke else 20)
  result = {"bench": "accelerator", "device_kind": jax.devices()[0].device_kind,
            "platform": jax.default_backend(), "num_devices": jax.device_count(),
            "jax": jax.__version__, "dtype": "bfloat16", "smoke": smoke}
  errors = []
  for name, batch, remat in (SMOKE if smoke else SIZES):
    model = _model(name, remat, smoke)
    try:
      figures = bench_train(model, batch, train_steps)
    except Exception as e:  # noqa: BLE001 -- out of memory: try the next size
      if "RESOURCE_EXHAUSTED" not in str(e) and "out of memory" not in str(e).lower():
        raise
      errors.append(f"{name} batch {batch}: out of memory")
      continue
    result.update(model=name, batch=batch, remat=remat, attention=model.attention, **figures)
    break
  else:
    raise SystemExit(f"no size fits: {errors}")
  result["skipped_sizes"] = errors
  result["peak_memory_bytes"] = _peak_memory()
  result["sampler"] = bench_sampler(model, 4 if smoke else 32, 10 if smoke else 50,
                                    1 if smoke else 3)
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
