"""The command line end to end, as subprocesses: train, resume, sample, bad input."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config=configs/digits_skipdit.py",
        "--config.model.depth=4", "--config.model.hidden_size=32",
        "--config.model.num_heads=2", "--config.train.batch_size=32",
        "--config.train.num_steps=4", "--config.train.warmup_steps=2",
        "--config.train.log_every=2", "--config.train.ckpt_every=2",
        "--config.train.sample_every=4", "--config.sample.num_steps=4",
        "--config.sample.num_per_class=2", "--config.sample.grid_per_class=2",
        "--config.sample.batch_size=20"]


def run_main(tmp_cache: Path, *args: str, timeout: float = 240) -> subprocess.CompletedProcess:
  # A persistent compilation cache shared by the runs of this file: the resume and
  # sample runs reuse the programs the first run compiled.
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(tmp_cache),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  return subprocess.run([sys.executable, "-m", "skipdit_jax.main", *args], cwd=ROOT,
                        env=env, capture_output=True, text=True, timeout=timeout)


def last_json(proc: subprocess.CompletedProcess) -> dict:
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  cache = tmp_path_factory.mktemp("jax_cache")
  workdir = tmp_path_factory.mktemp("run") / "wd"
  proc = run_main(cache, *TINY, f"--workdir={workdir}")
  return cache, workdir, proc


def test_train_writes_the_run_and_prints_json(trained):
  _, workdir, proc = trained
  out = last_json(proc)
  assert out["mode"] == "train" and out["steps"] == 4 and out["start_step"] == 0
  for key in ("class_accuracy", "class_accuracy_cached", "classifier_heldout_accuracy",
              "train_time_s", "img_per_s", "final_loss", "sample_s", "sample_cached_s"):
    assert key in out, key
  assert 0.0 <= out["class_accuracy"] <= 1.0
  assert out["classifier_heldout_accuracy"] > 0.9   # the reader itself is good
  assert out["num_samples"] == 20 and out["cache_policy"] == "skip_cache"
  for rel in ("config.json", "config.py", "result_train.json", "checkpoints/4",
              "checkpoints/2", "samples/grid_0000004.png", "samples/final_0000004.png",
              "samples/final_0000004.npz", "samples/final_0000004_cached.npz"):
    assert (workdir / rel).exists(), rel
  assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  saved = json.loads((workdir / "config.json").read_text())
  assert saved["train"]["num_steps"] == 4 and saved["model"]["depth"] == 4
  data = np.load(workdir / "samples/final_0000004.npz")
  assert data["images"].shape == (20, 8, 8, 1)
  np.testing.assert_array_equal(data["labels"], np.repeat(np.arange(10), 2))
  assert "step 4/4" in proc.stderr                  # the progress line


def test_sample_mode_reads_the_ema_weights(trained):
  cache, workdir, _ = trained
  out = last_json(run_main(cache, *TINY, f"--workdir={workdir}", "--mode=sample",
                           "--config.sample.cfg_scale=2.0", "--config.sample.sampler=ddpm",
                           "--config.sample.cache.policy=none",
                           "--config.eval.class_accuracy=False"))
  assert out["mode"] == "sample" and out["step"] == 4 and out["cfg_scale"] == 2.0
  npz = Path(out["samples_file"])
  assert npz.exists() and npz.with_suffix(".png").exists() and "ddpm4_cfg2" in npz.name
  assert np.load(npz)["images"].shape == (20, 8, 8, 1)


def test_rerun_resumes_from_the_checkpoint(trained):
  cache, workdir, _ = trained
  out = last_json(run_main(cache, *TINY, f"--workdir={workdir}",
                           "--config.train.num_steps=6", "--config.sample.num_per_class=0",
                           "--config.sample.grid_per_class=0",
                           "--config.eval.class_accuracy=False"))
  assert out["start_step"] == 4 and out["steps"] == 6
  assert (workdir / "checkpoints/6").exists()


@pytest.mark.parametrize("override, field", [
    ("--config.train.batch_size=0", "config.train.batch_size"),
    ("--config.model.name=Huge/3", "model.name"),
    ("--config.train.lr=-1.0", "config.train.lr"),
    ("--config.sample.cache.k=9", "sample.cache.k"),
])
def test_bad_overrides_fail_early_naming_the_field(tmp_path, override, field):
  proc = run_main(tmp_path / "cache", *TINY, f"--workdir={tmp_path / 'wd'}", override,
                  timeout=120)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert field in proc.stderr
  assert not (tmp_path / "wd" / "checkpoints").exists()   # nothing ran


def test_unknown_field_and_missing_checkpoint_are_clear(tmp_path):
  proc = run_main(tmp_path / "cache", *TINY, f"--workdir={tmp_path}",
                  "--config.train.bogus=1", timeout=120)
  assert proc.returncode != 0 and "bogus" in proc.stderr
  proc = run_main(tmp_path / "cache", *TINY, f"--workdir={tmp_path / 'empty'}",
                  "--mode=sample", timeout=120)
  assert proc.returncode == 2 and "train" in proc.stderr and "empty" in proc.stderr
  assert "Traceback" not in proc.stderr
