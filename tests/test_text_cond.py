"""Text conditioning (models/text_cond.py, models/latte_t2v.py): the official Latte-T2V
parameter count, its official weights against an independent float64 numpy forward
(reference_latte_t2v), the exact export, the pooled path against a second code path,
caption dropout / CFG's null, the sampler and every cache policy on caption dicts, the T2V
cache schedule against a transcription of the official counter, and errors."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference_latte_t2v as ref
from skipdit_jax import diffusion as D
from skipdit_jax import models, sampling
from skipdit_jax.models import text_cond
from skipdit_jax.sampling import CachePlan

TOL = 1e-5


def _rel(got, want) -> float:
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (got.shape, want.shape)
  return float(np.abs(got - want).max() / np.abs(want).max())


# --- sizes ----------------------------------------------------------------------------------
def test_official_t2v_parameter_count():
  # VIDEO.md §2.1 [derived]: 28 x (21,255,552 + 15,942,528) + 37,239,552 + 15,700,640
  m = models.create("SkipLatteT2V-XL/2", input_size=64, in_channels=4, num_frames=16,
                    caption_channels=4096)
  assert isinstance(m, models.LatteT2V) and (m.depth, m.num_units) == (56, 28)
  assert models.param_count(m) == 1_094_486_432
  assert models.size_of("SkipLatteT2V-XL/2") == (56, 1152, 16)
  assert models.size_of("SkipLatte-XL/2") == (28, 1152, 16)


# --- official weights ---------------------------------------------------------------------------
SMALL = dict(hidden=32, channels=4, patch=2, caption=12)


@functools.lru_cache(maxsize=None)
def _official(layers: int, long_skip: bool, video: bool):
  return ref.random_state_dict(np.random.default_rng(layers), layers=layers,
                               long_skip=long_skip, video=video, **SMALL)


def _caption(rng, n=2, length=5, width=12):
  tokens = rng.normal(size=(n, length, width)).astype(np.float32)
  mask = np.ones((n, length), bool)
  mask[0, 3:] = False  # a padded caption
  null = rng.normal(size=(length, width)).astype(np.float32)
  null_mask = np.arange(length) < 2
  return tokens, mask, null, null_mask


@pytest.mark.parametrize("layers,long_skip,video", [(4, True, True), (2, False, True),
                                                     (4, True, False)])
def test_load_official_matches_numpy_forward(layers, long_skip, video):
  sd = _official(layers, long_skip, video)
  frames = 3 if video else None
  m, params = models.load_official(sd, input_size=8, num_heads=4, num_frames=frames)
  assert isinstance(m, models.LatteT2V if video else models.DiTT2V)
  assert (m.caption_channels, m.long_skip, m.learn_sigma) == (12, long_skip, True)
  rng = np.random.default_rng(1)
  n = 2
  x = rng.normal(size=(n, 4, frames or 1, 8, 8))  # official (N, C, F, H, W)
  t = np.array([3, 700])
  tokens, mask, null, null_mask = _caption(rng)
  want = ref.forward(sd, x, t, tokens, mask, heads=4)
  y = models.caption_condition(tokens=tokens, mask=mask, null_tokens=null,
                               null_mask=null_mask)
  xin = np.moveaxis(x, 1, -1)  # (N, F, H, W, C)
  xin = xin if video else xin[:, 0]
  got = m.apply({"params": params}, jnp.asarray(xin, jnp.float32), jnp.asarray(t), y)
  got = np.moveaxis(np.asarray(got) if video else np.asarray(got)[:, None], -1, 1)
  assert _rel(got, want) <= TOL
  # CFG's null half: force_drop_ids rows see the null caption (and its mask)
  want_null = ref.forward(sd, x, t, np.broadcast_to(null, tokens.shape),
                          np.broadcast_to(null_mask, mask.shape), heads=4)
  got_null = m.apply({"params": params}, jnp.asarray(xin, jnp.float32), jnp.asarray(t), y,
                     force_drop_ids=jnp.ones((n,), bool))
  got_null = np.moveaxis(np.asarray(got_null) if video else np.asarray(got_null)[:, None], -1, 1)
  assert _rel(got_null, want_null) <= TOL


def test_save_official_is_exact_inverse(tmp_path):
  sd = _official(4, True, True)
  m, params = models.load_official(sd, input_size=8, num_heads=4, num_frames=3)
  back = models.to_official(params, m)
  assert sorted(back) == sorted(sd)
  assert all(np.array_equal(back[k], sd[k]) for k in sd)
  models.save_official(tmp_path / "t2v.npz", params, m)
  m2, p2 = models.load_official(str(tmp_path / "t2v.npz"), input_size=8, num_heads=4,
                                num_frames=3)
  assert m2 == m
  assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, p2, params))


def test_load_official_t2v_buffers_and_errors():
  sd = dict(_official(4, True, True))
  sd["temp_pos_embed"] = ref.temp_pos_embed(32, 3)[None].astype(np.float32)
  sd["caption_projection.y_embedding"] = np.zeros((7, 12), np.float32)  # unused buffer
  m, _ = models.load_official(sd, input_size=8, num_heads=4)
  assert m.num_frames == 3
  with pytest.raises(ValueError, match="num_frames=5"):
    models.load_official(sd, input_size=8, num_heads=4, num_frames=5)
  bad = dict(_official(4, True, True))
  bad["transformer_blocks.1.attn2.to_k.weight"] = np.zeros((32, 31), np.float32)
  with pytest.raises(ValueError, match="misshaped keys"):
    models.load_official(bad, input_size=8, num_heads=4, num_frames=3)
  with pytest.raises(ValueError, match="pass num_heads"):
    models.load_official(_official(4, True, True), input_size=8, num_frames=3)


def _perturb(p, seed=0, scale=0.1):
  """Random offsets on every weight, so zero-initialised output layers pass signal."""
  leaves, tree = jax.tree_util.tree_flatten(p)
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree_util.tree_unflatten(
      tree, [a + scale * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)])


# --- the pooled path: a second code path -----------------------------------------------------
def test_pooled_condition_equals_a_label_table():
  """One-hot pooled vectors through Linear (bias 0) are a label table: a text_pooled DiT
  equals the class DiT whose table rows are the Linear's rows (null row = null vector)."""
  k = 5
  txt = models.create("SkipDiT-Tiny/2", depth=2, input_size=8, cond="text_pooled",
                      caption_channels=k)
  cls = models.create("SkipDiT-Tiny/2", depth=2, input_size=8, num_classes=k)
  p = models.init_params(txt, jax.random.key(0))
  p = _perturb(p)
  kernel = np.random.default_rng(0).normal(size=(k, 64)).astype(np.float32)
  p["y_embedder"] = {"proj": {"kernel": kernel, "bias": np.zeros(64, np.float32)}}
  null = np.random.default_rng(1).normal(size=(k,)).astype(np.float32)
  pc = dict(p, y_embedder={"embedding_table": np.concatenate([kernel, null[None] @ kernel])})
  labels = np.array([3, 0, 4])
  y = models.caption_condition(pooled=np.eye(k, dtype=np.float32)[labels], null_pooled=null)
  x = jnp.asarray(np.random.default_rng(2).normal(size=(3, 8, 8, 4)), jnp.float32)
  t = jnp.array([1, 400, 999])
  drop = jnp.array([False, True, False])
  got = txt.apply({"params": p}, x, t, y, force_drop_ids=drop)
  want = cls.apply({"params": pc}, x, t, jnp.asarray(labels), force_drop_ids=drop)
  assert _rel(got, want) <= TOL


