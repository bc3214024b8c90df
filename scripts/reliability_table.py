"""Tries bad inputs (config fields, workdirs, checkpoint files) and writes the table of
the error each gives into docs/RELIABILITY.md (between the BAD-INPUTS markers).

Usage: python scripts/reliability_table.py [--out docs/RELIABILITY.md] [--no-files]
(--no-files reruns the config rows only and keeps the file rows already in the page)

Config fields go through `check_config`, the function `main` runs first, and are shown
as main prints them; file cases run the real command line (`python -m skipdit_jax.main`)
on copies of one tiny trained workdir. Ends with a JSON line of the counts.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
BEGIN, END = "<!-- BAD-INPUTS:BEGIN -->", "<!-- BAD-INPUTS:END -->"

# (what is tried, dotted field overrides, devices the mesh check assumes)
CONFIG_CASES = [
    ("odd depth with long skips", {"model.depth": 7}, 1),
    ("patch not dividing the resolution", {"model.patch_size": 3}, 1),
    ("heads not dividing the width", {"model.num_heads": 3}, 1),
    ("zero heads", {"model.num_heads": 0}, 1),
    ("unknown model size", {"model.name": "DiT-Huge/2"}, 1),
    ("unknown dataset", {"data.name": "cifar10"}, 1),
    ("unknown noise schedule", {"diffusion.schedule": "quadratic"}, 1),
    ("zero learning rate", {"train.lr": 0.0}, 1),
    ("NaN learning rate", {"train.lr": float("nan")}, 1),
    ("negative step count", {"train.num_steps": -5}, 1),
    ("zero checkpoint interval", {"train.ckpt_every": 0}, 1),
    ("zero log interval", {"train.log_every": 0}, 1),
    ("EMA decay of 1", {"train.ema_decay": 1.0}, 1),
    ("Adam b2 above 1", {"train.b2": 1.5}, 1),
    ("negative grad clip", {"train.grad_clip": -1.0}, 1),
    ("unknown lr schedule", {"train.lr_schedule": "linear"}, 1),
    ("unknown non-finite policy", {"train.nonfinite": "ignore"}, 1),
    ("keep-every not a multiple of ckpt_every", {"train.ckpt_keep_every": 1500}, 1),
    ("negative seed", {"seed": -1}, 1),
    ("unknown sampler", {"sample.sampler": "euler"}, 1),
    ("more sampling steps than training steps", {"sample.num_steps": 5000}, 1),
    ("CFG without label dropout", {"sample.cfg_scale": 4.0,
                                   "model.class_dropout_prob": 0.0}, 1),
    ("Skip-Cache k too large", {"sample.cache.policy": "skip_cache",
                                "sample.cache.interval": 3, "sample.cache.k": 5}, 1),
    ("DeepCache on a Skip-DiT", {"sample.cache.policy": "deep_cache",
                                 "sample.cache.interval": 2}, 1),
    ("inverted cache window", {"sample.cache.policy": "skip_cache",
                               "sample.cache.interval": 2,
                               "sample.cache.window": (700, 50)}, 1),
    ("mesh not matching the device count", {"mesh.data": 2, "mesh.fsdp": 2}, 8),
    ("two mesh axes set to -1", {"mesh.data": -1, "mesh.fsdp": -1}, 8),
    ("batch not divisible by the data axes", {"mesh.fsdp": 2, "train.batch_size": 250}, 8),
    ("unknown sharding preset", {"mesh.preset": "zero3"}, 1),
    ("sharding rule naming no mesh axis", {"mesh.rules": (("mlp", "model"),)}, 1),
    ("parameters that cannot split over the mesh", {"mesh.data": 1, "mesh.fsdp": -1,
                                                     "train.batch_size": 255}, 3),
]


def _set(config, path: str, value) -> None:
  *parents, leaf = path.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value


def config_rows() -> list[tuple[str, str, str, str]]:
  from configs.default import get_config
  from skipdit_jax.config_check import ConfigError, check_config
  rows = []
  for what, fields, devices in CONFIG_CASES:
    c = get_config()
    for k, v in fields.items():
      _set(c, k, v)
    tried = " ".join(f"`{k}={v!r}`" for k, v in fields.items())
    if devices != 1:
      tried += f" on {devices} devices"
    try:
      check_config(c, num_devices=devices)
      rows.append((what, tried, "accepted (!)", ""))
    except ConfigError as e:
      rows.append((what, tried, "refused before compute (exit 2)", " / ".join(e.problems)))
  return rows


def _soak():
  spec = importlib.util.spec_from_file_location(
      "fault_soak", os.path.join(ROOT, "bench", "fault_soak.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _cli(soak, env, workdir: str, *extra: str, mode: str = "train", steps: int = 4):
  cmd = soak.command(workdir, steps, 2, (f"--mode={mode}", *extra))
  p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  err = [l for l in p.stderr.splitlines() if not l.startswith(("I1", "W1", "I0", "W0"))]
  msg = ""
  for i, line in enumerate(err):
    if line.startswith("error:"):
      msg = " / ".join(l.strip() for l in err[i:i + 12] if l.strip())
      break
  if not msg and p.returncode != 0:
    msg = " / ".join(err[-3:])
  out = [l for l in p.stdout.splitlines() if l.startswith("{")]
  tmp = os.path.dirname(os.path.abspath(workdir))  # shown as <tmp>: the table is stable
  return p.returncode, msg.replace(tmp, "<tmp>"), json.loads(out[-1]) if out else {}


def file_rows(tmp: str) -> list[tuple[str, str, str, str]]:
  soak = _soak()
  env = soak.child_env(os.path.join(tmp, "jax_cache"))
  good = os.path.join(tmp, "good")
  rc, msg, res = _cli(soak, env, good)
  if rc != 0:
    raise RuntimeError(f"the tiny training failed: {msg}")
  ck = os.path.join(good, "checkpoints")
  rows = []

  def copy(name: str) -> str:
    dst = os.path.join(tmp, name)
    shutil.copytree(good, dst)
    return dst

  def outcome(rc: int, res: dict) -> str:
    if rc == 0:
      return f"exit 0: resumed from step {res.get('start_step')}, ran to {res.get('steps')}"
    return f"exit {rc}"

  w = copy("wider")
  rc, msg, res = _cli(soak, env, w, "--config.model.hidden_size=48")
  rows.append(("workdir trained with another model shape", "rerun with "
               "`model.hidden_size=48` (saved: 32)", outcome(rc, res), msg))
  rc, msg, res = _cli(soak, env, w, "--config.model.hidden_size=48",
                      "--config.train.allow_new_model=True")
  moved = [n for n in os.listdir(w) if n.startswith("checkpoints.replaced-")]
  rows.append(("the same, with the explicit flag", "`--config.train.allow_new_model=True`",
               outcome(rc, res), f"old checkpoints moved to `{moved[0] if moved else '?'}`; "
               f"trained fresh from step 0"))

  w = copy("foreign")
  os.remove(os.path.join(w, "config.json"))
  rc, msg, res = _cli(soak, env, w, "--config.model.hidden_size=48")
  rows.append(("foreign checkpoint (another model, no saved config)",
               "`config.json` removed, rerun with `model.hidden_size=48`",
               outcome(rc, res), msg))

  w = copy("optimizer")
  os.remove(os.path.join(w, "config.json"))
  rc, msg, res = _cli(soak, env, w, "--config.train.grad_clip=0.0")
  rows.append(("checkpoint of another optimizer chain", "`config.json` removed, rerun with "
               "`train.grad_clip=0` (saved with clipping)", outcome(rc, res), msg))

  last = max(int(n) for n in os.listdir(ck) if n.isdigit())
  w = copy("truncated")
  data = [os.path.join(d, f) for d, _, fs in os.walk(os.path.join(w, "checkpoints", str(last),
                                                                   "state")) for f in fs]
  big = max(data, key=os.path.getsize)
  with open(big, "r+b") as f:
    f.truncate(os.path.getsize(big) // 2)
  rc, msg, res = _cli(soak, env, w, steps=6)
  rows.append(("truncated array file in the latest checkpoint",
               f"largest file of step {last} cut in half", outcome(rc, res), msg))

  w = copy("meta")
  with open(os.path.join(w, "checkpoints", str(last), "meta", "metadata"), "w") as f:
    f.write('{"data": {"posit')
  rc, msg, res = _cli(soak, env, w, steps=6)
  rows.append(("corrupt JSON beside the state", f"step {last}'s meta file truncated",
               outcome(rc, res), msg))

  w = copy("incomplete")
  os.remove(os.path.join(w, "checkpoints", str(last), "state", "_METADATA"))
  rc, msg, res = _cli(soak, env, w, steps=6)
  rows.append(("incomplete step folder (partial copy)",
               f"`{last}/state/_METADATA` removed", outcome(rc, res),
               "the step is ignored with a warning; the previous complete step is used"))

  w = copy("tmpdir")
  os.rename(os.path.join(w, "checkpoints", str(last)),
            os.path.join(w, "checkpoints", f"{last}.orbax-checkpoint-tmp-17"))
  rc, msg, res = _cli(soak, env, w, steps=6)
  rows.append(("a save cut by SIGKILL (orbax temporary folder)",
               f"step {last} left as `{last}.orbax-checkpoint-tmp-17`", outcome(rc, res),
               "the temporary folder is never a step and is removed at start"))

  rc, msg, res = _cli(soak, env, os.path.join(tmp, "does-not-exist"), mode="sample")
  rows.append(("missing workdir when sampling", "`--mode=sample --workdir=<missing>`",
               outcome(rc, res), msg))

  rc, msg, res = _cli(soak, env, os.path.join(tmp, "nan-stop"), "--config.train.lr=1e30",
                      "--config.train.nonfinite=stop")
  rows.append(("diverging run, policy stop", "`train.lr=1e30 train.nonfinite=stop`",
               outcome(rc, res), msg))
  rc, msg, res = _cli(soak, env, os.path.join(tmp, "nan-skip"), "--config.train.lr=1e30",
                      "--config.train.nonfinite=skip")
  rows.append(("diverging run, policy skip", "`train.lr=1e30 train.nonfinite=skip`",
               outcome(rc, res), msg or f"{res.get('skipped_steps')} of "
               f"{res.get('steps')} steps skipped and counted; no NaN reached the state or "
               f"a checkpoint"))
  return rows


def _cell(s: str) -> str:
  return s.replace("|", "\\|").replace("\n", " / ")


FILES_HEADING = "### Workdirs and checkpoint files (the real command line)"


def render(config: list, files: list | str) -> str:
  """The table block; `files` may be the already rendered file section (kept as is)."""
  lines = [BEGIN, "", "### Config fields (checked by `check_config` before any compute)", "",
           "| bad input | tried | outcome | message |", "|---|---|---|---|"]
  lines += [f"| {_cell(a)} | {_cell(b)} | {_cell(c)} | {_cell(d)} |" for a, b, c, d in config]
  if isinstance(files, str):
    lines += ["", files.strip()]
  elif files:
    lines += ["", FILES_HEADING, "",
              "| bad input | tried | outcome | message |", "|---|---|---|---|"]
    lines += [f"| {_cell(a)} | {_cell(b)} | {_cell(c)} | {_cell(d)} |"
              for a, b, c, d in files]
  lines += ["", END]
  return "\n".join(lines)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--out", default=os.path.join(ROOT, "docs", "RELIABILITY.md"))
  p.add_argument("--no-files", action="store_true",
                 help="rerun the config cases only (seconds); keep the file rows already there")
  a = p.parse_args()
  config = config_rows()
  tmp = tempfile.mkdtemp(prefix="bad_inputs_")
  text = open(a.out).read() if os.path.exists(a.out) else f"# Reliability\n\n{BEGIN}\n{END}\n"
  files: list | str = []
  if a.no_files:
    if FILES_HEADING in text and END in text:
      files = text[text.index(FILES_HEADING):text.index(END)]
  else:
    files = file_rows(tmp)
  table = render(config, files)
  if BEGIN in text and END in text:
    text = text[:text.index(BEGIN)] + table + text[text.index(END) + len(END):]
  else:
    text += "\n" + table + "\n"
  with open(a.out, "w") as f:
    f.write(text)
  shutil.rmtree(tmp, ignore_errors=True)
  accepted = sum(r[2].startswith("accepted") for r in config)
  n_files = files.count("\n| ") - 1 if isinstance(files, str) else len(files)
  print(json.dumps({"config_cases": len(config), "config_accepted": accepted,
                    "file_cases": n_files, "out": a.out}))


if __name__ == "__main__":
  main()
