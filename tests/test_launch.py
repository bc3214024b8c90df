"""The launchers' dry runs (launch/tpu_pod.sh, launch/slurm.sh, launch/sweep.py).

Each dry run's printed commands are split back into argument lists (shlex, as a shell
would) and compared with the arguments the test wrote down itself; the sweep's overrides
are also parsed by ml_collections' own config flags against the real config file.
"""
import itertools
import os
import shlex
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAIN_ARGS = ["--config=configs/imagenet256_skipdit_xl2.py", "--workdir=gs://bucket/xl2",
             "--config.train.lr=1e-4", "--config.mesh.rules=(('heads', 'tensor'),)"]


def _run(argv, **kw):
  return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, **kw)


def _lines(out: str) -> list[list[str]]:
  return [shlex.split(line) for line in out.strip().splitlines()]


def test_tpu_pod_dry_run_prints_every_command():
  p = _run(["bash", "launch/tpu_pod.sh", "--name", "pod1", "--zone", "us-central2-b",
            "--accelerator", "v4-32", "--project", "proj", "--create", "--teardown",
            "--dry-run", "--"] + MAIN_ARGS)
  assert p.returncode == 0, p.stderr
  cmds = _lines(p.stdout)
  gc = ["gcloud", "compute", "tpus", "tpu-vm"]
  loc = ["--zone=us-central2-b", "--project=proj"]
  assert cmds[0] == gc + ["create", "pod1"] + loc + ["--accelerator-type=v4-32",
                                                     "--version=tpu-ubuntu2204-base"]
  assert cmds[1][:2] == ["tar", "czf"] and "--exclude=.git" in cmds[1]
  tarball = cmds[1][2]
  assert cmds[2] == gc + ["scp", tarball, "pod1:skipdit-jax.tgz"] + loc + ["--worker=all"]
  assert cmds[3][:len(gc) + 2] == gc + ["ssh", "pod1"] and "--worker=all" in cmds[3]
  install = cmds[3][-1]
  assert install.startswith("--command=") and "pip install" in install and "jax[tpu]" in install
  # The training command: the same on all workers, main's arguments intact.
  assert cmds[4][:-1] == gc + ["ssh", "pod1"] + loc + ["--worker=all"]
  remote = cmds[4][-1]
  assert remote.startswith("--command=")
  words = shlex.split(remote[len("--command="):])  # what the worker's shell runs
  start = words.index("python3")
  assert words[start:start + 3] == ["python3", "-m", "skipdit_jax.main"]
  assert words[start + 3:start + 3 + len(MAIN_ARGS)] == MAIN_ARGS
  assert words[start + 3 + len(MAIN_ARGS)] == "--config.distributed.enabled=True"
  assert "pipefail;" in words
  assert cmds[5] == gc + ["delete", "pod1"] + loc + ["--quiet"]
  assert len(cmds) == 6


def test_tpu_pod_reuse_skips_create_and_teardown():
  p = _run(["bash", "launch/tpu_pod.sh", "--name", "pod1", "--zone", "z", "--no-install",
            "--dry-run", "--"] + MAIN_ARGS)
  assert p.returncode == 0, p.stderr
  cmds = _lines(p.stdout)
  assert len(cmds) == 1 and cmds[0][4:6] == ["ssh", "pod1"] and "--worker=all" in cmds[0]


@pytest.mark.parametrize("argv, message", [
    (["--zone", "z", "--dry-run", "--", "--config=c.py"], "--name and --zone are required"),
    (["--name", "p", "--zone", "z", "--dry-run"], "give main.py's arguments after --"),
    (["--name", "p", "--zone", "z", "--bogus"], "unknown option --bogus"),
])
def test_tpu_pod_bad_arguments(argv, message):
  p = _run(["bash", "launch/tpu_pod.sh"] + argv)
  assert p.returncode != 0 and message in p.stderr


def test_slurm_dry_run_prints_script_and_sbatch():
  p = _run(["bash", "launch/slurm.sh", "--nodes", "4", "--gpus-per-node", "8",
            "--partition", "gpu", "--account", "acct", "--time", "12:00:00", "--job-name",
            "xl2", "--dry-run", "--"] + MAIN_ARGS)
  assert p.returncode == 0, p.stderr
  lines = p.stdout.strip().splitlines()
  assert lines[0] == "# slurm-xl2.sbatch" and lines[1] == "#!/usr/bin/env bash"
  directives = {l for l in lines if l.startswith("#SBATCH ")}
  for d in ("--job-name=xl2", "--nodes=4", "--ntasks-per-node=1", "--gpus-per-node=8",
            "--time=12:00:00", "--partition=gpu", "--account=acct"):
    assert f"#SBATCH {d}" in directives, d
  assert f"cd {ROOT}" in lines and "source .venv/bin/activate" in lines
  srun = [shlex.split(l) for l in lines if l.startswith("srun ")]
  assert srun == [["srun", "--kill-on-bad-exit=1", "python", "-m", "skipdit_jax.main"]
                  + MAIN_ARGS]
  assert lines[-1] == "sbatch slurm-xl2.sbatch"
  # The printed script is valid bash.
  script = "\n".join(lines[1:-1])
  assert _run(["bash", "-n"], input=script).returncode == 0
  assert not os.path.exists(os.path.join(ROOT, "slurm-xl2.sbatch"))  # dry: nothing written


