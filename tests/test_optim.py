"""Weight decay is the same with and without `model.scan_blocks` (stacked block params)."""
from __future__ import annotations

import jax
import ml_collections
import numpy as np
import optax

from skipdit_jax import models
from skipdit_jax.models.scan import stack_params
from skipdit_jax.train import make_optimizer
from skipdit_jax.train.optim import _decay_mask
from tiny_models import random_params

DEPTH = 4


def _model(scan: bool) -> models.DiT:
  return models.create("SkipDiT-Tiny/2", input_size=4, in_channels=2, num_classes=5,
                       depth=DEPTH, hidden_size=32, num_heads=2, scan_blocks=scan)


def _flat(tree) -> dict[str, np.ndarray]:
  return {jax.tree_util.keystr(p): np.asarray(v)
          for p, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def test_scanned_mask_equals_the_stacked_unrolled_mask():
  unrolled = random_params(_model(False))
  scanned = stack_params(unrolled, DEPTH, long_skip=True)
  # Same tree as the scanned model's own params (names and shapes).
  want_shapes = jax.eval_shape(lambda k: models.init_params(_model(True), k), jax.random.key(0))
  assert jax.tree.structure(scanned) == jax.tree.structure(want_shapes)
  got = _flat(_decay_mask(scanned))
  want = _flat(stack_params(_decay_mask(unrolled), DEPTH, long_skip=True))
  assert got.keys() == want.keys()
  for name in got:
    assert np.all(want[name] == got[name]), name
  # By role: matrices (kernels, the label table) decay; biases and norm scales never.
  for name, decays in got.items():
    leaf = name.rsplit("[", 1)[-1]
    assert bool(decays) == (leaf in ("'kernel']", "'embedding_table']")), name
  assert not got["['block_stack']['fusions']['norm']['scale']"]
  assert not got["['block_stack']['blocks']['attn']['qkv']['bias']"]


def test_one_adamw_step_with_decay_is_the_same_scanned_and_unrolled():
  # One AdamW step from a fresh state: the bias-corrected m/sqrt(v) is g/(|g| + eps), i.e.
  # sign(g) for |g| >= 0.5, so the update is -lr * (sign(g) + wd * p) where p decays (by
  # role: kernels and the label table) and -lr * sign(g) elsewhere (float64 numpy).
  lr, wd = 0.05, 0.3
  cfg = ml_collections.ConfigDict(dict(lr=lr, warmup_steps=0, num_steps=10,
                                       lr_schedule="constant", weight_decay=wd,
                                       grad_clip=0.0, b1=0.9, b2=0.999))
  tx = make_optimizer(cfg)
  params = random_params(_model(False), seed=1)
  grads = jax.tree.map(lambda a: np.where(a >= 0, 1.0, -1.0).astype(np.float32)
                       * (0.5 + np.abs(a)), random_params(_model(False), seed=2))
  stack = lambda t: stack_params(t, DEPTH, long_skip=True)  # noqa: E731

  @jax.jit
  def step(p, g):
    updates, _ = tx.update(g, tx.init(p), p)
    return optax.apply_updates(p, updates)

  got = _flat(step(stack(params), stack(grads)))
  want = _flat(stack(step(params, grads)))
  assert got.keys() == want.keys()
  p64, g64 = _flat(stack(params)), _flat(stack(grads))
  for name in got:
    np.testing.assert_allclose(got[name], want[name], rtol=1e-6, atol=1e-7, err_msg=name)
    decays = name.endswith(("['kernel']", "['embedding_table']"))
    p = p64[name].astype(np.float64)
    ref = p - lr * (np.sign(g64[name]) + (wd * p if decays else 0.0))
    np.testing.assert_allclose(got[name], ref, rtol=1e-5, atol=1e-6, err_msg=name)
