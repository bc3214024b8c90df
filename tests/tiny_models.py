"""Tiny random DiT / Skip-DiT models for sampler tests, built without `model.init`
(XLA compiles an init's RNG program in ~10 s here; shapes come from `eval_shape`)."""
import jax
import numpy as np

from skipdit_jax import models


def random_params(model, seed: int = 0):
  """Params with the model's shapes: kernels ~ N(0, 1/fan_in), biases ~ N(0, 0.02),
  norm scales ~ 1 + N(0, 0.05). Unlike a fresh init, adaLN is not zero, so every
  block changes its input and caches have something to get wrong."""
  shapes = jax.eval_shape(lambda k: models.init_params(model, k), jax.random.key(0))
  rng = np.random.default_rng(seed)

  def leaf(path, s):
    name = jax.tree_util.keystr(path)
    if "scale" in name:
      v = 1.0 + 0.05 * rng.standard_normal(s.shape)
    elif len(s.shape) >= 2:
      v = rng.standard_normal(s.shape) / np.sqrt(np.prod(s.shape[:-1]))
    else:
      v = 0.02 * rng.standard_normal(s.shape)
    return np.asarray(v, np.float32)
  return jax.tree_util.tree_map_with_path(leaf, shapes)


def tiny(long_skip: bool = True, depth: int = 4, width: int = 32, size: int = 4,
         channels: int = 2, learn_sigma: bool = True, seed: int = 0):
  name = "SkipDiT-Tiny/2" if long_skip else "DiT-Tiny/2"
  model = models.create(name, input_size=size, in_channels=channels, num_classes=5,
                        learn_sigma=learn_sigma, depth=depth, hidden_size=width,
                        num_heads=2)
  return model, random_params(model, seed)
