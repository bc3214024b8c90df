"""Subprocess faults: SIGTERM (preemption) and SIGKILL mid-save, then restarts, must end
bit-identical to one uninterrupted run (2S straight == S + restart + S).

The runs share a JAX persistent compilation cache, so only the first one compiles; the
cached program is the same executable, so this does not change any bit. Each kill and
restart is a real process: about 4 process starts (~1-2 min on a busy 2-core machine);
the reference run goes alongside the faulty ones.
"""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import time

import pytest

from skipdit_jax.train.preemption import PREEMPTED_EXIT_CODE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "fault_soak", os.path.join(ROOT, "bench", "fault_soak.py"))
soak = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(soak)

STEPS, EVERY = 12, 4


def wait_for(run, pred, timeout=240.0):
  t0 = time.monotonic()
  while run.proc.poll() is None and time.monotonic() - t0 < timeout:
    if pred():
      return True
    time.sleep(0.002)
  return False


@pytest.fixture(scope="module")
def env():
  # Kept across sessions (entries are keyed by the program and the JAX version), so only
  # the first session ever pays the cold compile.
  import tempfile
  return soak.child_env(os.path.join(tempfile.gettempdir(), "skipdit_jax_test_jax_cache"))


def test_sigterm_then_sigkill_mid_save_then_restart_equals_the_straight_run(tmp_path, env):
  # The reference runs alongside the faulty runs (two cores); it is awaited at the end.
  straight = str(tmp_path / "straight")
  ref = soak.Run(soak.command(straight, STEPS, EVERY), env)

  workdir = str(tmp_path / "faulty")
  cmd = soak.command(workdir, STEPS, EVERY)
  # 1. SIGTERM after step 2: the step finishes, a checkpoint is written, exit 143.
  run = soak.Run(cmd, env)
  assert wait_for(run, lambda: (run.step or 0) >= 2)
  os.kill(run.proc.pid, signal.SIGTERM)
  assert run.wait(120) == PREEMPTED_EXIT_CODE, "".join(run.log[-20:])
  stopped = run.result()
  assert stopped["preempted"] and 2 <= stopped["steps"] < STEPS
  assert soak.complete_steps(workdir)[-1] == stopped["steps"]

  # 2. Restart; SIGKILL it while orbax writes the next checkpoint.
  run = soak.Run(cmd, env)
  assert wait_for(run, lambda: (run.step or 0) > stopped["steps"] and soak.saving(workdir))
  os.kill(run.proc.pid, signal.SIGKILL)
  run.wait(60)
  assert run.resumed == stopped["steps"]
  assert soak.saving(workdir), "the kill should land while the save is in flight"
  killed_at = run.step
  survivors = soak.complete_steps(workdir)
  assert survivors[-1] < killed_at + 1  # the half-written step is not a step

  # 3. Restart: resumes from the last complete step and finishes.
  run = soak.Run(cmd, env)
  assert run.wait(300) == 0, "".join(run.log[-20:])
  assert run.resumed == survivors[-1]
  assert not soak.saving(workdir)  # the leftover temporary directory was cleaned up
  final = run.result()
  assert final["steps"] == STEPS and final["start_step"] == survivors[-1]

  assert ref.wait(300) == 0, "".join(ref.log[-20:])
  assert soak.complete_steps(straight)[-1] == STEPS
  differ = soak.compare(soak.final_state(straight), soak.final_state(workdir))
  assert not differ, differ
  with open(os.path.join(workdir, "checkpoints", str(STEPS), "meta", "metadata")) as f:
    meta = json.load(f)
  assert meta["data"]["position"] == STEPS and meta["config"]["train"]["num_steps"] == STEPS
