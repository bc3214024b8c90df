"""The non-finite guard (train/guard.py) and the preemption watcher (train/preemption.py)."""
from __future__ import annotations

import functools
import os
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skipdit_jax.train.guard import GuardedStep, NonFiniteError, all_finite
from skipdit_jax.train.preemption import PreemptionWatcher
from skipdit_jax.train.state import TrainState


def toy_step(state, images, labels):
  """loss = sum((w - mean(images))^2), SGD with lr 0.1; numpy-checkable."""
  del labels
  rng, _ = jax.random.split(state.rng)
  target = images.mean()
  loss_fn = lambda p: jnp.sum((p["w"] - target) ** 2)
  loss, g = jax.value_and_grad(loss_fn)(state.params)
  params = {"w": state.params["w"] - 0.1 * g["w"]}
  new = state.replace(step=state.step + 1, params=params, ema_params=params, rng=rng)
  return new, {"loss": loss, "grad_norm": jnp.sqrt(jnp.sum(g["w"] ** 2))}


def toy_state():
  w = {"w": jnp.asarray([1.0, -2.0, 0.5], jnp.float32)}
  ema = jax.tree_util.tree_map(jnp.copy, w)  # distinct buffers: the step donates both
  return TrainState(step=jnp.zeros((), jnp.int32), params=w, opt_state=(), ema_params=ema,
                    rng=jax.random.key_data(jax.random.key(0)))


def np_sgd(w, target):
  w = np.asarray(w, np.float64)
  return w - 0.1 * 2.0 * (w - target)


def batch(value):
  return jnp.full((2, 2, 2, 1), value, jnp.float32), jnp.zeros((2,), jnp.int32)


def test_all_finite_is_exact():
  assert bool(all_finite({"a": jnp.ones(3), "b": jnp.full((2,), 3e38)}))
  assert not bool(all_finite({"a": jnp.ones(3), "b": jnp.asarray([1.0, jnp.inf])}))
  assert not bool(all_finite([jnp.asarray([jnp.nan])]))


def test_skip_mode_drops_bad_updates_and_counts_them():
  step = GuardedStep(toy_step, "skip")
  state = toy_state()
  want = np.asarray(state.params["w"], np.float64)
  for value in (0.5, np.nan, 2.0, np.inf, -1.0):
    rng_before = np.asarray(state.rng)
    state, m = step(state, *batch(value))
    if np.isfinite(value):
      want = np_sgd(want, value)
      assert float(m["nonfinite"]) == 0.0
    else:
      assert float(m["nonfinite"]) == 1.0
    assert not np.array_equal(np.asarray(state.rng), rng_before)  # the rng always moves on
    np.testing.assert_allclose(np.asarray(state.params["w"]), want, rtol=1e-6)
  assert int(state.step) == 5                      # the batch was spent, the step counted
  assert step.counters() == {"skipped": 2, "first_bad": 1}
  step.check()                                     # "skip" never raises


def test_stop_mode_freezes_at_the_last_good_step_and_names_the_bad_one():
  step = GuardedStep(toy_step, "stop")
  state = toy_state()
  state, _ = step(state, *batch(0.5))
  state, _ = step(state, *batch(0.25))
  good = np.asarray(state.params["w"]).copy()
  state, _ = step(state, *batch(np.nan))   # step index 2 is bad
  state, _ = step(state, *batch(1.0))      # dispatched before the host looks: no effect
  np.testing.assert_array_equal(np.asarray(state.params["w"]), good)
  assert int(state.step) == 2
  with pytest.raises(NonFiniteError, match=r"at step 2 .*train.nonfinite='skip'") as info:
    step.check()
  assert info.value.step == 2


def test_counters_survive_a_restore():
  step = GuardedStep(toy_step, "skip")
  step.restore({"skipped": 7, "first_bad": 3})
  state, _ = step(toy_state(), *batch(np.nan))
  assert step.counters() == {"skipped": 8, "first_bad": 3}


def test_guard_on_the_real_train_step_keeps_params_bitwise():
  from skipdit_jax import diffusion as dfn
  from skipdit_jax import models
  from skipdit_jax.train.optim import make_optimizer, lr_schedule
  from skipdit_jax.train.step import train_step
  from configs.default import get_config
  cfg = get_config().train
  model = models.create("SkipDiT-Tiny/2", input_size=8, in_channels=1, num_classes=10,
                        depth=2, hidden_size=32, num_heads=2, learn_sigma=False)
  diff = dfn.Diffusion.create(dfn.betas_for("linear", 1000))
  tx, sched = make_optimizer(cfg), lr_schedule(cfg)
  raw = functools.partial(train_step, model=model, diffusion=diff, tx=tx, schedule=sched,
                          ema_decay=0.9)
  params = models.init_params(model, jax.random.key(0))
  state = TrainState.create(params, tx, jax.random.key_data(jax.random.key(1)))
  step = GuardedStep(raw, "skip")
  images = np.random.default_rng(0).uniform(-1, 1, (4, 8, 8, 1)).astype(np.float32)
  labels = np.arange(4, dtype=np.int32)
  state, _ = step(state, images, labels)
  before = jax.tree_util.tree_map(np.array, (state.params, state.ema_params, state.opt_state))
  images[1, 3, 3, 0] = np.nan
  state, m = step(state, images, labels)
  assert float(m["nonfinite"]) == 1.0 and int(state.step) == 2
  after = jax.tree_util.tree_map(np.array, (state.params, state.ema_params, state.opt_state))
  jax.tree_util.tree_map(np.testing.assert_array_equal, before, after)


def test_sigterm_lets_the_step_finish_then_stops():
  with PreemptionWatcher() as watcher:
    assert not watcher.should_stop(0)
    os.kill(os.getpid(), signal.SIGTERM)   # delivered to this (main) thread at once
    assert watcher.received == signal.SIGTERM
    assert watcher.should_stop(1)
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
