"""The two-stage upcycling recipe through the real loop: `train.init_from` +
`train.trainable`, from a tiny vanilla DiT written in the official format.

Stage 1 (skip_only) must leave every imported DiT weight bit-identical to the file's
arrays (read back by this test's own name mapping, `test_models.to_official`), weight
decay included, and move only the fusions; a resume must not re-import; stage 2 (all),
seeded from stage 1's workdir, moves everything.
"""
from __future__ import annotations

import os

import jax
import numpy as np
import pytest

from configs import imagenet256_skipdit_xl2
from configs.default import get_config
from skipdit_jax import models
from skipdit_jax.config_check import ConfigError, check_config
from skipdit_jax.models import state_dict_io
from skipdit_jax.train import train
from test_models import to_official as independent_to_official

FIELDS = dict(depth=2, hidden_size=32, num_heads=2)


def tiny_config(**train_fields):
  c = get_config()
  c.model.name = "SkipDiT-Tiny/2"
  c.model.long_skip = True
  for k, v in FIELDS.items():
    c.model[k] = v
  c.train.update(dict(batch_size=16, num_steps=3, warmup_steps=0, lr=1e-2,
                      weight_decay=0.1, log_every=1, ckpt_every=100, sample_every=100,
                      ckpt_async=False))
  c.train.update(train_fields)
  return c


@pytest.fixture(scope="module")
def dit_file(tmp_path_factory):
  """A tiny vanilla DiT (the digits shapes) with random values everywhere (no zero-init
  adaLN, so every weight gets a gradient), saved under the official names."""
  dit = models.create("DiT-Tiny/2", input_size=8, in_channels=1, num_classes=10,
                      learn_sigma=False, long_skip=False, **FIELDS)
  params = models.init_params(dit, jax.random.PRNGKey(7))
  leaves, treedef = jax.tree_util.tree_flatten(params)
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_unflatten(
      treedef, [rng.normal(0, 0.1, x.shape).astype(np.float32) for x in leaves])
  path = str(tmp_path_factory.mktemp("dit") / "dit_tiny.safetensors")
  models.save_official(path, params, dit)
  return path, state_dict_io.load_state_dict(path)


def _sd(params, model):
  return independent_to_official(jax.device_get(params), model)


def _is_fusion(name: str) -> bool:
  return name.startswith(("skip_norms.", "skip_linears."))


@pytest.fixture(scope="module")
def runs(dit_file, tmp_path_factory):
  path, _ = dit_file
  root = tmp_path_factory.mktemp("runs")
  out = {}
  # num_steps=0: the loop seeds the state and returns it untrained (the import as is).
  _, out["seeded"] = train(tiny_config(init_from=path, trainable="skip_only", num_steps=0),
                           str(root / "seed"))
  out["s1"], out["stage1"] = train(tiny_config(init_from=path, trainable="skip_only"),
                                   str(root / "stage1"))
  out["s2"], out["stage2"] = train(
      tiny_config(init_from=str(root / "stage1"), trainable="all"), str(root / "stage2"))
  out["root"] = root
  return out


def test_import_starts_from_the_file_and_fresh_fusions(dit_file, runs):
  _, sd = dit_file
  model = models.create("SkipDiT-Tiny/2", input_size=8, in_channels=1, num_classes=10,
                        learn_sigma=False, **FIELDS)
  got = _sd(runs["seeded"].params, model)
  for name, value in got.items():
    if _is_fusion(name):
      continue
    np.testing.assert_array_equal(value, sd[name].astype(np.float64), err_msg=name)
  assert {k for k in got if not _is_fusion(k)} == set(sd) - {"pos_embed"}
  # Fusions as the official code initialises them: LayerNorm weight 1, bias 0, and a
  # non-degenerate Linear.
  np.testing.assert_array_equal(got["skip_norms.0.weight"], np.ones(2 * FIELDS["hidden_size"]))
  np.testing.assert_array_equal(got["skip_norms.0.bias"], np.zeros(2 * FIELDS["hidden_size"]))
  assert np.abs(got["skip_linears.0.linear.weight"]).max() > 0
  assert int(runs["seeded"].step) == 0


