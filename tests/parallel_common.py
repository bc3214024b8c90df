"""Shared set-up of the multi-device tests (tests/test_parallel_devices.py) and the
worker of the two-process `jax.distributed` test (`python tests/parallel_common.py
worker PROCESS_ID PORT MESH`); not a test module itself.

One tiny Skip-DiT, one seed, three fixed global batches; the trainer's own `train_step`
and AdamW; the sampler's own step functions. Only the mesh changes between runs.
"""
from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from skipdit_jax import diffusion as dfn
from skipdit_jax import models, parallel
from skipdit_jax.train import optim, step as train_step_lib
from skipdit_jax.train.preemption import PreemptionWatcher
from skipdit_jax.train.state import TrainState

N_DEV = 8
# Backend optimisation off: these tiny programs compile ~2x faster and every run (single
# device included) uses the same flags, so the comparisons are unaffected.
FLAGS = (f"--xla_force_host_platform_device_count={N_DEV} "
         "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GLOBAL_BATCH = 16
STEPS = 3
# Pure data, pure fsdp, and all three axes at once. data x fsdp without tensor, (2, 4, 1),
# is covered by the two-process test (tests/test_parallel_devices.py) and the mesh
# sampling tests (tests/test_mesh_sampling.py), each against one device.
MESHES = [(8, 1, 1), (1, 8, 1), (2, 2, 2)]


def run_child_pytest(test_file: str, timeout: int = 900) -> None:
  """Runs `test_file` in a child pytest whose XLA backend has N_DEV fake CPU devices
  (XLA fixes the count when the backend starts, so it must be set before jax loads)."""
  env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " " + FLAGS).strip(),
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                         os.path.abspath(test_file)], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=timeout)
  assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-3000:]
  assert " passed" in proc.stdout and "failed" not in proc.stdout, proc.stdout[-3000:]


class CountCompiles:
  """Context manager: the XLA backend compilations inside it, from JAX's own
  monitoring event (`/jax/core/compile/backend_compile_duration`, recorded around every
  `compile_or_get_cached`). `.names` lists the compiled functions."""
  EVENT = "/jax/core/compile/backend_compile_duration"

  def __enter__(self) -> "CountCompiles":
    self.names: list[str] = []
    jax.monitoring.register_event_duration_secs_listener(self._on_event)
    return self

  def _on_event(self, event: str, duration: float, **kw) -> None:
    if event == self.EVENT:
      self.names.append(str(kw.get("fun_name")))

  def __exit__(self, *exc) -> None:
    jax.monitoring.unregister_event_duration_listener(self._on_event)


def tiny_model(**overrides):
  fields = dict(input_size=4, in_channels=2, num_classes=10, depth=2, hidden_size=32,
                num_heads=2, learn_sigma=True)
  fields.update(overrides)
  return models.create("SkipDiT-Tiny/2", **fields)


def train_pieces(model):
  tc = ml_collections.ConfigDict(dict(lr=1e-3, warmup_steps=0, lr_schedule="constant",
                                      weight_decay=0.0, grad_clip=1.0, b1=0.9, b2=0.999,
                                      num_steps=STEPS))
  tx, schedule = optim.make_optimizer(tc), optim.lr_schedule(tc)
  diffusion = dfn.Diffusion.create(dfn.betas_for("linear", 1000))
  step = functools.partial(train_step_lib.train_step, model=model, diffusion=diffusion,
                           tx=tx, schedule=schedule, ema_decay=0.9)

  def init():
    """Seeded init plus seeded noise on every param, so the adaLN-Zero gates are open and
    all gradients are O(1) from step 1 (Adam's sign-like first updates would otherwise
    amplify float rounding in near-zero gradients)."""
    k_init, k_noise, k_step = jax.random.split(jax.random.PRNGKey(0), 3)
    params = models.init_params(model, k_init)
    leaves, tdef = jax.tree.flatten(params)
    keys = jax.random.split(k_noise, len(leaves))
    params = tdef.unflatten([p + 0.05 * jax.random.normal(k, p.shape)
                             for p, k in zip(leaves, keys)])
    return TrainState.create(params, tx, k_step)
  return init, step


def batches(model):
  rng = np.random.default_rng(0)
  shape = (GLOBAL_BATCH, model.input_size, model.input_size, model.in_channels)
  return [(rng.standard_normal(shape).astype(np.float32),
           rng.integers(0, model.num_classes, GLOBAL_BATCH).astype(np.int32))
          for _ in range(STEPS)]


