"""config_check: each bad field is reported with its name, value and fix, before compute."""
from __future__ import annotations

import json
import os

import pytest

from configs.default import get_config
from skipdit_jax.config_check import ConfigError, check_config
from skipdit_jax.data import check_data_shape
from skipdit_jax.train.build import model_fields


def bad(**fields):
  """The default config with dotted fields replaced."""
  c = get_config()
  for path, value in fields.items():
    *parents, leaf = path.split("__")
    node = c
    for p in parents:
      node = node[p]
    node[leaf] = value
  return c


def problems(config, num_devices=1, **kw):
  with pytest.raises(ConfigError) as info:
    check_config(config, num_devices=num_devices, **kw)
  return info.value.problems


def test_default_config_is_valid():
  check_config(get_config(), num_devices=1)
  check_config(get_config(), num_devices=8)  # mesh.data = -1 takes all devices
  check_config(bad(sample__cache=dict(policy="skip_cache", interval=3, k=1)), num_devices=1)


# (field overrides, num_devices, words the single message must contain)
CASES = [
    (dict(model__depth=7), 1, ["model.depth=7", "even depth", "long_skip=False"]),
    (dict(model__patch_size=3), 1, ["model.patch_size=3", "divides"]),
    (dict(model__num_heads=3), 1, ["model.num_heads=3", "model.hidden_size=64"]),
    (dict(model__num_heads=0), 1, ["config.model.num_heads=0", ">= 1"]),
    (dict(model__name="DiT-Huge/2"), 1, ["model.name", "'DiT-Huge/2'", "known"]),
    (dict(model__mlp_ratio=-1.0), 1, ["config.model.mlp_ratio=-1.0", "positive"]),
    (dict(data__name="cifar10"), 1, ["config.data.name='cifar10'", "digits"]),
    (dict(diffusion__schedule="quadratic"), 1, ["diffusion.schedule='quadratic'", "cosine"]),
    (dict(diffusion__num_train_steps=0), 1, ["diffusion.num_train_steps=0"]),
    (dict(diffusion__snr_shift=0.5), 1, ["diffusion.snr_shift=0.5", ">= 1"]),
    (dict(diffusion__prediction="x0"), 1, ["config.diffusion.prediction='x0'", "'v'"]),
    (dict(train__lr=0.0), 1, ["config.train.lr=0.0", "positive"]),
    (dict(train__lr=float("nan")), 1, ["config.train.lr=nan"]),
    (dict(train__num_steps=-5), 1, ["config.train.num_steps=-5", ">= 1"]),
    (dict(train__ckpt_every=0), 1, ["config.train.ckpt_every=0", ">= 1"]),
    (dict(train__log_every=0), 1, ["config.train.log_every=0"]),
    (dict(train__warmup_steps=-1), 1, ["config.train.warmup_steps=-1", ">= 0"]),
    (dict(train__ema_decay=1.0), 1, ["config.train.ema_decay=1.0", "[0, 1)"]),
    (dict(train__ema_decay=-0.1), 1, ["config.train.ema_decay=-0.1"]),
    (dict(train__b2=1.5), 1, ["config.train.b2=1.5"]),
    (dict(train__grad_clip=-1.0), 1, ["config.train.grad_clip=-1.0", "0 disables"]),
    (dict(train__lr_schedule="linear"), 1, ["config.train.lr_schedule='linear'", "cosine"]),
    (dict(train__nonfinite="ignore"), 1, ["config.train.nonfinite='ignore'", "'skip'"]),
    (dict(train__ckpt_keep_every=1500), 1, ["ckpt_keep_every=1500", "multiple",
                                            "ckpt_every=1000"]),
    (dict(seed=-1), 1, ["config.seed=-1"]),
    (dict(sample__sampler="euler"), 1, ["sample.sampler='euler'", "'ddim'"]),
    (dict(sample__num_steps=5000), 1, ["sample.num_steps=5000", "at most 1000"]),
    (dict(sample__execution="fast"), 1, ["sample.execution='fast'", "'fused'"]),
    (dict(sample__timing_runs=0), 1, ["config.sample.timing_runs=0", ">= 1"]),
    (dict(sample__cfg_scale=-2.0), 1, ["sample.cfg_scale=-2.0", "1.0 disables"]),
    (dict(sample__cfg_scale=4.0, model__class_dropout_prob=0.0), 1,
     ["sample.cfg_scale=4.0", "class_dropout_prob=0"]),
    (dict(sample__cache=dict(policy="skip_cache", interval=3, k=5)), 1,
     ["sample.cache.k=5", "[1, 2]"]),
    (dict(sample__cache=dict(policy="deep_cache", interval=2, k=1)), 1,
     ["'deep_cache'", "long_skip=True"]),
    (dict(sample__cache=dict(policy="skip_cache", interval=2, window=(700, 50))), 1,
     ["sample.cache.window=(700, 50)"]),
    (dict(mesh__data=2, mesh__fsdp=2), 8, ["mesh.data=2, mesh.fsdp=2", "8 devices"]),
    (dict(mesh__data=-1, mesh__fsdp=-1), 8, ["config.mesh.data and config.mesh.fsdp",
                                            "at most one"]),
    (dict(mesh__fsdp=3), 8, ["8 devices", "divide"]),
    (dict(mesh__data=0), 1, ["config.mesh.data=0"]),
    (dict(mesh__data=-1, mesh__fsdp=2, train__batch_size=250), 8,
     ["config.train.batch_size=250", "mesh.data x mesh.fsdp = 8", "248"]),
    (dict(mesh__preset="zero3"), 1, ["config.mesh.preset='zero3'"]),
    (dict(mesh__rules=(("mlp", "model"),)), 1, ["config.mesh.rules[0]", "'model'"]),
    (dict(mesh__data=1, mesh__fsdp=-1, train__batch_size=255), 3,
     ["parameter", "cannot be split", "3 ways"]),
]


