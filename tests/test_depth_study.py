"""The depth study (bench/depth_study.py on configs/sweeps/depth_digits.py): the verdict
rule and the merge on hand-built pieces (expectations worked out by hand), the grid's
twins and equal-cost policies, piece selection, and the --smoke run end to end."""
import json
import math
import os
import subprocess
import sys

import pytest

from skipdit_jax import models, sampling
from skipdit_jax import diffusion as D
# The sweep-module loader and the block-count ideal speedup S·L / Σcost, shared with the
# video study's tests.
from test_video_study import _ideal, _load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SWEEP = "configs/sweeps/depth_digits.py"


@pytest.fixture(scope="module")
def ds():
  return _load("bench/depth_study.py")


@pytest.mark.parametrize("diffs, expected", [
    ([1.0, 2.0, 3.0], "agrees"),            # mean 2 > std 1
    ([-1.0, -2.0, -3.0], "disagrees"),
    ([0.1, 5.0, 10.0], "agrees"),           # mean 5.03 > std 4.95
    ([1.0, 10.0, 30.0], "inconclusive"),    # one sign, but mean 13.7 < std 14.8
    ([1.0, -1.0, 2.0], "inconclusive"),     # signs differ
    ([0.0, 1.0, 2.0], "inconclusive"),      # a zero is no side
    ([2.0, None, 3.0], "inconclusive"),     # a seed without the figure
    ([float("nan"), 1.0, 2.0], "inconclusive"),
    ([5.0], "inconclusive"),                # one seed has no spread
    ([-4.0, -5.0, -2.0], "disagrees"),      # mean -3.67, std 1.53
])
def test_verdict_rule(ds, diffs, expected):
  assert ds.verdict(diffs) == expected


def _twin(final_fd, rows, cons, spec, wall):
  stab = {"consecutive_mean": cons, "cached_vs_uncached_mean": cons,
          "perturbation_deep_min": 0.9, "spectral_max": spec}
  return {"points": {"100": {"FD-digits": final_fd + 50, "eval_loss": 0.1,
                             "class_accuracy": 0.5},
                     "200": {"FD-digits": final_fd, "eval_loss": 0.05, "class_accuracy": 0.9}},
          "train_s": 10.0, "img_per_s": 100.0, "stability": stab, "wall_s": wall,
          "sweep": [{"policy": "none", "N": 1, "ideal": 1.0, "measured": 1.0,
                     "FD-digits": final_fd}] + [
              {"policy": p, "N": n, "ideal": i, "psnr": v, "measured": i * 0.9,
               "FD-digits": final_fd + 1} for p, n, i, v in rows]}


def _piece(depth, seed, *, fd, skip_psnr, skip_ideal, deep_psnr, fora_psnr, cons, spec,
           speedup, wall):
  """fd, cons, spec: (Skip-DiT, DiT); *_psnr and skip_ideal: (N=2, N=3); FORA on DiT at
  ideal 2.0 and 3.0; DeepCache shares Skip-Cache's ideal speedups."""
  skip_rows = [("skip_cache", n, i, v) for n, i, v in zip((2, 3), skip_ideal, skip_psnr)]
  dit_rows = [("deep_cache", n, i, v) for n, i, v in zip((2, 3), skip_ideal, deep_psnr)]
  dit_rows += [("fora", n, float(n), v) for n, v in zip((2, 3), fora_psnr)]
  return {"piece": f"depth{depth}_seed{seed}", "depth": depth, "seed": seed, "smoke": False,
          "score": "FD-digits", "twin_names": ["skipdit", "dit"],
          "twins": {"skipdit": _twin(fd[0], skip_rows, cons[0], spec[0], wall / 2),
                    "dit": _twin(fd[1], dit_rows, cons[1], spec[1], wall / 2)},
          "convergence": {"speedup": speedup}, "wall_s": wall,
          "classifier_test_accuracy": 0.95}


def _pieces():
  d8 = dict(skip_ideal=(1.6, 2.5), fora_psnr=(30.0, 20.0))  # FORA at 2.5: 25 dB
  d16 = dict(skip_ideal=(1.8, 2.4), fora_psnr=(45.0, 35.0))  # FORA at 2.4: 41 dB
  return [
      _piece(8, 0, fd=(100, 150), skip_psnr=(38, 32), deep_psnr=(40, 34),
             cons=(0.99, 0.995), spec=(16, 12), speedup=1.5, wall=100, **d8),
      _piece(8, 1, fd=(110, 140), skip_psnr=(37, 31), deep_psnr=(40, 35),
             cons=(0.995, 0.99), spec=(17, 12), speedup=None, wall=110, **d8),
      _piece(8, 2, fd=(90, 160), skip_psnr=(39, 33), deep_psnr=(40, 34.5),
             cons=(0.98, 0.99), spec=(15, 13), speedup=2.0, wall=120, **d8),
      _piece(16, 0, fd=(100, 120), skip_psnr=(41, 35), deep_psnr=(40, 34),
             cons=(0.99, 0.98), spec=(10, 11), speedup=1.2, wall=200, **d16),
      _piece(16, 1, fd=(200, 190), skip_psnr=(43, 37), deep_psnr=(40, 34),
             cons=(0.99, 0.97), spec=(10, 12), speedup=0.9, wall=210, **d16),
  ]


