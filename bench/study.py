"""The small-scale Skip-DiT / Skip-Latte study, end to end, from one sweep config.

For every run of the sweep (configs/sweeps/study_fmnist.py: the Fashion-MNIST DiT and
Skip-DiT twins of configs/study_fmnist.py; configs/sweeps/study_mdigits.py: the
moving-digits Latte and Skip-Latte twins of the video demo configs) it
  1. trains the run in `<root>/<name>` (resumable), scoring FD-<data> (FD-fmnist,
     FD-mdigits), KID, precision / recall, class accuracy and a fixed held-out eps-MSE
     every `train.sample_every` steps through the loop's sample hook (FD and loss vs step);
  2. samples the final EMA model uncached and under every cache policy of the sweep at
     every interval N, all from the same noise, and records FD, PSNR/SSIM vs the uncached
     samples (clips: per frame), the ideal and the measured speedup (steady chunks: the
     first, compiling chunk is not timed), and for clips the motion figure;
  3. runs the stability analyses (per-step deep-feature similarity, perturbation grid,
     per-unit Jacobian spectral norms; a unit is a block, or a Latte spatial+temporal pair).
Then it writes `<root>/study/` (tables.md, PNGs, study.json) and prints one JSON line;
sample grids (clips: filmstrip PNGs, rows = clips, and GIFs) go to `<root>/<name>/eval/
samples/`. FD-<data> uses our own classifier's features: not Inception FID, not FVD.
Clips (video runs) get class accuracy from a frame reader fitted on real frames
(eval/clip_scores.py), since FD-mdigits' net is taught digit x direction.
bench/depth_study.py runs the same per-run pipeline (`setup_scoring`, `run_twin`,
`convergence`) on every piece of its depth x seed grid.

  python bench/study.py --root /tmp/study            # the image study (~2 h idle)
  python bench/study.py --root /tmp/study_smoke --smoke   # a few steps of everything
  python bench/study.py --sweep configs/sweeps/study_mdigits.py --root /tmp/vstudy

Measured on an idle 2-core CPU (2026-11-29, docs/RESULTS.md): 7,154 s = 119 min in all --
feature classifier 5 min, each twin's 3,000 steps with 12 FD points 42-45 min (train
0.45-0.65 s/step, one 1,000-image 50-step DDIM FD point 55-85 s), cache sweeps 16 + 11 min,
stability under 1 min. `train.sample_every=500` halves the FD points (about -14 min); a
concurrent job roughly doubles everything.

The video sweep, measured 2026-12-01 (docs/RESULTS.md, the video study): 91 min with
other jobs beside its training; alone, the two cache sweeps (16 + 12 rows; a row = one timed
uncached 50-clip chunk plus 200 cached clips) took 7.3 + 5.0 min, stability 1.2 min, the
feature nets 2 min. Each 2,400-step training is ~17 min idle (the demo config's 146
clips/s) plus 4 FD points of ~40 s, so an idle run takes about 55 min. A rerun on a finished
--root reuses the training and FD points and redoes the sweeps and stability (14 min). The
biggest knobs: `eval.num_samples` (sweep and FD points scale with it) and
`train.sample_every`.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from skipdit_jax import data, sampling  # noqa: E402
from skipdit_jax import diffusion as D  # noqa: E402
from skipdit_jax.config_check import check_config  # noqa: E402
from skipdit_jax.eval import (clip_scores, feature_net, image_grid, image_metrics,  # noqa: E402
                              plots, run, sample_quality, stability, video_io, video_metrics)
from skipdit_jax.train import build_diffusion, build_model, train_to_end  # noqa: E402


def load_module(path: str):
  spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def load_config(ref: str, overrides: dict):
  """"configs/x.py:arg" -> x.get_config(arg) with dotted `overrides` applied."""
  path, _, arg = ref.partition(":")
  config = load_module(path).get_config(*([arg] if arg else []))
  for key, value in overrides.items():
    target = config
    parts = key.split(".")
    for p in parts[:-1]:
      target = target[p]
    target[parts[-1]] = value
  return config


def shrink_for_smoke(c) -> None:
  """A few steps of everything: checks the pipeline, measures nothing."""
  c.train.num_steps, c.train.batch_size, c.train.warmup_steps = 4, 16, 1
  c.train.log_every, c.train.ckpt_every, c.train.sample_every = 2, 2, 2
  c.sample.num_steps, c.sample.batch_size, c.sample.grid_per_class = 6, 20, 2
  c.eval.num_samples, c.eval.num_ref, c.eval.kid_subsets = 40, 200, 5
  c.eval.kid_subset_size, c.eval.stability_samples, c.eval.spectral_iters = 40, 2, 3
  c.eval.perturb_scales = (0.0, 0.05)
  if c.data.get("num_frames", 0):  # clips: a small real set for the frame reader
    c.eval.classifier_train = 200


def smoke_spec(dataset: str) -> feature_net.FeatureNetSpec:
  """The dataset's feature-net spec shrunk to a few steps (and, where it subsets, few
  examples: generated clips cost their generation)."""
  spec = feature_net.SPECS[dataset]
  return dataclasses.replace(spec, widths=(8,), feature_dim=16, train_steps=20,
                             max_examples=400 if spec.max_examples else 0)


class Scorer:
  """Scores samples of one study: FD-<data>, KID, precision / recall, class accuracy and,
  for clips, the motion figure. Clips' class accuracy comes from a frame reader fitted on
  real frames (the FD net of moving digits learnt digit x direction, not the labels)."""

  def __init__(self, config, nets, refs, opts, log, smoke: bool = False):
    self.nets, self.refs, self.opts = nets, refs, opts
    self.name = nets["classifier"].score_name
    self.video = bool(config.data.get("num_frames", 0))
    self.reader, self.references = None, {}
    if self.video:
      images, labels, _ = data.load_source(config.data.name, data=config.data)
      num_train = config.eval.classifier_train
      clips = clip_scores.real_clips(images, clip_scores.reader_rows(num_train))
      self.video_label = config.data.get("video", {}).get("label", "digit")
      classes = clip_scores.frame_classes(np.asarray(labels[:len(clips)]), self.video_label)
      spec = clip_scores.READER_SPEC
      if smoke:
        spec = dataclasses.replace(spec, widths=(8,), feature_dim=16, train_steps=20)
      self.reader = clip_scores.fit_frame_reader(clips, classes, num_train=num_train,
                                                 seed=config.seed, log=log, spec=spec)
      self.references = {
          "frame_reader_heldout_accuracy": self.reader.test_accuracy,
          "motion_real": video_metrics.motion_figure(clips[:500]),
          "motion_shuffled": video_metrics.motion_figure(
              video_metrics.shuffle_frames(clips[:500], seed=config.seed))}

  def __call__(self, samples: np.ndarray, labels: np.ndarray) -> dict:
    row = run.score_images(samples, labels, self.nets, self.refs, self.opts,
                           accuracy=not self.video)
    if self.video:
      samples = np.clip(samples, -1, 1)
      row["class_accuracy"] = clip_scores.frame_accuracy(
          self.reader, samples, clip_scores.frame_classes(labels, self.video_label))
      row["motion"] = video_metrics.motion_figure(samples)
    return row


def grid_args(samples: np.ndarray, ncol: int = 10) -> tuple[np.ndarray, int]:
  """(images, ncol) of a picture: up to 100 images `ncol` a row, or a filmstrip of up to
  10 clips (rows = clips, columns = frames)."""
  if samples.ndim == 5:
    return video_metrics.frames(samples[:10]), samples.shape[1]
  return samples[:100], ncol


def save_samples(samples: np.ndarray, stem: str) -> list[str]:
  """`stem`.png (grid or filmstrip) and, for clips, `stem`.gif (up to 20, 10 a row)."""
  os.makedirs(os.path.dirname(stem), exist_ok=True)
  images, ncol = grid_args(samples)
  image_grid.save_grid(images, stem + ".png", ncol=ncol, scale=2)
  out = [stem + ".png"]
  if samples.ndim == 5:
    video_io.save_gif(np.clip(samples[:20], -1, 1), stem + ".gif", ncol=10, scale=2)
    out.append(stem + ".gif")
  return out


def heldout_split(dataset: str) -> str:
  """The split of the held-out eps-MSE set: the dataset's test split where it has one."""
  spec = feature_net.SPECS.get(dataset)
  return spec.test_split if spec is not None and spec.test_split else "train"


