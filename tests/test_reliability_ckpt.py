"""Checkpointer: retention, complete-step selection, refusals and clear errors."""
from __future__ import annotations

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from skipdit_jax import models
from skipdit_jax.train.checkpoint import CheckpointError, Checkpointer, move_aside
from skipdit_jax.train.state import TrainState


def toy_state(step: int, width: int = 4, clip: bool = False) -> TrainState:
  """A small state whose every value is a known function of `step`."""
  params = {"dense": {"kernel": jnp.full((3, width), float(step)),
                      "bias": jnp.arange(width, dtype=jnp.float32) + step}}
  tx = optax.adamw(1e-3)
  if clip:
    tx = optax.chain(optax.clip_by_global_norm(1.0), tx)
  return TrainState(step=jnp.asarray(step, jnp.int32), params=params,
                    opt_state=tx.init(params),
                    ema_params=jax.tree_util.tree_map(lambda x: x * 0.5, params),
                    rng=jnp.asarray([0, step], jnp.uint32))


def save_steps(workdir, steps, width=4, **kw) -> Checkpointer:
  ck = Checkpointer(str(workdir), async_save=True, **kw)
  for s in steps:
    assert ck.save(s, toy_state(s, width), {"data": {"position": s}})
  ck.wait()
  return ck


def test_keeps_the_last_n_and_every_mth(tmp_path):
  ck = save_steps(tmp_path, range(1, 13), keep=2, keep_every=4)
  assert ck.complete_steps() == [4, 8, 11, 12]
  state, meta = ck.restore(toy_state(0))
  assert int(state.step) == 12 and meta["data"]["position"] == 12
  np.testing.assert_array_equal(np.asarray(state.params["dense"]["kernel"]), 12.0)
  np.testing.assert_array_equal(np.asarray(state.ema_params["dense"]["bias"]),
                                (np.arange(4) + 12) * 0.5)
  ck.close()


def test_an_unfinished_or_incomplete_step_is_never_chosen(tmp_path):
  ck = save_steps(tmp_path, (2, 4), keep=5)
  ck.close()
  root = tmp_path / "checkpoints"
  # What a kill mid-save leaves: orbax's temporary directory of the next step ...
  shutil.copytree(root / "4", root / "6.orbax-checkpoint-tmp-1234")
  # ... and a step folder whose files are not all there (e.g. a partial copy).
  shutil.copytree(root / "4", root / "8")
  os.remove(root / "8" / "state" / "_METADATA")
  ck = Checkpointer(str(tmp_path), keep=5)
  assert ck.latest_step() == 4
  state, _ = ck.restore(toy_state(0))
  assert int(state.step) == 4
  ck.close()


def test_a_saved_step_is_not_written_twice(tmp_path):
  ck = save_steps(tmp_path, (3,))
  assert not ck.save(3, toy_state(99), {})
  ck.wait()
  state, _ = ck.restore(toy_state(0))
  assert int(state.step) == 3
  ck.close()


def test_a_nonfinite_state_is_refused_and_the_last_good_kept(tmp_path):
  ck = save_steps(tmp_path, (5,))
  bad = toy_state(6)
  bad = bad.replace(params={"dense": dict(bad.params["dense"],
                                          bias=jnp.asarray([0.0, jnp.nan, 0.0, 0.0]))})
  with pytest.raises(CheckpointError, match=r"refusing to save step 6.*step 5"):
    ck.save(6, bad, {})
  assert ck.complete_steps() == [5]
  ck.close()


def test_another_model_shape_names_the_parameter_paths(tmp_path):
  ck = save_steps(tmp_path, (1,))
  with pytest.raises(CheckpointError) as info:
    ck.restore(toy_state(0, width=8))
  msg = str(info.value)
  assert "params.dense.kernel: checkpoint (3, 4) float32, expected (3, 8) float32" in msg
  assert "ema_params.dense.bias" in msg and "allow_new_model=True" in msg
  ck.close()


def test_another_optimizer_structure_names_the_paths(tmp_path):
  ck = save_steps(tmp_path, (1,))
  with pytest.raises(CheckpointError, match=r"opt_state\.") as info:
    ck.restore(toy_state(0, clip=True))
  msg = str(info.value)
  assert "not in the checkpoint" in msg and "not expected by this config" in msg
  assert "Only the optimizer state differs" in msg and "train.grad_clip" in msg
  ck.close()


