"""The demo CLI trains on a mesh: 8 fake CPU devices, `--config.mesh.fsdp=2` (data=4).

The same command on one device is the independent reference: after 3 steps from one
seed the logged loss agrees to 1e-5 relative, and the final samples (drawn by the sharded
sampler, batch padded to the mesh) agree with the single-device sampler's.
"""
import json
import os
import sys

import numpy as np
import pytest

import background

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FAST = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
ARGS = ["--config=configs/digits_skipdit.py",
        "--config.model.depth=4", "--config.model.hidden_size=32",
        "--config.model.num_heads=2", "--config.train.batch_size=32",
        "--config.train.num_steps=3", "--config.train.warmup_steps=0",
        "--config.train.log_every=3", "--config.train.ckpt_every=3",
        "--config.train.sample_every=3", "--config.sample.num_steps=3",
        "--config.sample.num_per_class=1", "--config.sample.grid_per_class=0",
        "--config.sample.batch_size=10", "--config.sample.cache.policy=none",
        "--config.eval.class_accuracy=False", "--config.train.ckpt_async=False"]


def _start(workdir: str, devices: int, *mesh: str):
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS=f"--xla_force_host_platform_device_count={devices} {FAST}")
  return background.start([sys.executable, "-m", "skipdit_jax.main", f"--workdir={workdir}",
                           *ARGS, *mesh], cwd=ROOT, env=env)


def _result(p) -> dict:
  assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-4000:]
  return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """The one-device and the mesh run, at the same time (two cores)."""
  root = tmp_path_factory.mktemp("mesh")
  procs = [_start(str(root / "one"), 1),
           _start(str(root / "mesh"), 8, "--config.mesh.fsdp=2", "--config.mesh.data=-1")]
  one, mesh = [background.finish(p, 300) for p in procs]
  return _result(one), _result(mesh)


def test_loss_matches_one_device(runs):
  one, mesh = runs
  assert one["steps"] == mesh["steps"] == 3
  assert one["mesh"] == {"data": 1, "fsdp": 1, "tensor": 1}
  assert mesh["mesh"] == {"data": 4, "fsdp": 2, "tensor": 1}
  assert np.isfinite(one["final_loss"])
  assert abs(mesh["final_loss"] - one["final_loss"]) <= 1e-5 * abs(one["final_loss"])


def test_sharded_samples_match_one_device(runs):
  one, mesh = runs
  a = np.load(one["samples_file"])
  b = np.load(mesh["samples_file"])
  np.testing.assert_array_equal(a["labels"], b["labels"])
  assert a["images"].shape == b["images"].shape == (10, 8, 8, 1)
  np.testing.assert_allclose(b["images"], a["images"], rtol=0, atol=1e-4)
