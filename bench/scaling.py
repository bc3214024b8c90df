"""Train-step time and per-device parameter bytes on each mesh, 8 fake CPU devices.

One small Skip-DiT (width 128, depth 4, 16x16x4 inputs, 64 tokens, global batch 16),
the trainer's own step and AdamW, sharded with `skipdit_jax.parallel` (preset
fsdp_tensor) on the meshes (data, fsdp, tensor) = (8,1,1), (1,8,1), (2,2,2), (2,4,1)
and on a single device. Time is the median of `--steps` timed steps after one compile
step; bytes are read from each device's addressable shards of the params (and of the
whole train state). Fake CPU devices share this machine's cores, so the times show the
cost of the collectives a mesh adds, not a speed-up. Ends with one JSON line:
  {"model": ..., "meshes": {"1x1x1": {"step_ms", "param_bytes_per_device",
   "param_fraction", "state_bytes_per_device", "loss"}, "8x1x1": ...}}

  python bench/scaling.py [--steps 5]
"""
from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8").strip()

import argparse  # noqa: E402
import functools  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from skipdit_jax import diffusion as dfn, models, parallel  # noqa: E402
from skipdit_jax.train import TrainState, lr_schedule, make_optimizer, train_step  # noqa: E402,E501

MESHES = [(1, 1, 1), (8, 1, 1), (1, 8, 1), (2, 2, 2), (2, 4, 1)]
BATCH = 16


def per_device_bytes(tree) -> dict[int, int]:
  """{device id: bytes of the shards of `tree` that device holds}."""
  out: dict[int, int] = {}
  for leaf in jax.tree.leaves(tree):
    for shard in leaf.addressable_shards:
      out[shard.device.id] = out.get(shard.device.id, 0) + shard.data.nbytes
  return out


def run_mesh(shape, model, steps: int) -> dict:
  devices = jax.devices()[:1] if shape == (1, 1, 1) else None
  mesh = parallel.make_mesh(shape, devices)
  tc = ml_collections.ConfigDict(dict(lr=1e-4, warmup_steps=0, lr_schedule="constant",
                                      weight_decay=0.0, grad_clip=1.0, b1=0.9, b2=0.999,
                                      num_steps=steps + 1))
  tx = make_optimizer(tc)
  diffusion = dfn.Diffusion.create(dfn.betas_for("linear", 1000))
  step = functools.partial(train_step, model=model, diffusion=diffusion, tx=tx,
                           schedule=lr_schedule(tc), ema_decay=0.999)
  init = lambda: TrainState.create(models.init_params(model, jax.random.PRNGKey(0)), tx,
                                   jax.random.PRNGKey(1))
  rules = parallel.axis_rules({"preset": "fsdp_tensor"})
  state, state_sh = parallel.sharded_init(init, model, mesh, rules)
  fn = parallel.jit_train_step(step, mesh, state_sh, rules=rules)
  rng = np.random.default_rng(0)
  x = rng.standard_normal((BATCH, model.input_size, model.input_size, model.in_channels),
                          dtype=np.float32)
  y = rng.integers(0, model.num_classes, BATCH).astype(np.int32)
  gx, gy = parallel.make_global_batch((x, y), mesh, BATCH)
  pbytes = per_device_bytes(state.params)
  sbytes = per_device_bytes(state)
  times = []
  for i in range(steps + 1):
    t0 = time.perf_counter()
    state, metrics = fn(state, gx, gy)
    jax.block_until_ready(metrics["loss"])
    if i:  # step 0 compiles
      times.append(time.perf_counter() - t0)
  total = sum(int(np.prod(p.shape)) * p.dtype.itemsize for p in jax.tree.leaves(state.params))
  return {"step_ms": 1e3 * float(np.median(times)),
          "param_bytes_per_device": max(pbytes.values()),
          "param_fraction": max(pbytes.values()) / total,
          "state_bytes_per_device": max(sbytes.values()),
          "devices": len(pbytes), "loss": float(metrics["loss"])}


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--steps", type=int, default=5, help="timed steps per mesh")
  args = ap.parse_args()
  assert jax.device_count() == 8, "XLA_FLAGS must be set before jax starts"
  model = models.create("SkipDiT-Tiny/2", input_size=16, in_channels=4, num_classes=10,
                        depth=4, hidden_size=128, num_heads=4)
  result = {"model": "SkipDiT width 128 depth 4 heads 4, 16x16x4, patch 2",
            "params": models.param_count(model), "global_batch": BATCH,
            "steps": args.steps, "meshes": {}}
  print(f"{'mesh (d,f,t)':>13} {'step ms':>9} {'param bytes/dev':>16} {'fraction':>9} "
        f"{'state bytes/dev':>16} {'loss':>9}")
  for shape in MESHES:
    r = run_mesh(shape, model, args.steps)
    result["meshes"]["x".join(map(str, shape))] = r
    print(f"{str(shape):>13} {r['step_ms']:9.1f} {r['param_bytes_per_device']:16,d} "
          f"{r['param_fraction']:9.3f} {r['state_bytes_per_device']:16,d} {r['loss']:9.5f}",
          flush=True)
  print(json.dumps(result), flush=True)


if __name__ == "__main__":
  main()
