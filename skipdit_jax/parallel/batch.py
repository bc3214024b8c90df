"""Global batches: each process loads its rows, `jax.make_array_from_process_local_data`
assembles one array sharded over the mesh's (data, fsdp) axes."""
from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from skipdit_jax.parallel.mesh import BATCH_AXES, batch_ways


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over data x fsdp; replicated over tensor. The spec
  names only dim 0, so images (N, H, W, C) and clips (N, F, H, W, C) alike keep every
  other dimension whole on each device (frames are not sharded; docs/SCALING.md)."""
  return NamedSharding(mesh, P(BATCH_AXES))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def process_rows(mesh: Mesh, global_batch: int,
                 process_index: int | None = None) -> tuple[int, int]:
  """(index, count): this process loads rows [index*B/count, (index+1)*B/count).

  These are the `process_index` / `process_count` to give the data pipeline. They equal
  jax's process index/count when every process owns its own batch shards, and differ
  when batch shards are replicated across processes (e.g. a mesh with data=fsdp=1 on two
  hosts: both load the whole batch).
  """
  if global_batch % batch_ways(mesh):
    raise ValueError(f"config.train.batch_size={global_batch} is not divisible by "
                     f"mesh.data x mesh.fsdp = {batch_ways(mesh)}")
  pid = jax.process_index() if process_index is None else process_index
  idx = batch_sharding(mesh).devices_indices_map((global_batch,))
  rows = sorted({(s[0].start or 0, global_batch if s[0].stop is None else s[0].stop)
                 for d, s in idx.items() if d.process_index == pid})
  lo, hi = rows[0][0], rows[-1][1]
  if any(a != b for (_, a), (b, _) in zip(rows, rows[1:])) or global_batch % (hi - lo):
    raise ValueError(f"process {pid} owns batch rows {rows}, not one contiguous block; "
                     "order the mesh so that each host's devices hold adjacent batch shards")
  count = global_batch // (hi - lo)
  return lo // (hi - lo), count


def make_global_batch(local: Any, mesh: Mesh, global_batch: int | None = None) -> Any:
  """A pytree of host arrays (this process's rows) -> global arrays sharded over the batch.

  `global_batch` defaults to local rows x the process row count of `process_rows`.
  """
  sharding = batch_sharding(mesh)
  leaves = jax.tree.leaves(local)
  n_local = int(np.shape(leaves[0])[0])
  if global_batch is None:
    _, count = process_rows(mesh, batch_ways(mesh))  # one row per shard: the layout only
    global_batch = n_local * count

  def put(x):
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, x,
                                                  (global_batch,) + x.shape[1:])
  return jax.tree.map(put, local)