def sample_timed(model, params, diffusion, labels, seed, batch, **opts):
  """Images and per-chunk seconds; chunks use fold_in(key(seed), i) like eval.run."""
  imgs, secs = [], []
  for i in range(0, len(labels), batch):
    t0 = time.perf_counter()
    imgs.append(sampling.generate(model, params, diffusion, labels[i:i + batch],
                                  jax.random.fold_in(jax.random.key(seed), i), **opts))
    secs.append(time.perf_counter() - t0)
  # The first chunk compiles; with one chunk only there is nothing else to time.
  steady = float(np.mean(secs[1:])) if len(secs) > 1 else secs[0]
  return np.concatenate(imgs), steady, float(sum(secs))


def eval_loss_fn(model, diffusion, x0, y, seed: int = 0):
  """Mean eps-MSE of params on a fixed set (fixed t spread over [0, T) and noise)."""
  n = len(x0)
  t = jnp.asarray(np.linspace(0, diffusion.num_timesteps - 1, n).astype(np.int32))
  noise = jnp.asarray(np.random.default_rng(seed).normal(size=x0.shape), jnp.float32)
  x0, y = jnp.asarray(x0), jnp.asarray(y)

  @jax.jit
  def loss(params, x0, t, noise, y):
    xt = D.q_sample(diffusion, x0, t, noise)
    out = model.apply({"params": params}, xt, D.model_timesteps(diffusion, t), y)
    return D.training_losses(diffusion, out, x0, xt, t, noise,
                             learn_sigma=model.learn_sigma)["loss"].mean()

  def fn(params) -> float:
    b = 250
    vals = [float(loss(params, x0[i:i + b], t[i:i + b], noise[i:i + b], y[i:i + b]))
            * len(x0[i:i + b]) for i in range(0, n, b)]
    return sum(vals) / n
  return fn


