"""Expand a sweep config into runs, each with its own workdir, and launch them.

A sweep config is a Python file whose `get_sweep()` (or `get_config()`) returns an
`ml_collections.ConfigDict` (or dict) of either form:

  runs: [{"name": "skipdit", "config": "configs/x.py[:arg]", "overrides": {...}}, ...]
  config: "configs/x.py", grid: {"train": {"lr": [1e-4, 3e-4]}, "model": {...}},
      overrides: {...}     (the Cartesian product of the grid, on top of `overrides`)

Fields nest like the config (`{"train": {"lr": ...}}`, as a ConfigDict must hold them) or
are dotted keys of a plain dict (`{"train.lr": ...}`); a grid leaf is a list of values.

Each run becomes `python -m skipdit_jax.main --config=CONFIG --workdir=ROOT/NAME
--config.FIELD=VALUE ...`; `--launcher` puts a prefix in front (e.g. one of launch/*.sh),
`--dry-run` prints the commands, otherwise they run one after another, each logging to
ROOT/NAME/launch.log, and ROOT/sweep.json records what was launched. ROOT may be a
`gs://` URL (through etils.epath; a run's log is uploaded when the run ends).

  python launch/sweep.py configs/sweeps/study_fmnist.py --root runs/study --dry-run
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from typing import Any

_REMOTE = ("gs://", "s3://", "az://")


def _path(p: str):
  """`p` as an etils.epath.Path (the URL kept as is: never abspath a gs:// root)."""
  from etils import epath
  return epath.Path(p if p.startswith(_REMOTE) else os.path.abspath(os.path.expanduser(p)))


def load_sweep(path: str) -> dict[str, Any]:
  """The sweep file's `get_sweep()` / `get_config()` as a plain dict."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"sweep config {path!r} does not exist")
  spec = importlib.util.spec_from_file_location("sweep_config", path)
  module = importlib.util.module_from_spec(spec)
  root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
  sys.path.insert(0, os.path.dirname(root) if os.path.basename(root) == "configs" else root)
  spec.loader.exec_module(module)
  fn = getattr(module, "get_sweep", None) or getattr(module, "get_config", None)
  if fn is None:
    raise ValueError(f"{path} defines neither get_sweep() nor get_config()")
  sweep = fn()
  return sweep.to_dict() if hasattr(sweep, "to_dict") else dict(sweep)


def _slug(value: Any) -> str:
  return re.sub(r"[^A-Za-z0-9.+-]+", "_", str(value)).strip("_")


def flatten(tree: Any, where: str, prefix: str = "") -> dict[str, Any]:
  """{"train": {"lr": v}} -> {"train.lr": v}; dotted keys pass through."""
  if not isinstance(tree, dict):
    raise ValueError(f"sweep {where} must be a mapping of config fields, got {tree!r}")
  out: dict[str, Any] = {}
  for k, v in tree.items():
    key = f"{prefix}{k}"
    if isinstance(v, dict):
      out.update(flatten(v, where, key + "."))
    else:
      out[key] = v
  return out


def expand(sweep: dict[str, Any]) -> list[dict[str, Any]]:
  """[{"name", "config", "overrides"}] for either form; names are unique."""
  base = flatten(sweep.get("overrides") or {}, "overrides")
  if "runs" in sweep:
    runs = []
    for i, r in enumerate(sweep["runs"]):
      if "config" not in r:
        raise ValueError(f"sweep runs[{i}] has no 'config' (a configs/*.py file)")
      runs.append({"name": r.get("name") or f"run{i:03d}", "config": r["config"],
                   "overrides": {**base, **flatten(r.get("overrides") or {},
                                                   f"runs[{i}].overrides")}})
  elif "grid" in sweep:
    if "config" not in sweep:
      raise ValueError("a sweep with a 'grid' needs a 'config' (a configs/*.py file)")
    grid = flatten(sweep["grid"], "grid")
    keys = list(grid)
    for k in keys:
      if not isinstance(grid[k], (list, tuple)) or not grid[k]:
        raise ValueError(f"sweep grid field {k!r} must be a non-empty list of values, "
                         f"got {grid[k]!r}")
    runs = []
    for values in itertools.product(*(grid[k] for k in keys)):
      name = ",".join(f"{k.split('.')[-1]}={_slug(v)}" for k, v in zip(keys, values))
      runs.append({"name": name, "config": sweep["config"],
                   "overrides": {**base, **dict(zip(keys, values))}})
  else:
    raise ValueError("a sweep config needs 'runs' (a list of runs) or 'config' + 'grid'")
  names = [r["name"] for r in runs]
  if len(set(names)) != len(names):
    raise ValueError(f"sweep run names are not unique: {names}")
  return runs


def _flag_value(v: Any) -> str:
  """How config_flags reads a value back: literals for tuples/bools, plain text else."""
  if isinstance(v, (list, tuple)):
    return repr(tuple(v))
  return str(v)


def command(run: dict[str, Any], root: str, python: str = "python") -> list[str]:
  cmd = [python, "-m", "skipdit_jax.main", f"--config={run['config']}",
         f"--workdir={os.path.join(root, run['name'])}"]
  cmd += [f"--config.{k}={_flag_value(v)}" for k, v in sorted(run["overrides"].items())]
  return cmd


def _call_logged(cmd: list[str], log_path, *, remote: bool) -> int:
  """Runs `cmd` with stdout+stderr appended to `log_path`; an object store cannot append
  while the run writes, so there the log is kept locally and appended when it ends."""
  if not remote:
    with open(log_path, "a") as log:
      return subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
  with tempfile.TemporaryFile() as log:
    rc = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    log.seek(0)
    old = log_path.read_bytes() if log_path.exists() else b""
    log_path.write_bytes(old + log.read())
  return rc


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("sweep", help="sweep config file (configs/sweeps/*.py)")
  ap.add_argument("--root", required=True, help="parent folder of the runs' workdirs")
  ap.add_argument("--launcher", default="",
                  help="prefix for every command, e.g. 'launch/slurm.sh --nodes 1 --'")
  ap.add_argument("--python", default="python", help="interpreter in the commands")
  ap.add_argument("--only", default="", help="comma-separated run names to launch")
  ap.add_argument("--dry-run", action="store_true", help="print the commands only")
  args = ap.parse_args(argv)
  try:
    runs = expand(load_sweep(args.sweep))
  except (OSError, ValueError) as e:  # a bad sweep file: one line naming it, no traceback
    print(f"sweep.py: {args.sweep}: {e}", file=sys.stderr)
    return 2
  if args.only:
    wanted = args.only.split(",")
    unknown = sorted(set(wanted) - {r["name"] for r in runs})
    if unknown:
      ap.error(f"--only names unknown runs {unknown}; runs: {[r['name'] for r in runs]}")
    runs = [r for r in runs if r["name"] in wanted]
  prefix = shlex.split(args.launcher)
  cmds = [prefix + command(r, args.root, args.python) for r in runs]
  if args.dry_run:
    for c in cmds:
      print(shlex.join(c))
    return 0
  root = _path(args.root)
  root.mkdir(parents=True, exist_ok=True)
  (root / "sweep.json").write_text(json.dumps(
      {"sweep": args.sweep, "runs": [dict(r, command=shlex.join(c))
                                     for r, c in zip(runs, cmds)]}, indent=2, default=str))
  failed = []
  for r, c in zip(runs, cmds):
    workdir = root / r["name"]
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"[sweep] {r['name']}: {shlex.join(c)}", flush=True)
    rc = _call_logged(c, workdir / "launch.log", remote=args.root.startswith(_REMOTE))
    if rc:
      failed.append(r["name"])
      print(f"[sweep] {r['name']} exited with {rc}; see {workdir}/launch.log", flush=True)
  print(json.dumps({"runs": len(runs), "failed": failed}))
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())
