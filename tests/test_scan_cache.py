"""Every cache policy samples a scanned (`model.scan_blocks`) and a rematerialised model.

The reference is the unrolled model's cached sampler on the same weights (stacked with
`models.scan.stack_params`), the same noise and the same plan: the scanned block stack,
sliced per cached range (or unstacked inside the step for FORA), must give the same
samples to float32 rounding. FORA and the forecast are also run under remat (FORA reads
values inside each block, which a remat trace would keep to itself).
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skipdit_jax import diffusion as D
from skipdit_jax import sampling
from skipdit_jax.models import scan
from skipdit_jax.sampling import SolverConfig
from skipdit_jax.sampling.trace import fidelity_trace

import tiny_models

BASE = D.Diffusion.create(D.betas_for("linear", 1000))
STEPS = 6
SPACED = D.respace(BASE, STEPS)
# DDPM with guidance: per-step noise and the doubled batch both go through the cache.
SOLVER = SolverConfig(sampler="ddpm", cfg_scale=2.0)
FAST = {(True, "skip_cache"), (True, "fora")}  # the flagship and the per-block path
CASES = [pytest.param(ls, p, marks=() if (ls, p) in FAST else pytest.mark.slow)
         for ls, p in [(True, p) for p in ("none", "skip_cache", "skip_cache_forecast",
                                           "fora", "delta_dit")]
         + [(False, "deep_cache"), (False, "fora")]]


@pytest.fixture(scope="module")
def models_():
  return {ls: tiny_models.tiny(long_skip=ls, width=32, seed=int(ls)) for ls in (True, False)}


def _sample(model, params, policy):
  plan = sampling.make_plan(model, SPACED, policy, interval=2, k=1, delta_switch_t=500)
  smp = sampling.get_sampler(model, SPACED, plan, SOLVER)
  x = jax.random.normal(jax.random.key(3), (2, model.input_size, model.input_size,
                                            model.in_channels))
  y = jnp.array([1, 4], jnp.int32)
  return np.asarray(smp.sample(params, x, y, jax.random.key(4))), plan


def _close(a, b):
  """Equal to float32 rounding, relative to the sample's scale (random weights and DDPM
  noise drive the tiny model's samples to |x| ~ 1e2)."""
  np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * float(np.abs(b).max()))


@pytest.mark.parametrize("long_skip,policy", CASES)
def test_scanned_equals_unrolled(long_skip, policy, models_):
  model, params = models_[long_skip]
  ref, plan = _sample(model, params, policy)
  if policy != "none":
    assert plan.num_cached > 0  # the comparison covers cached steps
  scanned = model.clone(scan_blocks=True)
  out, _ = _sample(scanned, scan.stack_params(params, model.depth, model.long_skip), policy)
  assert np.all(np.isfinite(ref))
  _close(out, ref)


def _remat_cases():
  """Both per-block readers under remat, in both layouts; the full-remat FORA ones (the
  case that used to fail with an escaped tracer) run by default, the rest under `-m slow`.

  Sampling runs no backward pass, so a named policy (which only says what the backward
  pass may keep) cannot change a sample: "full" covers the remat wrapper in every layout,
  and the shipped XL/2 policy (configs, docs/SCALING.md) is checked once, scanned with FORA.
  """
  out = []
  for policy in ("fora", "skip_cache_forecast"):
    for scan_blocks in (False, True):
      out.append(pytest.param(policy, "full", scan_blocks,
                              marks=() if policy == "fora" else pytest.mark.slow))
  out.append(pytest.param("fora", "dots_no_batch", True, marks=pytest.mark.slow))
  return out


@pytest.mark.parametrize("policy,remat,scan_blocks", _remat_cases())
def test_fora_and_forecast_under_every_remat(policy, remat, scan_blocks, models_):
  model, params = models_[True]
  ref, _ = _sample(model, params, policy)
  alt = model.clone(remat=remat, scan_blocks=scan_blocks)
  p = scan.stack_params(params, model.depth, True) if scan_blocks else params
  out, _ = _sample(alt, p, policy)
  _close(out, ref)


@pytest.mark.slow
def test_fidelity_trace_on_a_scanned_model(models_):
  model, params = models_[True]
  plan = sampling.make_plan(model, SPACED, "skip_cache_forecast", interval=2, k=1)
  x = jax.random.normal(jax.random.key(3), (2, 4, 4, 2))
  y = jnp.array([1, 4], jnp.int32)
  ref = fidelity_trace(sampling.get_sampler(model, SPACED, plan, SOLVER), params, x, y,
                       jax.random.key(4))
  scanned = model.clone(scan_blocks=True)
  out = fidelity_trace(sampling.get_sampler(scanned, SPACED, plan, SOLVER),
                       scan.stack_params(params, 4, True), x, y, jax.random.key(4))
  _close(out["x"], ref["x"])
  cached = ref["cached"]
  assert cached.any()
  _close(out["cos_feature"][cached], ref["cos_feature"][cached])


@pytest.mark.parametrize("config_file,policies", [
    ("digits_skipdit", ("none", "skip_cache", "skip_cache_forecast", "fora", "delta_dit")),
    ("digits_dit", ("deep_cache", "fora"))])
def test_config_check_accepts_every_policy_on_a_scanned_model(config_file, policies):
  """Before: accepted, then the final sampling raised. Now they all run (tests above),
  so the check accepts them, under remat too; what no model can run is still refused."""
  import importlib
  from skipdit_jax.config_check import ConfigError, check_config
  config = importlib.import_module(f"configs.{config_file}").get_config()
  config.model.scan_blocks, config.model.remat = True, "full"
  for policy in policies:
    config.sample.cache.policy, config.sample.cache.interval = policy, 2
    check_config(config, num_devices=1)
  config.sample.cache.policy = "skip_cache" if config.model.long_skip else "deep_cache"
  config.sample.cache.k = 99  # more blocks than the model has
  with pytest.raises(ConfigError, match="sample.cache.k"):
    check_config(config, num_devices=1)


@pytest.mark.slow
def test_cli_trains_and_samples_a_scanned_model_with_a_cache(tmp_path):
  """The issue's repro through the CLI, with FORA (the policy that reads inside blocks)."""
  import json
  import os
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  args = ["--config=configs/digits_skipdit.py", "--config.model.scan_blocks=True",
          "--config.model.remat=full", "--config.model.depth=4",
          "--config.model.hidden_size=32", "--config.model.num_heads=2",
          "--config.train.batch_size=32", "--config.train.num_steps=4",
          "--config.train.warmup_steps=2", "--config.train.log_every=2",
          "--config.train.ckpt_every=4", "--config.train.sample_every=4",
          "--config.sample.num_steps=4", "--config.sample.num_per_class=2",
          "--config.sample.grid_per_class=0", "--config.sample.batch_size=20",
          "--config.sample.cache.policy=fora", f"--workdir={tmp_path / 'wd'}"]
  p = subprocess.run([sys.executable, "-m", "skipdit_jax.main", *args], cwd=root,
                     env=dict(os.environ, JAX_PLATFORMS="cpu"), capture_output=True,
                     text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  out = json.loads(p.stdout.strip().splitlines()[-1])
  assert out["cache_policy"] == "fora"
  assert out["cache_speedup"] > 0 and out["cache_ideal_speedup"] > 1
  samples = np.load(out["samples_cached_file"])["images"]
  assert samples.shape[0] == 20 and np.all(np.isfinite(samples))
