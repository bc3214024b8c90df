"""Latte / Skip-Latte: the official parameter counts, the official-weights mapping against
an independent float64 numpy forward (reference_latte), the exact export round trip,
errors on bad input, and every cache policy on video through the unchanged sampler."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference_latte as ref
import tiny_models
from skipdit_jax import diffusion as D
from skipdit_jax import models, sampling
from skipdit_jax.sampling import SolverConfig

TOL = 1e-5


def _rel(got, want) -> float:
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  assert got.shape == want.shape, (got.shape, want.shape)
  return float(np.abs(got - want).max() / np.abs(want).max())


# --- sizes ----------------------------------------------------------------------------------
# Official counts (shared/docs/VIDEO.md §1.6, a meta-device build of the PyTorch model).
@pytest.mark.parametrize("name,num_classes,want", [
    ("SkipLatte-XL/2", 101, 692_418_848), ("SkipLatte-XL/2", 0, 692_301_344),
    ("Latte-XL/2", 101, 673_799_072)])
def test_official_parameter_counts(name, num_classes, want):
  m = models.create(name, input_size=32, in_channels=4, num_classes=num_classes,
                    num_frames=16, learn_sigma=True)
  assert isinstance(m, models.Latte) and m.num_units == 14
  assert m.sample_shape == (16, 32, 32, 4)
  assert models.param_count(m) == want


def test_registry_sizes_and_units():
  for size, (depth, width, _) in models.SIZES.items():
    if depth % 4 == 0:
      m = models.create(f"SkipLatte-{size}/2", num_frames=8)
      assert (m.depth, m.hidden_size, m.num_units, m.long_skip) == (depth, width, depth // 2,
                                                                    True)
    assert models.create(f"Latte-{size}/4").num_units == depth // 2
  assert models.is_video("SkipLatte-S/2") and not models.is_video("SkipDiT-S/2")


# --- official weights against the numpy forward ----------------------------------------------
SMALL = dict(hidden=64, frames=4, input_size=8, channels=4, patch=2)


@functools.lru_cache(maxsize=None)
def _official(depth: int, num_classes: int, long_skip: bool = True):
  return ref.random_state_dict(np.random.default_rng(depth + num_classes), depth=depth,
                               num_classes=num_classes, long_skip=long_skip, **SMALL)


def _video_inputs(seed: int, n: int = 2, num_classes: int = 10):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((n, SMALL["frames"], SMALL["input_size"], SMALL["input_size"],
                           SMALL["channels"])).astype(np.float32)
  t = np.array([999, 321][:n], np.int32)
  y = rng.integers(0, max(num_classes, 1), n).astype(np.int32)
  return x, t, y


@pytest.mark.parametrize("depth,num_classes,long_skip", [
    pytest.param(28, 10, True, marks=pytest.mark.slow), (8, 10, True), (8, 0, True),
    (8, 10, False)])
def test_load_official_matches_numpy_forward(depth, num_classes, long_skip):
  sd = _official(depth, num_classes, long_skip)
  module, params = models.load_official({"ema": sd}, input_size=8, num_heads=4)
  assert isinstance(module, models.Latte)
  assert (module.depth, module.num_frames, module.num_classes, module.long_skip) == (
      depth, 4, num_classes, long_skip)
  x, t, y = _video_inputs(0, num_classes=num_classes)
  got = jax.jit(module.apply)({"params": params}, x, t, y)
  want = ref.forward(sd, x, t, y, patch=2, heads=4, long_skip=long_skip)
  assert got.shape == (2, 4, 8, 8, 8)
  assert _rel(got, want) <= TOL
  if long_skip:  # teeth: the numpy model without its skips is far off
    assert _rel(got, ref.forward(sd, x, t, y, patch=2, heads=4, long_skip=False)) > 1e-2


def test_official_skip_pairing_at_depth_28():
  """Deep pair 7 + j fuses shallow pair 6 - j with module j (the official probe trace:
  blocks 14..27 in pairs, modules 0..6)."""
  m = models.create("SkipLatte-XL/2")
  from skipdit_jax.models import skip_pairs
  deep = [u for kind, a, b in skip_pairs.segments(m.num_units, True, 0, m.num_units)
          if kind == skip_pairs.DEEP for u in range(a, b)]
  assert [(2 * u, skip_pairs.fusion_index(u, m.num_units)) for u in deep] == [
      (14, 0), (16, 1), (18, 2), (20, 3), (22, 4), (24, 5), (26, 6)]


@pytest.mark.parametrize("num_classes", [10, 0])
def test_save_official_round_trip_is_exact(tmp_path, num_classes):
  sd = _official(8, num_classes)
  module, params = models.load_official(sd, input_size=8, num_heads=4, num_frames=4)
  path = tmp_path / "latte.npz"
  models.save_official(path, params, module)
  with np.load(path) as z:
    back = {k: z[k] for k in z.files}
  assert sorted(back) == sorted(sd)
  for k in sd:
    np.testing.assert_array_equal(back[k], sd[k], err_msg=k) if k not in (
        "pos_embed", "temp_embed") else np.testing.assert_allclose(back[k], sd[k], atol=1e-6)
  module2, params2 = models.load_official(str(path), input_size=8, num_heads=4)
  assert module2 == module
  jax.tree_util.tree_map(np.testing.assert_array_equal, params2, params)


def test_bad_official_inputs_are_named():
  sd = _official(8, 10)
  with pytest.raises(ValueError, match="num_frames=6 does not fit temp_embed"):
    models.load_official(sd, input_size=8, num_heads=4, num_frames=6)
  with pytest.raises(ValueError, match="unconditional Latte; pass num_classes=0"):
    models.load_official(_official(8, 0), input_size=8, num_heads=4, num_classes=101)
  bad = dict(sd, temp_embed=sd["temp_embed"] + 0.1)
  with pytest.raises(ValueError, match="temp_embed differs"):
    models.load_official(bad, input_size=8, num_heads=4)
  with pytest.raises(ValueError, match="input_size=16 does not fit pos_embed"):
    models.load_official(sd, input_size=16, num_heads=4)
  missing = {k: v for k, v in sd.items() if not k.startswith("skip_linears.1.")}
  with pytest.raises(ValueError, match="missing keys"):
    models.load_official(missing, input_size=8, num_heads=4)


def test_bad_model_fields_are_named():
  with pytest.raises(ValueError, match="model.scan_blocks"):
    models.create("SkipLatte-Mini/2", scan_blocks=True)
  with pytest.raises(ValueError, match="model.depth=6 gives 3 block pairs"):
    models.create("SkipLatte-Tiny/2")
  with pytest.raises(ValueError, match="model.depth=7 must be an even"):
    models.create("Latte-Tiny/2", depth=7)
  with pytest.raises(ValueError, match="data.num_frames=0"):
    models.create("Latte-Tiny/2", num_frames=0)
  with pytest.raises(ValueError, match="image model"):
    models.create("SkipDiT-Tiny/2", num_frames=4)


# --- caching on video: every policy through the unchanged sampler ----------------------------
SPACED = D.respace(D.Diffusion.create(D.betas_for("linear", 1000)), 6)
I0, I1, I2 = 4, 3, 2  # respaced indices in execution order: full, full, cached


@functools.lru_cache(maxsize=None)
def _tiny(long_skip: bool, num_classes: int = 5):
  """4 pairs (8 blocks), 3 frames of 4x4x2, width 32; random (non-zero adaLN) params."""
  model = models.create("SkipLatte-Tiny/2" if long_skip else "Latte-Tiny/2", input_size=4,
                        in_channels=2, num_classes=num_classes, num_frames=3, depth=8,
                        hidden_size=32, num_heads=2)
  params = tiny_models.random_params(model, seed=int(long_skip))
  return model, params, models.to_official(params, model)


@pytest.mark.parametrize("policy,long_skip", [
    ("none", True), ("skip_cache", True), ("deep_cache", False), ("fora", True),
    ("delta_dit", False), ("skip_cache_forecast", True)])
def test_every_policy_samples_video(policy, long_skip):
  model, params, _ = _tiny(long_skip)
  base = D.Diffusion.create(D.betas_for("linear", 1000))
  kw = dict(sampler="ddim", num_steps=5, cfg_scale=1.5, interval=2, k=1)
  got = sampling.generate(model, params, base, [1, 3], jax.random.key(0), policy=policy, **kw)
  assert got.shape == (2, 3, 4, 4, 2) and np.all(np.isfinite(got))
  ref_full = sampling.generate(model, params, base, [1, 3], jax.random.key(0), **kw)
  err = _rel(got, ref_full)
  if policy == "none":
    assert err == 0.0
  else:  # a cached run departs from the full one, but only a little
    assert 0.0 < err < 0.5, err


@pytest.mark.parametrize("long_skip,policy", [(True, "skip_cache"), (False, "deep_cache")])
def test_cached_step_equals_numpy_forward_with_the_cached_feature(long_skip, policy):
  """Full steps at (x0, i0), (x1, i1), then a cached step at (x2, i2): its output is the
  numpy forward at (x2, t2) with the state entering pair L-k replaced by the one the
  latest full step saw (VIDEO.md §1.5)."""
  model, params, sd = _tiny(long_skip)
  k, pairs = 1, model.num_units
  solver = SolverConfig()
  plan = sampling.make_plan(model, SPACED, policy, interval=2, k=k)
  s = sampling.get_sampler(model, SPACED, plan, solver)
  rng = np.random.default_rng(3)
  xs = [jnp.asarray(rng.standard_normal((2,) + model.sample_shape), jnp.float32)
        for _ in range(3)]
  ys = [jnp.asarray(v, jnp.int32) for v in ([0, 1], [2, 3], [4, 0])]
  cache = s.empty_cache(params, xs[2], ys[2])
  for x, y, i in ((xs[0], ys[0], I0), (xs[1], ys[1], I1)):
    _, cache = s.full_step(params, x, jnp.int32(i), y, jax.random.key(0), cache)
  t2 = jnp.full((2,), SPACED.timestep_map[I2], jnp.int32)
  aux = jnp.zeros((SPACED.num_timesteps, 1), jnp.float32)
  out = jax.jit(lambda p, c: model.apply(
      {"params": p}, xs[2], t2, ys[2], None, c, jnp.int32(I2), aux,
      method=s.policy.cached_method("cached")))(params, cache)

  def numpy_forward(i, x, y, **kw):
    t = np.full((2,), SPACED.timestep_map[i])
    return ref.forward(sd, np.asarray(x), t, np.asarray(y), patch=2, heads=2,
                       long_skip=long_skip, **kw)
  seen0, seen1 = {}, {}
  numpy_forward(I0, xs[0], ys[0], record=seen0)
  numpy_forward(I1, xs[1], ys[1], record=seen1)
  deep = pairs - k
  # the cache is (N, F, P, D); the official layout is (N·F, P, D)
  assert _rel(np.asarray(cache).reshape(seen1[deep].shape), seen1[deep]) < 2e-5
  want = numpy_forward(I2, xs[2], ys[2], replace={deep: seen1[deep]})
  assert _rel(out, want) < 2e-5
  for replace in ({}, {deep: seen0[deep]}, {deep - 1: seen1[deep - 1]}):  # teeth
    assert _rel(out, numpy_forward(I2, xs[2], ys[2], replace=replace)) > 1e-2


def test_unconditional_latte_refuses_guidance():
  model, params, _ = _tiny(True, num_classes=0)
  base = D.Diffusion.create(D.betas_for("linear", 1000))
  got = sampling.generate(model, params, base, [0], jax.random.key(0), num_steps=2)
  assert got.shape == (1, 3, 4, 4, 2)
  with pytest.raises(ValueError, match="cfg_scale"):
    sampling.generate(model, params, base, [0], jax.random.key(0), num_steps=2,
                      cfg_scale=2.0)


# --- the official class-to-video cache schedule -----------------------------------------------
def official_latte_schedule(timesteps, n):
  """`Latte_skip_cache.forward`'s call sequence, transcribed from VIDEO.md §1.5: a call is
  full when cache_cont % n == 0, no cache is held, or t >= 900; after each call the
  counter increments, and a call with t < 50 resets it and drops the cache."""
  cont, cache, out = 0, None, []
  for t in timesteps:
    full = cont % n == 0 or cache is None or t >= 900
    if full:
      cache = "deep feature"
    out.append(full)
    cont += 1
    if t < 50:
      cont, cache = 0, None
  return out


OFFICIAL_CACHE = dict(policy="skip_cache", k=1, window=(0, 900), counter="global", tail_t=50)


@pytest.mark.parametrize("num_steps,n,full,cached", [
    (250, 2, 143, 107), (250, 3, 108, 142), (250, 4, 90, 160), (250, 5, 80, 170),
    (250, 6, 72, 178), (50, 2, 28, 22), (50, 3, 21, 29), (50, 4, 17, 33)])
def test_plan_is_the_official_latte_schedule(num_steps, n, full, cached):
  from test_respacing import adm_space_timesteps
  timesteps = sorted(adm_space_timesteps(1000, [num_steps]), reverse=True)
  m = models.create("SkipLatte-XL/2")
  base = D.Diffusion.create(D.betas_for("linear", 1000))
  _, plan = sampling.respaced_plan(m, base, num_steps, interval=n, **OFFICIAL_CACHE)
  assert list(plan.timesteps) == timesteps
  got = [a == sampling.FULL for a in plan.actions]
  assert got == official_latte_schedule(timesteps, n)
  assert (sum(got), plan.num_cached) == (full, cached)  # VIDEO.md's table
  # ideal speedup in pair units (14 per full step, 2 per cached): VIDEO.md's ratios
  assert plan.ideal_speedup == pytest.approx(num_steps * 14 / (14 * full + 2 * cached))
  if num_steps == 50 and n == 2:
    assert "".join("F" if a else "C" for a in got) == "FFFFF" + "CF" * 22 + "F"
  # Counting since the last full step gives another phase after the F forced full steps
  # (t >= 900) unless F = 1 mod n (e.g. DDPM-250 N=5, DDIM-50 N=3 differ).
  _, other = sampling.respaced_plan(m, base, num_steps, interval=n,
                                    **dict(OFFICIAL_CACHE, counter="since_full"))
  forced = sum(t >= 900 for t in timesteps)
  assert (other.actions != plan.actions) == (forced % n != 1)


def test_bad_cache_rule_fields_are_named():
  m = models.create("SkipLatte-XL/2")
  base = D.Diffusion.create(D.betas_for("linear", 1000))
  with pytest.raises(ValueError, match="sample.cache.counter='phase'"):
    sampling.respaced_plan(m, base, 50, policy="skip_cache", interval=2, counter="phase")
  with pytest.raises(ValueError, match="sample.cache.tail_t=-1"):
    sampling.respaced_plan(m, base, 50, policy="skip_cache", interval=2, tail_t=-1)


@pytest.mark.parametrize("name,classes,cfg", [("ucf101_skiplatte_xl2", 101, 7.0),
                                              ("sky_skiplatte_xl2", 0, 1.0)])
def test_video_configs_build_latte_and_the_official_plan(name, classes, cfg):
  import importlib
  from skipdit_jax.train import build
  c = importlib.import_module(f"configs.{name}").get_config()
  m = build.build_model(c)
  assert isinstance(m, models.Latte) and m.long_skip
  assert (m.num_frames, m.num_classes, m.depth, m.hidden_size) == (16, classes, 28, 1152)
  opts = sampling.options_from_config(c.sample)
  assert (opts["sampler"], opts["num_steps"], opts["cfg_scale"]) == ("ddpm", 250, cfg)
  _, plan = sampling.respaced_plan(m, build.build_diffusion(c), **opts)
  assert (plan.num_steps - plan.num_cached, plan.num_cached) == (143, 107)  # N=2, VIDEO.md
  from skipdit_jax import config_check
  config_check.check_config(c, num_devices=1)  # every field valid, the cache plan included
  c.sample.cache.counter = "phase"
  with pytest.raises(Exception, match="sample.cache.counter"):
    config_check.check_config(c, num_devices=1)


def test_dit_only_paths_refuse_latte():
  from configs import ucf101_skiplatte_xl2
  from skipdit_jax import compile_plan
  with pytest.raises(ValueError, match="cover DiT only"):
    compile_plan.plan_compile(ucf101_skiplatte_xl2.get_config())


@pytest.mark.parametrize("num_steps", [250, 50, 27])
@pytest.mark.parametrize("n", [2, 3, 5])
def test_tail_rule_also_states_the_official_dit_tail(num_steps, n):
  """DiT_cache drops its cache after a step with t <= 20: tail_t=21 gives its plan with no
  window arithmetic (test_sample_official transcribes the official counter)."""
  from test_respacing import adm_space_timesteps
  from test_sample_official import XL, official_schedule
  timesteps = sorted(adm_space_timesteps(1000, [num_steps]), reverse=True)
  base = D.Diffusion.create(D.betas_for("linear", 1000))
  _, plan = sampling.respaced_plan(XL, base, num_steps, policy="skip_cache", interval=n,
                                   k=4, tail_t=21)
  got = [("full" if a == sampling.FULL else "cached", c)
         for a, c in zip(plan.actions, plan.cost)]
  assert got == official_schedule(timesteps, n)