def test_a_real_dit_of_another_width_is_refused_before_reading(tmp_path):
  def abstract(width):
    model = models.create("SkipDiT-Tiny/2", input_size=8, in_channels=1, num_classes=10,
                          depth=2, hidden_size=width, num_heads=2, learn_sigma=False)
    params = jax.eval_shape(lambda: models.init_params(model, jax.random.key(0)))
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), params)
  p32 = abstract(32)
  st = TrainState(step=jnp.asarray(1), params=p32, opt_state=(),
                  ema_params=jax.tree_util.tree_map(jnp.copy, p32), rng=jnp.zeros(2, jnp.uint32))
  ck = Checkpointer(str(tmp_path), async_save=False)
  ck.save(1, st, {})
  p48 = abstract(48)
  with pytest.raises(CheckpointError) as info:
    ck.restore(st.replace(params=p48, ema_params=p48))
  msg = str(info.value)
  # adaLN-Zero: (D, 6D); parameters are listed before the EMA and optimizer copies.
  assert "params.blocks_0.adaLN_modulation.kernel: checkpoint (32, 192) float32, expected " \
      "(48, 288) float32" in msg, msg
  # 35 params + 35 EMA + step + rng; step, rng and final_layer.linear.bias (4,) in params
  # and EMA keep their shapes, so 68 differ, and 8 are shown.
  assert "(68 array paths differ; this config expects 72 arrays)" in msg and "... and 60 more" in msg
  ck.close()


@pytest.mark.parametrize("which", ["largest file", "every file"])
def test_a_truncated_file_is_a_clear_error(tmp_path, which):
  width = 512  # arrays over orbax's 1 KiB inline limit live in their own data files
  ck = save_steps(tmp_path, (1, 2), width=width, keep=5)
  ck.close()
  step_dir = tmp_path / "checkpoints" / "2" / "state"
  files = sorted((os.path.join(d, f) for d, _, fs in os.walk(step_dir) for f in fs),
                 key=os.path.getsize)
  if which == "largest file":  # the one holding the array bytes
    files = files[-1:]
  for f in files:  # cut in half, as a full disk or a torn copy leaves them
    with open(f, "r+b") as fh:
      fh.truncate(os.path.getsize(f) // 2)
  ck = Checkpointer(str(tmp_path), keep=5)
  with pytest.raises(CheckpointError) as info:
    ck.restore(toy_state(0, width))
  msg = str(info.value)
  assert "checkpoints/2 is damaged" in msg and "to resume from step 1" in msg, msg
  assert "Traceback" not in msg and len(msg) < 700, msg
  state, _ = ck.restore(toy_state(0, width), step=1)  # the older step still reads
  assert int(state.step) == 1
  ck.close()


def test_a_corrupt_meta_file_is_a_clear_error(tmp_path):
  ck = save_steps(tmp_path, (1,))
  ck.close()
  (tmp_path / "checkpoints" / "1" / "meta" / "metadata").write_text('{"data": {"pos')
  ck = Checkpointer(str(tmp_path))
  with pytest.raises(CheckpointError, match=r"meta file .* unreadable.*start fresh"):
    ck.restore(toy_state(0))
  ck.close()


def test_a_missing_workdir_is_a_clear_error_when_reading(tmp_path):
  with pytest.raises(CheckpointError, match=r"does not exist; train first"):
    Checkpointer(str(tmp_path / "nowhere"), read_only=True)
  os.makedirs(tmp_path / "empty")
  with pytest.raises(CheckpointError, match=r"holds no checkpoints"):
    Checkpointer(str(tmp_path / "empty"), read_only=True)
  assert not os.path.exists(tmp_path / "nowhere")  # nothing was created


def test_move_aside_starts_fresh_and_keeps_the_old_run(tmp_path):
  save_steps(tmp_path, (1,)).close()
  (tmp_path / "config.json").write_text("{}")
  dst = move_aside(str(tmp_path))
  assert os.path.isdir(os.path.join(dst, "1")) and os.path.exists(os.path.join(dst, "config.json"))
  ck = Checkpointer(str(tmp_path))
  assert ck.latest_step() is None and ck.restore(toy_state(0)) is None
  ck.close()