def test_pooled_mlp_projection_equals_a_numpy_table():
  """pooled_projection="mlp": one-hot captions through Linear-SiLU-Linear give the label
  table whose rows numpy float64 computes from the same weights (null row likewise)."""
  k, d = 5, 64
  txt = models.create("SkipDiT-Tiny/2", depth=2, input_size=8, cond="text_pooled",
                      caption_channels=k, pooled_projection="mlp")
  cls = models.create("SkipDiT-Tiny/2", depth=2, input_size=8, num_classes=k)
  p = _perturb(models.init_params(txt, jax.random.key(0)))
  assert set(p["y_embedder"]) == {"fc1", "fc2"}
  rng = np.random.default_rng(4)
  w1, b1 = rng.normal(size=(k, d)), rng.normal(size=d)
  w2, b2 = rng.normal(size=(d, d)) / 8, rng.normal(size=d)
  f32 = lambda a: np.asarray(a, np.float32)
  p["y_embedder"] = {"fc1": {"kernel": f32(w1), "bias": f32(b1)},
                     "fc2": {"kernel": f32(w2), "bias": f32(b2)}}
  null = rng.normal(size=(k,))
  rows = np.concatenate([np.eye(k), null[None]])
  h = rows @ w1 + b1
  table = (h / (1 + np.exp(-h))) @ w2 + b2  # SiLU in float64
  pc = dict(p, y_embedder={"embedding_table": f32(table)})
  labels = np.array([2, 4, 0])
  y = models.caption_condition(pooled=np.eye(k, dtype=np.float32)[labels], null_pooled=f32(null))
  x = jnp.asarray(rng.normal(size=(3, 8, 8, 4)), jnp.float32)
  t = jnp.array([3, 500, 990])
  drop = jnp.array([True, False, False])
  got = txt.apply({"params": p}, x, t, y, force_drop_ids=drop)
  want = cls.apply({"params": pc}, x, t, jnp.asarray(labels), force_drop_ids=drop)
  assert _rel(got, want) <= TOL


