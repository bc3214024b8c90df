"""`--mode=eval`: sample quality and feature stability of a trained workdir.

For the EMA weights of the workdir's latest checkpoint (or `step`), with the sampler and
cache plan of `config.sample` (any policy):
  * FD-<dataset> (our classifier's features; not comparable to Inception FID), KID,
    precision/recall and conditional accuracy of class-balanced samples; with
    `eval.inception_weights` also standard FID/KID on Inception-v3 pool features; with a
    cache policy also PSNR/SSIM against uncached samples from the same noise;
  * the stability analyses of `eval.stability` (per-step feature similarity,
    perturbation grid, block spectral norms).
Writes `workdir/eval/*.json` and PNGs, and scalars under `eval/` to TensorBoard.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from skipdit_jax import diffusion as D
from skipdit_jax import sampling
from skipdit_jax.eval import feature_net, image_metrics, plots, sample_quality, stability

# eval.* fields this module reads, with their defaults (a config may omit any of them).
DEFAULTS: dict[str, Any] = {
    "num_samples": 1000,         # generated images, class-balanced
    "num_ref": 10000,            # real images for the reference stats (<= 0: all)
    "inception_weights": "",     # pytorch-fid Inception weights (.npz/.safetensors): FID
    "ref_stats": "",             # an .npz with mu/sigma to use for FID instead of real data
    "kid_subsets": 100,
    "kid_subset_size": 1000,
    "pr_k": 3,                   # k of the k-NN manifolds of precision/recall
    "stability": True,
    "stability_samples": 16,
    "stability_steps": 0,        # sampling steps of the step-similarity run; 0 = sample's
    "spectral_iters": 30,
    "perturb_scales": (0.0, 0.01, 0.02, 0.05, 0.1),
}


def eval_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """`config.eval` merged over DEFAULTS, validated (errors name the field)."""
  section = config.get("eval", None) or {}
  opts = {k: section.get(k, v) for k, v in DEFAULTS.items()}
  for key in ("num_samples", "kid_subsets", "kid_subset_size", "pr_k", "stability_samples",
              "spectral_iters"):
    v = opts[key]
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
      raise ValueError(f"config.eval.{key}={v!r} must be an integer >= 1")
  if opts["num_samples"] < 2 * opts["pr_k"]:
    raise ValueError(f"config.eval.num_samples={opts['num_samples']} is too small for "
                     f"precision/recall with eval.pr_k={opts['pr_k']}; use >= {2 * opts['pr_k']}")
  for key in ("inception_weights", "ref_stats"):
    if opts[key] and not os.path.exists(opts[key]):
      raise FileNotFoundError(f"config.eval.{key}={opts[key]!r} does not exist")
  return opts


def class_labels(num: int, num_classes: int) -> np.ndarray:
  """num labels cycling 0..num_classes-1 (class-balanced up to one)."""
  return (np.arange(num) % num_classes).astype(np.int32)


def generate_images(model: Any, params: Any, diffusion: D.Diffusion, labels: np.ndarray,
                    seed: int, batch: int, **opts) -> tuple[np.ndarray, float]:
  """Samples for `labels` in chunks of `batch` (chunk i uses fold_in(seed key, i), so
  every policy sees the same noise); returns (images (N,H,W,C), seconds)."""
  t0 = time.perf_counter()
  out = [sampling.generate(model, params, diffusion, labels[i:i + batch],
                           jax.random.fold_in(jax.random.key(seed), i), **opts)
         for i in range(0, len(labels), batch)]
  return np.concatenate(out), time.perf_counter() - t0


def extractors(config: ml_collections.ConfigDict, cache_dir: str, opts: dict,
               log: Callable[[str], None] = print) -> dict[str, Any]:
  """{"classifier": FeatureNet of data.name, ["inception": InceptionV3 features]}."""
  out = {"classifier": feature_net.load_or_train(config.data.name, cache_dir,
                                                 seed=config.get("seed", 0), log=log,
                                                 data=config.data)}
  if opts["inception_weights"]:
    from skipdit_jax.eval import inception
    out["inception"] = inception.load_inception(opts["inception_weights"])
  return out


def score_images(images: np.ndarray, labels: np.ndarray, nets: dict[str, Any],
                 refs: dict[str, sample_quality.Reference], opts: dict, *,
                 accuracy: bool = True) -> dict[str, float]:
  """FD/KID/precision/recall per extractor and (`accuracy`) the classifier's conditional
  accuracy; off where the classifier learnt other classes than the run's labels (the
  moving-digits feature net reads digit x direction)."""
  images = np.clip(images, -1.0, 1.0)  # the data range; samples may overshoot it
  out: dict[str, float] = {}
  for key, net in nets.items():
    out.update(sample_quality.score_features(
        refs[key], net.features(images), kid_subsets=opts["kid_subsets"],
        kid_subset_size=opts["kid_subset_size"], pr_k=opts["pr_k"]))
  if accuracy:
    out["class_accuracy"] = feature_net.conditional_accuracy(nets["classifier"], images,
                                                             labels)
  return out


def stability_report(model: Any, params: Any, diffusion: D.Diffusion, config, opts: dict,
                     out_dir: str) -> dict[str, Any]:
  """Runs (a), (b), (c) of eval.stability; writes stability_*.json and PNGs."""
  s = config.sample
  cache = dict(s.get("cache", {}) or {})
  policy = cache.get("policy", "none")
  deep = ("skip_cache", "skip_cache_forecast", "deep_cache")
  if policy not in deep:  # compare the model's own deep-feature cache instead
    policy = stability.feature_policy(model)
  interval = max(int(cache.get("interval", 1)), 2)
  k = int(cache.get("k", 1))
  n = opts["stability_samples"]
  labels = class_labels(n, config.data.num_classes)
  steps = opts["stability_steps"] or s.num_steps
  res = {"steps": stability.step_similarity(
      model, params, diffusion, labels, jax.random.key(config.get("seed", 0)),
      num_steps=steps, k=k, sampler=s.sampler, cfg_scale=s.cfg_scale, policy=policy,
      interval=interval, window=tuple(cache.get("window", (0, 1000))),
      **({"forecast_order": cache["forecast_order"]}
         if policy == "skip_cache_forecast" and "forecast_order" in cache else {}))}
  x0, _ = sample_quality.real_images(config.data.name, n, seed=1, data=config.data)
  rng = np.random.default_rng(2)
  t = jnp.asarray(np.linspace(50, 950, n).astype(np.int32))  # spread over the schedule
  noise = jnp.asarray(rng.normal(size=x0.shape), jnp.float32)
  xt = D.q_sample(diffusion, jnp.asarray(x0), t, noise)
  y = jnp.asarray(labels)
  scales = tuple(float(v) for v in opts["perturb_scales"])
  res["perturbation"] = stability.perturbation_similarity(
      model, params, xt, t, y, param_scales=scales, input_scales=scales, k=k)
  res["spectral"] = stability.block_spectral_norms(model, params, xt, t, y,
                                                   num_iters=opts["spectral_iters"])
  name = res["steps"]["model"]
  for key, val in res.items():
    with open(os.path.join(out_dir, f"stability_{key}.json"), "w") as f:
      json.dump(val, f, indent=1)
  plot_stability({name: res}, out_dir)
  return res


def plot_stability(results: dict[str, dict], out_dir: str, prefix: str = "stability") -> list:
  """PNGs of stability results of one or several models ({model name: report})."""
  paths = []
  st = {m: r["steps"] for m, r in results.items()}
  paths.append(plots.line_plot(
      os.path.join(out_dir, f"{prefix}_consecutive.png"),
      {m: (v["timesteps"][1:], v["consecutive"]) for m, v in st.items()},
      xlabel="timestep t", ylabel="cos(deep feature at t, at previous step)",
      title="deep-feature similarity of consecutive steps (uncached)"))
  cached = {f"{m} {v['policy']} N={v['interval']}": (v["timesteps"], v["cached_vs_uncached"])
            for m, v in st.items() if "cached_vs_uncached" in v}
  if cached:
    paths.append(plots.line_plot(
        os.path.join(out_dir, f"{prefix}_cached.png"), cached, xlabel="timestep t",
        ylabel="cos(feature used, uncached feature)",
        title="deep feature: cached run vs uncached run"))
  pert = {m: r["perturbation"] for m, r in results.items()}
  for feat in ("deep", "final"):
    any_p = next(iter(pert.values()))
    paths.append(plots.heatmaps(
        os.path.join(out_dir, f"{prefix}_perturbation_{feat}.png"),
        {m: p[feat] for m, p in pert.items()}, xs=any_p["input_scales"],
        ys=any_p["param_scales"], xlabel="input perturbation", ylabel="parameter perturbation",
        title=f"cosine similarity of the {feat} feature under perturbation"))
  unit = next(iter(results.values()))["spectral"].get("unit", "block")  # Latte: a pair
  paths.append(plots.line_plot(
      os.path.join(out_dir, f"{prefix}_spectral.png"),
      {m: (r["spectral"]["block"], r["spectral"]["mean"]) for m, r in results.items()},
      xlabel=unit, ylabel=f"spectral norm of the {unit} Jacobian (batch mean)",
      title=f"{unit} input->output Jacobian spectral norms"))
  return paths


def evaluate(config: ml_collections.ConfigDict, workdir: str, *, step: int | None = None,
             log: Callable[[str], None] = print) -> dict[str, Any]:
  """The `--mode=eval` entry: scores, stability, JSON/PNG files and TensorBoard scalars."""
  from skipdit_jax import paths
  from skipdit_jax.train import build_diffusion, restore_ema, writers
  opts = eval_options(config)
  model, params, step = restore_ema(config, workdir, step=step, purpose="evaluate")
  diffusion = build_diffusion(config)
  # The caches (feature net, reference stats), JSONs and plots are local files; for a
  # gs:// workdir they are read from and written back to <workdir>/eval.
  with paths.local_mirror(paths.resolve(workdir) / "eval") as out_dir:
    result = _evaluate_into(config, opts, model, params, step, diffusion, out_dir, log)
  writer = writers.create_writer(writers.logdir(workdir), asynchronous=False, console=False)
  policy = result["policy"]
  scalars = {f"eval/{policy}/{k}": v for k, v in result.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step"}
  writer.write_scalars(step, scalars)
  writer.close()
  return result


def _evaluate_into(config, opts: dict, model, params, step: int, diffusion, out_dir: str,
                   log: Callable[[str], None]) -> dict[str, Any]:
  """Samples, scores and writes `evaluate`'s files into the local folder `out_dir`."""
  nets = extractors(config, out_dir, opts, log)
  refs = {key: sample_quality.build_reference(
      net, config.data.name, out_dir, num=opts["num_ref"], seed=config.get("seed", 0),
      stats_path=opts["ref_stats"] if key == "inception" else "", data=config.data)
      for key, net in nets.items()}
  sopts = sampling.options_from_config(config.sample)
  labels = class_labels(opts["num_samples"], config.data.num_classes)
  seed, batch = config.sample.get("seed", 0), config.sample.batch_size
  images, secs = generate_images(model, params, diffusion, labels, seed, batch, **sopts)
  policy = sopts.get("policy", "none")
  tag = f"step{step:07d}_{policy}" + (f"_N{sopts.get('interval', 1)}" if policy != "none" else "")
  result: dict[str, Any] = {"step": step, "policy": policy, "num_samples": len(labels),
                            "sample_s": secs, "classifier_test_accuracy":
                            nets["classifier"].test_accuracy,
                            "note": f"{nets['classifier'].score_name} uses our own "
                                    "classifier's features: not comparable to Inception FID"}
  result.update(score_images(
      images, labels, nets, refs, opts,
      accuracy=nets["classifier"].module.num_classes == config.data.num_classes))
  if policy != "none":
    _, plan = sampling.respaced_plan(model, diffusion, **sopts)
    plain = dict(sopts, policy="none", interval=1)
    ref_images, ref_secs = generate_images(model, params, diffusion, labels, seed, batch,
                                           **plain)
    a, b = np.clip(images, -1, 1), np.clip(ref_images, -1, 1)
    result.update(ideal_speedup=plan.ideal_speedup, uncached_sample_s=ref_secs,
                  psnr_vs_uncached=float(np.mean(np.minimum(image_metrics.psnr(a, b), 100))),
                  ssim_vs_uncached=float(np.mean(image_metrics.ssim(a, b))))
  if opts["stability"]:
    st = stability_report(model, params, diffusion, config, opts, out_dir)
    result["stability"] = {"consecutive_mean": st["steps"]["consecutive_mean"],
                           "cached_vs_uncached_mean": st["steps"].get("cached_vs_uncached_mean"),
                           "spectral_max": max(st["spectral"]["max"])}
  with open(os.path.join(out_dir, f"metrics_{tag}.json"), "w") as f:
    json.dump(result, f, indent=1, default=float)
  return result
