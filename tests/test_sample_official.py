"""The 'sample the released weights' command, end to end on tiny stand-in files."""
from __future__ import annotations

import importlib
import inspect
import json
import types

import jax
import numpy as np
import pytest
from absl import flags
from PIL import Image

from skipdit_jax import diffusion as dfn
from skipdit_jax import sample_official as so
from skipdit_jax import sampling
from skipdit_jax.models import state_dict_io
from skipdit_jax.models import vae as V
from test_convert import official_dict
from test_respacing import adm_space_timesteps

VAE = V.AutoencoderKL(block_out_channels=(32, 32, 32, 32), layers_per_block=1)


def test_sample_released_format_with_skip_cache(tmp_path):
  # A tiny Skip-DiT (8x8x4 latents, 10 classes) and VAE in the released file formats.
  ckpt = tmp_path / "DiT-tiny-skip.safetensors"
  state_dict_io.save_safetensors(ckpt, official_dict(True))
  vae_params = V.init_vae(VAE, jax.random.key(0, impl="unsafe_rbg"), image_size=32)
  vae_file = tmp_path / "diffusion_pytorch_model.safetensors"
  state_dict_io.save_safetensors(vae_file, V.vae_to_diffusers(vae_params))
  out = tmp_path / "out"
  summary = so.sample_official(str(ckpt), vae_path=str(vae_file), out=str(out),
                               classes=[3, 7], image_size=64, sampler="ddim", num_steps=4,
                               cfg_scale=1.5, policy="skip_cache", interval=2, k=1)
  json.dumps(summary)
  assert summary["model"].startswith("Skip-DiT depth=6")
  with np.load(summary["npz"]) as z:
    assert z["latents"].shape == (2, 8, 8, 4) and z["images"].shape == (2, 64, 64, 3)
    assert np.all(np.isfinite(z["images"])) and list(z["labels"]) == [3, 7]
  assert Image.open(summary["grid"]).size == (2 * 65 + 1, 65 + 1)


# --- the official sampling is the default ------------------------------------------------
# Facts from the official class-to-image code (OpenSparseLLMs/Skip-DiT, read, not copied):
# sample_ddp.py: create_diffusion("250") (DDPM p_sample_loop), --cfg-scale 1.5;
# models.py forward_with_cfg guides model_out[:, :3]; DiT_cache.forward: skip_at_branch=4,
# close_deepcache_at=20, start_deepcache_at=1000, a call counter `cache_cont`.

def official_schedule(timesteps, n, depth=28, k=4):
  """The official DiT_cache call sequence, transcribed: per call (timesteps high noise
  first) -> ("full"|"cached", blocks run). A call is full when cache_cont % n == 0, no
  cache is held, or t >= 1000; a cached call runs blocks i < k and i >= depth - k. After
  the call the counter increments, and a call with t <= 20 drops the cache and resets it."""
  cont, cache, out = 0, None, []
  for t in timesteps:
    full = cont % n == 0 or cache is None or t >= 1000
    if full:
      cache = "deep feature"
    blocks = sum(1 for i in range(depth) if full or i < k or i >= depth - k)
    out.append(("full" if full else "cached", blocks))
    cont += 1
    if t <= 20:
      cont, cache = 0, None
  return out


XL = types.SimpleNamespace(depth=28, num_units=28, long_skip=True)  # what the plan reads of a model


def _plan(num_steps, n, window):
  base = dfn.Diffusion.create(dfn.betas_for("linear", 1000))
  _, plan = sampling.respaced_plan(XL, base, num_steps, policy="skip_cache", interval=n, k=4,
                              window=window)
  return plan


