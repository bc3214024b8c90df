"""`--mode=compile`: plan a run before renting it.

Lowers and compiles the train step and the sampler's full / cached steps for the
configured mesh from shapes alone (`jax.ShapeDtypeStruct`s carrying the shardings; no
data, no parameters allocated) and reports XLA's per-device memory (arguments, outputs,
temporaries) and FLOPs beside an analytic count. With fake CPU devices
(`XLA_FLAGS=--xla_force_host_platform_device_count=N`) this plans a pod slice from a
laptop; on the real topology it measures the real programs. The last stdout line is JSON.

Fake CPU devices give the CPU compiler's buffer plan: arguments and outputs (the sharded
state) are what a TPU or GPU holds too, temporaries are an upper bound (the CPU backend
fuses and rematerialises less). FLOPs are read from the HLO before partitioning, with
the blocks unrolled (`global_train_flops`), so they do not depend on the backend.
"""
from __future__ import annotations

import json
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from skipdit_jax import models, sampling, train
from skipdit_jax.config_check import check_config
from skipdit_jax.models import scan
from skipdit_jax.parallel.batch import batch_sharding, replicated
from skipdit_jax.parallel.distributed import maybe_initialize_distributed
from skipdit_jax.parallel.jitting import step_jit_kwargs
from skipdit_jax.parallel.mesh import make_mesh
from skipdit_jax.parallel.rules import (Rules, axis_rules, constrained, param_shardings,
                                        state_shardings)
from skipdit_jax.sampling.sharded import ShardedSampler, cache_shardings
from skipdit_jax.sampling.step_fns import cached_step_fn, full_step_fn
from skipdit_jax.train.guard import GuardState, guard_step
from skipdit_jax.train.perf import compiled_flops


def _abstract(tree: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      tree, shardings)


def analytic_forward_flops(model: Any, batch: int, blocks: int | None = None) -> float:
  """Matmul FLOPs (2 per multiply-add) of one forward pass of `batch` examples.

  Per-token weights (qkv, proj, MLP, skip fusions, patch embed, final linear) cost
  2 x params x tokens; the conditioning weights (adaLN, timestep MLP) run once per
  example; attention adds 4 T^2 D per block. `blocks` counts blocks actually run (a
  cached step runs fewer), with their skip fusions pro rata.
  """
  d, t, depth = model.hidden_size, model.num_tokens, model.depth
  blocks = depth if blocks is None else blocks
  mlp = int(d * model.mlp_ratio)
  per_block = 2 * t * (3 * d * d + d * d + 2 * d * mlp) + 4 * t * t * d + 2 * 6 * d * d
  fusion = 2 * t * 2 * d * d if model.long_skip else 0
  fusions = blocks // 2 if model.long_skip else 0
  p2c = model.patch_size ** 2
  embed = 2 * t * p2c * model.in_channels * d + 2 * (256 * d + d * d)
  head = 2 * 2 * d * d + 2 * t * d * p2c * model.out_channels
  return float(batch * (blocks * per_block + fusions * fusion + embed + head))


def naive_train_flops(model: Any, batch: int, param_count: int) -> float:
  """The rule of thumb 6 x params x tokens + attention: overcounts DiT, whose adaLN
  weights (a third of a block) run once per example, not once per token."""
  t, d = model.num_tokens, model.hidden_size
  return float(batch * (6 * param_count * t + 3 * 4 * t * t * d * model.depth))


def memory_figures(compiled: Any) -> dict[str, int | None]:
  """Per-device bytes of a compiled SPMD program (it is the per-device program)."""
  try:
    m = compiled.memory_analysis()
  except Exception:  # not every backend implements it
    m = None
  get = lambda k: int(getattr(m, k)) if m is not None and hasattr(m, k) else None
  out = {"argument_bytes": get("argument_size_in_bytes"),
         "output_bytes": get("output_size_in_bytes"),
         "temp_bytes": get("temp_size_in_bytes"),
         "alias_bytes": get("alias_size_in_bytes"),
         "code_bytes": get("generated_code_size_in_bytes")}
  parts = [out[k] for k in ("argument_bytes", "output_bytes", "temp_bytes")]
  # donated state aliases its output: count it once
  out["bytes_per_device"] = (sum(parts) - (out["alias_bytes"] or 0)
                             if all(p is not None for p in parts) else None)
  return out


