"""skipdit_jax.parallel on one device: mesh sizing, rules, golden shardings, multi-host
start-up decisions. The 8-device behaviour is in tests/test_parallel_devices.py."""
import importlib.util
import json
import os

import jax
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from skipdit_jax import models, parallel
from skipdit_jax.parallel import distributed, rules as rules_lib

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
WRITER = os.path.join(os.path.dirname(GOLDEN), "..", "scripts", "write_golden_shardings.py")


def _load_writer():
  """scripts/write_golden_shardings.py: the one place that computes and names them."""
  spec = importlib.util.spec_from_file_location("write_golden_shardings", WRITER)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


golden = _load_writer()


@pytest.mark.parametrize("cfg,n,want", [
    ({"data": -1, "fsdp": 1, "tensor": 1}, 8, (8, 1, 1)),
    ({"data": 1, "fsdp": -1, "tensor": 2}, 8, (1, 4, 2)),
    ({"data": 2, "fsdp": 2, "tensor": 2}, 8, (2, 2, 2)),
    ((2, -1, 1), 8, (2, 4, 1)),
    ({"data": -1}, 1, (1, 1, 1)),
])
def test_mesh_shape_resolves_the_rest(cfg, n, want):
  assert parallel.mesh_shape(cfg, n) == want


@pytest.mark.parametrize("cfg,n,match", [
    ({"data": 2, "fsdp": 2, "tensor": 1}, 8, r"multiply to 4 but there are 8 devices"),
    ({"data": 3, "fsdp": -1, "tensor": 1}, 8, r"mesh.data=3.*do not divide the 8"),
    ({"data": -1, "fsdp": -1, "tensor": 1}, 8, r"config.mesh.data and config.mesh.fsdp"),
    ({"data": 0, "fsdp": 1, "tensor": 1}, 8, r"config.mesh.data=0 must be a positive"),
    ({"data": 1, "fsdp": 1, "tensor": "2"}, 2, r"config.mesh.tensor='2'"),
])
def test_mesh_shape_errors_name_the_fields(cfg, n, match):
  with pytest.raises(ValueError, match=match):
    parallel.mesh_shape(cfg, n)


