"""Sharded training and sampling on 8 fake CPU devices (skipdit_jax.parallel).

XLA fixes the device count when the backend starts, so these tests run in a child pytest
with XLA_FLAGS set (`test_under_8_fake_devices`); in a process that already has one
device they are skipped, and the child skips the launcher. Every run is compared with a
single-device run of the same seed and batches (a second code path), and the shardings
with an independent reading of the rules.
"""
import json
import math
import os
import re
import socket
import sys

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from skipdit_jax import models, parallel

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import background  # noqa: E402
import parallel_common as pc  # noqa: E402

N_DEV = pc.N_DEV
FLAGS = pc.FLAGS
in_child = pytest.mark.skipif(jax.device_count() != N_DEV,
                              reason="runs in the 8-device child process")


def test_under_8_fake_devices():
  if jax.device_count() == N_DEV:
    pytest.skip("already the 8-device process")
  pc.run_child_pytest(__file__)


def _rel(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


@pytest.fixture(scope="module")
def runs():
  """losses and final states of 3 train steps: single device and every mesh."""
  out = {(1, 1, 1): pc.run_training(pc.single_device_mesh())}
  for shape in pc.MESHES:
    out[shape] = pc.run_training(parallel.make_mesh(shape))
  return out


@pytest.fixture(scope="module")
def sampled():
  """Samples of the same noise and params: single device and every mesh."""
  model, params = pc.sampler_model_and_params()
  out = {(1, 1, 1): pc.run_sampler(pc.single_device_mesh(), model, params)}
  for shape in pc.MESHES:
    out[shape] = pc.run_sampler(parallel.make_mesh(shape), model, params)
  return out


@in_child
@pytest.mark.parametrize("shape", pc.MESHES)
def test_train_loss_and_params_match_single_device(runs, shape):
  ref_losses, ref_state = runs[(1, 1, 1)]
  losses, state = runs[shape]
  np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
  for name in ("params", "ema_params"):
    got = jax.tree_util.tree_leaves_with_path(jax.device_get(getattr(state, name)))
    want = jax.tree.leaves(jax.device_get(getattr(ref_state, name)))
    whole = _rel(np.concatenate([np.ravel(a) for _, a in got]),
                 np.concatenate([np.ravel(b) for b in want]))
    assert whole < 1e-5, (shape, name, whole)  # relative over the whole parameter vector
    for (path, a), b in zip(got, want):  # and no single tensor far off
      assert _rel(a, b) < 1e-4, (shape, name, jax.tree_util.keystr(path), _rel(a, b))


def _expected_spec(logical: P, rules) -> tuple:
  """The rules read independently: each logical name takes the first rule naming it whose
  mesh axis no earlier dimension of the same array already uses."""
  used, out = set(), []
  for name in logical:
    axis = None
    for lname, maxis in rules:
      if lname == name and maxis is not None and maxis not in used:
        axis = maxis
        break
    if axis is not None:
      used.add(axis)
    out.append(axis)
  return tuple(out)


@in_child
@pytest.mark.parametrize("shape", [(2, 2, 2), (1, 8, 1)])
def test_every_param_and_opt_state_sharded_as_declared(runs, shape):
  _, state = runs[shape]
  model = pc.tiny_model()
  rules = parallel.axis_rules({"preset": "fsdp_tensor"})
  logical = models.logical_axes(model)
  flat_logical = jax.tree.leaves(logical, is_leaf=lambda x: isinstance(x, P))
  for tree in (state.params, state.ema_params, state.opt_state[1][0].mu,
               state.opt_state[1][0].nu):
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    assert len(leaves) == len(flat_logical)
    for (path, arr), spec in zip(leaves, flat_logical):
      want = _expected_spec(spec, rules)
      got = tuple(arr.sharding.spec) + (None,) * (arr.ndim - len(arr.sharding.spec))
      assert got == want, (jax.tree_util.keystr(path), got, want)
      assert arr.sharding.mesh.shape == dict(zip(parallel.AXES, shape))
  for arr in (state.step, state.rng):
    assert arr.sharding.is_fully_replicated


@in_child
def test_fsdp8_each_device_holds_an_eighth_of_s2_params():
  """S/2's real parameter shapes, placed with the fsdp rules on fsdp=8 (zeros: the
  placement, not the init, is under test), bytes read from the addressable shards."""
  model = models.create("DiT-S/2")
  mesh = parallel.make_mesh((1, 8, 1))
  sh = parallel.param_shardings(model, mesh, parallel.axis_rules({"preset": "fsdp"}))
  shapes = jax.eval_shape(lambda r: models.init_params(model, r), jax.random.key(0))
  params = jax.jit(lambda: jax.tree.map(lambda s: jax.numpy.zeros(s.shape, s.dtype), shapes),
                   out_shardings=sh)()
  total = sum(math.prod(s.shape) * 4 for s in jax.tree.leaves(shapes))
  per_device = {d: 0 for d in mesh.devices.flat}
  for arr in jax.tree.leaves(params):
    for shard in arr.addressable_shards:
      per_device[shard.device] += shard.data.nbytes
  assert max(per_device.values()) <= total * (1 / 8 + 0.05), (max(per_device.values()), total)
  assert sum(per_device.values()) >= total  # nothing lost; replicated leftovers counted


@in_child
@pytest.mark.parametrize("shape", pc.MESHES)
def test_sampler_matches_single_device(sampled, shape):
  ref, plan = sampled[(1, 1, 1)]
  assert "full" in plan.actions and len(set(plan.actions)) > 1  # both step kinds ran
  assert np.all(np.isfinite(ref)) and np.std(ref) > 0.1
  got, _ = sampled[shape]
  assert _rel(got, ref) < 1e-5, (shape, _rel(got, ref))


@in_child
def test_global_batch_from_process_rows():
  mesh = parallel.make_mesh((2, 2, 2))
  assert parallel.process_rows(mesh, 16) == (0, 1)  # one process holds every row
  x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
  g = parallel.make_global_batch({"image": x}, mesh)["image"]
  assert g.shape == (16, 3) and g.sharding.spec == P(("data", "fsdp"))
  np.testing.assert_array_equal(np.asarray(g), x)
  for shard in g.addressable_shards:  # tensor-axis replicas hold the same rows
    np.testing.assert_array_equal(shard.data, x[shard.index])
  with pytest.raises(ValueError, match="batch_size=6"):
    parallel.process_rows(mesh, 6)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@in_child
def test_two_processes_match_single_process(runs):
  # Not started alongside the single-process runs: the workers' first collective must
  # meet within gloo's 30 s deadline, which a busy machine can miss.
  port = _free_port()
  env = dict(os.environ, XLA_FLAGS=FLAGS.replace(f"count={N_DEV}", "count=4"),
             PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  script = os.path.join(HERE, "parallel_common.py")
  procs = [background.start([sys.executable, script, "worker", str(i), str(port), "2,4,1"],
                            env=env, cwd=ROOT) for i in range(2)]
  outs = [background.finish(p, 600) for p in procs]
  for p in outs:
    assert p.returncode == 0, p.stderr[-3000:]
  result = json.loads(outs[0].stdout.strip().splitlines()[-1])
  assert result["process_count"] == 2 and result["rows"] == [0, 2]
  assert result["preemption"] == {"multihost": True, "stop": False}
  ref_losses, ref_state = runs[(1, 1, 1)]
  np.testing.assert_allclose(result["losses"], ref_losses, rtol=1e-5)
  ref_sum = sum(float(np.abs(np.asarray(p, np.float64)).sum())
                for p in jax.tree.leaves(jax.device_get(ref_state.params)))
  np.testing.assert_allclose(result["param_abs_sum"], ref_sum, rtol=1e-5)


_CONSTRAINT = re.compile(r"sdy\.sharding_constraint %\S+ <@\w+, \[(.*?)\]> : tensor<([\dx]+)x\w+>")


def _constraints(text: str) -> dict[tuple[int, ...], set[tuple]]:
  """{shape: {per-dimension mesh axes}} of every sharding constraint in lowered StableHLO."""
  out: dict[tuple[int, ...], set[tuple]] = {}
  for dims, shape in _CONSTRAINT.findall(text):
    spec = tuple(tuple(re.findall(r'"(\w+)"', d)) for d in re.findall(r"\{[^}]*\}", dims))
    out.setdefault(tuple(int(s) for s in shape.split("x")), set()).add(spec)
  return out


@in_child
@pytest.mark.parametrize("preset", sorted(parallel.PRESETS))
@pytest.mark.parametrize("scan", [False, True])
def test_activation_constraints_in_the_lowered_train_step(preset, scan):
  """The trainer's step lowered on (2, 2, 2): block inputs/outputs (N, T, D), q/k/v and
  the attention output (B, T, H, hd) and the MLP hidden (N, T, 4D) carry the preset's
  activation sharding (batch over data x fsdp; heads and MLP hidden over tensor)."""
  model = pc.tiny_model(scan_blocks=scan)
  init, step = pc.train_pieces(model)
  mesh = parallel.make_mesh((2, 2, 2))
  rules = parallel.axis_rules({"preset": preset})
  state = jax.eval_shape(init)
  state_sh = parallel.state_shardings(state, parallel.param_shardings(model, mesh, rules), mesh)
  fn = parallel.jit_train_step(step, mesh, state_sh, rules=rules)
  n, t, d, h = pc.GLOBAL_BATCH, model.num_tokens, model.hidden_size, model.num_heads
  x = jax.ShapeDtypeStruct((n, model.input_size, model.input_size, model.in_channels),
                           np.float32)
  got = _constraints(fn.lower(state, x, jax.ShapeDtypeStruct((n,), np.int32)).as_text())
  batch, tensor = ("data", "fsdp"), ("tensor",) if "tensor" in preset else ()
  assert got.get((n, t, d)) == {(batch, (), ())}, got
  assert got.get((n, t, h, d // h)) == {(batch, (), tensor, ())}, got
  assert got.get((n, t, 4 * d)) == {(batch, (), tensor)}, got
  plain = _constraints(jax.jit(step).lower(state, x, jax.ShapeDtypeStruct((n,), np.int32))
                       .as_text())
  assert not plain  # without the rules the constraints are the identity