@pytest.mark.parametrize("fields,num_devices,words", CASES,
                         ids=[",".join(c[0]) for c in CASES])
def test_each_bad_field_is_named(fields, num_devices, words):
  found = problems(bad(**fields), num_devices)
  assert len(found) == 1, found
  for w in words:
    assert w in found[0], (w, found[0])


def test_all_problems_are_reported_at_once():
  found = problems(bad(model__depth=7, data__name="x", train__lr=-1.0, train__ema_decay=2.0))
  assert len(found) == 4


def test_data_shape_mismatch_names_fields():
  c = get_config()
  check_data_shape(c, (1797, 8, 8, 1), 10)
  with pytest.raises(ConfigError, match=r"data.image_size=28, data.channels=1"):
    check_data_shape(c, (5000, 28, 28, 1), 10)
  with pytest.raises(ConfigError, match=r"set data.num_classes=5"):
    check_data_shape(c, (100, 8, 8, 1), 5)


def _save_config(workdir, config):
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, "config.json"), "w") as f:
    f.write(config.to_json())


def test_workdir_of_another_model_is_refused_unless_allowed(tmp_path):
  workdir = str(tmp_path / "run")
  _save_config(workdir, get_config())
  check_config(get_config(), num_devices=1, workdir=workdir)  # same shape: resume
  same_shape = bad(train__lr=1e-4, model__dtype="bfloat16", model__class_dropout_prob=0.2)
  check_config(same_shape, num_devices=1, workdir=workdir)     # not a shape change
  wider = bad(model__hidden_size=128)
  found = problems(wider, workdir=workdir)
  assert "hidden_size: saved 64 -> new 128" in found[0]
  assert "allow_new_model=True" in found[0]
  dit = bad(model__long_skip=False)
  assert "long_skip: saved True -> new False" in problems(dit, workdir=workdir)[0]
  wider.train.allow_new_model = True
  check_config(wider, num_devices=1, workdir=workdir)
  # Same shapes, but a v-prediction model would be read as eps (or back): refused too.
  v_model = bad(diffusion__prediction="v")
  assert "diffusion.prediction: saved 'eps' -> new 'v'" in problems(v_model, workdir=workdir)[0]


def test_a_field_the_saved_config_predates_takes_its_default(tmp_path):
  """A workdir saved before a model field existed resumes when the new config sets that
  field to its default, and is refused when it sets another value."""
  from configs import captions_digits_dit as cap
  workdir = str(tmp_path / "run")
  old = cap.get_config()
  del old.model["pooled_projection"]  # as a config written before the field
  _save_config(workdir, old)
  check_config(cap.get_config(), num_devices=1, workdir=workdir)  # "linear" = the default
  mlp = cap.get_config()
  mlp.model.pooled_projection = "mlp"
  with pytest.raises(ConfigError, match="pooled_projection: saved 'linear' -> new 'mlp'"):
    check_config(mlp, num_devices=1, workdir=workdir)


def test_unreadable_saved_config_is_a_clear_error(tmp_path):
  os.makedirs(tmp_path / "run")
  (tmp_path / "run" / "config.json").write_text('{"model": {"name": ')
  found = problems(get_config(), workdir=str(tmp_path / "run"))
  assert "cannot read its saved config" in found[0] and "new --workdir" in found[0]


def test_model_fields_follow_the_name_then_overrides():
  c = bad(model__name="DiT-S/4")
  del c.model["depth"], c.model["hidden_size"], c.model["num_heads"], c.model["patch_size"]
  del c.model["long_skip"]
  f = model_fields(c)
  # DiT-S is (12, 384, 6) in the DiT paper's size table.
  assert (f["depth"], f["hidden_size"], f["num_heads"], f["patch_size"], f["long_skip"]) \
      == (12, 384, 6, 4, False)
  assert json.loads(c.to_json())["model"]["name"] == "DiT-S/4"


def test_ema_warmup_that_is_not_a_bool_is_named():
  # ml_collections refuses the string on a typed field; a config built without type safety
  # (e.g. from a JSON file) reaches check_config and is refused there.
  c = get_config()
  c = type(c)(c.to_dict(), type_safe=False)
  c.train.ema_warmup = "yes"
  found = problems(c)
  assert any("config.train.ema_warmup='yes'" in p and "True or False" in p for p in found)