def read_json(path: str, default):
  """The JSON at `path`, or `default` where there is none."""
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  return default


def write_json(path: str, obj) -> None:
  """`obj` as indented JSON at `path` (folders made; numpy scalars as floats)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w") as f:
    json.dump(obj, f, indent=1, default=float)


def _scalars(row: dict) -> str:
  return ", ".join(f"{k} {v:.4g}" for k, v in row.items() if isinstance(v, (int, float)))


def train_with_curve(name, config, workdir, score, opts, loss_fn, log):
  """Trains (resuming); FD and eval loss at every sample_every step -> fd_vs_step.json."""
  path = os.path.join(workdir, "eval", "fd_vs_step.json")
  points = {int(k): v for k, v in read_json(path, {}).items()}
  model, diffusion = build_model(config), build_diffusion(config)
  sopts = dict(sampling.options_from_config(config.sample), policy="none", interval=1)
  labels = run.class_labels(opts["num_samples"], config.data.num_classes)

  def hook(step, ema_params):
    if step in points:
      return None
    imgs, _, total = sample_timed(model, ema_params, diffusion, labels, 0,
                                  config.sample.batch_size, **sopts)
    row = score(imgs, labels)
    row.update(eval_loss=loss_fn(ema_params), sample_s=total)
    points[step] = row
    write_json(path, points)
    log(f"{name} step {step}: " + _scalars(row))
    images, ncol = grid_args(imgs)
    return image_grid.make_grid(images, ncol=ncol, scale=2)

  check_config(config, workdir=workdir)
  t0 = time.perf_counter()
  summary, state = train_to_end(config, workdir, name, on_sample=hook)
  return model, diffusion, state.ema_params, points, summary, time.perf_counter() - t0


def fidelity(samples: np.ndarray, ref: np.ndarray) -> dict:
  """Mean PSNR (capped at 100 dB: identical samples) and SSIM of samples vs the uncached
  ones; clips are scored frame by frame, with the per-frame-index curves beside."""
  a, b = (video_metrics.frames(samples), video_metrics.frames(ref)) if samples.ndim == 5 \
      else (samples, ref)
  out = {"psnr": float(np.mean(np.minimum(image_metrics.psnr(a, b), 100))),
         "ssim": float(np.mean(image_metrics.ssim(a, b)))}
  if samples.ndim == 5:
    out["psnr_per_frame"] = [float(v) for v in np.minimum(
        video_metrics.per_frame("psnr", samples, ref), 100)]
    out["ssim_per_frame"] = [float(v) for v in video_metrics.per_frame("ssim", samples, ref)]
  return out


def cache_sweep(name, config, model, diffusion, params, score, opts, policies, intervals,
                workdir, log):
  """Every (policy, N) from the same noise as the uncached reference -> rows. Measured
  speedup = an uncached chunk timed just before / the cached run's steady chunk."""
  path = os.path.join(workdir, "eval", "cache_sweep.json")
  labels = run.class_labels(opts["num_samples"], config.data.num_classes)
  base = dict(sampling.options_from_config(config.sample), policy="none", interval=1)
  batch = config.sample.batch_size
  ref, ref_steady, _ = sample_timed(model, params, diffusion, labels, 0, batch, **base)
  ref = np.clip(ref, -1, 1)
  sample_dir = os.path.join(workdir, "eval", "samples")
  rows = [dict(model=name, policy="none", label="uncached", N=1, ideal=1.0, measured=1.0,
               steady_chunk_s=ref_steady, **score(ref, labels),
               files=save_samples(ref, os.path.join(sample_dir, "uncached")))]
  for policy, extra, label in policies:
    for n in intervals:
      kw = dict(base, policy=policy, interval=n, **extra)
      _, plan = sampling.respaced_plan(model, diffusion, **kw)
      # Re-time one (compiled) uncached chunk next to each cached run, so that a change
      # of machine load between rows does not masquerade as speedup.
      t0 = time.perf_counter()
      sampling.generate(model, params, diffusion, labels[:batch], jax.random.key(0), **base)
      base_s = time.perf_counter() - t0
      imgs, steady, _ = sample_timed(model, params, diffusion, labels, 0, batch, **kw)
      imgs = np.clip(imgs, -1, 1)
      row = dict(model=name, policy=policy, label=label, N=n, ideal=plan.ideal_speedup,
                 measured=base_s / steady, steady_chunk_s=steady, uncached_chunk_s=base_s,
                 **fidelity(imgs, ref), **score(imgs, labels),
                 files=save_samples(imgs, os.path.join(
                     sample_dir, f"{policy}_N{n}")))
      rows.append(row)
      log(f"{name} {label} N={n}: ideal {row['ideal']:.2f}x measured {row['measured']:.2f}x "
          f"PSNR {row['psnr']:.2f} dB {score.name} {row[score.name]:.3g}")
  write_json(path, rows)
  return rows