def single_device_mesh():
  return parallel.make_mesh((1, 1, 1), jax.local_devices()[:1])


def run_training(mesh, preset: str = "fsdp_tensor"):
  """3 steps on `mesh`; returns (losses, final state). Each process feeds its own rows."""
  model = tiny_model()
  init, step = train_pieces(model)
  rules = parallel.axis_rules({"preset": preset})
  state, state_sh = parallel.sharded_init(init, model, mesh, rules)
  fn = parallel.jit_train_step(step, mesh, state_sh, rules=rules)
  index, count = parallel.process_rows(mesh, GLOBAL_BATCH)
  rows = slice(index * GLOBAL_BATCH // count, (index + 1) * GLOBAL_BATCH // count)
  losses = []
  for x, y in batches(model):
    gx, gy = parallel.make_global_batch((x[rows], y[rows]), mesh, GLOBAL_BATCH)
    state, metrics = fn(state, gx, gy)
    losses.append(metrics["loss"])
  return [float(v) for v in losses], state


def sampler_model_and_params():
  """A 4-block tiny Skip-DiT (Skip-Cache needs k < depth/2) with random numpy params."""
  model = tiny_model(depth=4)
  shapes = jax.eval_shape(lambda r: models.init_params(model, r), jax.random.key(0))
  rng = np.random.default_rng(2)
  return model, jax.tree.map(
      lambda s: (0.1 * rng.standard_normal(s.shape)).astype(np.float32), shapes)


def run_sampler(mesh, model, params, *, policy: str = "skip_cache",
                preset: str = "fsdp_tensor"):
  """A 6-step DDIM run with CFG and the Skip-Cache (full and cached steps) on `mesh`."""
  from skipdit_jax import sampling
  from skipdit_jax.sampling import sharded
  diffusion = dfn.Diffusion.create(dfn.betas_for("linear", 1000))
  spaced, plan = sampling.respaced_plan(model, diffusion, 6, policy=policy, interval=2, k=1)
  solver = sampling.SolverConfig(sampler="ddim", cfg_scale=1.5)
  base = sampling.Sampler(model, spaced, plan, solver)
  sh = parallel.param_shardings(model, mesh, parallel.axis_rules({"preset": preset}))
  smp = sharded.ShardedSampler(base, mesh, sh)
  rng = np.random.default_rng(1)
  x = rng.standard_normal((8, 4, 4, 2)).astype(np.float32)
  y = np.arange(8, dtype=np.int32) % 10
  out = smp.sample(jax.device_put(params, sh), x, y, jax.random.PRNGKey(3))
  return np.asarray(jax.device_get(out)), plan


def worker(process_id: int, port: int, mesh_shape: tuple[int, int, int]) -> None:
  """One of two `jax.distributed` processes on localhost; process 0 prints the losses."""
  config = ml_collections.ConfigDict({"distributed": {
      "enabled": True, "coordinator_address": f"localhost:{port}", "num_processes": 2,
      "process_id": process_id, "auto": False}})
  parallel.maybe_initialize_distributed(config)
  # Under jax.distributed the watcher defers to JAX's preemption sync manager (no notice
  # was sent, so no host may be told to stop).
  with PreemptionWatcher() as watcher:
    preemption = {"multihost": watcher._multihost, "stop": watcher.should_stop(0)}
  mesh = parallel.make_mesh(mesh_shape)
  losses, state = run_training(mesh)
  # Parameter checksum over the global arrays (a jitted reduction, replicated result).
  total = jax.jit(lambda t: sum(jnp.sum(jnp.abs(p)) for p in jax.tree.leaves(t)),
                  out_shardings=parallel.replicated(mesh))(state.params)
  if parallel.is_main_process():
    print(json.dumps({"losses": losses, "param_abs_sum": float(total),
                      "preemption": preemption,
                      "process_count": jax.process_count(),
                      "rows": parallel.process_rows(mesh, GLOBAL_BATCH)}), flush=True)
  jax.distributed.shutdown()


if __name__ == "__main__":
  if len(sys.argv) == 5 and sys.argv[1] == "worker":
    worker(int(sys.argv[2]), int(sys.argv[3]),
           tuple(int(v) for v in sys.argv[4].split(",")))
  else:
    raise SystemExit("usage: python tests/parallel_common.py worker PROCESS_ID PORT D,F,T")
