"""Example grid sweep: the digits demo at three learning rates, DiT vs Skip-DiT.

  python launch/sweep.py configs/sweeps/digits_lr_skip.py --root runs/digits_sweep --dry-run
expands to 6 runs, each `python -m skipdit_jax.main --config=configs/digits_skipdit.py
--workdir=runs/digits_sweep/<name> --config.model.long_skip=... --config.train.lr=...
--config.train.num_steps=2000`. Fields nest as in the config (a ConfigDict holds no
dotted keys).
"""
import ml_collections


def get_sweep() -> ml_collections.ConfigDict:
  s = ml_collections.ConfigDict()
  s.config = "configs/digits_skipdit.py"
  s.overrides = {"train": {"num_steps": 2000}}
  s.grid = {"model": {"long_skip": [True, False]}, "train": {"lr": [1e-3, 2e-3, 4e-3]}}
  return s