def crossing_step(points: dict, target: float):
  """First (linearly interpolated) step where the FD curve reaches `target`, else None."""
  steps = sorted(points)
  prev = None
  for s in steps:
    if points[s] <= target:
      if prev is None or points[prev] == points[s]:
        return float(s)
      frac = (points[prev] - target) / (points[prev] - points[s])
      return float(prev + frac * (s - prev))
    prev = s
  return None


def convergence(curves: dict, score: str, skip: str, plain: str) -> dict | None:
  """Steps the run with long skips takes to reach the vanilla run's final `score`;
  curves = {run: {step: row}}. speedup = vanilla's steps / those steps (None: never
  reached). None when either run is missing."""
  if not {skip, plain} <= set(curves):
    return None
  van = curves[plain]
  target = van[max(van)][score]
  reach = crossing_step({s: v[score] for s, v in curves[skip].items()}, target)
  return {f"{plain}_final_{score}": target, f"{plain}_steps": max(van),
          f"{skip}_steps_to_reach": reach, "speedup": (max(van) / reach) if reach else None}


def report(root, runs_out, sweep_rows, score, log, twins=("skipdit", "dit")) -> dict:
  """Tables (markdown), overlay plots and the summary dict of the whole study."""
  out_dir = os.path.join(root, "study")
  os.makedirs(out_dir, exist_ok=True)
  video = any("motion" in r for r in sweep_rows)  # clips: motion figure columns and plot
  curves = {n: {int(s): v for s, v in r["points"].items()} for n, r in runs_out.items()}
  pngs = [plots.line_plot(os.path.join(out_dir, f"{key}_vs_step.png"),
                          {n: (sorted(c), [c[s][key] for s in sorted(c)])
                           for n, c in curves.items()},
                          xlabel="training step", ylabel=label, title=f"{label} vs step")
          for key, label in ((score, f"{score} (ours, not Inception FID)"),
                             ("eval_loss", "held-out eps-MSE (EMA)"))]
  summary = {"score": score, "runs": {}}
  for n, c in curves.items():
    last = max(c)
    summary["runs"][n] = {"final_step": last, "final_" + score: c[last][score],
                          "final_eval_loss": c[last]["eval_loss"],
                          "final_class_accuracy": c[last]["class_accuracy"],
                          "train_s": runs_out[n]["train_s"]}
    if "motion" in c[last]:  # clips
      summary["runs"][n]["final_motion_pass"] = c[last]["motion"]["motion_pass"]
  conv = convergence(curves, score, *twins)
  if conv is not None:
    summary["convergence"] = conv
  by = {}
  for r in sweep_rows:
    if r["policy"] != "none":
      by.setdefault(f"{r['model']} {r['label']}", []).append(r)
  value = lambda r, key: r["motion"]["motion_pass"] if key == "motion_pass" else r[key]
  keys = [(score, score), ("psnr", "PSNR vs uncached (dB)")]
  if video:
    keys.append(("motion_pass", "motion figure (fraction of clips passing)"))
  for key, label in keys:
    pngs.append(plots.scatter_plot(
        os.path.join(out_dir, f"{key}_vs_speedup.png"),
        {k: ([r["measured"] for r in v], [value(r, key) for r in v]) for k, v in by.items()},
        xlabel="measured speedup", ylabel=label, title=f"{label} vs measured speedup",
        annotate={k: [f"N={r['N']}" for r in v] for k, v in by.items()}))
  lines = [f"| model | steps | final {score} | final eval eps-MSE | class acc | train s |"
           + (" motion pass |" if video else ""),
           "|---|---|---|---|---|---|" + ("---|" if video else "")]
  for n, r in summary["runs"].items():
    lines.append(f"| {n} | {r['final_step']} | {r['final_' + score]:.3f} | "
                 f"{r['final_eval_loss']:.4f} | {r['final_class_accuracy']:.3f} | "
                 f"{r['train_s']:.0f} |" +
                 (f" {r['final_motion_pass']:.3f} |" if "final_motion_pass" in r else ""))
  lines += ["", f"| model | step | {score} | KID | precision | recall | eval eps-MSE |",
            "|---|---|---|---|---|---|---|"]
  suffix = score[score.index("-"):] if "-" in score else ""
  for n, c in curves.items():
    for s in sorted(c):
      v = c[s]
      lines.append(f"| {n} | {s} | {v[score]:.3f} | {v['KID' + suffix]:.4g} | "
                   f"{v['precision' + suffix]:.3f} | {v['recall' + suffix]:.3f} | "
                   f"{v['eval_loss']:.4f} |")
  lines += ["", f"| model | policy | N | ideal | measured | {score} | PSNR dB | SSIM | "
            "class acc |" + (" motion pass |" if video else ""),
            "|---|---|---|---|---|---|---|---|---|" + ("---|" if video else "")]
  for r in sweep_rows:
    psnr = "-" if "psnr" not in r else f"{r['psnr']:.2f}"
    ssim = "-" if "ssim" not in r else f"{r['ssim']:.4f}"
    lines.append(f"| {r['model']} | {r['label']} | {r['N']} | {r['ideal']:.2f}x | "
                 f"{r['measured']:.2f}x | {r[score]:.3f} | {psnr} | {ssim} | "
                 f"{r['class_accuracy']:.3f} |" +
                 (f" {r['motion']['motion_pass']:.3f} |" if video else ""))
  table = "\n".join(lines)
  with open(os.path.join(out_dir, "tables.md"), "w") as f:
    f.write(table + "\n")
  log(table)
  summary["plots"] = pngs
  return summary


