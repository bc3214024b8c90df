"""Small layers of DiT: embedders, positional tables, initialisers and logical axes.

Every parameter carries logical axis names so that `skipdit_jax.parallel` can map
them to a device mesh; outside a mesh they are inert metadata (`nn.unbox`).
"""
from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Dtype = jnp.dtype

xavier = nn.initializers.xavier_uniform()
zeros = nn.initializers.zeros_init()
normal002 = nn.initializers.normal(stddev=0.02)


def torch_default_uniform(key, shape, dtype=jnp.float32):
  """PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in = shape[0]."""
  bound = 1.0 / math.sqrt(shape[0])
  return jax.random.uniform(key, shape, dtype, -bound, bound)


def torch_default_bias(fan_in: int):
  """PyTorch's nn.Linear default bias init for a layer of `fan_in` inputs."""
  bound = 1.0 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)
  return init


def dense(features: int, axes: tuple[str | None, str | None], *, dtype: Dtype,
          kernel_init=xavier, bias_init=zeros, name: str | None = None) -> nn.Dense:
  """A Dense layer (float32 params, `dtype` compute) whose kernel/bias carry logical axes."""
  return nn.Dense(
      features, dtype=dtype, param_dtype=jnp.float32,
      kernel_init=nn.with_logical_partitioning(kernel_init, axes),
      bias_init=nn.with_logical_partitioning(bias_init, (axes[1],)),
      name=name)


@jax.custom_jvp
def materialize_grad(x: jax.Array) -> jax.Array:
  """The identity, whose backward pass makes XLA compute the incoming gradient into a buffer.

  Along the residual stream, one block's input gradient is an elementwise function of the
  next block's (the dots and row reductions feed in as finished buffers), and XLA:CPU fuses
  that elementwise chain into every consumer, recomputing the gradient of all later blocks
  in each: for DiT-S/4, fusions of ~900 ops and a backward 6-9x the forward
  (bench/step_profile.py). `lax.optimization_barrier` does not stop it (XLA:CPU expands
  barriers before fusion). Here the tangent is broadcast to (2, ...) and its first entry
  taken, so the transposed (backward) program sums the cotangent with a zero pad: a
  reduction, which XLA does not duplicate into consumers. Values are unchanged (g + 0).
  """
  return x


@materialize_grad.defjvp
def _materialize_grad_jvp(primals, tangents):
  t = tangents[0]
  return primals[0], jnp.broadcast_to(t, (2,) + t.shape)[0]


def apply_2d(layer: nn.Module, x: jax.Array) -> jax.Array:
  """`layer` (a Dense) on x (..., D_in) as one (M, D_in) @ (D_in, D_out) matmul, reshaped
  back to (..., D_out). The same products as applying it to x directly; the weight
  gradient is then a plain 2-D matmul over M = prod(leading dims) rows, which XLA:CPU
  runs as one GEMM instead of a contraction over two dimensions behind transposed copies.
  """
  lead = x.shape[:-1]
  return layer(x.reshape(-1, x.shape[-1])).reshape(*lead, -1)


# Logical names of activation dimensions (parallel/rules.py maps them per preset). Outside
# `parallel.activation_rules` (no rules or no mesh) `constrain` is the identity.
TOKENS = ("activation_batch", "activation_length", "activation_embed")      # (N, T, D)
HEADS = ("activation_batch", "activation_length", "activation_heads", None)  # (B, T, H, hd)
MLP_HIDDEN = ("activation_batch", "activation_length", "activation_mlp")    # (N, T, 4D)