@pytest.mark.parametrize("kw,match", [
    (dict(cond="text_pooled", pooled_projection="deep"), "model.pooled_projection='deep'"),
    (dict(cond="class", pooled_projection="mlp"), "needs\\s+model.cond='text_pooled'")])
def test_pooled_projection_errors_name_the_field(kw, match):
  with pytest.raises(ValueError, match=match):  # at construction, before any compute
    models.create("SkipDiT-Tiny/2", depth=2, input_size=8, **kw)


# --- caption dropout in training ------------------------------------------------------------
def _tiny_t2v(depth=4, **kw):
  return models.create("SkipLatteT2V-Tiny/2", depth=depth, input_size=8, num_frames=2,
                       caption_channels=12, **kw)


def test_caption_dropout_replaces_captions_with_the_null():
  rng = np.random.default_rng(3)
  tokens, mask, null, null_mask = _caption(rng)
  y = models.caption_condition(tokens=tokens, mask=mask, null_tokens=null, null_mask=null_mask)
  y_null = models.caption_condition(tokens=np.broadcast_to(null, tokens.shape),
                                    mask=np.broadcast_to(null_mask, mask.shape),
                                    null_tokens=null, null_mask=null_mask)
  x = jnp.asarray(rng.normal(size=(2, 2, 8, 8, 4)), jnp.float32)
  t = jnp.array([5, 600])
  outs = {}
  for prob in (0.0, 1.0):
    m = _tiny_t2v(class_dropout_prob=prob)
    p = models.init_params(m, jax.random.key(0))
    p = _perturb(p)
    run = jax.jit(lambda yy, train: m.apply({"params": p}, x, t, yy, train=train,
                                            rngs={"dropout": jax.random.key(1)}),
                  static_argnums=1)
    outs[prob] = (run(y, True), run(y, False), run(y_null, False))
  assert _rel(outs[1.0][0], outs[1.0][2]) <= TOL  # every caption dropped to ""
  assert _rel(outs[0.0][0], outs[0.0][1]) <= TOL  # no dropout: the captions
  assert _rel(outs[0.0][1], outs[0.0][2]) > 1e-3  # and the caption matters