def build_configs(sweep, smoke: bool = False) -> dict:
  """{run name: config} of a sweep's runs, shrunk by `shrink_for_smoke` for --smoke."""
  configs = {}
  for r in sweep.runs:
    c = load_config(r["config"], dict(r["overrides"]))
    if smoke:
      shrink_for_smoke(c)
    configs[r["name"]] = c
  return configs


@dataclasses.dataclass
class Scoring:
  """What every run of a study is scored with: the feature net, its reference (inside
  `score`), the eval options and the fixed eps-MSE set x0 (M, *shape), labels (M,)."""
  net: feature_net.FeatureNet
  score: Scorer
  opts: dict
  heldout: tuple[np.ndarray, np.ndarray]
  setup_s: float


def setup_scoring(config, shared: str, log, smoke: bool = False) -> Scoring:
  """The feature net (trained once, cached in `shared`), its reference, the scorer and the
  eps-MSE set of `config`'s data (seeded by `config.seed`); shared by all runs on it."""
  t0 = time.perf_counter()
  dataset, opts = config.data.name, run.eval_options(config)
  net = feature_net.load_or_train(dataset, shared, spec=smoke_spec(dataset) if smoke
                                  else None, seed=config.seed, log=log, data=config.data)
  nets = {"classifier": net}
  refs = {"classifier": sample_quality.build_reference(net, dataset, shared,
                                                       num=opts["num_ref"], seed=config.seed,
                                                       data=config.data)}
  score = Scorer(config, nets, refs, opts, log, smoke=smoke)
  xt, yt, _ = data.load_source(dataset, split=heldout_split(dataset), data=config.data)
  m_eval = min(50 if smoke else 1000, len(yt))
  xt, yt = np.asarray(xt[np.arange(m_eval)], np.float32), np.asarray(yt)[:m_eval]
  return Scoring(net, score, opts, (xt, yt), time.perf_counter() - t0)