def _train_program(config: Any, model: Any) -> tuple[Callable, Any, Any]:
  """The loop's guarded step `(state, guard, x, y)` for `model` and abstract state/guard."""
  tc = config.train
  diffusion, tx, schedule = (train.build_diffusion(config), train.make_optimizer(tc),
                             train.lr_schedule(tc))

  def raw(s, x, y):
    return train.train_step(s, x, y, model=model, diffusion=diffusion, tx=tx,
                            schedule=schedule, ema_decay=tc.ema_decay,
                            ema_warmup=tc.get("ema_warmup", False))
  state = jax.eval_shape(lambda: train.init_state(config, model, tx))
  return guard_step(raw, tc.get("nonfinite", "skip")), state, jax.eval_shape(GuardState.create)


def _batch_shapes(config: Any, n: int, sharding: Any = None) -> tuple[Any, Any]:
  s, c = config.data.image_size, config.data.channels
  return (jax.ShapeDtypeStruct((n, s, s, c), jnp.float32, sharding=sharding),
          jax.ShapeDtypeStruct((n,), jnp.int32, sharding=sharding))


def compile_train_step(config: Any, mesh: Mesh, rules: Rules) -> tuple[Any, Any]:
  """The loop's (guarded) train step, compiled for `mesh`. Returns (compiled, model)."""
  model = train.build_model(config)
  step, state, guard = _train_program(config, model)
  state_sh = state_shardings(state, param_shardings(model, mesh, rules), mesh)
  args = (_abstract(state, state_sh), _abstract(guard, jax.tree.map(lambda _: replicated(mesh),
                                                                     guard)),
          *_batch_shapes(config, config.train.batch_size, batch_sharding(mesh)))
  jitted = jax.jit(constrained(step, mesh, rules),
                   **step_jit_kwargs(mesh, state_sh, extra_state=1))
  return jitted.lower(*args).compile(), model


def global_train_flops(config: Any) -> float | None:
  """XLA's FLOP count of one whole train step (all devices together).

  Read from the HLO before partitioning, so work a mesh replicates (e.g. the optimizer
  update under pure data parallelism) counts once; the blocks are unrolled because XLA's
  analysis counts a `lax.scan` body once, not once per block.
  """
  model = train.build_model(config).clone(scan_blocks=False)
  step, state, guard = _train_program(config, model)
  lowered = jax.jit(step).lower(state, guard, *_batch_shapes(config, config.train.batch_size))
  return compiled_flops(lowered)


def compile_sampler_steps(config: Any, mesh: Mesh, rules: Rules) -> dict[str, Any]:
  """The sampler's full step and one cached step for `config.sample`, compiled for
  `mesh`. Returns {"full": (compiled, global XLA FLOPs, blocks run), "cached:<variant>":
  ...}.

  The model is the one `--mode=sample` builds (scanned and rematerialised as configured;
  every cache policy runs on it), so the memory figures are those of the real programs.
  The FLOPs come from the same steps lowered with the blocks unrolled (XLA counts a
  `lax.scan` body once). With no cache policy configured, a Skip-DiT's cached step is
  planned with Skip-Cache (`sample.cache.k`).
  """
  model = train.build_model(config)
  opts = sampling.options_from_config(config.sample)
  if opts.get("policy", "none") == "none" and model.long_skip:
    opts.update(policy="skip_cache", interval=max(2, opts.get("interval", 1)))
  spaced, plan = sampling.respaced_plan(model, train.build_diffusion(config), **opts)
  solver = sampling.SolverConfig(sampler=opts["sampler"], eta=float(opts["eta"]),
                                 cfg_scale=float(opts["cfg_scale"]),
                                 guided_channels=opts.get("guided_channels"),
                                 clip_denoised=opts.get("clip_denoised", False))
  smp = sampling.Sampler(model, spaced, plan, solver)
  n, s, c = config.sample.batch_size, config.data.image_size, config.data.channels
  psh = param_shardings(model, mesh, rules)
  params = _abstract(jax.eval_shape(lambda r: _init(model, r), jax.random.key(0)), psh)
  rep, bat = replicated(mesh), batch_sharding(mesh)
  x = jax.ShapeDtypeStruct((n, s, s, c), jnp.float32, sharding=bat)
  y = jax.ShapeDtypeStruct((n,), jnp.int32, sharding=bat)
  # The very steps `--mode=sample` runs on a mesh: ShardedSampler's, for these shapes.
  run = ShardedSampler(smp, mesh, psh).for_batch(params, x, y)
  cache = _abstract(jax.eval_shape(lambda p: smp.empty_cache(p, x, y), params),
                    cache_shardings(smp, params, x, y, mesh))
  i = jax.ShapeDtypeStruct((), jnp.int32, sharding=rep)
  rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=rep)
  aux = jax.ShapeDtypeStruct(np.shape(smp.aux), smp.aux.dtype, sharding=rep)
  flops = _unrolled_step_flops(model, spaced, solver, smp, params, (x, i, y, rng, cache, aux))
  lowered = run.loop_full_step.lower(params, x, i, y, rng, cache)
  out = {"full": (lowered.compile(), flops["full"], model.depth)}
  for v in plan.variants:
    blocks = 2 * plan.k if plan.policy.startswith("skip_cache") else None
    lowered = run.loop_cached_steps[v].lower(params, x, i, y, rng, cache, aux)
    out[f"cached:{v}"] = (lowered.compile(), flops[v], blocks)
  out["_plan"] = plan
  out["_model"] = model
  return out