def test_stage1_moves_only_the_fusions(dit_file, runs):
  _, sd = dit_file
  model = models.create("SkipDiT-Tiny/2", input_size=8, in_channels=1, num_classes=10,
                        learn_sigma=False, **FIELDS)
  assert runs["s1"]["steps"] == 3 and np.isfinite(runs["s1"]["final_loss"])
  start = _sd(runs["seeded"].params, model)
  after = _sd(runs["stage1"].params, model)
  ema = _sd(runs["stage1"].ema_params, model)
  for name, value in after.items():
    if _is_fusion(name):
      assert not np.array_equal(value, start[name]), f"{name} did not train"
      assert not np.array_equal(ema[name], start[name]), f"EMA of {name} did not move"
    else:  # frozen: bit-identical to the file, despite weight_decay=0.1; EMA too
      np.testing.assert_array_equal(value, sd[name].astype(np.float64), err_msg=name)
      np.testing.assert_array_equal(ema[name], sd[name].astype(np.float64), err_msg=name)


def test_stage2_from_stage1_workdir_moves_everything(runs):
  model = models.create("SkipDiT-Tiny/2", input_size=8, in_channels=1, num_classes=10,
                        learn_sigma=False, **FIELDS)
  assert runs["s2"]["steps"] == 3 and runs["s2"]["start_step"] == 0
  before = _sd(runs["stage1"].params, model)
  after = _sd(runs["stage2"].params, model)
  assert before.keys() == after.keys()
  for name in before:
    assert not np.array_equal(after[name], before[name]), f"{name} frozen in stage 2"
    # Three AdamW steps of lr 1e-2 move a weight by at most ~3e-2 (+ decay): stage 2
    # started from stage 1's weights, not from the file or a random init.
    assert np.abs(after[name] - before[name]).max() < 0.05, name


def test_resume_never_reimports(dit_file, runs, tmp_path):
  """Stage 1's workdir resumed with the source file gone and another trainable field
  value checked: the checkpoint wins, the missing file is neither read nor refused."""
  path, _ = dit_file
  gone = str(tmp_path / "moved_away.safetensors")
  workdir = str(runs["root"] / "stage1")
  cfg = tiny_config(init_from=gone, trainable="skip_only", num_steps=4)
  check_config(cfg, workdir=workdir)   # resuming: the source is not required
  summary, state = train(cfg, workdir)
  assert summary["start_step"] == 3 and summary["steps"] == 4
  assert os.path.exists(path)
  with pytest.raises(ConfigError, match="train.init_from"):  # a fresh workdir needs it
    check_config(cfg, workdir=str(tmp_path / "fresh"))


@pytest.mark.parametrize("fields, pattern", [
    (dict(init_from="/nonexistent/dit.safetensors"), r"train\.init_from=.*does not exist"),
    (dict(init_from="{tmp}/notes.md"), r"train\.init_from=.*unknown extension '\.md'"),
    (dict(init_from="{tmp}"), r"train\.init_from=.*not a training workdir"),
    (dict(trainable="skip"), r"train\.trainable='skip' is not one of.*'skip_only'"),
    (dict(trainable="skip_only", long_skip=False),
     r"train\.trainable='skip_only'.*model\.long_skip=True"),
])
def test_bad_fields_are_refused_by_name(fields, pattern, tmp_path):
  (tmp_path / "notes.md").write_text("not a checkpoint")
  fields = {k: v.format(tmp=tmp_path) if isinstance(v, str) else v
            for k, v in fields.items()}
  c = tiny_config()
  if "long_skip" in fields:
    c.model.name, c.model.long_skip = "DiT-Tiny/2", fields.pop("long_skip")
  c.train.update(fields)
  with pytest.raises(ConfigError, match=pattern):
    check_config(c, num_devices=1)


def test_imagenet_stage_configs():
  base = imagenet256_skipdit_xl2.get_config()
  s1 = imagenet256_skipdit_xl2.get_config("stage1")
  s2 = imagenet256_skipdit_xl2.get_config("stage2")
  assert base.train.init_from == "" and base.train.trainable == "all"
  assert s1.train.trainable == "skip_only" and s1.train.init_from.endswith(".pt")
  assert s2.train.trainable == "all"
  assert s2.train.init_from == imagenet256_skipdit_xl2.STAGE1_WORKDIR
  assert s1.model.long_skip and s1.model.depth == 28
  with pytest.raises(ValueError, match="stage1"):
    imagenet256_skipdit_xl2.get_config("stage3")
