"""model.attention: the kernel behind `Attention` against an independent float64 attention
and the previous einsum implementation; leading axes; unavailable kernels refused early."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default
from skipdit_jax import config_check, models
from skipdit_jax.errors import ConfigError
from skipdit_jax.models import attention
from skipdit_jax.models.blocks import Attention

D, H = 32, 4


def _params_and_x(shape, seed=0):
  module = Attention(D, H)
  x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
  params = module.init(jax.random.PRNGKey(seed), jnp.asarray(x))["params"]
  return module, jax.tree.map(np.asarray, nn.unbox(params)), x


def numpy_attention(params, x):
  """Multi-head attention in float64 numpy from the parameters alone."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  n, t, d = x.shape
  hd = d // H
  qkv = x.astype(np.float64) @ p["qkv"]["kernel"] + p["qkv"]["bias"]
  q, k, v = (qkv[..., i * d:(i + 1) * d].reshape(n, t, H, hd) for i in range(3))
  logits = np.einsum("nqhd,nkhd->nhqk", q, k) / np.sqrt(hd)
  logits -= logits.max(-1, keepdims=True)
  w = np.exp(logits)
  w /= w.sum(-1, keepdims=True)
  out = np.einsum("nhqk,nkhd->nqhd", w, v).reshape(n, t, d)
  return out @ p["proj"]["kernel"] + p["proj"]["bias"]


def einsum_attention(params, x):
  """The hand-written einsum + softmax that `Attention` used before model.attention."""
  n, t, d = x.shape
  hd = d // H
  qkv = x @ params["qkv"]["kernel"] + params["qkv"]["bias"]
  q, k, v = jnp.split(qkv.reshape(n, t, 3, H, hd), 3, axis=2)
  q, k, v = (a[:, :, 0] for a in (q, k, v))
  logits = jnp.einsum("nqhd,nkhd->nhqk", q, k).astype(jnp.float32) * hd ** -0.5
  probs = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum("nhqk,nkhd->nqhd", probs, v).reshape(n, t, d)
  return out @ params["proj"]["kernel"] + params["proj"]["bias"]


def test_xla_attention_matches_float64_and_the_einsum_path():
  module, params, x = _params_and_x((3, 16, D))
  got = np.asarray(jax.jit(module.apply)({"params": params}, x))
  want = numpy_attention(params, x)
  old = np.asarray(jax.jit(einsum_attention)(params, x))
  scale = np.abs(want).max()
  assert np.abs(got - want).max() <= 1e-5 * scale
  assert np.abs(old - want).max() <= 1e-5 * scale  # the reference is right
  assert np.abs(got - old).max() <= 1e-5 * scale


def test_leading_axes_are_one_batch():
  """(N, F, T, D): attention over T for each (n, f), as the (N*F, T, D) call."""
  module, params, x = _params_and_x((2, 3, 16, D), seed=1)
  got = np.asarray(module.apply({"params": params}, x))
  flat = numpy_attention(params, x.reshape(6, 16, D)).reshape(2, 3, 16, D)
  assert got.shape == (2, 3, 16, D)
  assert np.abs(got - flat).max() <= 1e-5 * np.abs(flat).max()


def test_bfloat16_attention_stays_near_float64():
  """bf16 compute: inputs/weights rounded to bf16 (rel. 2^-8), logits and softmax in
  float32; the output is within a few bf16 ulps of the float64 attention."""
  module, params, x = _params_and_x((2, 16, D), seed=2)
  got = np.asarray(Attention(D, H, jnp.bfloat16).apply({"params": params}, x), np.float64)
  want = numpy_attention(params, x)
  assert np.abs(got - want).max() <= 3e-2 * np.abs(want).max()


@pytest.mark.parametrize("name", ["cudnn", "flash"])
def test_unavailable_kernel_is_refused_before_compute(name):
  if jax.default_backend() != "cpu":
    pytest.skip("checks the CPU refusal")
  model = models.create("DiT-Tiny/2", input_size=8, in_channels=1, num_classes=10,
                        attention=name, dtype="bfloat16")
  with pytest.raises(ValueError, match=f"model.attention='{name}'.*model.attention='xla'"):
    models.init_params(model, jax.random.PRNGKey(0))  # traced, not run
  config = default.get_config()
  config.model.attention = name
  with pytest.raises(ConfigError, match=f"model.attention='{name}'"):
    config_check.check_config(config, num_devices=1)


def test_attention_field_is_validated_and_threaded():
  with pytest.raises(ValueError, match="model.attention='fast'"):
    models.create("DiT-Tiny/2", attention="fast")
  config = default.get_config()
  config.model.attention = "fast"
  with pytest.raises(ConfigError, match="model.attention='fast'"):
    config_check.check_config(config, num_devices=1)
  from skipdit_jax.train.build import build_model
  config = ml_collections.ConfigDict(default.get_config())
  assert build_model(config).attention == "xla"


def test_cudnn_rules_on_a_gpu_backend():
  """cuDNN takes 16-bit inputs and head dims that are multiples of 8 (<= 256)."""
  with pytest.raises(ValueError, match="model.dtype='float32'"):
    attention.check_available("cudnn", "float32", 72, backend="gpu")
  with pytest.raises(ValueError, match="head dim"):
    attention.check_available("cudnn", "bfloat16", 12, backend="gpu")
  attention.check_available("cudnn", "bfloat16", 72, backend="gpu")  # XL/2: accepted


def test_best_available_on_cpu_is_xla():
  if jax.default_backend() != "cpu":
    pytest.skip("CPU only")
  assert attention.best_available("bfloat16", 72) == "xla"


def test_float16_is_refused_with_the_reason():
  with pytest.raises(ValueError, match="model.dtype='float16'.*loss.*bfloat16"):
    models.create("DiT-Tiny/2", dtype="float16")
