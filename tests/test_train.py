"""The train side: optimizer schedule, EMA, label dropout in the step, learning, checkpoints."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from skipdit_jax import diffusion as dfn
from skipdit_jax import models
from skipdit_jax.train import (Checkpointer, TrainState, lr_schedule, make_optimizer,
                               make_train_step)

LR, WARM, TOTAL = 2e-3, 10, 50


def train_cfg(**kw) -> ml_collections.ConfigDict:
  c = dict(lr=LR, warmup_steps=WARM, num_steps=TOTAL, lr_schedule="constant",
           weight_decay=0.0, grad_clip=1.0, b1=0.9, b2=0.999)
  c.update(kw)
  return ml_collections.ConfigDict(c)


def tiny_model(**kw) -> models.DiT:
  fields = dict(input_size=8, in_channels=1, num_classes=10, depth=2, hidden_size=32,
                num_heads=2, learn_sigma=False)
  fields.update(kw)
  return models.create("SkipDiT-Tiny/2", **fields)


def digits_batch(n: int) -> tuple[np.ndarray, np.ndarray]:
  from sklearn.datasets import load_digits
  d = load_digits()
  return (d.images[:n, :, :, None] / 8.0 - 1.0).astype(np.float32), d.target[:n].astype(np.int32)


def fresh(model, tx, seed=0) -> TrainState:
  params = models.init_params(model, jax.random.PRNGKey(seed))
  return TrainState.create(params, tx, jax.random.PRNGKey(seed + 1))


DIFF = dfn.Diffusion.create(dfn.betas_for("linear", 1000))
BATCH, DECAY = 32, 0.9


@pytest.fixture(scope="module")
def setup():
  """One model, optimizer and jitted step shared by the step tests (one compile)."""
  model = tiny_model(class_dropout_prob=0.5)
  cfg = train_cfg(lr=3e-3, warmup_steps=0)
  tx = make_optimizer(cfg)
  step = make_train_step(model, DIFF, tx, lr_schedule(cfg), DECAY)
  x, y = digits_batch(BATCH)
  return model, tx, step, x, y


def test_warmup_then_constant_and_cosine_known_values():
  """Our wiring of optax's schedules (warm-up length, peak, decay span), by known values:
  0 at step 0, half the peak half-way up, the peak at warmup_steps, then constant, or a
  cosine at half the peak half-way down and 0 at num_steps."""
  const = lr_schedule(train_cfg())
  assert float(const(0)) == 0.0
  assert float(const(WARM // 2)) == pytest.approx(LR / 2, rel=1e-6)
  for s in (WARM, 30, TOTAL - 1, 10 * TOTAL):
    assert float(const(s)) == pytest.approx(LR, rel=1e-6)
  cos = lr_schedule(train_cfg(lr_schedule="cosine"))
  assert float(cos(0)) == 0.0
  assert float(cos(WARM // 2)) == pytest.approx(LR / 2, rel=1e-6)
  assert float(cos(WARM)) == pytest.approx(LR, rel=1e-6)
  assert float(cos((WARM + TOTAL) // 2)) == pytest.approx(LR / 2, rel=1e-5)
  assert float(cos(TOTAL)) == pytest.approx(0.0, abs=1e-12)
  after = np.array([float(cos(s)) for s in range(WARM, TOTAL + 1)])
  assert np.all(np.diff(after) < 0)  # decays all the way to num_steps, not before
  with pytest.raises(ValueError, match="config.train.lr_schedule"):
    lr_schedule(train_cfg(lr_schedule="linear"))


def test_adamw_updates_follow_the_schedule_clip_and_decay_mask():
  # Constant gradients: Adam's bias-corrected m/sqrt(v) is sign(g) (up to eps), so update k
  # is -lr(k) * (sign(g) + wd * p) for matrices and -lr(k) * sign(g) for vectors.
  wd = 0.1
  tx = make_optimizer(train_cfg(weight_decay=wd, grad_clip=1.0))
  params = {"kernel": jnp.full((2, 2), 0.5), "bias": jnp.full((2,), 0.5)}
  grads = {"kernel": jnp.full((2, 2), 30.0), "bias": jnp.full((2,), -40.0)}  # clipped
  state = tx.init(params)
  p64 = {k: np.asarray(v, np.float64) for k, v in params.items()}
  for k in range(4):
    updates, state = tx.update(grads, state, params)
    params = optax.apply_updates(params, updates)
    lr_k = LR * k / WARM
    p64["kernel"] = p64["kernel"] - lr_k * (1.0 + wd * p64["kernel"])
    p64["bias"] = p64["bias"] - lr_k * (-1.0)
    for name in p64:
      np.testing.assert_allclose(np.asarray(params[name]), p64[name], rtol=1e-5, atol=1e-7)


def test_ema_update_matches_the_formula(setup):
  model, tx, step, x, y = setup
  state = fresh(model, tx)
  # Make the EMA differ from the params so the formula is exercised on both terms.
  state = state.replace(ema_params=jax.tree_util.tree_map(
      lambda p: jnp.asarray(np.asarray(p) + 0.25), state.ema_params))
  old_ema = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), state.ema_params)
  state, _ = step(state, x, y)
  new_params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), state.params)
  want = jax.tree_util.tree_map(lambda e, p: DECAY * e + (1 - DECAY) * p, old_ema, new_params)
  got = jax.tree_util.tree_map(np.asarray, state.ema_params)
  jax.tree_util.tree_map(lambda g, w: np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6),
                         got, want)


def test_ema_warmup_follows_the_inverse_decay_then_the_cap(setup):
  # With warmup the k-th update (k = 0, 1, ...) uses min(cap, (1 + k) / (10 + k)); checked
  # against a float64 recurrence over the step's own params, and against the cap once the
  # ramp passes it (cap 0.15 < 2/11 from update 1 on).
  model, tx, _, x, y = setup
  cap = 0.15
  step = make_train_step(model, DIFF, tx, lr_schedule(train_cfg(lr=3e-3, warmup_steps=0)),
                         cap, ema_warmup=True)
  state = fresh(model, tx, seed=3)
  ema = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), state.ema_params)
  for k in range(3):
    state, _ = step(state, x, y)
    d = min(cap, (1 + k) / (10 + k))
    assert d == (0.1 if k == 0 else cap)
    ema = jax.tree_util.tree_map(lambda e, p: d * e + (1 - d) * np.asarray(p, np.float64),
                                 ema, state.params)
  jax.tree_util.tree_map(
      lambda g, w: np.testing.assert_allclose(np.asarray(g), w, rtol=1e-5, atol=1e-6),
      state.ema_params, ema)


def test_label_dropout_only_when_training():
  model = tiny_model(class_dropout_prob=0.5)
  params = models.init_params(model, jax.random.PRNGKey(0))
  n = 256
  x = jnp.zeros((n, 8, 8, 1))
  t = jnp.full((n,), 10)
  y = jnp.arange(n) % 10
  table = np.asarray(params["y_embedder"]["embedding_table"])
  t_emb = np.asarray(model.apply({"params": params}, x, t, y * 0 + 10,
                                 force_drop_ids=jnp.ones((n,), bool), method=model.embed)[1])
  null_c = t_emb  # c with every label replaced by the null class

  def dropped(train):
    _, c = model.apply({"params": params}, x, t, y, train=train,
                       rngs={"dropout": jax.random.PRNGKey(3)}, method=model.embed)
    return np.all(np.isclose(np.asarray(c), null_c, atol=1e-6), axis=1)

  assert table.shape[0] == 11                    # ten classes and the null row
  assert not dropped(False).any()
  frac = dropped(True).mean()
  assert 0.35 < frac < 0.65                      # Binomial(256, 0.5): 6 sigma either side


def test_train_step_trains_the_null_class_row(setup):
  # Only label dropout (train=True) routes gradient into the null row of the table.
  model, tx, step, x, y = setup
  state = fresh(model, tx)
  # Non-zero adaLN / final weights so that gradients reach the label table at once.
  rng = np.random.default_rng(7)
  state = state.replace(params=jax.tree_util.tree_map(
      lambda p: jnp.asarray(np.asarray(p) + 0.05 * rng.standard_normal(p.shape), jnp.float32),
      state.params))
  null_before = np.asarray(state.params["y_embedder"]["embedding_table"][10]).copy()
  state, m = step(state, x, y)
  null_after = np.asarray(state.params["y_embedder"]["embedding_table"][10])
  assert np.abs(null_after - null_before).max() > 1e-5
  assert set(m) >= {"loss", "mse", "vb", "grad_norm", "lr"}


def test_loss_decreases_on_a_tiny_batch(setup):
  model, tx, step, x, y = setup
  state = fresh(model, tx)
  losses = []
  for _ in range(30):
    state, m = step(state, x, y)
    losses.append(float(m["loss"]))
  assert int(state.step) == 30
  assert np.mean(losses[-6:]) < 0.7 * np.mean(losses[:6]), losses


def test_checkpoint_round_trip_survives_donation(setup, tmp_path):
  model, tx, step, x, y = setup
  state = fresh(model, tx)
  state, _ = step(state, x, y)
  want = jax.tree_util.tree_map(np.array, state)   # host copies before the save
  ckpt = Checkpointer(str(tmp_path), async_save=True)
  ckpt.save(1, state, {"data": {"position": 1}})
  for _ in range(2):                               # donate the saved buffers at once
    state, _ = step(state, x, y)
  ckpt.wait()
  got, meta = ckpt.restore(jax.eval_shape(lambda: state))
  ckpt.close()
  assert meta == {"data": {"position": 1}}
  assert isinstance(got, TrainState)
  flat_w, tree_w = jax.tree_util.tree_flatten(want)
  flat_g, tree_g = jax.tree_util.tree_flatten(got)
  assert tree_w == tree_g
  for a, b in zip(flat_w, flat_g):
    np.testing.assert_array_equal(np.asarray(b), a)
  assert Checkpointer(str(tmp_path / "empty")).restore(want) is None