def test_train_step_takes_caption_dicts():
  from skipdit_jax.train import TrainState, lr_schedule, make_optimizer, make_train_step
  import ml_collections
  m = _tiny_t2v(class_dropout_prob=0.5)
  cfg = ml_collections.ConfigDict(dict(lr=1e-3, warmup_steps=0, num_steps=10,
                                       lr_schedule="constant", weight_decay=0.0,
                                       grad_clip=1.0, b1=0.9, b2=0.999))
  tx = make_optimizer(cfg)
  state = TrainState.create(_perturb(models.init_params(m, jax.random.key(0))), tx,
                            jax.random.key(1))
  before = jax.tree_util.tree_map(np.array, state.params)
  step = make_train_step(m, D.Diffusion.create(D.betas_for("linear", 1000)), tx,
                         lr_schedule(cfg), 0.9)
  rng = np.random.default_rng(4)
  tokens, mask, null, null_mask = _caption(rng, n=4)
  y = models.caption_condition(tokens=tokens, mask=mask, null_tokens=null, null_mask=null_mask)
  state, metrics = step(state, jnp.asarray(rng.normal(size=(4, 2, 8, 8, 4)), jnp.float32), y)
  assert np.isfinite(float(metrics["loss"]))
  moved = np.abs(np.asarray(state.params["caption_projection"]["linear_1"]["kernel"])
                 - before["caption_projection"]["linear_1"]["kernel"]).max()
  assert moved > 0


# --- the sampler: CFG with the null caption, every policy -----------------------------------
@functools.lru_cache(maxsize=None)
def _sampling_setup():
  m = _tiny_t2v(depth=8)  # 4 pairs: Skip-Cache k = 1 pair at each end
  p = models.init_params(m, jax.random.key(0))
  p = _perturb(p, scale=0.05)
  rng = np.random.default_rng(5)
  tokens, mask, null, null_mask = _caption(rng)
  return m, p, (tokens, mask, null, null_mask)


def _gen(y, **kw):
  m, p, _ = _sampling_setup()
  return sampling.generate(m, p, D.Diffusion.create(D.betas_for("linear", 1000)), y,
                           jax.random.key(7), num_steps=6, **kw)


def test_cfg_uses_the_null_caption():
  _, _, (tokens, mask, null, null_mask) = _sampling_setup()
  y = models.caption_condition(tokens=tokens, mask=mask, null_tokens=null, null_mask=null_mask)
  as_null = models.caption_condition(tokens=np.broadcast_to(null, tokens.shape),
                                     mask=np.broadcast_to(null_mask, mask.shape),
                                     null_tokens=null, null_mask=null_mask)
  self_null = models.caption_condition(tokens=tokens, mask=mask, null_tokens=tokens,
                                       null_mask=mask)
  cond = _gen(y)
  assert cond.shape == (2, 2, 8, 8, 4)
  # scale 0 is the unconditional model: sampling the empty caption without guidance
  np.testing.assert_allclose(_gen(y, cfg_scale=0.0), _gen(as_null), atol=1e-5)
  # a null equal to the caption makes any scale the conditional model
  np.testing.assert_allclose(_gen(self_null, cfg_scale=4.0), cond, atol=1e-5)
  assert np.abs(_gen(y, cfg_scale=4.0) - cond).max() > 1e-3


@pytest.mark.parametrize("policy,opts", [
    ("skip_cache", dict(k=1)), ("skip_cache_forecast", dict(k=1, forecast_order=0)),
    ("fora", {}), ("delta_dit", dict(delta_blocks=1))])
def test_cached_step_on_its_own_full_step_is_exact(policy, opts):
  """A cached step run on the cache its own full step just wrote (same x, same t) must
  give that full step's output: the cheap path composes the same staged forward, with the
  caption context passed through c."""
  m, p, (tokens, mask, null, null_mask) = _sampling_setup()
  y = models.caption_condition(tokens=tokens, mask=mask, null_tokens=null, null_mask=null_mask)
  diff = D.Diffusion.create(D.betas_for("linear", 1000))
  spaced, plan = sampling.respaced_plan(m, diff, 4, policy=policy, interval=2, **opts)
  smp = sampling.Sampler(m, spaced, plan, sampling.SolverConfig(cfg_scale=3.0))
  x = jnp.asarray(np.random.default_rng(6).normal(size=(2, 2, 8, 8, 4)), jnp.float32)
  y = {k: jnp.asarray(v) for k, v in y.items()}
  cache = smp.empty_cache(p, x, y)
  i = jnp.asarray(2, jnp.int32)
  full, cache = smp.full_step(p, x, i, y, jax.random.key(0), cache)
  assert smp.cached_steps
  for variant, fn in smp.cached_steps.items():
    got = fn(p, x, i, y, jax.random.key(0), cache, jnp.zeros_like(smp.aux) + (
        1.0 if policy == "skip_cache_forecast" else 0.0))
    np.testing.assert_allclose(np.asarray(got), np.asarray(full), atol=2e-5)


