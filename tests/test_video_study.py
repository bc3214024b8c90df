"""The video study (bench/study.py on configs/sweeps/study_mdigits.py): the sweep's twins
and equal-cost policies, and its `--smoke` run end to end (study.json's keys and files)."""
import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest

from skipdit_jax import models, sampling
from skipdit_jax import diffusion as D

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = "configs/sweeps/study_mdigits.py"


def _load(path):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3],
                                                os.path.join(ROOT, path))
  mod = importlib.util.module_from_spec(spec)
  # Registered before it runs: a dataclass with string annotations (bench/study.py's
  # `Scoring`) looks its module up in sys.modules while the class is built.
  sys.modules[spec.name] = mod
  spec.loader.exec_module(mod)
  return mod


def _ideal(num_steps: int, n: int, units: int, cached_units: int) -> float:
  """S·L / Σcost with a full step every n steps from the first (whole window)."""
  full = math.ceil(num_steps / n)
  return num_steps * units / (full * units + (num_steps - full) * cached_units)


def test_sweep_twins_differ_only_in_long_skip_and_policies_cost_two_of_four_pairs():
  sys.path.insert(0, ROOT)
  study = _load("bench/study.py")
  sweep = _load(SWEEP).get_sweep()
  configs = {r["name"]: study.load_config(r["config"], dict(r["overrides"]))
             for r in sweep.runs}
  assert set(configs) == set(sweep.twins) == set(sweep.policies)
  skip, plain = (configs[n] for n in sweep.twins)
  a, b = skip.to_dict(), plain.to_dict()
  diff = {k for k in a if a[k] != b[k]}
  assert diff <= {"model", "sample"}, diff
  assert skip.model.long_skip and not plain.model.long_skip
  assert {k: v for k, v in a["model"].items() if k not in ("name", "long_skip")} == \
      {k: v for k, v in b["model"].items() if k not in ("name", "long_skip")}
  assert (skip.seed, skip.sample.seed) == (plain.seed, plain.sample.seed)
  diffusion = D.Diffusion.create(D.betas_for("linear", 1000))
  for name, config in configs.items():
    model = models.create(config.model.name, input_size=16, in_channels=1, num_classes=10,
                          num_frames=8, depth=8, hidden_size=64, num_heads=4,
                          long_skip=config.model.long_skip, learn_sigma=False)
    assert model.num_units == 4
    for policy, extra, _ in sweep.policies[name]:
      for n in sweep.intervals:
        _, plan = sampling.respaced_plan(model, diffusion, 50, policy=policy, interval=n,
                                         **extra)
        cached = 0 if policy == "fora" else 2  # every other policy runs 2 of 4 pairs
        assert plan.ideal_speedup == pytest.approx(_ideal(50, n, 4, cached)), (policy, n)


@pytest.mark.slow
def test_video_study_smoke_writes_every_figure(tmp_path):
  root = tmp_path / "study"
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "bench/study.py", "--sweep", SWEEP, "--smoke",
                         "--root", str(root)], cwd=ROOT, env=env, capture_output=True,
                        text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  s = json.loads((root / "study" / "study.json").read_text())
  assert s["score"] == "FD-mdigits" and "FVD" in s["note"]
  assert set(s["runs"]) == {"skiplatte", "latte"}
  for r in s["runs"].values():
    assert math.isfinite(r["final_FD-mdigits"]) and 0 <= r["final_class_accuracy"] <= 1
  assert "skiplatte_steps_to_reach" in s["convergence"]
  refs = s["video_references"]  # real clips pass the motion figure, shuffled ones fail
  assert refs["motion_real"]["motion_pass"] > refs["motion_shuffled"]["motion_pass"]
  sweep = _load(SWEEP).get_sweep()
  rows = {(r["model"], r["policy"], r["N"]): r for r in s["sweep"]}
  for name, policies in sweep.policies.items():
    assert (name, "none", 1) in rows
    for policy, _, _ in policies:
      for n in (2, 3):  # the smoke's intervals; 6 sampling steps
        r = rows[(name, policy, n)]
        assert math.isfinite(r["FD-mdigits"]) and r["measured"] > 0
        assert r["ideal"] == pytest.approx(_ideal(6, n, 4, 0 if policy == "fora" else 2))
        assert r["psnr"] > 0 and len(r["psnr_per_frame"]) == 8
        assert 0 <= r["motion"]["motion_pass"] <= 1
        assert all(os.path.exists(f) for f in r["files"]) and len(r["files"]) == 2
  for name, st in s["stability"].items():
    assert st["unit"] == "spatial+temporal pair"
    assert len(st["spectral_per_unit_max"]) == 4 and len(st["consecutive"]) == 5
  for png in s["plots"]:
    assert os.path.exists(png), png
  assert any(p.endswith("motion_pass_vs_speedup.png") for p in s["plots"])
  assert "motion pass" in (root / "study" / "tables.md").read_text()
