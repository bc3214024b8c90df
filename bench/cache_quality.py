"""Cache quality on the digits twins: PSNR / SSIM of cached vs uncached samples.

Trains (or loads, resuming) the digits Skip-DiT and its vanilla-DiT twin from
configs/digits_skipdit.py and configs/digits_dit.py, then, from the same noise and
labels, samples each model uncached and under every cache policy at N = 2, 3, 4 and
scores the cached images against the uncached ones of the same model (PSNR, SSIM on
images clipped to [-1, 1]), with the mean per-step cosine similarity of the cached vs
the true model output / deep feature, and the class accuracy of a logistic-regression
reader fitted on real digits. Ends with one JSON line of every row.

  PYTHONPATH=. python bench/cache_quality.py --skipdit_workdir /tmp/cq_skipdit --dit_workdir /tmp/cq_dit
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

from configs import digits_dit, digits_skipdit
from skipdit_jax import data, sampling
from skipdit_jax.eval import class_accuracy, image_metrics
from skipdit_jax.sampling.trace import fidelity_trace
from skipdit_jax.train import (Checkpointer, abstract_state, build_diffusion, build_model,
                               train_to_end)

# (policy, extra plan options, label). deep_cache recomputes k=2 blocks, the cost of
# Skip-Cache's 2k = 2 of 6, so the twins compare at one ideal speedup.
POLICIES = {
    "skipdit": [("skip_cache", {"k": 1}, "skip_cache k=1"),
                ("skip_cache_forecast", {"k": 1, "forecast_order": 1}, "forecast o1 k=1"),
                ("skip_cache_forecast", {"k": 1, "forecast_order": 2}, "forecast o2 k=1"),
                ("fora", {}, "fora"),
                ("delta_dit", {"k": 1}, "delta_dit m=4")],
    "dit": [("deep_cache", {"k": 2}, "deep_cache k=2"),
            ("fora", {}, "fora"),
            ("delta_dit", {"k": 1}, "delta_dit m=4")],
}


def load_or_train(config, workdir: str):
  """EMA params at `config.train.num_steps`, training (resumably) when short of it."""
  model = build_model(config)
  ckpt = Checkpointer(workdir, async_save=False)
  restored = ckpt.restore(abstract_state(config, model)) if ckpt.latest_step() else None
  ckpt.close()
  if restored is not None and int(restored[0].step) >= config.train.num_steps:
    return model, restored[0].ema_params, int(restored[0].step), 0.0
  t0 = time.perf_counter()
  _, state = train_to_end(config, workdir, config.model.name)
  return model, state.ema_params, int(state.step), time.perf_counter() - t0


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--skipdit_workdir", default="/tmp/cache_quality/skipdit")
  ap.add_argument("--dit_workdir", default="/tmp/cache_quality/dit")
  ap.add_argument("--train_steps", type=int, default=0, help="0: the configs' own")
  ap.add_argument("--per_class", type=int, default=20)
  ap.add_argument("--intervals", default="2,3,4")
  ap.add_argument("--trace_samples", type=int, default=100,
                  help="samples for the per-step cosine trace (a full forward per step)")
  args = ap.parse_args()
  intervals = [int(n) for n in args.intervals.split(",")]

  rows, info = [], {}
  reader = None
  for name, cfg_mod, workdir in (("skipdit", digits_skipdit, args.skipdit_workdir),
                                 ("dit", digits_dit, args.dit_workdir)):
    config = cfg_mod.get_config()
    if args.train_steps:
      config.train.num_steps = args.train_steps
    model, params, step, train_s = load_or_train(config, workdir)
    diffusion = build_diffusion(config)
    if reader is None:
      images, real_labels, _ = data.load_source(config.data.name)
      reader, held = class_accuracy.fit_classifier(images, real_labels,
                                                   num_train=config.eval.classifier_train,
                                                   seed=config.seed)
      info["reader_heldout_accuracy"] = held
    labels = np.repeat(np.arange(config.data.num_classes, dtype=np.int32), args.per_class)
    shape = (len(labels), model.input_size, model.input_size, model.in_channels)
    noise = np.asarray(jax.random.normal(jax.random.key(123), shape))
    base = dict(sampler=config.sample.sampler, num_steps=config.sample.num_steps,
                eta=config.sample.eta, cfg_scale=config.sample.cfg_scale,
                clip_denoised=config.sample.clip_denoised, noise=noise)
    rng = jax.random.key(7)
    ref = np.clip(sampling.generate(model, params, diffusion, labels, rng, **base), -1, 1)
    acc = class_accuracy.class_accuracy(reader, ref, labels)
    info[name] = {"workdir": workdir, "step": step, "train_s": round(train_s, 1),
                  "sampler": base["sampler"], "num_steps": base["num_steps"],
                  "cfg_scale": base["cfg_scale"], "clip_denoised": base["clip_denoised"],
                  "uncached_class_accuracy": acc}
    print(f"{name}: step {step}, {base['num_steps']}-step {base['sampler']}, cfg "
          f"{base['cfg_scale']}, clip_denoised {base['clip_denoised']}; uncached class "
          f"accuracy {acc:.3f}", flush=True)
    nt = min(args.trace_samples, len(labels))
    for policy, opts, label in POLICIES[name]:
      for n in intervals:
        kw = dict(base, policy=policy, interval=n, **opts)
        out = np.clip(sampling.generate(model, params, diffusion, labels, rng, **kw), -1, 1)
        spaced, plan = sampling.respaced_plan(model, diffusion, **kw)
        # The same solver as `generate` used, so the trace walks the same trajectory.
        smp = sampling.get_sampler(model, spaced, plan, sampling.SolverConfig(
            sampler=base["sampler"], eta=base["eta"], cfg_scale=base["cfg_scale"],
            clip_denoised=base["clip_denoised"]))
        tr = fidelity_trace(smp, params, noise[:nt], labels[:nt], jax.random.split(rng)[1])
        c = tr["cached"]
        row = {"model": name, "policy": policy, "label": label, "N": n,
               "ideal": round(plan.ideal_speedup, 3),
               # Identical images have infinite PSNR; cap each at 100 dB before the mean.
               "psnr": round(float(np.mean(np.minimum(image_metrics.psnr(out, ref), 100))),
                             2),
               "ssim": round(float(np.mean(image_metrics.ssim(out, ref))), 4),
               "cos_out": round(float(np.mean(tr["cos_out"][c])), 4),
               "cos_feature": (round(float(np.mean(tr["cos_feature"][c])), 4)
                               if np.isfinite(tr["cos_feature"][c]).all() else None),
               "class_accuracy": round(class_accuracy.class_accuracy(reader, out, labels), 3)}
        rows.append(row)
        print(f"  {label:18s} N={n} ideal {row['ideal']:.2f}x  PSNR {row['psnr']:6.2f} dB  "
              f"SSIM {row['ssim']:.4f}  cos(out) {row['cos_out']:.4f}  cos(feat) "
              f"{row['cos_feature']}  acc {row['class_accuracy']:.3f}", flush=True)

  print("\n| model | policy | N | ideal | PSNR dB | SSIM | cos out | cos feature | class acc |")
  print("|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    feat = "-" if r["cos_feature"] is None else f"{r['cos_feature']:.4f}"
    print(f"| {r['model']} | {r['label']} | {r['N']} | {r['ideal']:.2f}x | {r['psnr']:.2f} | "
          f"{r['ssim']:.4f} | {r['cos_out']:.4f} | {feat} | {r['class_accuracy']:.3f} |")
  print(json.dumps({"bench": "cache_quality", "load_avg_1m": round(os.getloadavg()[0], 2),
                    **info, "rows": rows}), flush=True)


if __name__ == "__main__":
  main()