@pytest.mark.parametrize("argv, message", [
    (["--nodes", "0", "--dry-run", "--", "--config=c.py"], "--nodes must be a positive"),
    (["--dry-run"], "give main.py's arguments after --"),
])
def test_slurm_bad_arguments(argv, message):
  p = _run(["bash", "launch/slurm.sh"] + argv)
  assert p.returncode != 0 and message in p.stderr


def _parse_config_flags(argv: list[str]):
  """The config main would see for `argv` (its --config and --config.x=v flags)."""
  from absl import flags
  from ml_collections import config_flags
  fv = flags.FlagValues()
  # sys_argv: config_flags reads the override names from it (default: sys.argv)
  config_flags.DEFINE_config_file("config", None, "", flag_values=fv, lock_config=True,
                                  sys_argv=["main"] + argv)
  flags.DEFINE_string("workdir", None, "", flag_values=fv)
  sys.path.insert(0, ROOT)
  cwd = os.getcwd()
  os.chdir(ROOT)
  try:
    fv(["main"] + argv)
    return fv.config, fv.workdir
  finally:
    os.chdir(cwd)


def test_sweep_grid_expands_to_six_runs(tmp_path):
  root = str(tmp_path / "sweep")
  p = _run([sys.executable, "launch/sweep.py", "configs/sweeps/digits_lr_skip.py",
            "--root", root, "--dry-run"])
  assert p.returncode == 0, p.stderr
  cmds = _lines(p.stdout)
  assert len(cmds) == 6
  expected = set(itertools.product([True, False], [1e-3, 2e-3, 4e-3]))
  seen, workdirs = set(), set()
  for c in cmds:
    assert c[:4] == ["python", "-m", "skipdit_jax.main", "--config=configs/digits_skipdit.py"]
    config, workdir = _parse_config_flags(c[3:])
    assert os.path.dirname(workdir) == root
    workdirs.add(workdir)
    assert config.train.num_steps == 2000  # the sweep's shared override
    seen.add((config.model.long_skip, config.train.lr))
  assert seen == expected and len(workdirs) == 6
  assert not os.path.exists(root)  # a dry run creates nothing


def test_sweep_runs_form_and_launcher_prefix(tmp_path):
  path = tmp_path / "two.py"
  path.write_text(
      "def get_sweep():\n"
      "  return {'overrides': {'train.batch_size': 32},\n"
      "          'runs': [{'name': 'a', 'config': 'configs/digits_skipdit.py',\n"
      "                    'overrides': {'mesh': {'fsdp': 2, 'data': -1}}},\n"
      "                   {'name': 'b', 'config': 'configs/digits_dit.py'}]}\n")
  p = _run([sys.executable, "launch/sweep.py", str(path), "--root", "R", "--dry-run",
            "--launcher", "launch/slurm.sh --nodes 2 --", "--only", "a"])
  assert p.returncode == 0, p.stderr
  (cmd,) = _lines(p.stdout)
  assert cmd[:4] == ["launch/slurm.sh", "--nodes", "2", "--"]
  config, workdir = _parse_config_flags(cmd[7:])
  assert workdir == os.path.join("R", "a")
  assert (config.mesh.fsdp, config.mesh.data, config.train.batch_size) == (2, -1, 32)


@pytest.mark.parametrize("body, message", [
    ("X = 1\n", "defines neither get_sweep() nor get_config()"),
    ("def get_sweep():\n  return {'config': 'c.py', 'grid': {'train.lr': 0.1}}\n",
     "grid field 'train.lr' must be a non-empty list"),
    ("def get_sweep():\n  return {'grid': {'train.lr': [0.1]}}\n", "needs a 'config'"),
    ("def get_sweep():\n  return {'runs': [{'name': 'a'}]}\n", "runs[0] has no 'config'"),
    ("def get_sweep():\n  return {'runs': [{'name': 'a', 'config': 'c.py'},"
     " {'name': 'a', 'config': 'c.py'}]}\n", "names are not unique"),
])
def test_bad_sweep_file_errors_clearly(tmp_path, body, message):
  path = tmp_path / "bad.py"
  path.write_text(body)
  p = _run([sys.executable, "launch/sweep.py", str(path), "--root", "R", "--dry-run"])
  assert p.returncode == 2 and not p.stdout
  assert message in p.stderr and str(path) in p.stderr and "Traceback" not in p.stderr


def test_missing_sweep_file(tmp_path):
  p = _run([sys.executable, "launch/sweep.py", str(tmp_path / "nope.py"), "--root", "R",
            "--dry-run"])
  assert p.returncode == 2 and "does not exist" in p.stderr