def _unrolled_step_flops(model: Any, spaced: Any, solver: Any, smp: Any, params: Any,
                        args: tuple) -> dict[str, float | None]:
  """XLA's global FLOPs of the sampler's full and cached steps, blocks unrolled.

  `params` are the (abstract) parameters of `model`; `args` = (x, i, y, rng, cache, aux).
  A scanned model's steps are lowered as the unrolled model on unstacked parameters,
  which computes the same thing (tests/test_scan_cache.py) with every block counted.
  """
  if model.scan_blocks:
    model = model.clone(scan_blocks=False)
    params = jax.eval_shape(scan.unstack_params, params)
  strip = lambda t: jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), t)
  params, (x, i, y, rng, cache, aux) = strip(params), strip(args)
  out = {"full": compiled_flops(jax.jit(full_step_fn(model, spaced, solver, smp.policy))
                               .lower(params, x, i, y, rng, cache))}
  for v in smp.plan.variants:
    fn = jax.jit(cached_step_fn(model, spaced, solver, smp.policy, v))
    out[v] = compiled_flops(fn.lower(params, x, i, y, rng, cache, aux))
  return out


def _init(model: Any, rng: jax.Array) -> Any:
  return models.init_params(model, rng)


def _ratio(a: float | None, b: float | None) -> float | None:
  return a / b if a and b else None


def plan_compile(config: Any, devices: list | None = None) -> dict[str, Any]:
  """Compile everything for `config.mesh`; returns the figures (see module doc).

  `flops` is XLA's count of the whole train step (`global_train_flops`); it is compared
  with `analytic_flops` (3 x the forward's matmuls: 6 x per-token params x tokens, plus
  the once-per-example conditioning weights and attention) in `flops_vs_analytic`, the
  acceptance figure, and with the rule of thumb 6 x params x tokens + attention in
  `flops_vs_6NT`. `compiled_flops_per_device` is the partitioned program's own count;
  x devices it exceeds `flops` by the work the mesh replicates (`replicated_work`), but
  counts a scanned stack of blocks once (`compiled_counts_scan_once`).
  """
  from skipdit_jax import models  # pylint: disable=import-outside-toplevel
  if models.is_video(config.model.name):
    raise ValueError(f"model.name={config.model.name!r}: --mode=compile and its FLOP counts "
                     "cover DiT only, not Latte; use a DiT-* / SkipDiT-* config")
  mesh = make_mesh(config.mesh, devices)
  rules = axis_rules(config.mesh)
  n_dev = mesh.devices.size
  t0 = time.perf_counter()
  train_c, model = compile_train_step(config, mesh, rules)
  t_train = time.perf_counter() - t0
  flops = global_train_flops(config)
  n_params = models.param_count(model)
  batch = config.train.batch_size
  mem = memory_figures(train_c)
  per_dev = compiled_flops(train_c)
  analytic = 3 * analytic_forward_flops(model, batch)
  naive = naive_train_flops(model, batch, n_params)
  result: dict[str, Any] = {
      "mode": "compile", "model": config.model.name, "params": n_params,
      "mesh": dict(mesh.shape), "devices": n_dev,
      "device_kind": mesh.devices.flat[0].device_kind,
      "rules": [list(r) if not isinstance(r[1], tuple) else [r[0], list(r[1])] for r in rules],
      "scan_blocks": bool(model.scan_blocks), "remat": model.remat,
      "global_batch": batch, "tokens": model.num_tokens,
      "flops": flops, "analytic_flops": analytic, "flops_vs_analytic": _ratio(flops, analytic),
      "flops_within_5pct": (abs(flops / analytic - 1) <= 0.05) if flops else None,
      "naive_6NT_flops": naive, "flops_vs_6NT": _ratio(flops, naive),
      "compiled_flops_per_device": per_dev,
      "compiled_counts_scan_once": bool(model.scan_blocks),
      "replicated_work": (None if model.scan_blocks else _ratio((per_dev or 0) * n_dev, flops)),
      "bytes_per_device": mem["bytes_per_device"],
      "train": dict(mem, compile_s=round(t_train, 1)),
  }
  t0 = time.perf_counter()
  steps = compile_sampler_steps(config, mesh, rules)
  plan, smodel = steps.pop("_plan"), steps.pop("_model")
  result["sampler"] = {"policy": plan.policy, "batch": config.sample.batch_size,
                       "scan_blocks": bool(smodel.scan_blocks), "remat": smodel.remat,
                       "cfg_scale": config.sample.cfg_scale,
                       "compile_s": round(time.perf_counter() - t0, 1)}
  guided = 2 if float(config.sample.cfg_scale) != 1.0 else 1
  for name, (compiled, f, blocks) in steps.items():
    a = analytic_forward_flops(smodel, guided * config.sample.batch_size, blocks)
    per = compiled_flops(compiled)
    result["sampler"][name] = dict(memory_figures(compiled), flops=f, analytic_flops=a,
                                   flops_vs_analytic=_ratio(f, a),
                                   replicated_work=(None if smodel.scan_blocks  # scan body counted once
                                                    else _ratio((per or 0) * n_dev, f)))
  return result