def run_twin(name, config, workdir: str, scoring: Scoring, policies, intervals,
             stability_k: int, stability_interval: int, log) -> dict:
  """One run of a study: trains it (resuming; FD and eval loss vs step), sweeps
  `policies` [(policy, plan options, label)] over `intervals` on its final EMA weights and
  runs the stability analyses (deep feature entering unit L - stability_k).
  Returns {points, train_s, img_per_s, sweep (rows), sweep_s, stability (report),
  stability_s}."""
  xt, yt = scoring.heldout
  loss_fn = eval_loss_fn(build_model(config), build_diffusion(config), xt, yt)
  model, diffusion, params, points, summary, train_s = train_with_curve(
      name, config, workdir, scoring.score, scoring.opts, loss_fn, log)
  out = {"points": points, "train_s": summary.get("train_time_s", train_s),
         "img_per_s": summary.get("img_per_s")}
  t0 = time.perf_counter()
  out["sweep"] = cache_sweep(name, config, model, diffusion, params, scoring.score,
                             scoring.opts, policies, intervals, workdir, log)
  out["sweep_s"] = time.perf_counter() - t0
  t0 = time.perf_counter()
  sc = config.copy_and_resolve_references()
  sc.sample.cache.policy = stability.feature_policy(model)
  sc.sample.cache.interval, sc.sample.cache.k = stability_interval, stability_k
  out["stability"] = run.stability_report(model, params, diffusion, sc, scoring.opts,
                                          os.path.join(workdir, "eval"))
  out["stability_s"] = time.perf_counter() - t0
  return out