def test_make_mesh_on_one_device():
  mesh = parallel.make_mesh({"data": -1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
  assert mesh.axis_names == parallel.AXES and mesh.devices.shape == (1, 1, 1)
  assert parallel.batch_ways(mesh) == 1
  assert parallel.process_rows(mesh, 4) == (0, 1)


def test_default_config_fields_build_a_mesh_and_rules():
  spec = importlib.util.spec_from_file_location(
      "default_cfg", os.path.join(os.path.dirname(GOLDEN), "..", "configs", "default.py"))
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config()
  assert parallel.mesh_shape(c.mesh, 8) == (8, 1, 1)
  assert parallel.axis_rules(c.mesh) == parallel.PRESETS["fsdp_tensor"]
  assert distributed.initialize_kwargs(c, environ={}) is None


def test_rules_put_config_pairs_before_the_preset():
  cfg = {"preset": "fsdp", "rules": (("mlp", "tensor"), ("embed", None))}
  r = parallel.axis_rules(cfg)
  assert r[:2] == (("mlp", "tensor"), ("embed", None))
  # flax takes the first matching rule, so embed is replicated despite the preset
  assert rules_lib.mesh_specs(P("embed", "mlp"), r) == P(None, "tensor")


@pytest.mark.parametrize("cfg,match", [
    ({"preset": "zero3"}, r"config.mesh.preset='zero3'"),
    ({"rules": (("mlp", "model"),)}, r"names mesh axis 'model'"),
    ({"rules": ("mlp",)}, r"config.mesh.rules\[0\]"),
])
def test_rule_errors_name_the_field(cfg, match):
  with pytest.raises(ValueError, match=match):
    parallel.axis_rules(cfg)


def test_unknown_logical_name_and_indivisible_dim_are_errors():
  model = models.create("DiT-Tiny/2", input_size=8, in_channels=1, num_classes=10)
  with pytest.raises(ValueError, match="logical axis 'embd'"):
    parallel.param_specs(model, (("embd", "fsdp"),))
  # width 64 over fsdp=128 does not split evenly: the error names a parameter
  with pytest.raises(ValueError, match=r"parameter .*kernel .*cannot be split"):
    parallel.param_specs(model, parallel.PRESETS["fsdp"], {"data": 1, "fsdp": 128,
                                                            "tensor": 1})


def test_state_shardings_follow_params_by_path():
  """AdamW moments and EMA inside a train-state-like tree take their param's sharding."""
  import optax
  from jax.sharding import NamedSharding
  mesh = parallel.make_mesh((1, 1, 1), jax.devices()[:1])
  params = {"a": {"kernel": np.zeros((4, 8), np.float32)}, "b": np.zeros((3,), np.float32)}
  psh = {"a": {"kernel": NamedSharding(mesh, P("fsdp", "tensor"))},
         "b": NamedSharding(mesh, P())}
  state = {"step": np.zeros((), np.int32), "params": params,
           "opt": optax.adamw(1e-3).init(params), "ema": params}
  sh = parallel.state_shardings(jax.eval_shape(lambda: state), psh, mesh)
  assert sh["opt"][0].mu["a"]["kernel"].spec == P("fsdp", "tensor")
  assert sh["ema"]["a"]["kernel"].spec == P("fsdp", "tensor")
  assert sh["step"].spec == P() and sh["opt"][0].count.spec == P()


def _read_golden(name: str, preset: str) -> dict:
  path = golden.golden_path(name, preset)
  if not os.path.exists(path):
    pytest.fail(f"{path} is missing; write it with `python scripts/write_golden_shardings.py`"
                " and commit it")
  with open(path) as f:
    return json.load(f)


@pytest.mark.parametrize("name", golden.MODELS)
def test_golden_param_shardings(name):
  """Accidental changes of parameter names, logical axes or presets show up here. The
  test only reads the files; rewrite them deliberately with
  `python scripts/write_golden_shardings.py` and review the diff."""
  for preset, got in golden.specs(name).items():
    want = _read_golden(name, preset)
    assert (want["model"], want["preset"]) == (name, preset)
    assert want["specs"] == got, (
        f"{golden.golden_path(name, preset)} differs; if the change is intended, run "
        "`python scripts/write_golden_shardings.py` and review the diff")


def test_golden_fsdp_tensor_specs_by_hand():
  """A few entries of the golden files checked against the rules read by hand."""
  specs = _read_golden("SkipDiT-XL/2", "fsdp_tensor")["specs"]
  assert specs["blocks_0/attn/qkv/kernel"] == "('fsdp','tensor')"
  assert specs["blocks_0/attn/proj/kernel"] == "('tensor','fsdp')"
  assert specs["blocks_27/mlp/fc2/kernel"] == "('tensor','fsdp')"
  assert specs["blocks_0/adaLN_modulation/kernel"] == "('fsdp',None)"
  assert specs["skip_fusions_13/linear/kernel"] == "(None,'fsdp')"
  assert specs["y_embedder/embedding_table"] == "(None,'fsdp')"
  assert "skip_fusions_14/linear/kernel" not in specs
  # the stacked "layers" axis is never sharded
  specs = _read_golden("SkipDiT-XL/2+scan", "fsdp_tensor")["specs"]
  assert specs["block_stack/blocks/attn/qkv/kernel"] == "(None,'fsdp','tensor')"


def _cfg(**d):
  return ml_collections.ConfigDict({"distributed": dict(
      dict(enabled=False, auto=True, coordinator_address="", num_processes=0,
           process_id=-1), **d)})


SLURM = {"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2",
         "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}


@pytest.mark.parametrize("cfg,env,want", [
    (_cfg(), {}, None),
    (_cfg(), dict(SLURM, SLURM_NTASKS="1"), None),
    (_cfg(), SLURM, {}),
    (_cfg(auto=False), SLURM, None),
    (_cfg(), {"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}, {}),
    (_cfg(enabled=True), {}, {}),
    (_cfg(coordinator_address="h:1234", num_processes=2, process_id=1), {},
     {"coordinator_address": "h:1234", "num_processes": 2, "process_id": 1}),
])
def test_initialize_kwargs(cfg, env, want):
  assert distributed.initialize_kwargs(cfg, environ=env) == want


def test_coordinator_without_process_fields_is_an_error():
  with pytest.raises(ValueError, match="config.distributed.num_processes"):
    distributed.initialize_kwargs(_cfg(coordinator_address="h:1"), environ={})
  with pytest.raises(ValueError, match="process_id=3 must lie in"):
    distributed.initialize_kwargs(_cfg(coordinator_address="h:1", num_processes=2,
                                       process_id=3), environ={})


def test_detected_cluster():
  assert distributed.detected_cluster({}) is None
  assert distributed.detected_cluster(SLURM) == "slurm"
  assert distributed.detected_cluster({"TPU_WORKER_HOSTNAMES": "a"}) is None
  assert distributed.detected_cluster({"MEGASCALE_COORDINATOR_ADDRESS": "a:1"}) == "tpu"
