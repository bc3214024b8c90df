"""The DiT block (adaLN-Zero), the final layer, and the Skip-DiT long-skip fusion."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from skipdit_jax.models import attention as attn
from skipdit_jax.models.layers import (HEADS, MLP_HIDDEN, TOKENS, apply_2d, constrain, dense,
                                       layer_norm, materialize_grad,
                                       modulate, per_sample, torch_default_bias,
                                       torch_default_uniform, zeros, Dtype)


class Attention(nn.Module):
  """Multi-head self-attention with a fused qkv projection ([q; k; v], heads contiguous).

  x: (N, *, T, D) -> (N, *, T, D): attention over the second-to-last axis; any leading
  axes are one batch. `attention` picks the kernel (models/attention.py); the logits and
  softmax are float32 whatever `dtype`.
  """
  hidden_size: int
  num_heads: int
  dtype: Dtype = jnp.float32
  attention: str = "xla"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    *lead, t, d = x.shape
    hd = d // self.num_heads
    attn.check_available(self.attention, jnp.dtype(self.dtype).name, hd)
    qkv = apply_2d(dense(3 * d, ("embed", "heads"), dtype=self.dtype, name="qkv"), x)
    q, k, v = jnp.split(qkv.reshape(-1, t, 3, self.num_heads, hd), 3, axis=2)
    q, k, v = (constrain(a[:, :, 0], HEADS) for a in (q, k, v))  # (B, T, H, hd)
    out = constrain(attn.dot_product_attention(q, k, v, self.attention), HEADS)
    out = out.reshape(*lead, t, d)
    return apply_2d(dense(d, ("heads", "embed"), dtype=self.dtype, name="proj"), out)


class Mlp(nn.Module):
  """D -> mlp_ratio*D -> GELU(tanh) -> D."""
  hidden_size: int
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = apply_2d(dense(int(self.hidden_size * self.mlp_ratio), ("embed", "mlp"),
                       dtype=self.dtype, name="fc1"), x)
    h = nn.gelu(constrain(h, MLP_HIDDEN), approximate=True)
    return apply_2d(dense(self.hidden_size, ("mlp", "embed"), dtype=self.dtype, name="fc2"), h)


class DiTBlock(nn.Module):
  """adaLN-Zero transformer block: x (N, ..., T, D), c (N, D) -> x's shape; attention over
  T, one modulation per sample."""
  hidden_size: int
  num_heads: int
  mlp_ratio: float = 4.0
  dtype: Dtype = jnp.float32
  attention: str = "xla"

  def setup(self):
    self.attn = Attention(self.hidden_size, self.num_heads, self.dtype,
                          attention=self.attention)
    self.mlp = Mlp(self.hidden_size, self.mlp_ratio, self.dtype)
    self.adaLN_modulation = dense(6 * self.hidden_size, ("embed", "modulation"),
                                  dtype=self.dtype, kernel_init=zeros)

  def modulation(self, c: jax.Array) -> tuple[jax.Array, ...]:
    """The six (N,D) chunks: shift/scale/gate for attention, then for the MLP."""
    return tuple(jnp.split(self.adaLN_modulation(nn.silu(c)), 6, axis=-1))

  def attn_branch(self, x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """The attention output before its gate (what FORA-style caches reuse)."""
    return self.attn(modulate(layer_norm(x), shift, scale))

  def mlp_branch(self, x: jax.Array, shift: jax.Array, scale: jax.Array) -> jax.Array:
    """The MLP output before its gate."""
    return self.mlp(modulate(layer_norm(x), shift, scale))

  def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
    s_msa, sc_msa, g_msa, s_mlp, sc_mlp, g_mlp = self.modulation(c)
    x = materialize_grad(constrain(x, TOKENS))
    x = materialize_grad(x + per_sample(g_msa, x) * self.attn_branch(x, s_msa, sc_msa))
    return constrain(x + per_sample(g_mlp, x) * self.mlp_branch(x, s_mlp, sc_mlp), TOKENS)


class SkipFusion(nn.Module):
  """Skip-DiT long-skip fusion: Linear_{2D->D}(LayerNorm_{2D}(concat[x, skip])).

  The LayerNorm (learned scale and bias) always runs in float32; the Linear uses PyTorch's
  default initialisation, as the official code leaves it.
  """
  hidden_size: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, skip: jax.Array) -> jax.Array:
    h = jnp.concatenate([x, skip], axis=-1).astype(jnp.float32)
    h = nn.LayerNorm(
        epsilon=1e-6, dtype=jnp.float32, param_dtype=jnp.float32,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), ("skip_in",)),
        bias_init=nn.with_logical_partitioning(zeros, ("skip_in",)), name="norm")(h)
    return dense(self.hidden_size, ("skip_in", "embed"), dtype=self.dtype,
                 kernel_init=torch_default_uniform,
                 bias_init=torch_default_bias(2 * self.hidden_size), name="linear")(
                     h.astype(self.dtype))


class FinalLayer(nn.Module):
  """adaLN-modulated LayerNorm then Linear(D -> p*p*C_out); zero-initialised."""
  hidden_size: int
  out_features: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, c: jax.Array) -> jax.Array:
    mod = dense(2 * self.hidden_size, ("embed", "modulation"), dtype=self.dtype,
                kernel_init=zeros, name="adaLN_modulation")(nn.silu(c))
    shift, scale = jnp.split(mod, 2, axis=-1)
    x = modulate(layer_norm(x), shift, scale)
    return dense(self.out_features, ("embed", None), dtype=self.dtype, kernel_init=zeros,
                 name="linear")(x)