# --- the official T2V cache schedule ---------------------------------------------------------
def _official_t2v_counter(timesteps, gap, start, end):
  """Transcription of latte_t2v_skip_cache.py's rule (VIDEO.md §2.2): full when
  cache_cont % N == 0, no cache, or t >= start; cache_cont += 1 after each step; at
  t <= end the counter and cache are reset."""
  actions, cont, cache = [], 0, None
  for t in timesteps:
    full = cont % gap == 0 or cache is None or t >= start
    actions.append("full" if full else "cached")
    if full:
      cache = t
    cont += 1
    if t <= end:
      cont, cache = 0, None
  return actions


@pytest.mark.parametrize("gap,start,full,speedup", [
    (2, 700, 33, 1.46), (3, 700, 28, 1.69), (4, 700, 25, 1.87),
    (2, 900, None, 1.69), (3, 900, None, 2.17), (4, 900, None, 2.58)])
def test_official_t2v_schedule(gap, start, full, speedup):
  m = models.create("SkipLatteT2V-XL/2", input_size=64, num_frames=16, caption_channels=4096)
  diff = D.Diffusion.create(D.betas_for("linear", 1000))
  opts = sampling.official_t2v(f"N{gap}-{start}-50")
  spaced, plan = sampling.respaced_plan(m, diff, "ddim50", **opts)
  assert plan.timesteps == tuple(range(980, -1, -20))  # diffusers "leading" DDIM-50
  assert list(plan.actions) == _official_t2v_counter(plan.timesteps, gap, start, 50)
  if full is not None:
    assert plan.num_steps - plan.num_cached == full
  assert round(plan.ideal_speedup, 2) == speedup
  if (gap, start) == (2, 700):  # F x15, then CF alternating, ending FF
    marks = "".join("F" if a == "full" else "C" for a in plan.actions)
    assert marks == "F" * 15 + "CF" * 16 + "CFF"
  with pytest.raises(ValueError, match="N<gap>"):
    sampling.official_t2v("2-700-50")


# --- errors ------------------------------------------------------------------------------------
def test_errors_name_the_field():
  m, p, (tokens, mask, null, null_mask) = _sampling_setup()
  diff = D.Diffusion.create(D.betas_for("linear", 1000))
  with pytest.raises(ValueError, match="caption dict"):
    sampling.generate(m, p, diff, np.array([1, 2]), jax.random.key(0), num_steps=2)
  with pytest.raises(ValueError, match="caption_channels=12"):
    y = models.caption_condition(tokens=tokens[..., :8], mask=mask, null_tokens=null[:, :8],
                                 null_mask=null_mask)
    sampling.generate(m, p, diff, y, jax.random.key(0), num_steps=2)
  with pytest.raises(ValueError, match="null_tokens"):
    models.caption_condition(tokens=tokens, mask=mask)
  with pytest.raises(ValueError, match="null condition has shape"):
    models.caption_condition(tokens=tokens, mask=mask, null_tokens=null[:3],
                             null_mask=null_mask[:3])
  cls = models.create("SkipDiT-Tiny/2", input_size=8, num_classes=3)
  with pytest.raises(ValueError, match="model.cond='class'"):
    sampling.generate(cls, models.init_params(cls, jax.random.key(0)), diff,
                      models.caption_condition(pooled=np.zeros((2, 4)),
                                               null_pooled=np.zeros(4)),
                      jax.random.key(0), num_steps=2)
  with pytest.raises(ValueError, match="model.cond='class'"):
    models.create("SkipLatteT2V-Tiny/2", depth=4, cond="class")
  with pytest.raises(ValueError, match="model.cond='words'"):
    models.create("SkipDiT-Tiny/2", cond="words")
  with pytest.raises(ValueError, match="scan_blocks"):
    models.create("SkipDiTT2I-Tiny/2", scan_blocks=True)