def test_merge_of_hand_built_pieces(ds, tmp_path):
  grid = [(d, s) for d in (8, 16, 28) for s in (0, 1, 2)]
  out = tmp_path / "docs" / "study.json"
  res = ds.merge(_pieces(), grid, str(out), setup_s=5.0)
  assert json.loads(out.read_text())["verdicts"] == res["verdicts"]
  # Per seed (> 0: the claim holds), by hand:
  #   convergence: DiT final FD - Skip-DiT's: d8 = (50, 30, 70); d16 = (20, -10)
  #   vs DeepCache: mean over N of the PSNR gaps: d8 = (-2, -3.5, -1.25); d16 = (1, 3)
  #   vs FORA (interpolated at Skip-Cache's ideal 2.5 / 2.4; 1.6 / 1.8 lie outside FORA's
  #   range): d8 = (32-25, 31-25, 33-25) = (7, 6, 8); d16 = (35-41, 37-41) = (-6, -4)
  #   stability (consecutive cosine): d8 = (-.005, .005, -.01); d16 = (.01, .02)
  assert res["verdicts"] == {
      "convergence": {"8": "agrees", "16": "inconclusive"},
      "cache_quality_vs_deepcache": {"8": "disagrees", "16": "agrees"},
      "cache_quality_vs_fora": {"8": "agrees", "16": "disagrees"},
      "feature_stability": {"8": "inconclusive", "16": "agrees"}}
  det = res["verdict_details"]
  assert det["cache_quality_vs_deepcache"]["8"]["values"] == pytest.approx([-2, -3.5, -1.25])
  assert det["cache_quality_vs_deepcache"]["8"]["mean"] == pytest.approx(-2.25)
  assert det["cache_quality_vs_deepcache"]["8"]["std"] == pytest.approx(math.sqrt(1.3125))
  assert det["cache_quality_vs_fora"]["16"]["values"] == pytest.approx([-6, -4])
  # spectral: DiT's max - Skip-DiT's = (-4, -5, -2): mean -3.67, std 1.53 -> disagrees
  spectral = det["stability_measures"]["spectral_max"]
  assert spectral["8"]["verdict"] == "disagrees"
  assert spectral["16"]["values"] == pytest.approx([1, 2])
  m8 = res["measures"]["8"]
  fd = m8["skipdit/final_FD-digits"]
  assert (fd["mean"], fd["std"], fd["min"], fd["max"], fd["n"]) == (100, 10, 90, 110, 3)
  assert m8["convergence_speedup"]["mean"] == pytest.approx(1.75)
  assert (m8["convergence_speedup"]["n"], m8["convergence_speedup"]["missing"]) == (2, 1)
  assert m8["dit/fora/N3/ideal"]["mean"] == 3.0
  assert m8["skipdit/skip_cache/N2/psnr"]["values"] == [38, 37, 39]
  assert res["measures"]["16"]["dit/spectral_max"]["std"] == pytest.approx(math.sqrt(0.5))
  assert res["missing"] == ["depth16_seed2", "depth28_seed0", "depth28_seed1",
                            "depth28_seed2"] and res["complete"] is False
  assert res["pieces_wall_s"] == 740 and res["total_wall_s"] == 745
  assert res["pieces"]["depth16_seed1"]["wall_s"] == 210
  names = {os.path.basename(p) for p in res["plots"]}
  assert {"final_FD-digits.png", "convergence_speedup.png", "psnr_N2.png",
          "stability_spectral_max.png", "claim_cache_quality_vs_fora.png"} <= names
  assert all(os.path.getsize(p) > 0 for p in res["plots"])
  table = (out.parent / "tables.md").read_text()
  assert "| convergence | agrees | inconclusive |" in table
  assert "| skipdit/final_FD-digits | 100 ± 10 | 150 ± 71 |" in table
  with pytest.raises(ValueError, match="no finished piece"):
    ds.merge([], grid, str(out))


def test_timed_attempts_counts_a_killed_attempt_to_its_last_write(ds, tmp_path):
  work = tmp_path / "twin"
  (work / "eval").mkdir(parents=True)
  (work / "eval" / "attempts.json").write_text(json.dumps([{"start": 1000.0, "end": None}]))
  for name, mtime in (("ckpt_250", 1400.0), ("fd_vs_step.json", 1500.0)):
    (work / name).write_text("x")
    os.utime(work / name, (mtime, mtime))
  out, wall, attempts = ds.timed_attempts(str(work), lambda: {"ok": 1})
  assert out == {"ok": 1} and attempts == 2
  assert 500.0 <= wall < 510.0  # 1000 -> 1500 for the killed attempt, ~0 s for this one
  saved = json.loads((work / "eval" / "attempts.json").read_text())
  assert saved[0]["end"] == 1500.0 and saved[1]["end"] >= saved[1]["start"]


