"""Fault soak: N random SIGKILLs of a short training run, each followed by a restart.

Usage: python bench/fault_soak.py N [--steps S] [--seed 0] [--workdir DIR]

Runs the tiny training once straight through (the reference), then again in a second
workdir where it is SIGKILLed N times (about half of the kills aimed at the moment a
checkpoint is being written, the rest a random number of steps after the run's first
new checkpoint is complete) and restarted with the same
command each time, until it finishes. Prints each kill, the steps lost (progress past
the last complete checkpoint, redone after the restart), and whether the final train
state (params, EMA, optimizer state, rng, step) equals the reference bit for bit. The
last line is JSON: {"kills", "survived", "steps_lost", "params_equal", ...}.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A model small enough that compiling and running it costs seconds on 2 CPU cores.
TINY = ("--config.model.depth=2", "--config.model.hidden_size=32",
        "--config.model.num_heads=2", "--config.train.batch_size=16",
        "--config.train.warmup_steps=2", "--config.train.log_every=1",
        "--config.train.sample_every=100000", "--config.sample.num_per_class=0",
        "--config.sample.grid_per_class=0", "--config.eval.class_accuracy=False")
_STEP = re.compile(r"step (\d+)/(\d+)")
_RESUMED = re.compile(r"resumed from .* at step (\d+)")


def child_env(cache_dir: str) -> dict[str, str]:
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, PYTHONUNBUFFERED="1",
             # Restarts reuse the compiled step (same program, so the same bits).
             JAX_COMPILATION_CACHE_DIR=cache_dir,
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
             JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
  env.pop("XLA_FLAGS", None)
  return env


def command(workdir: str, steps: int, ckpt_every: int, extra=()) -> list[str]:
  return [sys.executable, "-m", "skipdit_jax.main", "--config=configs/default.py",
          f"--workdir={workdir}", f"--config.train.num_steps={steps}",
          f"--config.train.ckpt_every={ckpt_every}", *TINY, *extra]


class Run:
  """A training subprocess whose stderr is followed for its step and resume point."""

  def __init__(self, cmd: list[str], env: dict[str, str]):
    self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    self.step = None       # last step logged
    self.resumed = 0       # step the run started from
    self.log: list[str] = []
    self.stdout = ""
    self._t = threading.Thread(target=self._follow, daemon=True)
    self._t.start()

  def _follow(self):
    for line in self.proc.stderr:
      self.log.append(line)
      if m := _STEP.search(line):
        self.step = int(m.group(1))
      elif m := _RESUMED.search(line):
        self.resumed = int(m.group(1))

  def wait(self, timeout: float) -> int:
    # stderr belongs to the follower thread; only stdout is read here.
    rc = self.proc.wait(timeout=timeout)
    self.stdout = self.proc.stdout.read()
    self._t.join(timeout=5)
    return rc

  def kill(self) -> None:
    os.kill(self.proc.pid, signal.SIGKILL)
    self.wait(60)

  def result(self) -> dict:
    lines = [l for l in self.stdout.strip().splitlines() if l.startswith("{")]
    if not lines:
      raise RuntimeError("training printed no JSON result; its log ends:\n"
                         + "".join(self.log[-30:]))
    return json.loads(lines[-1])


def saving(workdir: str) -> bool:
  """True while orbax is writing a step (its temporary directory exists)."""
  try:
    return any("orbax-checkpoint-tmp" in n
               for n in os.listdir(os.path.join(workdir, "checkpoints")))
  except FileNotFoundError:
    return False


def complete_steps(workdir: str) -> list[int]:
  """Steps orbax has finished writing (the rename of the temporary folder is the commit)."""
  try:
    names = os.listdir(os.path.join(workdir, "checkpoints"))
  except FileNotFoundError:
    return []
  return sorted(int(n) for n in names if n.isdigit())


def run_and_kill(cmd, env, workdir: str, *, during_save: bool, after_steps: int,
                 timeout: float = 300.0) -> dict:
  """Starts a run and SIGKILLs it once it has trained past its resume point: at the
  first checkpoint write (`during_save`), or `after_steps` steps after its first new
  checkpoint is complete (so that the run makes progress between kills).

  Returns {"killed", "in_save", "step": last step logged, "resumed": the step the run
  started from, "returncode"}. A run that finishes first is not killed.
  """
  run = Run(cmd, env)
  t0, in_save = time.monotonic(), False
  while run.proc.poll() is None and time.monotonic() - t0 < timeout:
    started = run.step is not None and run.step > run.resumed
    if during_save and started and saving(workdir):
      in_save = True
      break
    if not during_save and started:
      newer = [c for c in complete_steps(workdir) if c > run.resumed]
      if newer and run.step >= newer[0] + after_steps:
        break
    time.sleep(0.002)
  step = run.step
  if run.proc.poll() is not None:
    rc = run.wait(60)
    return {"killed": False, "in_save": False, "step": step, "resumed": run.resumed,
            "returncode": rc, "log": run.log}
  run.kill()
  return {"killed": True, "in_save": in_save and saving(workdir), "step": step,
          "resumed": run.resumed, "returncode": None, "log": run.log}


def final_state(workdir: str) -> dict[str, np.ndarray]:
  """Every array of the latest checkpoint, by dotted path, read without a target tree."""
  import orbax.checkpoint as ocp
  ckpt_dir = os.path.join(workdir, "checkpoints")
  steps = sorted(int(n) for n in os.listdir(ckpt_dir) if n.isdigit())
  with ocp.StandardCheckpointer() as c:
    tree = c.restore(os.path.join(ckpt_dir, str(steps[-1]), "state"))
  import jax
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {jax.tree_util.keystr(p): np.asarray(x) for p, x in flat}


def compare(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> list[str]:
  """Paths whose arrays are not bit-identical (or missing on one side)."""
  bad = sorted(set(a) ^ set(b))
  for k in sorted(set(a) & set(b)):
    if a[k].shape != b[k].shape or a[k].tobytes() != b[k].tobytes():
      bad.append(k)
  return bad


def soak(kills: int, *, steps: int | None = None, ckpt_every: int = 3, seed: int = 0,
         root: str | None = None, log=print) -> dict:
  steps = steps or max(24, 6 * kills)  # room for every kill to land before the end
  rng = np.random.default_rng(seed)
  root = root or tempfile.mkdtemp(prefix="fault_soak_")
  env = child_env(os.path.join(root, "jax_cache"))
  ref_dir, soak_dir = os.path.join(root, "straight"), os.path.join(root, "killed")
  t0 = time.perf_counter()
  ref = Run(command(ref_dir, steps, ckpt_every), env)
  if ref.wait(600) != 0:
    raise RuntimeError("the reference run failed:\n" + "".join(ref.log[-30:]))
  log(f"reference: {steps} steps straight in {time.perf_counter() - t0:.1f}s")
  cmd = command(soak_dir, steps, ckpt_every)
  done, survived, lost, in_save = 0, 0, 0, 0
  prev = None  # the step the last killed run had reached
  while True:
    last = done >= kills  # after N kills, let it finish
    r = run_and_kill(cmd, env, soak_dir, during_save=not last and rng.random() < 0.5,
                     after_steps=steps * 10 if last else int(rng.integers(0, ckpt_every)))
    if prev is not None:  # the kill is survived if this restart trained on from a checkpoint
      survived += int(r["killed"] or r["returncode"] == 0)
      lost += max(0, prev - r["resumed"])
    if not r["killed"]:
      log(f"final run: resumed from step {r['resumed']}, exit status {r['returncode']}")
      break
    done += 1
    in_save += int(r["in_save"])
    prev = r["step"]
    log(f"kill {done}: SIGKILL at step {r['step']} "
        f"({'while saving' if r['in_save'] else 'between saves'}); the run had resumed "
        f"from step {r['resumed']}")
  rc = r["returncode"]
  if rc != 0:
    log("".join(r["log"][-30:]))
  diff = compare(final_state(ref_dir), final_state(soak_dir)) if rc == 0 else ["<failed>"]
  for k in diff[:10]:
    log(f"  differs: {k}")
  return {"kills": done, "survived": survived, "steps_lost": lost,
          "params_equal": not diff, "kills_while_saving": in_save, "steps": steps,
          "ckpt_every": ckpt_every, "seconds": round(time.perf_counter() - t0, 1),
          "workdir": root}


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("kills", type=int, help="number of SIGKILLs")
  p.add_argument("--steps", type=int, default=None, help="default: max(24, 6 N)")
  p.add_argument("--ckpt-every", type=int, default=3)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--workdir", default=None, help="folder for both runs (default: a temp dir)")
  a = p.parse_args()
  out = soak(a.kills, steps=a.steps, ckpt_every=a.ckpt_every, seed=a.seed, root=a.workdir)
  print(json.dumps(out), flush=True)


if __name__ == "__main__":
  main()
