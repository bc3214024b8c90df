"""Does a trained model use its label? eps-MSE with the right, a wrong and the null label.

For a workdir's EMA weights: the source's last `--rows` examples (images or clips), noised
at fixed timesteps with the same noise for every label, and the model's eps-MSE given the
right label, a wrong one and the null class. The wrong label is a fixed non-zero offset
(`--wrong class`), or, for moving digits labelled `digit_direction`, the same digit moving
the opposite way (`--wrong direction`: both axes reversed), which asks whether the motion,
not the digit, follows the label. A model that draws what its label asks has a clear gap
(wrong - right) / right; one that ignores the label has none. A v-prediction model's output
is read as eps (`diffusion.model_eps`). Prints one line per t and ends with one JSON object.

  python bench/label_gap.py --config configs/moving_digits_skiplatte.py --workdir /tmp/vdemo \
      [--set data.num_frames=1 --set diffusion.snr_shift=1.0] [--wrong direction]

`--set` repeats the training run's overrides (the config must match the checkpoint).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from skipdit_jax import data  # noqa: E402
from skipdit_jax import diffusion as D  # noqa: E402
from skipdit_jax.train import build_diffusion, restore_ema  # noqa: E402

import study  # noqa: E402  (bench/study.py: load_config)

TIMESTEPS = (100, 300, 500, 700, 850, 950)


def _overrides(items: list[str]) -> dict:
  """["a.b=8", "c=true", "d=name"] -> {"a.b": 8, "c": True, "d": "name"} (JSON, else text)."""
  out = {}
  for item in items:
    key, value = item.split("=", 1)
    try:
      out[key] = json.loads(value)
    except json.JSONDecodeError:
      out[key] = value
  return out


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--config", required=True)
  ap.add_argument("--workdir", required=True)
  ap.add_argument("--set", action="append", default=[], help="config override key=value")
  ap.add_argument("--rows", type=int, default=256)
  ap.add_argument("--wrong", choices=("class", "direction"), default="class",
                  help="class: another class; direction: the same digit, opposite motion")
  ap.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  args = ap.parse_args()
  config = study.load_config(args.config, _overrides(args.set))
  model, params, step = restore_ema(config, args.workdir, step=args.step)
  images, labels, num_classes = data.load_source(config.data.name, data=config.data)
  rows = np.arange(len(labels) - args.rows, len(labels))
  x0 = jnp.asarray(images[rows], jnp.float32)
  y = jnp.asarray(np.asarray(labels)[rows], jnp.int32)
  if args.wrong == "direction":
    from skipdit_jax.data.moving_digits import DIRECTIONS  # noqa: PLC0415
    if config.data.get("video", {}).get("label") != "digit_direction":
      raise SystemExit("--wrong direction needs a moving_digits model trained with "
                       "data.video.label=digit_direction (pass the run's --set overrides)")
    k = len(DIRECTIONS)
    opposite = jnp.asarray([[tuple(d) for d in DIRECTIONS.tolist()].index((-dy, -dx))
                            for dy, dx in DIRECTIONS.tolist()])
    wrong = (y // k) * k + opposite[y % k]
  else:
    wrong = (y + 1 + jnp.arange(args.rows) % (num_classes - 1)) % num_classes
  null = jnp.full_like(y, num_classes)
  diffusion = build_diffusion(config)
  out = {}
  for t in TIMESTEPS:
    noise = jax.random.normal(jax.random.key(t), x0.shape)
    tt = jnp.full((args.rows,), t, jnp.int32)
    xt = D.q_sample(diffusion, x0, tt, noise)
    mse = {}
    for name, lab in (("right", y), ("wrong", wrong), ("null", null)):
      out_ = model.apply({"params": params}, xt, tt, lab)
      eps = D.model_eps(diffusion, out_, xt, tt, learn_sigma=model.learn_sigma)[
          ..., :x0.shape[-1]]
      mse[name] = float(jnp.mean(jnp.square(eps - noise)))
    mse["gap"] = (mse["wrong"] - mse["right"]) / mse["right"]
    out[str(t)] = mse
    print(f"t={t}: eps-MSE right {mse['right']:.5f} wrong {mse['wrong']:.5f} null "
          f"{mse['null']:.5f}; gap {mse['gap']:+.2%}", flush=True)
  table = np.asarray(params["y_embedder"]["embedding_table"])
  norms = np.linalg.norm(table[:num_classes], axis=1)
  print(f"label rows: norm {norms.min():.2f}..{norms.max():.2f}", flush=True)
  print(json.dumps({"bench": "label_gap", "config": args.config, "overrides": args.set,
                    "wrong": args.wrong,
                    "step": int(step), "rows": args.rows, "by_t": out,
                    "label_row_norm": [round(float(v), 3) for v in norms]}))


if __name__ == "__main__":
  main()
