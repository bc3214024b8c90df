"""Where Skip-Cache wins: the paper's claims tested across depth, with seed error bars.

DiT and Skip-DiT twins at depths 8, 16 and 28, three seeds each (configs/sweeps/
depth_digits.py: width 64, patch 2 on 8x8 digits, one fixed budget). A piece is one (depth,
seed); each piece runs bench/study.py's machinery on its two twins (`study.run_twin`):
training with FD-digits and eval eps-MSE vs step (resumable), the cache sweep (Skip-Cache,
its forecast, FORA, Delta-DiT on Skip-DiT; DeepCache, FORA, Delta-DiT on DiT; N = 2..5;
PSNR / FD-digits, measured and ideal speedup) and the stability analyses. It writes
`<out dir>/pieces/depth<D>_seed<S>.json`; a finished piece is skipped, a killed one resumes
(training from its last checkpoint; a twin whose sweep finished is not redone). Then
`merge` writes `--out` (default docs/depth_study/study.json) and PNGs beside it.

  python bench/depth_study.py --depth 16 --seed 1     # one piece (= --only depth16_seed1)
  python bench/depth_study.py --depth 28              # the three seeds of depth 28
  python bench/depth_study.py                         # every unfinished piece, then merge
  python bench/depth_study.py --merge                 # merge the finished pieces only
  python bench/depth_study.py --smoke                 # CI size, into a temp dir
  python bench/depth_study.py --time_steps 30 --depth 28   # per-step speed; estimate

study.json: per depth, every measure over seeds as {mean, std, min, max, n, values}; the
"+-" of plots and tables is the sample std (ddof 1) over seeds, min / max beside it.
`verdicts[claim][depth]` is one of agrees / disagrees / inconclusive (rule: `verdict`);
the statistic of each claim is per seed and signed so that > 0 means the paper's claim
holds (`CLAIMS`). Times: each piece's wall time (`pieces[...].wall_s`: every attempt at
its twins, a killed one up to its last file write), the feature net's, and their total.
FD-digits uses our own classifier's features (not Inception FID). Digits has no test split:
the eval eps-MSE is on a fixed probe of 1,000 training images (fixed t and noise), a
training-set figure, not a held-out one.

Budget: batch 128 x 2,000 steps (= 142 epochs of the 1,797 digits), FD every 250 steps on
500 samples (50-step DDIM, CFG 1), the cache sweep on 500 samples. Depth is the variable,
so lr 2e-3 (warm-up 200), EMA 0.999 (with warm-up) and the budget are the same at every
depth. Pieces must share --root (one feature net scores them all); a changed budget needs
a fresh --root (a twin's finished checkpoint would be reused).

Cost, measured 2026-12-01 on the shared 2-core CPU at 1-min load 9-10 (other engineers'
jobs): `python bench/depth_study.py --time_steps 30 --depth 28` gave, for the depth-28
Skip-DiT, 20.84 GFLOP per train step (XLA), 3.54 s/step (5.9 GFLOP/s), 140 s to compile the
train step, and 40.9 s per 250-image 50-step sampling chunk. Idle, this machine trains the
width-64 digits model at 38.6 GFLOP/s (MEASURED.md, the demo), i.e. ~0.54 s/step at depth
28. Estimated idle wall time per piece (both twins: 2,000 steps, 8 FD points, 28 sweep
rows, stability, compiles): depth 28 ~65 min, depth 16 ~37 min, depth 8 ~20 min; all nine
pieces ~6 h plus ~1 min of feature net. Under a load like the one measured, everything
takes 2-6x longer: run pieces when the machine is quiet. The knobs: NUM_STEPS and
SAMPLE_EVERY in configs/sweeps/depth_digits.py (training is ~55 % of a piece).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from typing import Callable, Iterable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

import study  # noqa: E402  (bench/study.py: the per-run machinery)
from skipdit_jax import sampling  # noqa: E402
from skipdit_jax.eval import plots, run  # noqa: E402

SWEEP = "configs/sweeps/depth_digits.py"
STABILITY_FIELDS = ("consecutive_mean", "cached_vs_uncached_mean", "perturbation_deep_min",
                    "spectral_max")
SPREAD = ("mean +- sample std (ddof 1) over seeds; min / max and the per-seed values "
          "beside; missing = seeds without the figure")
VERDICT_RULE = ("per seed, the claim's statistic d (> 0: the paper's claim holds); "
                "'agrees' if every seed has d > 0 and mean(d) > std(d), 'disagrees' if every "
                "seed has d < 0 and -mean(d) > std(d) (std: sample std, ddof 1), else "
                "'inconclusive' (also with fewer than 2 seeds or a seed without d)")


# The cache policies the claims read, per twin role; --smoke sweeps only these (the forecast,
# Delta-DiT and FORA on Skip-DiT are figures for the tables, not inputs to a verdict).
SKIP_CACHE, DEEP_CACHE, FORA = "skip_cache", "deep_cache", "fora"
CLAIM_POLICIES = {"skip": (SKIP_CACHE,), "plain": (DEEP_CACHE, FORA)}


def piece_name(depth: int, seed: int) -> str:
  return f"depth{depth}_seed{seed}"


def select_pieces(depths: Iterable[int], seeds: Iterable[int], *, depth: int | None = None,
                  seed: int | None = None, only: str = "") -> list[tuple[int, int]]:
  """The (depth, seed) pieces to run: the grid filtered by --depth / --seed, or the
  comma-separated names of --only; names outside the grid are an error."""
  grid = [(d, s) for d in depths for s in seeds]
  names = {piece_name(d, s): (d, s) for d, s in grid}
  if only:
    wanted = [n.strip() for n in only.split(",") if n.strip()]
    bad = [n for n in wanted if n not in names]
    if bad:
      raise ValueError(f"--only {','.join(bad)}: not a piece of the grid; pieces: "
                       f"{', '.join(names)}")
    return [names[n] for n in wanted]
  for flag, value, known in (("--depth", depth, list(depths)), ("--seed", seed, list(seeds))):
    if value is not None and value not in known:
      raise ValueError(f"{flag} {value}: not in the sweep's grid {known} ({SWEEP})")
  return [(d, s) for d, s in grid if (depth is None or d == depth)
          and (seed is None or s == seed)]


# ------------------------------------------------------------------------ pieces

def twin_record(r: dict, wall_s: float) -> dict:
  """What a piece keeps of `study.run_twin`'s result (JSON-ready; the sweep rows without
  their sample-grid paths, which live under --root)."""
  rows = [{k: v for k, v in row.items() if k != "files"} for row in r["sweep"]]
  return {"points": {str(k): v for k, v in r["points"].items()}, "train_s": r["train_s"],
          "img_per_s": r["img_per_s"], "sweep": rows, "sweep_s": r["sweep_s"],
          "stability": study.stability_summary(r["stability"]),
          "stability_s": r["stability_s"], "wall_s": wall_s}


def _mtimes(folder: str, but: str) -> list[float]:
  return [os.path.getmtime(os.path.join(d, f)) for d, _, files in os.walk(folder)
          for f in files if os.path.join(d, f) != but]


def timed_attempts(workdir: str, fn: Callable[[], dict]) -> tuple[dict, float, int]:
  """(fn(), wall seconds of every attempt at this twin, attempts). An attempt killed
  earlier counts from its start to its last file write under `workdir` (a checkpoint or
  an FD point), so a resumed twin's time is not only its last attempt's."""
  path = os.path.join(workdir, "eval", "attempts.json")
  attempts = study.read_json(path, [])
  now = time.time()
  for i, a in enumerate(attempts):
    if a["end"] is None:  # killed: it ended before the next attempt began
      hi = attempts[i + 1]["start"] if i + 1 < len(attempts) else now
      writes = [m for m in _mtimes(workdir, path) if a["start"] <= m < hi]
      a["end"] = max([a["start"]] + writes)
  attempts.append({"start": now, "end": None})
  study.write_json(path, attempts)
  out = fn()
  attempts[-1]["end"] = time.time()
  study.write_json(path, attempts)
  return out, sum(a["end"] - a["start"] for a in attempts), len(attempts)


def run_piece(sweep_mod, depth: int, seed: int, root: str, pieces_dir: str,
              scoring: study.Scoring, log: Callable[[str], None], smoke: bool = False) -> dict:
  """Runs (or resumes) one piece and writes its JSON; a finished piece is read back."""
  name = piece_name(depth, seed)
  path = os.path.join(pieces_dir, name + ".json")
  done = study.read_json(path, None)
  if done is not None:
    log(f"{name}: finished earlier ({path}); skipped")
    return done
  sweep = sweep_mod.get_sweep(depth, seed)
  configs = study.build_configs(sweep, smoke)
  intervals = (2,) if smoke else tuple(sweep.intervals)  # smoke: one N, fewer compiles
  roles = dict(zip(sweep.twins, ("skip", "plain")))
  twins = {}
  for tname, config in configs.items():
    policies = [tuple(p) for p in sweep.policies[tname]
                if not smoke or p[0] in CLAIM_POLICIES[roles[tname]]]
    workdir = os.path.join(root, name, tname)
    result = os.path.join(workdir, "eval", "twin_result.json")
    twins[tname] = study.read_json(result, None)
    if twins[tname] is None:
      r, wall_s, attempts = timed_attempts(workdir, lambda: study.run_twin(
          f"{name} {tname}", config, workdir, scoring,
          policies, intervals, sweep.stability_k,
          sweep.stability_interval, log))
      twins[tname] = dict(twin_record(r, wall_s), attempts=attempts)
      study.write_json(result, twins[tname])
  score = scoring.net.score_name
  curves = {n: {int(s): v for s, v in r["points"].items()} for n, r in twins.items()}
  piece = {"piece": name, "depth": depth, "seed": seed, "smoke": smoke, "score": score,
           "twin_names": list(sweep.twins), "twins": twins,
           "convergence": study.convergence(curves, score, *sweep.twins),
           "wall_s": sum(r["wall_s"] for r in twins.values()),
           "classifier_test_accuracy": scoring.net.test_accuracy,
           "load_avg_1m": round(os.getloadavg()[0], 2)}
  study.write_json(path, piece)
  log(f"{name}: done in {piece['wall_s']:.0f} s -> {path}")
  return piece


# ------------------------------------------------------------------------ claims

def _final(p: dict, twin: str, key: str) -> float:
  pts = p["twins"][twin]["points"]
  return pts[max(pts, key=int)][key]


def _rows(p: dict, twin: str, policy: str) -> dict[int, dict]:
  return {r["N"]: r for r in p["twins"][twin]["sweep"] if r["policy"] == policy}


def claim_convergence(p: dict) -> float:
  """DiT's final FD - Skip-DiT's final FD at the same budget (> 0: Skip-DiT ahead; on
  monotone curves the sign of convergence speedup - 1)."""
  skip, plain = p["twin_names"]
  return _final(p, plain, p["score"]) - _final(p, skip, p["score"])


def claim_vs_deepcache(p: dict) -> float | None:
  """Mean over N of PSNR(Skip-Cache on Skip-DiT) - PSNR(DeepCache on DiT): both run 2 of
  L blocks per cached step, so every N is one ideal speedup."""
  skip, plain = p["twin_names"]
  a, b = _rows(p, skip, SKIP_CACHE), _rows(p, plain, DEEP_CACHE)
  diffs = [a[n]["psnr"] - b[n]["psnr"] for n in sorted(set(a) & set(b))]
  return float(np.mean(diffs)) if diffs else None


def claim_vs_fora(p: dict) -> float | None:
  """Mean PSNR(Skip-Cache on Skip-DiT) - PSNR(FORA on DiT) at equal ideal speedup: FORA's
  PSNR linearly interpolated in ideal speedup, at the Skip-Cache points inside FORA's range
  (FORA's cached step runs no block, so at one N its ideal speedup is higher)."""
  skip, plain = p["twin_names"]
  a = _rows(p, skip, SKIP_CACHE)
  f = sorted((r["ideal"], r["psnr"]) for r in _rows(p, plain, FORA).values())
  if not f:
    return None
  fx, fy = [x for x, _ in f], [y for _, y in f]
  diffs = [r["psnr"] - float(np.interp(r["ideal"], fx, fy)) for r in a.values()
           if fx[0] <= r["ideal"] <= fx[-1]]
  return float(np.mean(diffs)) if diffs else None


def _stability(field: str, sign: float = 1.0) -> Callable[[dict], float | None]:
  def stat(p: dict) -> float | None:
    skip, plain = p["twin_names"]
    a, b = (p["twins"][t]["stability"].get(field) for t in (skip, plain))
    return None if a is None or b is None else sign * (a - b)
  stat.__doc__ = (f"Skip-DiT's {field} - DiT's" if sign > 0 else
                  f"DiT's {field} - Skip-DiT's") + " (> 0: Skip-DiT more stable)"
  return stat


# claim -> per-piece statistic (> 0: the paper's claim holds). Feature stability is judged
# on the paper's Figure 1a measure; the other stability measures get their own verdicts
# under `verdict_details["stability_measures"]`.
CLAIMS: dict[str, Callable[[dict], float | None]] = {
    "convergence": claim_convergence,
    "cache_quality_vs_deepcache": claim_vs_deepcache,
    "cache_quality_vs_fora": claim_vs_fora,
    "feature_stability": _stability("consecutive_mean"),
}
STABILITY_CLAIMS = {
    "consecutive_mean": _stability("consecutive_mean"),
    "cached_vs_uncached_mean": _stability("cached_vs_uncached_mean"),
    "perturbation_deep_min": _stability("perturbation_deep_min"),
    "spectral_max": _stability("spectral_max", sign=-1.0),  # lower norm: more stable
}


def verdict(diffs: list[float | None]) -> str:
  """agrees / disagrees / inconclusive from per-seed statistics (see VERDICT_RULE)."""
  if len(diffs) < 2 or any(d is None or not np.isfinite(d) for d in diffs):
    return "inconclusive"
  d = np.asarray(diffs, np.float64)
  mean, std = float(d.mean()), float(d.std(ddof=1))
  if np.all(d > 0) and mean > std:
    return "agrees"
  if np.all(d < 0) and -mean > std:
    return "disagrees"
  return "inconclusive"


def aggregate(values: list[float | None]) -> dict:
  """{mean, std (ddof 1; None below 2 values), min, max, n, missing, values} of the
  non-missing values (all None when there are none)."""
  v = [float(x) for x in values if x is not None]
  a = np.asarray(v, np.float64)
  return {"mean": float(a.mean()) if v else None,
          "std": float(a.std(ddof=1)) if len(v) > 1 else None,
          "min": float(a.min()) if v else None, "max": float(a.max()) if v else None,
          "n": len(v), "missing": len(values) - len(v), "values": v}


def piece_measures(p: dict) -> dict[str, float | None]:
  """Every scalar of one piece under a flat key: `<twin>/final_<score>`, `<twin>/<policy>/
  N<n>/<psnr|score|measured|ideal>`, `<twin>/<stability field>`, `convergence_speedup`,
  `claim/<claim>`."""
  score, m = p["score"], {}
  for twin, r in p["twins"].items():
    for key in (score, "eval_loss", "class_accuracy"):
      m[f"{twin}/final_{key}"] = _final(p, twin, key)
    m[f"{twin}/train_s"] = r["train_s"]
    for row in r["sweep"]:
      if row["policy"] != "none":
        for key in ("psnr", score, "measured", "ideal"):
          m[f"{twin}/{row['policy']}/N{row['N']}/{key}"] = row[key]
    for key in STABILITY_FIELDS:
      m[f"{twin}/{key}"] = r["stability"].get(key)
  m["convergence_speedup"] = (p.get("convergence") or {}).get("speedup")
  for claim, fn in CLAIMS.items():
    m[f"claim/{claim}"] = fn(p)
  return m


# ------------------------------------------------------------------------ merge

def _plot_specs(score: str, measures: dict) -> list[tuple[str, str, dict[str, str]]]:
  """(file stem, y label, {series: measure key}) of every plot vs depth."""
  keys = set().union(*(m.keys() for m in measures.values()))
  twins = sorted({k.split("/")[0] for k in keys if k.endswith(f"/final_{score}")})
  specs = [(f"final_{k}", label, {t: f"{t}/final_{k}" for t in twins})
           for k, label in ((score, f"final {score} (ours, not Inception FID)"),
                            ("eval_loss", "final eval eps-MSE (EMA, training probe)"),
                            ("class_accuracy", "final class accuracy"))]
  specs.append(("convergence_speedup", "convergence speedup (DiT steps / Skip-DiT steps "
                "to DiT's final FD)", {"speedup": "convergence_speedup"}))
  specs += [(f"stability_{f}", f, {t: f"{t}/{f}" for t in twins}) for f in STABILITY_FIELDS]
  cached = sorted({tuple(k.split("/")[:3]) for k in keys if k.count("/") == 3})
  for n in sorted({c[2] for c in cached}, key=lambda s: int(s[1:])):
    for key, label in (("psnr", "PSNR vs uncached (dB)"), (score, score),
                       ("measured", "measured speedup")):
      specs.append((f"{key}_{n}", f"{label}, {n}",
                    {f"{t} {pol}": f"{t}/{pol}/{n}/{key}" for t, pol, nn in cached if nn == n}))
  specs += [(f"claim_{c}", f"claim statistic ({c}); > 0: the paper's claim holds",
             {c: f"claim/{c}"}) for c in CLAIMS]
  return specs


def plot_vs_depth(measures: dict[int, dict], score: str, out_dir: str) -> list[str]:
  """One PNG per measure: mean +- std over seeds vs depth, a line per twin / policy."""
  paths = []
  for stem, label, series in _plot_specs(score, measures):
    lines, errs = {}, {}
    for name, key in series.items():
      pts = [(d, m[key]) for d, m in sorted(measures.items())
             if key in m and m[key]["mean"] is not None]
      if pts:
        lines[name] = ([d for d, _ in pts], [a["mean"] for _, a in pts])
        errs[name] = [a["std"] or 0.0 for _, a in pts]
    if lines:
      paths.append(plots.line_plot(os.path.join(out_dir, stem + ".png"), lines,
                                   xlabel="depth (blocks)", ylabel=label, errors=errs,
                                   title=f"{label} vs depth (mean +- std over seeds)"))
  return paths


def merge(pieces: list[dict], grid: list[tuple[int, int]], out: str, *,
          setup_s: float | None = None, plot: bool = True) -> dict:
  """Merges finished pieces into `out` (and PNGs beside it): per depth the aggregate of
  every measure, the verdicts per claim and depth, and the times."""
  if not pieces:
    raise ValueError(f"no finished piece to merge: run pieces first (grid: "
                     f"{[piece_name(d, s) for d, s in grid]})")
  score = pieces[0]["score"]
  by_depth: dict[int, list[dict]] = {}
  for p in sorted(pieces, key=lambda p: (p["depth"], p["seed"])):
    by_depth.setdefault(p["depth"], []).append(p)
  measures, verdicts, details = {}, {c: {} for c in CLAIMS}, {c: {} for c in CLAIMS}
  details["stability_measures"] = {f: {} for f in STABILITY_CLAIMS}
  for depth, ps in by_depth.items():
    per = [piece_measures(p) for p in ps]
    keys = sorted(set().union(*per))
    measures[depth] = {k: aggregate([m.get(k) for m in per]) for k in keys}
    for group, claims in ((None, CLAIMS), ("stability_measures", STABILITY_CLAIMS)):
      for c, fn in claims.items():
        d = [fn(p) for p in ps]
        row = dict(aggregate(d), seeds=[p["seed"] for p in ps], verdict=verdict(d),
                   statistic=" ".join((fn.__doc__ or c).split()))
        if group is None:
          verdicts[c][str(depth)] = row["verdict"]
          details[c][str(depth)] = row
        else:
          details[group][c][str(depth)] = row
  names = {p["piece"] for p in pieces}
  pieces_wall = sum(p["wall_s"] for p in pieces)
  result = {
      "bench": "depth_study", "score": score, "smoke": any(p["smoke"] for p in pieces),
      "depths": sorted(by_depth), "seeds": sorted({p["seed"] for p in pieces}),
      "complete": all(piece_name(d, s) in names for d, s in grid),
      "missing": [piece_name(d, s) for d, s in grid if piece_name(d, s) not in names],
      "spread": SPREAD, "verdict_rule": VERDICT_RULE,
      "verdicts": verdicts, "verdict_details": details,
      "measures": {str(d): m for d, m in measures.items()},
      "convergence": {p["piece"]: p["convergence"] for p in pieces},
      "pieces": {p["piece"]: {"depth": p["depth"], "seed": p["seed"], "wall_s": p["wall_s"],
                              "load_avg_1m": p.get("load_avg_1m"),
                              "twins_wall_s": {t: r["wall_s"] for t, r in p["twins"].items()},
                              "attempts": {t: r.get("attempts", 1)
                                           for t, r in p["twins"].items()}}
                 for p in pieces},
      # One feature net for every piece (same --root): equal accuracies confirm it.
      "classifier_test_accuracy": sorted({p.get("classifier_test_accuracy") for p in pieces},
                                         key=str),
      "pieces_wall_s": pieces_wall, "setup_s": setup_s,
      "total_wall_s": pieces_wall + (setup_s or 0.0),
      "note": f"{score} uses our own classifier's features; not comparable to Inception "
              "FID. eval_loss is a fixed training-image probe (digits has no test split).",
  }
  out_dir = os.path.dirname(out) or "."
  result["plots"] = plot_vs_depth(measures, score, out_dir) if plot else []
  study.write_json(out, result)
  with open(os.path.join(out_dir, "tables.md"), "w") as f:
    f.write(tables_md(result))
  return result


def _cell(a: dict | None, digits: int = 4) -> str:
  if not a or a["mean"] is None:
    return "-"
  return f"{a['mean']:.{digits}g}" + (f" ± {a['std']:.2g}" if a["std"] is not None else "")


def tables_md(result: dict) -> str:
  """Markdown: the verdicts per claim and depth, then the headline measures (mean ± std
  over seeds) per depth: final scores, convergence speedup, PSNR of every cache row,
  stability and the claims' statistics."""
  depths = [str(d) for d in result["depths"]]
  head = "| | " + " | ".join(f"depth {d}" for d in depths) + " |"
  rule = "|---|" + "---|" * len(depths)
  lines = ["| claim | " + " | ".join(f"depth {d}" for d in depths) + " |", rule]
  lines += [f"| {c} | " + " | ".join(v.get(d, "-") for d in depths) + " |"
            for c, v in result["verdicts"].items()]
  keys = sorted(set().union(*(m.keys() for m in result["measures"].values())))
  shown = [k for k in keys if "/final_" in k or k == "convergence_speedup"
           or k.endswith("/psnr") or k.split("/")[-1] in STABILITY_FIELDS
           or k.startswith("claim/")]
  lines += ["", head.replace("| |", "| measure (mean ± std over seeds) |", 1), rule]
  lines += [f"| {k} | " + " | ".join(_cell(result["measures"][d].get(k)) for d in depths)
            + " |" for k in shown]
  return "\n".join(lines) + "\n"


def read_pieces(pieces_dir: str) -> list[dict]:
  if not os.path.isdir(pieces_dir):
    return []
  return [study.read_json(os.path.join(pieces_dir, f), None)
          for f in sorted(os.listdir(pieces_dir)) if f.startswith("depth")
          and f.endswith(".json")]


# ------------------------------------------------------------------------ timing

def time_steps(sweep_mod, depth: int, steps: int, log) -> dict:
  """Seconds per train step of both twins at `depth` (`steps` steps, the first compiles)
  and of one uncached sampling chunk, and from them an estimate of the piece's time."""
  from skipdit_jax.train import build_diffusion, build_model, train
  sweep = sweep_mod.get_sweep(depth, sweep_mod.SCORING_SEED)
  out = {"depth": depth, "timed_steps": steps}
  root, est = tempfile.mkdtemp(prefix="depth_timing_"), 0.0
  for name, c in study.build_configs(sweep).items():
    full_steps, fd_every, n_samples = c.train.num_steps, c.train.sample_every, c.eval.num_samples
    c.train.num_steps, c.train.log_every = steps, steps
    c.train.sample_every = c.train.ckpt_every = steps
    summary, state = train(c, os.path.join(root, name))
    step_s = c.train.batch_size / summary["img_per_s"]
    model, diffusion = build_model(c), build_diffusion(c)
    base = dict(sampling.options_from_config(c.sample), policy="none", interval=1)
    labels = run.class_labels(2 * c.sample.batch_size, c.data.num_classes)
    _, chunk_s, _ = study.sample_timed(model, state.ema_params, diffusion, labels, 0,
                                       c.sample.batch_size, **base)
    fd_s = chunk_s * n_samples / c.sample.batch_size  # one FD point's sampling
    rows = 0.0
    for policy, extra, _ in sweep.policies[name]:
      for n in sweep.intervals:
        _, plan = sampling.respaced_plan(model, diffusion, **dict(base, policy=policy,
                                                                    interval=n, **extra))
        rows += chunk_s + fd_s / plan.ideal_speedup  # re-timed uncached chunk + the row
    points = full_steps // fd_every
    twin_s = full_steps * step_s + points * fd_s + fd_s + rows
    out[name] = {"s_per_step": step_s, "compile_s": summary.get("compile_s"),
                 "sample_chunk_s": chunk_s, "batch": c.train.batch_size,
                 "estimate": {"train_s": full_steps * step_s, "fd_points_s": points * fd_s,
                              "sweep_s": fd_s + rows, "twin_s": twin_s}}
    est += twin_s
    log(f"{name} depth {depth}: {step_s:.3f} s/step, sampling chunk {chunk_s:.1f} s")
  out["estimate_piece_s"] = est
  out["note"] = ("estimate = steps x s/step + FD points and sweep rows at the timed chunk "
                 "speed (cached rows / their ideal speedup); compiles, the feature net and "
                 "stability (about a minute) are left out")
  out["load_avg_1m"] = round(os.getloadavg()[0], 2)
  return out


# ------------------------------------------------------------------------ main

def compile_cache(folder: str) -> None:
  """A persistent XLA compilation cache in `folder` unless the environment names one
  (JAX_COMPILATION_CACHE_DIR, as the test suite does): the seeds of one depth compile the
  same programs (the train step, eval loss, stability), and pieces run in separate
  processes. A hit returns the same executable, so no figure changes; sampling speed is
  timed on steady chunks only."""
  import jax
  if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    return
  jax.config.update("jax_compilation_cache_dir", folder)
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def main(argv: list[str] | None = None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--sweep", default=SWEEP)
  ap.add_argument("--root", default="", help="checkpoints and workdirs (default "
                  "/tmp/skipdit_depth_study; --smoke: a new temp dir)")
  ap.add_argument("--out", default="", help="the merged JSON; pieces/ and PNGs go beside "
                  "it (default docs/depth_study/study.json; --smoke: <root>/study.json)")
  ap.add_argument("--depth", type=int, default=None, help="run only this depth's pieces")
  ap.add_argument("--seed", type=int, default=None, help="run only this seed's pieces")
  ap.add_argument("--only", default="", help="comma-separated pieces, e.g. depth16_seed1")
  ap.add_argument("--merge", action="store_true", help="merge finished pieces, run none")
  ap.add_argument("--smoke", action="store_true", help="CI size: tiny steps, small depths")
  ap.add_argument("--time_steps", type=int, default=0,
                  help="time this many train steps at --depth (default 28); print JSON")
  args = ap.parse_args(argv)
  log = lambda msg: print(msg, flush=True)
  sweep_mod = study.load_module(args.sweep)
  if args.time_steps:
    if args.time_steps < 3:
      raise ValueError(f"--time_steps {args.time_steps}: time at least 3 steps (the first "
                       "compiles)")
    study.quiet_absl()
    res = time_steps(sweep_mod, args.depth or 28, args.time_steps, log)
    print(json.dumps(res, default=float), flush=True)
    return res
  root = args.root or (tempfile.mkdtemp(prefix="depth_study_smoke_") if args.smoke
                       else "/tmp/skipdit_depth_study")
  out = args.out or (os.path.join(root, "study.json") if args.smoke
                     else "docs/depth_study/study.json")
  pieces_dir = os.path.join(os.path.dirname(os.path.abspath(out)), "pieces")
  depths = sweep_mod.SMOKE_DEPTHS if args.smoke else sweep_mod.DEPTHS
  seeds = sweep_mod.SMOKE_SEEDS if args.smoke else sweep_mod.SEEDS
  grid = [(d, s) for d in depths for s in seeds]
  todo = [] if args.merge else select_pieces(depths, seeds, depth=args.depth,
                                             seed=args.seed, only=args.only)
  for d, s in [p for p in todo if os.path.exists(os.path.join(
      pieces_dir, piece_name(*p) + ".json"))]:
    log(f"{piece_name(d, s)}: finished earlier; skipped")
    todo.remove((d, s))
  setup_path = os.path.join(pieces_dir, "setup.json")  # not a piece: read_pieces skips it
  if todo:
    study.quiet_absl()
    compile_cache(os.path.join(root, "jax_cache"))
    # Scoring (feature net, reference, eps-MSE set) of the scoring seed, for every piece.
    first = next(iter(study.build_configs(
        sweep_mod.get_sweep(depths[0], sweep_mod.SCORING_SEED), args.smoke).values()))
    fresh = not os.path.exists(setup_path)
    scoring = study.setup_scoring(first, os.path.join(root, "shared"), log, smoke=args.smoke)
    if fresh:  # the feature net was trained now: its time counts once
      study.write_json(setup_path, {"setup_s": scoring.setup_s})
    for depth, seed in todo:
      run_piece(sweep_mod, depth, seed, root, pieces_dir, scoring, log, smoke=args.smoke)
  result = merge(read_pieces(pieces_dir), grid, out,
                 setup_s=study.read_json(setup_path, {}).get("setup_s"))
  log(json.dumps({k: result[k] for k in ("verdicts", "complete", "missing", "total_wall_s",
                                         "pieces_wall_s")}))
  log(f"merged {len(result['pieces'])} pieces -> {out}")
  return result


if __name__ == "__main__":
  main()
