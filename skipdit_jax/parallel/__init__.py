"""Scale-out: device meshes, logical-axis sharding rules, multi-host start-up, sharded
init, global batches and the train / sampler steps jitted with explicit shardings.

Typical use (see docs/SCALING.md):
  maybe_initialize_distributed(config)           # before touching devices
  mesh = make_mesh(config.mesh); rules = axis_rules(config.mesh)
  state, state_sh = sharded_init(lambda: init_state(...), model, mesh, rules)
  step = jit_train_step(partial(train_step, ...), mesh, state_sh, rules=rules)
  index, count = process_rows(mesh, batch_size)  # this host's rows of each global batch
  state, metrics = step(state, *make_global_batch((images, labels), mesh))
The train loop does all of this through `MeshRun` (parallel/training.py); main's
sampling through `sampling.sharded.generate` when the params span several devices.
This package knows models only through their logical axis names: it imports no sampler
and no trainer.
"""
from skipdit_jax.parallel.batch import (batch_sharding, make_global_batch, process_rows,
                                        replicated)
from skipdit_jax.parallel.distributed import (detected_cluster, initialize_kwargs,
                                              is_main_process, maybe_initialize_distributed)
from skipdit_jax.parallel.jitting import (jit_train_step, shard_params, sharded_init,
                                          sharding_key, step_jit_kwargs)
from skipdit_jax.parallel.mesh import AXES, BATCH_AXES, batch_ways, make_mesh, mesh_shape
from skipdit_jax.parallel.training import MeshRun, params_mesh
from skipdit_jax.parallel.rules import (PRESETS, activation_rules, axis_rules, constrained,
                                        describe, mesh_specs, param_shardings, param_specs,
                                        state_shardings)

__all__ = [
    "AXES", "BATCH_AXES", "MeshRun", "PRESETS", "activation_rules", "axis_rules", "batch_sharding",
    "batch_ways", "constrained", "describe", "detected_cluster", "initialize_kwargs", "is_main_process",
    "jit_train_step", "make_global_batch", "make_mesh", "maybe_initialize_distributed",
    "mesh_shape", "mesh_specs", "param_shardings", "param_specs", "params_mesh",
    "process_rows",
    "replicated", "shard_params", "sharded_init", "sharding_key", "state_shardings", "step_jit_kwargs",
]