def test_select_pieces(ds):
  grid = dict(depths=(8, 16, 28), seeds=(0, 1, 2))
  assert ds.select_pieces(**grid, depth=16, seed=1) == [(16, 1)]
  assert ds.select_pieces(**grid, depth=28) == [(28, 0), (28, 1), (28, 2)]
  assert ds.select_pieces(**grid, only="depth8_seed2,depth16_seed0") == [(8, 2), (16, 0)]
  assert len(ds.select_pieces(**grid)) == 9
  with pytest.raises(ValueError, match="depth12_seed0: not a piece"):
    ds.select_pieces(**grid, only="depth12_seed0")
  with pytest.raises(ValueError, match="--depth 12"):
    ds.select_pieces(**grid, depth=12)


def test_grid_twins_differ_only_in_long_skip_and_policies_cost_two_blocks():
  sys.path.insert(0, ROOT)
  study = _load("bench/study.py")
  mod = _load(SWEEP)
  diffusion = D.Diffusion.create(D.betas_for("linear", 1000))
  for depth in mod.DEPTHS:
    sweep = mod.get_sweep(depth, 2)
    configs = study.build_configs(sweep)
    skip, plain = (configs[n] for n in sweep.twins)
    assert skip.model.depth == plain.model.depth == depth and skip.seed == plain.seed == 2
    a, b = skip.to_dict(), plain.to_dict()
    assert {k for k in a if a[k] != b[k]} <= {"model", "sample"}
    assert {k: v for k, v in a["model"].items() if k not in ("name", "long_skip")} == \
        {k: v for k, v in b["model"].items() if k not in ("name", "long_skip")}
    assert skip.model.long_skip and not plain.model.long_skip
    assert skip.sample.seed == plain.sample.seed
    for name, config in configs.items():
      model = models.create(config.model.name, input_size=8, in_channels=1, num_classes=10,
                            depth=depth, hidden_size=64, num_heads=4, patch_size=2,
                            long_skip=config.model.long_skip, learn_sigma=False)
      for policy, extra, _ in sweep.policies[name]:
        for n in sweep.intervals:
          _, plan = sampling.respaced_plan(model, diffusion, 50, policy=policy, interval=n,
                                           **extra)
          cached = 0 if policy == "fora" else 2
          assert plan.ideal_speedup == pytest.approx(_ideal(50, n, depth, cached))
  with pytest.raises(ValueError, match="even model.depth"):
    mod.get_sweep(7, 0)


@pytest.mark.slow
def test_depth_study_smoke_writes_pieces_verdicts_and_plots(tmp_path):
  root, out = tmp_path / "root", tmp_path / "docs" / "study.json"
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  cmd = [sys.executable, "bench/depth_study.py", "--smoke", "--root", str(root),
         "--out", str(out)]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  s = json.loads(out.read_text())
  mod = _load(SWEEP)
  names = {f"depth{d}_seed{k}" for d in mod.SMOKE_DEPTHS for k in mod.SMOKE_SEEDS}
  assert s["complete"] and set(s["pieces"]) == names and s["smoke"]
  assert {f[:-5] for f in os.listdir(out.parent / "pieces") if f.startswith("depth")} == names
  depths = {str(d) for d in mod.SMOKE_DEPTHS}
  for claim in ("convergence", "cache_quality_vs_deepcache", "cache_quality_vs_fora",
                "feature_stability"):
    assert set(s["verdicts"][claim]) == depths
    assert set(s["verdicts"][claim].values()) <= {"agrees", "disagrees", "inconclusive"}
  m = s["measures"][str(mod.SMOKE_DEPTHS[0])]
  assert m["skipdit/final_FD-digits"]["n"] == len(mod.SMOKE_SEEDS)
  assert math.isfinite(m["dit/deep_cache/N2/psnr"]["mean"])
  assert m["skipdit/skip_cache/N2/ideal"]["mean"] > 1  # the smoke samples N = 2 only
  assert s["total_wall_s"] >= s["pieces_wall_s"] > 0 and s["setup_s"] > 0
  for png in s["plots"]:
    assert os.path.exists(png), png
  # A rerun skips finished pieces; a piece whose JSON is gone is rebuilt from its twins'
  # results without training again.
  first = json.loads((out.parent / "pieces" / "depth4_seed0.json").read_text())
  # --smoke sweeps only the policies a verdict reads (beside the uncached reference, "none").
  swept = {t: {r["policy"] for r in first["twins"][t]["sweep"]} for t in ("skipdit", "dit")}
  assert swept == {"skipdit": {"none", "skip_cache"}, "dit": {"none", "deep_cache", "fora"}}
  (out.parent / "pieces" / "depth4_seed0.json").unlink()
  proc = subprocess.run(cmd + ["--only", "depth4_seed0,depth4_seed1"], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "depth4_seed1: finished earlier; skipped" in proc.stdout
  again = json.loads((out.parent / "pieces" / "depth4_seed0.json").read_text())
  assert again["twins"] == first["twins"]
  assert "step 2:" not in proc.stdout  # no FD point re-scored: nothing trained
