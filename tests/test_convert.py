"""Official state_dict import/export, weight files, upcycling and the two-stage mask."""
from __future__ import annotations

import functools
import json
import struct

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest

import reference_dit as ref
from skipdit_jax import models
from skipdit_jax.models import state_dict_io
from test_models import assert_matches, inputs
from test_models import to_official as independent_to_official

D, DEPTH, P, C, CLASSES, SIZE = 64, 6, 2, 4, 10, 8  # the registry's Tiny (6, 64, 4 heads)


def official_dict(long_skip=True, *, learn_sigma=True, seed=0, depth=DEPTH, d=D):
  """Random weights under REFERENCE §2's names and shapes (written from the text)."""
  rng = np.random.default_rng(seed)
  shapes = {
      "pos_embed": None,
      "x_embedder.proj.weight": (d, C, P, P), "x_embedder.proj.bias": (d,),
      "t_embedder.mlp.0.weight": (d, 256), "t_embedder.mlp.0.bias": (d,),
      "t_embedder.mlp.2.weight": (d, d), "t_embedder.mlp.2.bias": (d,),
      "y_embedder.embedding_table.weight": (CLASSES + 1, d),
      "final_layer.linear.weight": (P * P * C * (2 if learn_sigma else 1), d),
      "final_layer.linear.bias": (P * P * C * (2 if learn_sigma else 1),),
      "final_layer.adaLN_modulation.1.weight": (2 * d, d),
      "final_layer.adaLN_modulation.1.bias": (2 * d,),
  }
  for i in range(depth):
    for name, shape in [("attn.qkv", (3 * d, d)), ("attn.proj", (d, d)),
                        ("mlp.fc1", (4 * d, d)), ("mlp.fc2", (d, 4 * d)),
                        ("adaLN_modulation.1", (6 * d, d))]:
      shapes[f"blocks.{i}.{name}.weight"] = shape
      shapes[f"blocks.{i}.{name}.bias"] = shape[:1]
  for j in range(depth // 2 if long_skip else 0):
    shapes[f"skip_norms.{j}.weight"] = (2 * d,)
    shapes[f"skip_norms.{j}.bias"] = (2 * d,)
    shapes[f"skip_linears.{j}.linear.weight"] = (d, 2 * d)
    shapes[f"skip_linears.{j}.linear.bias"] = (d,)
  sd = {}
  for k, s in shapes.items():
    if k == "pos_embed":
      sd[k] = ref.pos_embed_2d(d, SIZE // P)[None].astype(np.float32)
    elif len(s) >= 2:
      sd[k] = rng.normal(0, 1 / np.sqrt(np.prod(s[1:])), s).astype(np.float32)
    else:
      sd[k] = rng.normal(0, 0.2, s).astype(np.float32)
  for j in range(depth // 2 if long_skip else 0):
    sd[f"skip_norms.{j}.weight"] += 1.0
  return sd


@functools.lru_cache(maxsize=None)
def _forward(module):
  return jax.jit(lambda p, x, t, y: module.apply({"params": p}, x, t, y))


def assert_same_dict(a, b):
  assert sorted(a) == sorted(b)
  for k in a:
    assert a[k].dtype == np.float32 and a[k].shape == b[k].shape, k
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# --- import / export ------------------------------------------------------------

@pytest.mark.parametrize("long_skip", [False, True])
def test_round_trip_detects_fields_and_matches_numpy(long_skip):
  sd = official_dict(long_skip)
  module, params = models.load_official(sd)
  assert (module.depth, module.hidden_size, module.num_heads, module.patch_size) == (
      DEPTH, D, 4, P)
  assert (module.in_channels, module.input_size, module.num_classes) == (C, SIZE, CLASSES)
  assert module.long_skip == long_skip and module.learn_sigma
  assert_same_dict(models.to_official(params, module), sd)
  # The converted weights drive our model to the numpy reference's output.
  x, t, y = inputs(module)
  got = _forward(module)(params, x, t, y)
  want = ref.forward(sd, np.asarray(x), np.asarray(t), np.asarray(y), patch=P, heads=4,
                     long_skip=long_skip)
  assert_matches(got, want)


def test_export_agrees_with_an_independent_mapping():
  module = models.create("SkipDiT-Tiny/2", input_size=SIZE, num_classes=CLASSES)
  _, params = models.load_official(official_dict(True, seed=3))
  mine = models.to_official(params, module, with_pos_embed=False)
  theirs = independent_to_official(params, module)
  assert sorted(mine) == sorted(theirs)
  for k in mine:
    np.testing.assert_array_equal(mine[k], theirs[k].astype(np.float32), err_msg=k)


def test_fixed_sigma_heads_override_and_wrappers():
  sd = official_dict(False, learn_sigma=False, depth=4)
  with pytest.raises(ValueError, match="num_heads="):
    models.load_official(sd)  # (depth 4, width 64) is no registry size
  wrapped = {"module." + k: v for k, v in sd.items()}  # as saved from DDP
  module, params = models.load_official(wrapped, num_heads=8, dtype="bfloat16")
  assert module.num_heads == 8 and not module.learn_sigma and module.depth == 4
  assert module.dtype == "bfloat16"
  assert_same_dict(models.to_official(params, module), sd)


def test_null_row_absent_means_no_label_dropout():
  sd = official_dict(False)
  sd["y_embedder.embedding_table.weight"] = sd["y_embedder.embedding_table.weight"][:CLASSES]
  module, _ = models.load_official(sd, num_classes=CLASSES)
  assert module.num_classes == CLASSES and module.class_dropout_prob == 0.0
  with pytest.raises(ValueError, match="num_classes=9"):
    models.load_official(sd, num_classes=3)


@pytest.mark.parametrize("edit, pattern", [
    (lambda sd: sd.pop("blocks.2.attn.proj.bias"), r"missing keys \(1\): blocks\.2\.attn"),
    (lambda sd: sd.pop("skip_linears.1.linear.weight"), r"missing keys.*skip_linears\.1"),
    (lambda sd: sd.update(extra=np.zeros(3, np.float32)), r"unexpected keys \(1\): extra"),
    (lambda sd: sd.update({"blocks.1.mlp.fc1.weight": sd["blocks.1.mlp.fc1.weight"].T}),
     r"misshaped keys \(1\): blocks\.1\.mlp\.fc1\.weight \(64, 256\) != \(256, 64\)"),
    (lambda sd: sd.update(pos_embed=sd["pos_embed"] + 0.01), "pos_embed differs"),
    (lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("blocks.5.")],
     r"none for blocks \[5\]"),
    (lambda sd: [sd.pop(k) for k in list(sd) if k.startswith("blocks.3.")],
     r"none for blocks \[3\]"),
    (lambda sd: sd.update({"final_layer.linear.weight": np.zeros((5, D), np.float32)}),
     "final_layer.linear.weight has 5 outputs"),
    (lambda sd: sd.pop("x_embedder.proj.weight"), "not a DiT state_dict"),
])
def test_truncated_or_mismatched_dicts_fail_clearly(edit, pattern):
  sd = official_dict(True)
  edit(sd)
  with pytest.raises(ValueError, match=pattern):
    models.load_official(sd)


def test_input_size_must_fit_pos_embed():
  with pytest.raises(ValueError, match="pass input_size=8"):
    models.load_official(official_dict(False), input_size=32)


def test_export_rejects_a_foreign_tree():
  module, params = models.load_official(official_dict(False))
  skip = module.clone(long_skip=True)
  with pytest.raises(ValueError, match="missing skip_fusions_0"):
    models.to_official(params, skip)


# --- weight files ---------------------------------------------------------------

def test_safetensors_round_trip_through_a_file(tmp_path):
  sd = official_dict(True, seed=4)
  module, params = models.load_official(sd)
  path = tmp_path / "skip.safetensors"
  models.save_official(path, params, module)
  module2, params2 = models.load_official(path)
  assert module2 == module
  assert_same_dict(models.to_official(params2, module2), sd)
  npz = tmp_path / "skip.npz"
  models.save_official(npz, params, module)
  assert_same_dict(models.to_official(models.load_official(npz)[1], module), sd)


def test_safetensors_reader_follows_the_format(tmp_path):
  """A file assembled by hand from the format's description: u64 header size, JSON
  header with dtype/shape/data_offsets, then the raw little-endian buffer."""
  a = np.arange(6, dtype="<f4").reshape(2, 3)
  b = np.asarray([1.5, -2.25], ml_dtypes.bfloat16)
  c = np.asarray([[7]], "<i8")
  header = {"__metadata__": {"format": "pt"},
            "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
            "c": {"dtype": "I64", "shape": [1, 1], "data_offsets": [24, 32]},
            "b": {"dtype": "BF16", "shape": [2], "data_offsets": [32, 36]}}
  blob = json.dumps(header).encode()
  path = tmp_path / "hand.safetensors"
  path.write_bytes(struct.pack("<Q", len(blob)) + blob + a.tobytes() + c.tobytes()
                   + b.tobytes())
  got = state_dict_io.load_safetensors(path)
  assert sorted(got) == ["a", "b", "c"]
  np.testing.assert_array_equal(got["a"], a)
  np.testing.assert_array_equal(got["c"], c)
  assert got["b"].dtype == ml_dtypes.bfloat16
  np.testing.assert_array_equal(got["b"].astype(np.float32), [1.5, -2.25])
  # Our writer: 8-byte-aligned header, sorted names, readable back.
  out = tmp_path / "ours.safetensors"
  state_dict_io.save_safetensors(out, {"z": a, "b": b})
  raw = out.read_bytes()
  (n,) = struct.unpack("<Q", raw[:8])
  assert n % 8 == 0 and json.loads(raw[8:8 + n])["b"]["dtype"] == "BF16"
  back = state_dict_io.load_safetensors(out)
  np.testing.assert_array_equal(back["z"], a)
  # Truncated file: a clear error.
  (tmp_path / "cut.safetensors").write_bytes(raw[:-4])
  with pytest.raises(ValueError, match="truncated"):
    state_dict_io.load_safetensors(tmp_path / "cut.safetensors")


def test_safetensors_package_reads_our_files(tmp_path):
  st = pytest.importorskip("safetensors.numpy")
  sd = {"w": np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)}
  state_dict_io.save_safetensors(tmp_path / "a.safetensors", sd)
  np.testing.assert_array_equal(st.load_file(str(tmp_path / "a.safetensors"))["w"], sd["w"])


def test_torch_checkpoint_without_torch_says_how_to_install(tmp_path):
  try:
    import torch  # noqa: F401
    pytest.skip("torch is installed")
  except ImportError:
    pass
  path = tmp_path / "DiT-XL-2-skip.pt"
  path.write_bytes(b"not really a pickle")
  with pytest.raises(ImportError, match="pip install torch"):
    models.load_official(path)

def test_unknown_extension_and_missing_file(tmp_path):
  (tmp_path / "w.h5").write_bytes(b"")
  with pytest.raises(ValueError, match="unknown weight file extension"):
    state_dict_io.load_state_dict(tmp_path / "w.h5")
  with pytest.raises(FileNotFoundError, match="no weight file"):
    models.load_official(tmp_path / "absent.safetensors")


# --- upcycling and the two-stage recipe -----------------------------------------

def test_upcycle_keeps_dit_weights_and_inits_fusions_like_the_model():
  dit, dit_params = models.load_official(official_dict(False, seed=5))
  skip = dit.clone(long_skip=True)
  params = models.upcycle(dit_params, skip, jax.random.key(1))
  want = jax.eval_shape(lambda r: models.init_params(skip, r), jax.random.key(0))
  assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(want)
  for k in dit_params:
    jax.tree_util.tree_map(np.testing.assert_array_equal, params[k], dit_params[k])
  bound = 1 / np.sqrt(2 * D)  # PyTorch's Linear default: U(+-1/sqrt(fan_in)), fan_in = 2D
  kernels = np.stack([np.asarray(params[f"skip_fusions_{j}"]["linear"]["kernel"])
                      for j in range(DEPTH // 2)])
  biases = np.stack([np.asarray(params[f"skip_fusions_{j}"]["linear"]["bias"])
                     for j in range(DEPTH // 2)])
  for a in (kernels, biases):
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.9 * bound
  assert abs(kernels.std() - bound / np.sqrt(3)) < 0.05 * bound  # uniform's sd
  assert not np.array_equal(kernels[0], kernels[1])  # each fusion its own draw
  for j in range(DEPTH // 2):
    np.testing.assert_array_equal(params[f"skip_fusions_{j}"]["norm"]["scale"], 1.0)
    np.testing.assert_array_equal(params[f"skip_fusions_{j}"]["norm"]["bias"], 0.0)
  with pytest.raises(ValueError, match="long_skip=True"):
    models.upcycle(dit_params, dit, jax.random.key(1))
  with pytest.raises(ValueError, match="already has skip fusions"):
    models.upcycle(params, skip, jax.random.key(1))


def test_skip_only_trains_exactly_the_fusions():
  dit, dit_params = models.load_official(official_dict(False, seed=6))
  skip = dit.clone(long_skip=True)
  params = models.upcycle(dit_params, skip, jax.random.key(2))
  tx = models.with_trainable(optax.adamw(1e-2, weight_decay=0.1), "skip_only")
  grads = jax.tree_util.tree_map(lambda a: jnp.ones_like(a), params)

  @jax.jit
  def step(params, grads):
    updates, _ = tx.update(grads, tx.init(params), params)
    return optax.apply_updates(params, updates)
  new = step(params, grads)
  mask = models.trainable_mask(params, "skip_only")
  assert sorted(k for k in mask if all(jax.tree_util.tree_leaves(mask[k]))) == [
      f"skip_fusions_{j}" for j in range(DEPTH // 2)]
  for k in params:
    same = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda a, b: bool(np.array_equal(a, b)), params[k], new[k]))
    if k.startswith("skip_fusions_"):
      assert not any(same), k
    else:
      assert all(same), k
  assert models.with_trainable(optax.sgd(1.0), "all") is not None
  with pytest.raises(ValueError, match="config.train.trainable"):
    models.trainable_mask(params, "some")
  with pytest.raises(ValueError, match="no skip fusions"):
    models.trainable_mask(dit_params, "skip_only")


def test_init_from_official_upcycles_and_checks_fields():
  sd = official_dict(False, seed=7)
  skip = models.create("SkipDiT-Tiny/2", input_size=SIZE, num_classes=CLASSES)
  params = models.init_from_official(sd, skip, jax.random.key(0))
  assert "skip_fusions_2" in params
  np.testing.assert_array_equal(params["blocks_3"]["mlp"]["fc1"]["kernel"],
                                sd["blocks.3.mlp.fc1.weight"].T)
  with pytest.raises(ValueError, match="learn_sigma"):
    models.init_from_official(sd, skip.clone(learn_sigma=False), jax.random.key(0))
  with pytest.raises(ValueError, match="Skip-DiT checkpoint"):
    models.init_from_official(official_dict(True), skip.clone(long_skip=False),
                              jax.random.key(0))


def test_scanned_layout_imports_exports_and_upcycles():
  sd = official_dict(True, seed=8)
  flat_module, flat = models.load_official(sd)
  module, params = models.load_official(sd, scan_blocks=True)
  assert "block_stack" in params and "blocks_0" not in params
  assert_same_dict(models.to_official(params, module), sd)
  x, t, y = inputs(module)
  np.testing.assert_allclose(np.asarray(_forward(module)(params, x, t, y)),
                             np.asarray(_forward(flat_module)(flat, x, t, y)), atol=1e-5)
  dit_sd = official_dict(False, seed=9)
  up = models.init_from_official(dit_sd, module, jax.random.key(0))
  assert up["block_stack"]["fusions"]["linear"]["kernel"].shape == (DEPTH // 2, 2 * D, D)
  mask = models.trainable_mask(up, "skip_only")
  assert all(jax.tree_util.tree_leaves(mask["block_stack"]["fusions"]))
  assert not any(jax.tree_util.tree_leaves(mask["block_stack"]["blocks"]))
