"""Behaviour tests of the DiT / Skip-DiT module against independent computations."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference_dit as ref
from skipdit_jax import models

# Official trainable parameter counts, REFERENCE §2 (32x32x4, 1000 classes, learned sigma).
OFFICIAL_COUNTS = {
    "S/2": (32_865_056, 34_646_048), "S/4": (32_920_448, 34_701_440),
    "B/2": (130_315_808, 137_416_736), "L/2": (457_840_672, 483_067_936),
    "XL/2": (674_834_720, 712_074_272), "XL/4": (675_000_704, 712_240_256),
    "XL/8": (675_664_640, 712_904_192),
}
# A tiny model that still has several heads, a real skip stack and non-square patches.
TINY = dict(input_size=8, in_channels=4, num_classes=10)


N = 8  # one batch size everywhere: each new shape costs compiles on this small machine


def tiny(long_skip=True, **kw):
  fields = dict(TINY, **kw)
  return models.create("SkipDiT-Tiny/2" if long_skip else "DiT-Tiny/2", **fields)


@functools.lru_cache(maxsize=None)
def param_shapes(model):
  return jax.eval_shape(lambda r: models.init_params(model, r), jax.random.key(0))


@functools.lru_cache(maxsize=None)
def fresh_params(model):
  # The rbg generator compiles several times faster on CPU than threefry; init is the same.
  key = jax.random.key(0, impl="unsafe_rbg")
  return jax.jit(lambda r: models.init_params(model, r))(key)


def random_params(model, seed=0):
  """Every parameter random (not the zero adaLN init), scaled so activations stay O(1)."""
  shapes = param_shapes(model)
  leaves, treedef = jax.tree_util.tree_flatten(shapes)
  rng = np.random.default_rng(seed)
  out = []
  for s in leaves:
    if len(s.shape) == 2:
      a = rng.normal(0.0, 1.0 / np.sqrt(s.shape[0]), s.shape)
    else:
      a = rng.normal(0.0, 0.2, s.shape)
    out.append(jnp.asarray(a, jnp.float32))
  params = jax.tree_util.tree_unflatten(treedef, out)
  # LayerNorm scales around 1, like a trained model's.
  for name in params:
    if name.startswith("skip_fusions_"):
      params[name]["norm"]["scale"] = params[name]["norm"]["scale"] + 1.0
  return params


def to_official(params, model):
  """Our params -> official state_dict layout (written here, independent of models/)."""
  f64 = lambda a: np.asarray(a, np.float64)
  sd = {}

  def lin(name, p):
    sd[name + ".weight"] = f64(p["kernel"]).T
    sd[name + ".bias"] = f64(p["bias"])
  p_, c_ = model.patch_size, model.in_channels
  k = f64(params["x_embedder"]["kernel"])  # (p*p*C, D), rows ordered (row, col, channel)
  sd["x_embedder.proj.weight"] = k.reshape(p_, p_, c_, -1).transpose(3, 2, 0, 1)
  sd["x_embedder.proj.bias"] = f64(params["x_embedder"]["bias"])
  lin("t_embedder.mlp.0", params["t_embedder"]["mlp_0"])
  lin("t_embedder.mlp.2", params["t_embedder"]["mlp_2"])
  sd["y_embedder.embedding_table.weight"] = f64(params["y_embedder"]["embedding_table"])
  for i in range(model.depth):
    b = params[f"blocks_{i}"]
    lin(f"blocks.{i}.attn.qkv", b["attn"]["qkv"])
    lin(f"blocks.{i}.attn.proj", b["attn"]["proj"])
    lin(f"blocks.{i}.mlp.fc1", b["mlp"]["fc1"])
    lin(f"blocks.{i}.mlp.fc2", b["mlp"]["fc2"])
    lin(f"blocks.{i}.adaLN_modulation.1", b["adaLN_modulation"])
  for j in range(model.depth // 2 if model.long_skip else 0):
    s = params[f"skip_fusions_{j}"]
    sd[f"skip_norms.{j}.weight"] = f64(s["norm"]["scale"])
    sd[f"skip_norms.{j}.bias"] = f64(s["norm"]["bias"])
    lin(f"skip_linears.{j}.linear", s["linear"])
  lin("final_layer.linear", params["final_layer"]["linear"])
  lin("final_layer.adaLN_modulation.1", params["final_layer"]["adaLN_modulation"])
  return sd


def inputs(model, n=N, seed=1):
  rng = np.random.default_rng(seed)
  x = rng.normal(size=(n, model.input_size, model.input_size, model.in_channels))
  t = rng.integers(0, 1000, size=(n,))
  y = rng.integers(0, model.num_classes, size=(n,))
  return jnp.asarray(x, jnp.float32), jnp.asarray(t, jnp.int32), jnp.asarray(y, jnp.int32)


def assert_matches(got, want, tol=1e-5):
  """Max error within `tol` of the output's scale.

  A float32 model cannot match float64 to an absolute 1e-5 on O(1) outputs: the timestep
  sinusoids alone take arguments up to 999 rad, whose float32 rounding is ~6e-5 (the
  official PyTorch code has the same rounding). Small timesteps match to ~5e-7.
  """
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape
  err = np.abs(got - want).max()
  assert err <= tol * max(1.0, np.abs(want).max()), (err, np.abs(want).max())


@functools.lru_cache(maxsize=None)
def _jitted(model, method, static, static_kw):
  def f(params, args, kw, rngs):
    return model.apply({"params": params}, *args, *static, method=method, rngs=rngs,
                       **kw, **dict(static_kw))
  return jax.jit(f)


def apply(model, params, *args, method=None, rngs=None, **kw):
  """model.apply, jitted and cached; trailing python ints (start, stop) and python
  bool/str keywords are static, arrays dynamic."""
  static = ()
  while args and isinstance(args[-1], int):
    static, args = (args[-1],) + static, args[:-1]
  static_kw = tuple(sorted((k, v) for k, v in kw.items() if isinstance(v, (bool, str))))
  dyn_kw = {k: v for k, v in kw.items() if not isinstance(v, (bool, str))}
  return _jitted(model, method, static, static_kw)(params, args, dyn_kw, rngs)


# --- sizes --------------------------------------------------------------------

@pytest.mark.parametrize("size", sorted(OFFICIAL_COUNTS))
def test_param_counts_equal_official(size):
  dit, skip = OFFICIAL_COUNTS[size]
  assert models.param_count(models.create(f"DiT-{size}")) == dit
  assert models.param_count(models.create(f"SkipDiT-{size}")) == skip


# --- the forward against float64 numpy ----------------------------------------

@pytest.mark.parametrize("long_skip", [False, True])
@pytest.mark.parametrize("kw", [dict(), dict(patch_size=4, learn_sigma=False, in_channels=3,
                                             depth=4, input_size=16)])
def test_forward_matches_float64_numpy(long_skip, kw):
  model = tiny(long_skip, **kw)
  params = random_params(model)
  x, t, y = inputs(model)
  got = np.asarray(apply(model, params, x, t, y))
  want = ref.forward(to_official(params, model), np.asarray(x), np.asarray(t), np.asarray(y),
                     patch=model.patch_size, heads=model.num_heads, long_skip=long_skip)
  assert got.shape == (N, model.input_size, model.input_size, model.out_channels)
  assert np.abs(want).max() > 0.1  # a real signal, not a trivially small one
  assert_matches(got, want)


def test_float_timesteps_match_numpy():
  model = tiny(True)
  params = random_params(model, seed=3)
  x, _, y = inputs(model)
  sd = to_official(params, model)
  t = jnp.asarray([0.0, 123.5, 999.0, 500.0, 1.0, 998.5, 250.25, 750.0], jnp.float32)
  got = np.asarray(apply(model, params, x, t, y))
  want = ref.forward(sd, np.asarray(x), np.asarray(t), np.asarray(y), patch=2,
                     heads=model.num_heads, long_skip=True)
  assert_matches(got, want)
  # Small timesteps have no large float32 sinusoid arguments: an absolute 1e-5 holds.
  t = jnp.asarray([0.0, 3.25, 20.0, 1.0, 7.0, 12.5, 30.0, 2.0], jnp.float32)
  got = np.asarray(apply(model, params, x, t, y))
  want = ref.forward(sd, np.asarray(x), np.asarray(t), np.asarray(y), patch=2,
                     heads=model.num_heads, long_skip=True)
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("long_skip", [False, True])
def test_fresh_model_outputs_exact_zeros(long_skip):
  model = tiny(long_skip)
  params = fresh_params(model)
  x, t, y = inputs(model)
  out = np.asarray(apply(model, params, x, t, y))
  assert out.shape == (N, 8, 8, 8)
  assert np.all(out == 0.0)
  # ... and every block starts as the identity on its input.
  h, c = apply(model, params, x, t, y, method="embed")
  h2, _ = apply(model, params, h, c, (), 0, model.depth // 2, method="run_blocks")
  np.testing.assert_array_equal(np.asarray(h2), np.asarray(h))


# --- the long-skip pairing ----------------------------------------------------

def test_deep_blocks_fuse_the_mirrored_skip():
  """Deep block L-1-i must fuse shallow block i's output, checked two ways."""
  model = tiny(True)
  params = random_params(model, seed=5)
  sd = to_official(params, model)
  x, t, y = inputs(model)
  L, half = model.depth, model.depth // 2
  h, c = apply(model, params, x, t, y, method="embed")
  h_mid, skips = apply(model, params, h, c, (), 0, half, method="run_blocks")
  assert len(skips) == half
  # The shallow pass pushes exactly the block outputs, in order (checked with numpy).
  hr, cr = ref.embed(sd, np.asarray(x), np.asarray(t), np.asarray(y), 2)
  for i in range(half):
    hr = ref.block(sd, i, hr, cr, model.num_heads)
    assert_matches(skips[i], hr)

  def deep_trace(stack):
    """Hidden state after each deep block, run one block at a time."""
    hs, hh = [], h_mid
    for j in range(half, L):
      hh, stack = apply(model, params, hh, c, stack, j, j + 1, method="run_blocks")
      hs.append(np.asarray(hh))
    assert stack == ()
    return hs

  base = deep_trace(skips)
  rng = np.random.default_rng(0)
  for i in range(half):
    delta = jnp.asarray(rng.normal(size=skips[i].shape), jnp.float32)
    pert = skips[:i] + (skips[i] + delta,) + skips[i + 1:]
    got = deep_trace(pert)
    partner = L - 1 - i
    for j in range(half, L):
      if j < partner:  # blocks before the partner never see skips[i]
        np.testing.assert_array_equal(got[j - half], base[j - half])
      else:
        assert np.abs(got[j - half] - base[j - half]).max() > 1e-3, (i, j)
    # The partner's output equals numpy's fusion of *this* perturbed skip.
    h_in = base[partner - 1 - half] if partner > half else np.asarray(h_mid)
    want = ref.block(sd, partner, ref.fuse(sd, partner - half, np.asarray(h_in, np.float64),
                                           np.asarray(pert[i], np.float64)), cr,
                     model.num_heads)
    assert_matches(got[partner - half], want)


