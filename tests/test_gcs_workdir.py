"""`--workdir=gs://...` end to end through the CLI, against a local GCS server.

fake-gcs-server (tests/conftest.py) speaks the GCS JSON API on 127.0.0.1; orbax's
tensorstore, gcsfs (etils.epath) and google-cloud-storage all talk to it as to GCS. The
children run in an empty working directory, so anything written to local disk under the
workdir's name (the old `./gs:/B/run` bug) would show up there. A run is SIGKILLed after
its first checkpoint is committed to the bucket and resumed; its final state must equal,
bit for bit, an uninterrupted run written to a local workdir (a second code path).
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import background


ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("fault_soak", ROOT / "bench" / "fault_soak.py")
soak = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soak)
STEPS, FIRST = 40, 4   # the killed run saves at FIRST; the kill lands after its commit
TINY = [f"--config={ROOT}/configs/digits_skipdit.py",
        "--config.model.depth=4", "--config.model.hidden_size=32",
        "--config.model.num_heads=2", "--config.train.batch_size=16",
        f"--config.train.num_steps={STEPS}", "--config.train.warmup_steps=2",
        "--config.train.log_every=1", "--config.train.sample_every=100000",
        "--config.sample.num_steps=4", "--config.sample.num_per_class=0",
        "--config.sample.grid_per_class=0", "--config.eval.class_accuracy=False",
        "--config.sample.batch_size=20", "--config.sample.cache.policy=none"]
SAMPLE = ["--config.sample.num_per_class=2"]
EVAL = ["--config.eval.num_samples=20", "--config.eval.num_ref=200",
        "--config.eval.kid_subsets=2", "--config.eval.kid_subset_size=10",
        "--config.eval.pr_k=2", "--config.eval.stability=False"]


@pytest.fixture(scope="module")
def cache() -> Path:
  """The JAX compilation cache of the subprocess tests, kept across sessions (entries are
  keyed by the program and the JAX version), so reruns and later sessions reuse it."""
  import tempfile
  return Path(tempfile.gettempdir()) / "skipdit_jax_test_jax_cache"


def child_env(cache: Path, **extra: str) -> dict[str, str]:
  env = soak.child_env(str(cache))  # cpu, unbuffered, shared compilation cache
  env.update(extra)
  return env


def cli(args: list[str], cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, "-m", "skipdit_jax.main", *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=timeout)


def start_cli(args: list[str], cwd: Path, env: dict) -> subprocess.Popen:
  return background.start([sys.executable, "-m", "skipdit_jax.main", *args], cwd=cwd,
                          env=env)


def last_json(p: subprocess.CompletedProcess) -> dict:
  assert p.returncode == 0, p.stderr[-3000:]
  return json.loads(p.stdout.strip().splitlines()[-1])


def blob_exists(bucket: str, name: str) -> bool:
  from google.cloud import storage  # no listing cache, unlike gcsfs
  return storage.Client().bucket(bucket[len("gs://"):]).blob(name).exists()


def states_of(workdir: str) -> dict[str, np.ndarray]:
  """Every array of the latest checkpoint (by dotted path), read without a target."""
  import jax
  import orbax.checkpoint as ocp
  from skipdit_jax.train.checkpoint import Checkpointer
  ck = Checkpointer(workdir, read_only=True)
  try:
    step = ck.latest_step()
    with ocp.StandardCheckpointer() as c:
      tree = c.restore(ck.path / str(step) / "state")
  finally:
    ck.close()
  return {jax.tree_util.keystr(p): np.asarray(x)
          for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.fixture(params=["local", "gs"])
def workdir(request, tmp_path) -> str:
  if request.param == "local":
    return str(tmp_path / "run")
  return request.getfixturevalue("gcs_bucket") + "/run"


def _state(seed: int):
  """A small TrainState whose params, EMA and Adam moments all differ."""
  import jax
  import jax.numpy as jnp
  import optax
  from skipdit_jax.train.state import TrainState
  rng = np.random.default_rng(seed)
  params = {"a": jnp.asarray(rng.normal(size=(3, 5)), jnp.float32),
            "b": {"c": jnp.asarray(rng.normal(size=(7,)), jnp.float32)}}
  st = TrainState.create(params, optax.adam(1e-3), jax.random.PRNGKey(seed))
  ema = {"a": np.asarray(rng.normal(size=(3, 5)), np.float32),
         "b": {"c": np.asarray(rng.normal(size=(7,)), np.float32)}}
  return st.replace(step=jnp.int32(9), ema_params=jax.tree.map(jnp.asarray, ema)), ema


def test_ema_only_restore_equals_the_saved_ema_and_the_full_restore(workdir):
  import jax
  from skipdit_jax.train.checkpoint import Checkpointer
  st, ema = _state(0)
  ck = Checkpointer(workdir, async_save=False)
  assert ck.save(9, st, {"data": {"position": 9}})
  ck.wait()
  ck.close()
  ck = Checkpointer(workdir, read_only=True)
  try:
    abstract = jax.eval_shape(lambda: st)
    got, step = ck.restore_ema(abstract)
    full, meta = ck.restore(abstract)
  finally:
    ck.close()
  assert step == 9 and meta["data"]["position"] == 9
  for path, want in (("a", ema["a"]), ("c", ema["b"]["c"])):
    mine = got["a"] if path == "a" else got["b"]["c"]
    assert np.asarray(mine).tobytes() == want.tobytes(), path
  assert soak.compare(
      {jax.tree_util.keystr(p): np.asarray(x)
       for p, x in jax.tree_util.tree_flatten_with_path(got)[0]},
      {jax.tree_util.keystr(p): np.asarray(x)
       for p, x in jax.tree_util.tree_flatten_with_path(full.ema_params)[0]}) == []
  assert not np.array_equal(np.asarray(full.params["a"]), ema["a"])  # EMA is not params


def test_move_aside_and_config_files_on_either_storage(workdir):
  import ml_collections
  from etils import epath
  from skipdit_jax.train import checkpoint
  st, _ = _state(1)
  ck = checkpoint.Checkpointer(workdir, async_save=False)
  ck.save(9, st, {})
  ck.wait()
  assert ck.complete_steps() == [9]
  ck.close()
  checkpoint.save_config(ml_collections.ConfigDict({"model": {"depth": 2}}), workdir)
  root = epath.Path(workdir)
  assert json.loads((root / "config.json").read_text()) == {"model": {"depth": 2}}
  moved = checkpoint.move_aside(workdir)
  assert moved.startswith(workdir + "/checkpoints.replaced-")
  assert not (root / "checkpoints").exists() and not (root / "config.json").exists()
  assert (epath.Path(moved) / "config.json").exists()
  assert (epath.Path(moved) / "9" / "state").is_dir()


def test_an_uncommitted_step_on_a_bucket_is_never_chosen(gcs_bucket):
  # On object storage orbax writes a step in place and `commit_success.txt` last; what a
  # kill before that leaves must not count as a step (its `all_steps()` skips it).
  from google.cloud import storage
  from skipdit_jax.train.checkpoint import Checkpointer
  workdir = gcs_bucket + "/run"
  ck = Checkpointer(workdir, async_save=False, keep=5)
  for step, seed in ((9, 2), (11, 3)):
    assert ck.save(step, _state(seed)[0].replace(step=step), {"data": {"position": step}})
  ck.close()
  storage.Client().bucket(gcs_bucket[len("gs://"):]).blob(
      "run/checkpoints/11/commit_success.txt").delete()
  ck = Checkpointer(workdir, read_only=True)
  try:
    assert ck.complete_steps() == [9] and ck.latest_step() == 9
    assert ck.read_meta(9)["data"]["position"] == 9
  finally:
    ck.close()


@pytest.mark.slow  # ~6 process starts; minutes on a busy 2-core machine
def test_train_kill_resume_sample_eval_on_a_bucket(gcs_bucket, tmp_path, cache):
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  env = child_env(cache)
  # The reference: one uninterrupted run into a local workdir, alongside the bucket run
  # (two cores; the kill below waits for a committed step, not for a time).
  local = tmp_path / "straight"
  straight_run = start_cli(TINY + [f"--workdir={local}", f"--config.train.ckpt_every={STEPS}"],
                           cwd, env)

  # The bucket run, SIGKILLed once its step-FIRST checkpoint is committed.
  workdir = f"{gcs_bucket}/run"
  run = soak.Run([sys.executable, "-m", "skipdit_jax.main", *TINY, f"--workdir={workdir}",
                  f"--config.train.ckpt_every={FIRST}"], env)
  t0 = time.monotonic()
  marker = f"run/checkpoints/{FIRST}/commit_success.txt"
  while not blob_exists(gcs_bucket, marker):
    assert run.proc.poll() is None, "".join(run.log[-30:])
    assert time.monotonic() - t0 < 240, "no checkpoint committed to the bucket in 240 s"
    time.sleep(0.05)
  assert run.proc.poll() is None, "the run ended before the kill; raise STEPS"
  os.kill(run.proc.pid, signal.SIGKILL)
  run.wait(60)
  assert run.step is not None and run.step < STEPS
  assert blob_exists(gcs_bucket, "run/config.json")
  out = last_json(background.finish(straight_run, 300))
  assert out["steps"] == STEPS

  # Resume: from a committed step of the bucket, to the end, bit-identical.
  resumed = last_json(cli(TINY + [f"--workdir={workdir}", f"--config.train.ckpt_every={STEPS}"],
                          cwd, env, 300))
  assert FIRST <= resumed["start_step"] < STEPS and resumed["steps"] == STEPS
  assert resumed["workdir"] == workdir  # never abspath'ed into ./gs:/...
  straight, killed = states_of(str(local)), states_of(workdir)
  assert len(straight) > 10
  differ = soak.compare(straight, killed)
  assert not differ, differ

  # Sample and eval read the bucket's EMA and write into the bucket (at the same time:
  # each writes its own files).
  sampling = start_cli(TINY + SAMPLE + [f"--workdir={workdir}", "--mode=sample"], cwd, env)
  evaluating = start_cli(TINY + EVAL + [f"--workdir={workdir}", "--mode=eval"], cwd, env)
  sampled = last_json(background.finish(sampling, 300))
  evald = last_json(background.finish(evaluating, 300))
  assert sampled["step"] == STEPS and sampled["samples_file"].startswith(workdir + "/samples/")
  from etils import epath
  with epath.Path(sampled["samples_file"]).open("rb") as f:
    z = np.load(f)
    assert z["images"].shape == (20, 8, 8, 1) and np.isfinite(z["images"]).all()
  assert epath.Path(sampled["samples_file"][:-len(".npz")] + ".png").exists()
  assert evald["step"] == STEPS and np.isfinite(evald["FD-digits"])
  names = {p.name for p in epath.Path(workdir, "eval").iterdir()}
  assert any(n.startswith("metrics_step") for n in names), names
  assert any(n.startswith("feature_net_digits") for n in names), names  # the cache
  events = list(epath.Path(workdir, "tensorboard").glob("events.out.tfevents.*"))
  assert events and all(e.stat().length > 0 for e in events)
  for mode in ("train", "sample", "eval"):
    assert epath.Path(workdir, f"result_{mode}.json").exists(), mode
  # Nothing went to local disk: the children's working directory is still empty.
  assert sorted(os.listdir(cwd)) == []
  assert not (ROOT / "gs:").exists()


@pytest.mark.slow  # compiles the train step and the sampler
def test_compile_mode_runs_with_the_bucket_environment(gcs_emulator, tmp_path, cache):
  fast = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
  p = cli(TINY + ["--mode=compile"], tmp_path,
          child_env(cache, XLA_FLAGS=fast), 300)
  out = last_json(p)
  assert out["bytes_per_device"] > 0
  assert not (tmp_path / "gs:").exists()


def test_a_missing_bucket_is_one_clear_line(gcs_emulator, tmp_path, cache):
  p = cli(TINY + ["--workdir=gs://no-such-bucket-7c1/run"], tmp_path, child_env(cache), 120)
  assert p.returncode == 2, p.stderr[-2000:]
  err = p.stderr.strip().splitlines()[-1]
  assert err.startswith("error: --workdir=gs://no-such-bucket-7c1/run")
  assert "does not exist" in err and "Traceback" not in p.stderr
  assert not (tmp_path / "gs:").exists()


def test_no_credentials_is_one_clear_line(tmp_path, cache):
  # No emulator, no key file, no gcloud config: google.auth finds nothing (and with
  # NO_GCE_CHECK it does not probe a metadata server), so nothing reaches the network.
  env = child_env(cache, HOME=str(tmp_path), NO_GCE_CHECK="true",
                  CLOUDSDK_CONFIG=str(tmp_path / "gcloud"))
  for key in ("STORAGE_EMULATOR_HOST", "TENSORSTORE_GCS_HTTP_URL", "FSSPEC_GCS_TOKEN",
              "GOOGLE_AUTH_TOKEN_FOR_TESTING", "GOOGLE_APPLICATION_CREDENTIALS"):
    env.pop(key, None)
  p = cli(TINY + ["--workdir=gs://some-bucket/run"], tmp_path, env, 120)
  assert p.returncode == 2, p.stderr[-2000:]
  err = p.stderr.strip().splitlines()[-1]
  assert err.startswith("error: --workdir=gs://some-bucket/run: no Google Cloud credentials")
  assert "Traceback" not in p.stderr


def test_sweep_with_a_bucket_root_writes_its_files_there(gcs_bucket, tmp_path):
  # `--python=echo`: each "run" prints its command, so the log holds it (no training).
  sweep = tmp_path / "two.py"
  sweep.write_text("def get_sweep():\n  return {'runs': [\n"
                   "    {'name': 'a', 'config': 'configs/digits_skipdit.py'},\n"
                   "    {'name': 'b', 'config': 'configs/digits_dit.py'}]}\n")
  root = f"{gcs_bucket}/sweep"
  p = subprocess.run([sys.executable, str(ROOT / "launch" / "sweep.py"), str(sweep),
                      "--root", root, "--python", "echo"], cwd=tmp_path,
                     capture_output=True, text=True, timeout=120)
  assert p.returncode == 0, p.stderr[-2000:]
  assert json.loads(p.stdout.strip().splitlines()[-1]) == {"runs": 2, "failed": []}
  from etils import epath
  listed = json.loads(epath.Path(root, "sweep.json").read_text())
  assert [r["name"] for r in listed["runs"]] == ["a", "b"]
  for name in ("a", "b"):
    log = epath.Path(root, name, "launch.log").read_text()
    assert f"--workdir={root}/{name}" in log, log
  assert sorted(os.listdir(tmp_path)) == ["two.py"]  # nothing local under the root's name