def _bytes(b: int | None) -> str:
  if b is None:
    return "?"
  for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
    if b >= scale:
      return f"{b / scale:.2f} {unit}"
  return f"{b} B"


def _flops(f: float | None) -> str:
  if not f:
    return "?"
  for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
    if f >= scale:
      return f"{f / scale:.3f} {unit}"
  return f"{f:.0f} FLOP"


def print_report(r: dict[str, Any]) -> None:
  t = r["train"]
  print(f"{r['model']} ({r['params']:,} params) on mesh {r['mesh']} "
        f"({r['devices']} x {r['device_kind']}), global batch {r['global_batch']}")
  print(f"train step, per device: arguments {_bytes(t['argument_bytes'])}, outputs "
        f"{_bytes(t['output_bytes'])} (donated/aliased {_bytes(t['alias_bytes'])}), "
        f"temporaries {_bytes(t['temp_bytes'])} -> {_bytes(r['bytes_per_device'])} "
        f"(compiled in {t['compile_s']} s)")
  if r["flops"]:
    print(f"train step FLOPs: XLA {_flops(r['flops'])} (whole step, blocks unrolled), "
          f"analytic {_flops(r['analytic_flops'])}: ratio {r['flops_vs_analytic']:.3f}; "
          f"rule of thumb 6NT+attention {_flops(r['naive_6NT_flops'])}: ratio "
          f"{r['flops_vs_6NT']:.3f}")
  if r["compiled_flops_per_device"]:
    extra = (f"; x{r['devices']} devices = {r['replicated_work']:.3f} x the step's work"
             if r["replicated_work"] else " (a scanned block stack counted once)")
    print(f"compiled per device: {_flops(r['compiled_flops_per_device'])}{extra}")
  for name, s in r["sampler"].items():
    if isinstance(s, dict):
      print(f"sampler {name} step ({r['sampler']['policy']}, batch {r['sampler']['batch']}, "
            f"cfg {r['sampler']['cfg_scale']}), per device: "
            f"{_bytes(s['bytes_per_device'])} (temporaries {_bytes(s['temp_bytes'])}); "
            f"FLOPs XLA {_flops(s['flops'])}, analytic {_flops(s['analytic_flops'])}"
            + (f", devices do {s['replicated_work']:.2f} x that" if s["replicated_work"]
               else ""))


def main(config: Any) -> dict[str, Any]:
  """The `--mode=compile` entry point: validate, compile, print, JSON last line."""
  maybe_initialize_distributed(config)
  check_config(config)
  result = plan_compile(config)
  print_report(result)
  print(json.dumps(result, default=float), flush=True)
  return result