def test_deep_block_without_skip_raises():
  model = tiny(True)
  params = random_params(model)
  x, t, y = inputs(model)
  h, c = apply(model, params, x, t, y, method="embed")
  with pytest.raises(ValueError, match="need 3 skips but the stack holds 0"):
    apply(model, params, h, c, (), model.depth // 2, model.depth, method="run_blocks")


@pytest.mark.parametrize("long_skip", [False, True])
def test_any_split_of_run_blocks_equals_full_pass(long_skip):
  model = tiny(long_skip)
  params = random_params(model, seed=7)
  x, t, y = inputs(model)
  splits = [(1,), (3,), (2, 4), (1, 2, 3, 4, 5), (5,), (0, 6)]

  def staged(p, x, t, y):
    full = model.apply({"params": p}, x, t, y)
    h0, c = model.apply({"params": p}, x, t, y, method="embed")
    outs = []
    for cuts in splits:
      h, skips, start = h0, (), 0
      for stop in cuts + (model.depth,):
        h, skips = model.apply({"params": p}, h, c, skips, start, stop, method="run_blocks")
        start = stop
      assert skips == ()
      outs.append(model.apply({"params": p}, h, c, method="head"))
    return full, outs

  full, outs = jax.jit(staged)(params, x, t, y)  # one compile for all splits
  for out in outs:
    np.testing.assert_allclose(np.asarray(out), np.asarray(full), atol=1e-6, rtol=1e-6)


# --- labels -------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _label_embed_fn(model, train):
  return jax.jit(lambda p, y, key, force: model.apply(
      {"params": p}, y, method=lambda m, y: m.y_embedder(y, train, force),
      rngs={"dropout": key} if key is not None else None))


def _label_embed(model, params, y, train, key=None, force=None):
  return np.asarray(_label_embed_fn(model, train)(params, y, key, force))


def test_label_dropout_rate_and_null_class():
  model = tiny(True)
  params = random_params(model)
  table = np.asarray(params["y_embedder"]["embedding_table"])
  assert table.shape == (model.num_classes + 1, model.hidden_size)
  n = 8000
  y = jnp.asarray(np.arange(n) % model.num_classes, jnp.int32)
  emb = _label_embed(model, params, y, True, jax.random.key(42))
  is_null = np.all(emb == table[model.num_classes], axis=1)
  is_own = np.all(emb == table[np.asarray(y)], axis=1)
  assert np.all(is_null ^ is_own)  # each row is exactly one of the two
  frac = is_null.mean()
  # Binomial(8000, 0.1): sd 0.0034, so +-0.015 is > 4 sd.
  assert abs(frac - 0.1) < 0.015, frac
  # Dropped labels spread over classes, not one class.
  assert len(set(np.asarray(y)[is_null] % model.num_classes)) == model.num_classes
  # Another key drops other labels; no dropout without train.
  emb2 = _label_embed(model, params, y, True, jax.random.key(43))
  assert np.any(np.all(emb2 == table[model.num_classes], axis=1) != is_null)
  emb_eval = _label_embed(model, params, y, False)
  np.testing.assert_array_equal(emb_eval, table[np.asarray(y)])


def test_train_forward_drops_labels_with_the_dropout_rng():
  model = tiny(True)
  params = random_params(model)
  table = np.asarray(params["y_embedder"]["embedding_table"])
  x, t, y = inputs(model)
  with pytest.raises(Exception, match="dropout"):
    model.apply({"params": params}, x, t, y, train=True)
  # A key under which some, but not all, of the batch is dropped.
  for seed in range(100):
    key = jax.random.key(seed)
    emb = _label_embed(model, params, y, True, key)
    drop = np.all(emb == table[model.num_classes], axis=1)
    if 0 < drop.sum() < N:
      break
  out_t = apply(model, params, x, t, y, train=True, rngs={"dropout": key})
  # The train forward equals the eval forward with exactly those labels made null.
  out_e = apply(model, params, x, t, jnp.where(drop, model.num_classes, y))
  np.testing.assert_allclose(np.asarray(out_t), np.asarray(out_e), atol=1e-6)
  assert np.abs(np.asarray(out_t) - np.asarray(apply(model, params, x, t, y))).max() > 1e-3


def test_force_drop_ids_gives_null_class():
  model = tiny(True)
  params = random_params(model, seed=2)
  table = np.asarray(params["y_embedder"]["embedding_table"])
  x, t, y = inputs(model)
  force = jnp.asarray(np.arange(N) % 2 == 0)
  emb = _label_embed(model, params, y, False, force=force)
  want = np.where(np.asarray(force)[:, None], table[model.num_classes], table[np.asarray(y)])
  np.testing.assert_array_equal(emb, want)
  a = apply(model, params, x, t, y, force_drop_ids=force)
  b = apply(model, params, x, t, jnp.where(force, model.num_classes, y))
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


# --- validation ---------------------------------------------------------------

@pytest.mark.parametrize("make, field", [
    (lambda: tiny(True, depth=5), "model.depth"),
    (lambda: models.create("DiT-Tiny/4", input_size=10), "model.patch_size"),
    (lambda: tiny(False, num_heads=5), "model.num_heads"),
    (lambda: models.create("DiT-Huge/2"), "model.name"),
    (lambda: models.create("SkipDiT-XL/3"), "model.name"),
    (lambda: models.create("DiTXL2"), "model.name"),
    (lambda: tiny(True, dtype="int8"), "model.dtype"),
])
def test_bad_shapes_raise_naming_the_field(make, field):
  with pytest.raises(ValueError, match=field.replace(".", r"\.")):
    make()


def test_direct_module_with_odd_depth_raises_before_compute():
  model = models.DiT(input_size=8, patch_size=2, hidden_size=64, depth=3, num_heads=4,
                     long_skip=True)
  with pytest.raises(ValueError, match=r"model\.depth"):
    models.init_params(model, jax.random.key(0))


# --- bf16 compute -------------------------------------------------------------

def test_bf16_compute_keeps_float32_params_and_skip_norm():
  model = tiny(True, dtype="bfloat16")
  shapes = jax.tree_util.tree_leaves(param_shapes(model))
  assert {a.dtype for a in shapes} == {jnp.dtype("float32")}
  params = random_params(model)
  x, t, y = inputs(model)
  out, state = jax.jit(lambda p: model.apply({"params": p}, x, t, y,
                                             capture_intermediates=True))(params)
  inter = state["intermediates"]
  for j in range(model.depth // 2):
    fusion = inter[f"skip_fusions_{j}"]
    assert fusion["norm"]["__call__"][0].dtype == jnp.float32
    assert fusion["linear"]["__call__"][0].dtype == jnp.bfloat16
  assert inter["blocks_0"]["__call__"][0].dtype == jnp.bfloat16
  assert out.dtype == jnp.float32
  full = apply(tiny(True), params, x, t, y)
  err = np.abs(np.asarray(out) - np.asarray(full)).max() / np.abs(np.asarray(full)).max()
  assert err < 0.1, err  # bf16 is close to float32, not equal
