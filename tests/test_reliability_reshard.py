"""A checkpoint written on one mesh restores onto another with identical values.

Runs in a subprocess with 8 fake CPU devices (XLA_FLAGS must be set before JAX starts):
the train state is saved sharded over fsdp=8, then restored onto 1 device and onto a
(data, fsdp, tensor) = (2, 2, 2) mesh; every array must equal the saved numpy values
bit for bit and carry the new mesh's sharding.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _child(workdir: str) -> None:
  import jax
  import jax.numpy as jnp
  import numpy as np
  from configs.default import get_config
  from skipdit_jax import parallel
  from skipdit_jax.train import build_model, init_state, make_optimizer
  from skipdit_jax.train.checkpoint import Checkpointer

  config = get_config()
  config.model.depth, config.model.hidden_size, config.model.num_heads = 2, 32, 2
  model, tx = build_model(config), make_optimizer(config.train)
  init_fn = lambda: init_state(config, model, tx)
  abstract = jax.eval_shape(init_fn)
  rng = np.random.default_rng(0)
  # Distinct values in every leaf (a fresh Adam state is all zeros, which would hide a
  # misplaced shard); integer leaves keep their dtype.
  want = jax.tree.map(lambda s: (rng.standard_normal(s.shape) * 3).astype(s.dtype)
                      if jnp.issubdtype(s.dtype, jnp.floating)
                      else rng.integers(0, 1000, s.shape).astype(s.dtype), abstract)

  def shardings(mesh_cfg, devices):
    mesh = parallel.make_mesh(mesh_cfg, devices)
    rules = parallel.axis_rules(config.mesh)
    return mesh, parallel.state_shardings(abstract,
                                          parallel.param_shardings(model, mesh, rules), mesh)

  devices = jax.devices()
  _, sh8 = shardings({"data": 1, "fsdp": 8, "tensor": 1}, devices)
  saved = jax.tree.map(jax.device_put, want, sh8)
  split = sum(len(x.sharding.device_set) == 8 and not x.sharding.is_fully_replicated
              for x in jax.tree.leaves(saved))
  ck = Checkpointer(workdir, async_save=True)
  ck.save(7, saved, {"data": {"position": 7}})
  ck.wait()
  ck.close()

  out = {"sharded_over_8": split, "leaves": len(jax.tree.leaves(want))}
  for name, mesh_cfg, devs in (("one_device", {"data": 1, "fsdp": 1, "tensor": 1},
                                devices[:1]),
                               ("mesh_2x2x2", {"data": 2, "fsdp": 2, "tensor": 2}, devices)):
    mesh, sh = shardings(mesh_cfg, devs)
    target = jax.tree.map(lambda s, h: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=h),
                          abstract, sh)
    ck = Checkpointer(workdir, read_only=True)
    got, meta = ck.restore(target)
    ck.close()
    flat_got = jax.tree_util.tree_leaves_with_path(got)
    flat_want, flat_sh = jax.tree.leaves(want), jax.tree.leaves(sh)
    differ = [jax.tree_util.keystr(p) for (p, g), w in zip(flat_got, flat_want)
              if np.asarray(g).tobytes() != np.asarray(w).tobytes()]
    placed = sum(g.sharding == h for (_, g), h in zip(flat_got, flat_sh))
    out[name] = {"differ": differ, "placed_as_asked": placed,
                 "devices": len(mesh.devices.flat), "position": meta["data"]["position"],
                 "tensor_split": sum("tensor" in str(h.spec) for h in flat_sh)}
  print(json.dumps(out))


def test_fsdp8_checkpoint_restores_on_one_device_and_on_2x2x2(tmp_path):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
  p = subprocess.run([sys.executable, __file__, str(tmp_path / "run")], cwd=ROOT, env=env,
                     capture_output=True, text=True, timeout=300)
  assert p.returncode == 0, p.stderr[-3000:]
  out = json.loads(p.stdout.strip().splitlines()[-1])
  assert out["sharded_over_8"] > 20  # params, EMA and Adam moments really were split
  for name, devices in (("one_device", 1), ("mesh_2x2x2", 8)):
    r = out[name]
    assert r["differ"] == [], (name, r["differ"])
    assert r["placed_as_asked"] == out["leaves"] and r["devices"] == devices
    assert r["position"] == 7
  assert out["mesh_2x2x2"]["tensor_split"] > 0  # the target mesh shards differently


if __name__ == "__main__":
  _child(sys.argv[1])