@pytest.mark.parametrize("num_steps", [250, 100, 50, 27, 21])
@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_plan_is_the_official_schedule(num_steps, n):
  timesteps = sorted(adm_space_timesteps(1000, [num_steps]), reverse=True)
  want = official_schedule(timesteps, n)
  window = so.official_window(timesteps)
  plan = _plan(num_steps, n, window)
  assert list(plan.timesteps) == timesteps
  got = [("full" if a == sampling.FULL else "cached", c)
         for a, c in zip(plan.actions, plan.cost)]
  assert got == want
  if num_steps == 250:
    # t = 20 is sampled: the configs' literal window (20, 1000) is the same plan; the old
    # default (0, 1000) is not. The t = 20 step itself still follows the interval (cached
    # for n = 3, 5, 6), so a window one off, (21, 1000), differs exactly then.
    assert window == (20, 1000) and 20 in timesteps
    assert _plan(250, n, (20, 1000)).actions == plan.actions
    assert _plan(250, n, (0, 1000)).actions != plan.actions
    at20 = want[timesteps.index(20)][0]
    assert at20 == ("full" if n in (2, 4) else "cached")
    assert (_plan(250, n, (21, 1000)).actions != plan.actions) == (at20 == "cached")


def test_defaults_are_the_official_sampling():
  sig = inspect.signature(so.sample_official).parameters
  official = dict(sampler="ddpm", num_steps=250, cfg_scale=1.5, guided_channels=3, k=4)
  for name, value in official.items():
    assert sig[name].default == value, name
  assert sig["window"].default is None  # the official tail rule, as checked above
  fv = flags.FlagValues()
  so.define_flags(fv)
  fv(["prog"])
  for name, value in official.items():
    assert fv[name].value == value, name
  assert fv["window"].value == [] and fv["policy"].value == "none"


@pytest.mark.parametrize("name", ["imagenet256_dit_xl2", "imagenet256_skipdit_xl2"])
def test_imagenet_configs_sample_officially_and_reach_generate(name):
  from skipdit_jax import main as main_mod
  c = importlib.import_module(f"configs.{name}").get_config()
  s = c.sample
  assert (s.sampler, s.num_steps, s.cfg_scale, s.guided_channels) == ("ddpm", 250, 1.5, 3)
  assert (s.cache.k, tuple(s.cache.window)) == (4, (20, 1000))
  # config -> generate keyword arguments, on both paths that build them.
  opts = sampling.options_from_config(s)
  kw = main_mod._sample_kwargs(c, cached=True)
  for got in (opts, kw):
    assert got["guided_channels"] == 3 and got["k"] == 4
    assert tuple(got["window"]) == (20, 1000) and got["num_steps"] == 250
  assert set(opts) <= set(inspect.signature(sampling.generate).parameters)


@pytest.mark.parametrize("value,msg", [(0, "must be an int >= 1"), (2, "exceeds"),
                                       (1.5, "must be an int >= 1")])
def test_bad_guided_channels_named_before_compute(value, msg):
  from configs import digits_skipdit
  from skipdit_jax.config_check import ConfigError, check_config
  c = digits_skipdit.get_config()  # 1-channel digits, cfg 2.0
  c.sample.guided_channels = value
  with pytest.raises(ConfigError, match=rf"sample\.guided_channels={value}.*{msg}"):
    check_config(c, num_devices=1)


@pytest.mark.slow  # two sampler compiles
def test_guided_channels_reach_the_update(tmp_path):
  # One DDPM step (respaced to timestep 0, no noise added) is channel-wise in eps: guiding the
  # first 3 of 4 channels leaves channels 0-2 as with all 4 guided and changes channel 3.
  ckpt = tmp_path / "DiT-tiny-skip.safetensors"
  state_dict_io.save_safetensors(ckpt, official_dict(True))

  def run(g):
    return so.sample_official(str(ckpt), out=str(tmp_path / f"g{g}"), classes=[3, 7],
                              image_size=64, num_steps=1, cfg_scale=3.0, guided_channels=g)
  lat = {}
  for g in (3, 4):
    summary = run(g)
    assert summary["guided_channels"] == g and summary["sampler"] == "ddpm"
    with np.load(summary["npz"]) as z:
      lat[g] = z["latents"]
  np.testing.assert_allclose(lat[3][..., :3], lat[4][..., :3], rtol=1e-6, atol=1e-6)
  assert np.abs(lat[3][..., 3] - lat[4][..., 3]).max() > 1e-3
  with pytest.raises(ValueError, match="--guided_channels=5"):
    run(5)