def stability_summary(s: dict) -> dict:
  """The study's figures of one `run.stability_report`: means, extremes, per-unit norms
  and the per-step consecutive cosine (the paper's Figure 1a)."""
  return {"consecutive_mean": s["steps"]["consecutive_mean"],
          "cached_vs_uncached_mean": s["steps"].get("cached_vs_uncached_mean"),
          "perturbation_deep_min": float(np.min(s["perturbation"]["deep"])),
          "spectral_max": max(s["spectral"]["max"]),
          # Per unit (a block; a Latte spatial+temporal pair with its fusion):
          "unit": s["spectral"].get("unit", "block"),
          "spectral_per_unit_mean": s["spectral"]["mean"],
          "spectral_per_unit_max": s["spectral"]["max"],
          # Figure 1a: deep-feature cosine of consecutive uncached steps, per step.
          "consecutive": s["steps"]["consecutive"],
          "timesteps": s["steps"]["timesteps"]}


def quiet_absl() -> None:
  """absl INFO (the train loop's progress lines) without orbax / jax / etils chatter."""
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.INFO)
  absl_logging.get_absl_handler().addFilter(
      lambda r: r.levelno >= 30 or not any(p in r.pathname for p in ("/orbax/", "/jax/_src/",
                                                                     "/absl/", "/etils/")))


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--sweep", default="configs/sweeps/study_fmnist.py")
  ap.add_argument("--root", default="/tmp/skipdit_study")
  ap.add_argument("--smoke", action="store_true", help="a few steps of everything")
  args = ap.parse_args()
  quiet_absl()
  t_start = time.perf_counter()
  log = lambda msg: print(msg, flush=True)
  sweep = load_module(args.sweep).get_sweep()
  configs = build_configs(sweep, args.smoke)
  intervals = (2, 3) if args.smoke else tuple(sweep.intervals)
  first = next(iter(configs.values()))
  # The twins share config.data (one feature net, reference and held-out set for both).
  scoring = setup_scoring(first, os.path.join(args.root, "study"), log, smoke=args.smoke)
  net, score = scoring.net, scoring.score
  times = {"feature_net_s": scoring.setup_s}
  runs_out, sweep_rows, stab = {}, [], {}
  for name, config in configs.items():
    r = run_twin(name, config, os.path.join(args.root, name), scoring,
                 [tuple(p) for p in sweep.policies[name]], intervals, sweep.stability_k,
                 sweep.stability_interval, log)
    runs_out[name] = {"points": r["points"], "train_s": r["train_s"],
                      "img_per_s": r["img_per_s"]}
    sweep_rows += r["sweep"]
    times[f"{name}_sweep_s"], times[f"{name}_stability_s"] = r["sweep_s"], r["stability_s"]
    stab[name] = r["stability"]
  summary = report(args.root, runs_out, sweep_rows, net.score_name, log,
                   twins=tuple(sweep.get("twins", ("skipdit", "dit"))))
  summary["plots"] += run.plot_stability(stab, os.path.join(args.root, "study"))
  summary["stability"] = {n: stability_summary(s) for n, s in stab.items()}
  if score.references:  # clips: the frame reader's accuracy, real / shuffled motion
    summary["video_references"] = score.references
  summary.update(bench="study", smoke=args.smoke, root=os.path.abspath(args.root),
                 classifier_test_accuracy=net.test_accuracy, times=times,
                 sweep=sweep_rows, total_s=time.perf_counter() - t_start,
                 load_avg_1m=round(os.getloadavg()[0], 2),
                 note=f"{net.score_name} uses our own classifier's features; not "
                      "comparable to Inception FID" + (" or FVD" if score.video else ""))
  write_json(os.path.join(args.root, "study", "study.json"), summary)
  print(json.dumps(summary, default=float), flush=True)


if __name__ == "__main__":
  main()
