"""The command line end to end, as subprocesses: train, resume, sample, bad input."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import background

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--config=configs/digits_skipdit.py",
        "--config.model.depth=4", "--config.model.hidden_size=32",
        "--config.model.num_heads=2", "--config.train.batch_size=32",
        "--config.train.num_steps=4", "--config.train.warmup_steps=2",
        "--config.train.log_every=2", "--config.train.ckpt_every=2",
        "--config.train.sample_every=4", "--config.sample.num_steps=4",
        "--config.sample.num_per_class=2", "--config.sample.grid_per_class=2",
        "--config.sample.batch_size=20"]


def start_main(*args: str) -> subprocess.Popen:
  # The children inherit the suite's persistent compilation cache (tests/conftest.py):
  # the resume and sample runs reuse the programs the first run compiled.
  return background.start([sys.executable, "-m", "skipdit_jax.main", *args], cwd=ROOT,
                          env=dict(os.environ, JAX_PLATFORMS="cpu"))


def run_main(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
  return background.finish(start_main(*args), timeout)


def last_json(proc: subprocess.CompletedProcess) -> dict:
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("run") / "wd"
  proc = run_main(*TINY, f"--workdir={workdir}")
  return workdir, proc


@pytest.fixture(scope="module")
def after_training(trained, tmp_path_factory):
  """The sample run and the resume run, at the same time (two cores): the resume works
  on a copy of the trained workdir, so the sample run sees step 4 as its latest."""
  workdir, _ = trained
  resumed = tmp_path_factory.mktemp("resume") / "wd"
  shutil.copytree(workdir, resumed)
  sample = start_main(*TINY, f"--workdir={workdir}", "--mode=sample",
                      "--config.sample.cfg_scale=2.0", "--config.sample.sampler=ddpm",
                      "--config.sample.cache.policy=none",
                      "--config.eval.class_accuracy=False")
  resume = start_main(*TINY, f"--workdir={resumed}", "--config.train.num_steps=6",
                      "--config.sample.num_per_class=0", "--config.sample.grid_per_class=0",
                      "--config.eval.class_accuracy=False")
  return {"sample": background.finish(sample, 240),
          "resume": background.finish(resume, 240), "resumed_workdir": resumed}


def test_train_writes_the_run_and_prints_json(trained):
  workdir, proc = trained
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


def test_sample_mode_reads_the_ema_weights(after_training):
  out = last_json(after_training["sample"])
  assert out["mode"] == "sample" and out["step"] == 4 and out["cfg_scale"] == 2.0
  npz = Path(out["samples_file"])
  assert npz.exists() and npz.with_suffix(".png").exists() and "ddpm4_cfg2" in npz.name
  assert np.load(npz)["images"].shape == (20, 8, 8, 1)


def test_rerun_resumes_from_the_checkpoint(after_training):
  out = last_json(after_training["resume"])
  assert out["start_step"] == 4 and out["steps"] == 6
  assert (after_training["resumed_workdir"] / "checkpoints/6").exists()


BAD = [("--config.train.batch_size=0", "config.train.batch_size"),
       ("--config.model.name=Huge/3", "model.name"),
       ("--config.train.lr=-1.0", "config.train.lr"),
       ("--config.sample.cache.k=9", "sample.cache.k")]


@pytest.fixture(scope="module")
def refused(tmp_path_factory):
  """Every bad command line of the tests below, run at the same time (each only starts
  Python and checks its arguments, so two cores take them in parallel)."""
  root = tmp_path_factory.mktemp("bad")
  cases = {override: (root / f"wd{i}", (override,)) for i, (override, _) in enumerate(BAD)}
  cases["bogus"] = (root / "unknown", ("--config.train.bogus=1",))  # no "bogus" in the path
  cases["empty"] = (root / "empty", ("--mode=sample",))
  procs = {k: start_main(*TINY, f"--workdir={wd}", *extra) for k, (wd, extra) in cases.items()}
  return {k: (cases[k][0], background.finish(p, 180)) for k, p in procs.items()}


@pytest.mark.parametrize("override, field", BAD)
def test_bad_overrides_fail_early_naming_the_field(refused, override, field):
  workdir, proc = refused[override]
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert field in proc.stderr
  assert not (workdir / "checkpoints").exists()   # nothing ran


def test_unknown_field_and_missing_checkpoint_are_clear(refused):
  _, proc = refused["bogus"]
  assert proc.returncode != 0 and "bogus" in proc.stderr
  _, proc = refused["empty"]
  assert proc.returncode == 2 and "train" in proc.stderr and "empty" in proc.stderr
  assert "Traceback" not in proc.stderr