def constrain(x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
  """`nn.with_logical_constraint` for an activation; extra axes after the first (a video
  model's (N, F, T, D)) are unsharded."""
  names = names[:1] + (None,) * (x.ndim - len(names)) + names[1:]
  return nn.with_logical_constraint(x, names)


def layer_norm(x: jax.Array, eps: float = 1e-6) -> jax.Array:
  """LayerNorm without affine parameters, computed in float32, returned in x's dtype."""
  x32 = x.astype(jnp.float32)
  mean = x32.mean(-1, keepdims=True)
  var = jnp.square(x32 - mean).mean(-1, keepdims=True)
  return ((x32 - mean) * jax.lax.rsqrt(var + eps)).astype(x.dtype)


def per_sample(v: jax.Array, x: jax.Array) -> jax.Array:
  """A per-sample vector v (N, D) shaped to broadcast over x (N, ..., T, D)."""
  return v.reshape(v.shape[:1] + (1,) * (x.ndim - 2) + v.shape[1:])


def modulate(x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
  """adaLN modulation: x (N, ..., T, D), shift/scale (N, D): one modulation per sample
  (a video's frames and patches share it)."""
  return x * (1 + per_sample(scale, x)) + per_sample(shift, x)


def patchify(x: jax.Array, p: int) -> jax.Array:
  """(..., H, W, C) -> (..., T, p*p*C), tokens row-major, features ordered (p, p, C)."""
  *lead, h, w, c = x.shape
  x = x.reshape(*lead, h // p, p, w // p, p, c)
  x = jnp.moveaxis(x, -4, -3)  # (..., h/p, w/p, p, p, C)
  return x.reshape(*lead, (h // p) * (w // p), p * p * c)


def unpatchify(x: jax.Array, p: int, grid: int, c: int) -> jax.Array:
  """(..., T, p*p*C) -> (..., H, W, C) for a square grid of `grid` x `grid` tokens."""
  lead = x.shape[:-2]
  x = jnp.moveaxis(x.reshape(*lead, grid, grid, p, p, c), -3, -4)  # (..., g, p, g, p, C)
  return x.reshape(*lead, grid * p, grid * p, c)


def sincos_1d(dim: int, pos: np.ndarray) -> np.ndarray:
  """MAE 1-D sin-cos table: pos (M,) -> (M, dim), [sin | cos] halves."""
  omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
  out = np.einsum("m,d->md", pos.reshape(-1).astype(np.float64), omega)
  return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def sincos_2d(dim: int, grid_size: int) -> np.ndarray:
  """Fixed 2-D position table (T, dim), tokens row-major; first half encodes the column."""
  if dim % 4:
    raise ValueError(f"model.hidden_size={dim} must be divisible by 4 for the 2-D sin-cos "
                     "position embedding; choose a multiple of 4")
  rows, cols = np.meshgrid(np.arange(grid_size), np.arange(grid_size), indexing="ij")
  return np.concatenate([sincos_1d(dim // 2, cols), sincos_1d(dim // 2, rows)], axis=1)


def timestep_frequencies(t: jax.Array, dim: int = 256, max_period: float = 10000.0) -> jax.Array:
  """Sinusoidal timestep features (N, dim): [cos | sin] halves, as DiT."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None]
  return jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)


class TimestepEmbedder(nn.Module):
  """t (N,) -> (N, D): frequencies -> Linear -> SiLU -> Linear."""
  hidden_size: int
  dtype: Dtype = jnp.float32
  frequency_size: int = 256

  @nn.compact
  def __call__(self, t: jax.Array) -> jax.Array:
    h = timestep_frequencies(t, self.frequency_size).astype(self.dtype)
    h = dense(self.hidden_size, (None, "embed"), dtype=self.dtype, kernel_init=normal002,
              name="mlp_0")(h)
    h = nn.silu(h)
    return dense(self.hidden_size, ("embed_in", "embed"), dtype=self.dtype,
                 kernel_init=normal002, name="mlp_2")(h)


class LabelEmbedder(nn.Module):
  """y (N,) -> (N, D); row `num_classes` is the null class used for classifier-free guidance."""
  num_classes: int
  hidden_size: int
  dropout_prob: float
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, y: jax.Array, train: bool = False,
               force_drop_ids: jax.Array | None = None) -> jax.Array:
    use_null = self.dropout_prob > 0
    table = self.param(
        "embedding_table",
        nn.with_logical_partitioning(normal002, ("classes", "embed")),
        (self.num_classes + int(use_null), self.hidden_size), jnp.float32)
    if train and self.dropout_prob > 0:
      drop = jax.random.uniform(self.make_rng("dropout"), y.shape) < self.dropout_prob
      y = jnp.where(drop, self.num_classes, y)
    if force_drop_ids is not None:
      if not use_null:
        raise ValueError("force_drop_ids needs a null class: set model.class_dropout_prob > 0")
      y = jnp.where(force_drop_ids, self.num_classes, y)
    return jnp.take(table, y, axis=0).astype(self.dtype)
