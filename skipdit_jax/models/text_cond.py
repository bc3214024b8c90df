"""Text conditioning: what `y` is for a text model, and the layers that read it.

`model.cond` selects the condition (shared/docs/VIDEO.md §2, §2.3, §7):
  "class"        y (N,) int labels (LabelEmbedder; the default)
  "text_pooled"  y["pooled"] (N, C_txt) sentence vector -> Linear -> added to c, as
                 class-to-video Latte's `extras == 78` path; c stays an (N, D) array.
                 `pooled_projection="mlp"`: Linear-SiLU-Linear instead (the shape of
                 SDXL's pooled-text embedding), so the condition can be nonlinear in the
                 sentence vector
  "text_tokens"  y["tokens"] (N, L, C_txt) + y["mask"] (N, L) -> caption projection
                 (Linear-GELU(tanh)-Linear) -> cross-attention keys/values, with
                 adaLN-single for the timestep, as the official Latte-T2V
                 (models/latte_t2v.py); c is a `TextCond` tuple

A text condition is a dict of arrays, batch leading, that carries its own null: the
empty caption's embedding (`text.embeddings` `null.*`) broadcast to N rows under
"null_tokens" / "null_mask" / "null_pooled" (`caption_condition` builds it). Caption
dropout in training (rate `class_dropout_prob`) and CFG's `force_drop_ids` select the
null rows, so the sampler doubles the batch with a plain tree concatenation and nothing
outside the model needs the null.
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from skipdit_jax.models.layers import (Dtype, LabelEmbedder, TimestepEmbedder, dense,
                                       normal002, zeros)

CONDS = ("class", "text_pooled", "text_tokens")
POOLED_PROJECTIONS = ("linear", "mlp")
KEYS = {"text_pooled": ("pooled", "null_pooled"),
        "text_tokens": ("tokens", "mask", "null_tokens", "null_mask")}


class TextCond(NamedTuple):
  """c of a "text_tokens" model: t (N, D) the embedded timestep (final layer), t6 (N, 6D)
  the shared adaLN-single modulation, context (N, L, D) projected caption tokens,
  mask (N, L) bool (True on real tokens)."""
  t: jax.Array
  t6: jax.Array
  context: jax.Array
  mask: jax.Array


def caption_condition(*, tokens: Optional[Any] = None, mask: Optional[Any] = None,
                      pooled: Optional[Any] = None, null_tokens: Optional[Any] = None,
                      null_mask: Optional[Any] = None,
                      null_pooled: Optional[Any] = None) -> dict[str, jax.Array]:
  """`y` for a text model from caption embeddings (e.g. `text.embeddings.TextEmbeddings`
  rows): tokens (N, L, C), mask (N, L), pooled (N, P); the null (the empty caption) as
  one row (L, C) / (L,) / (P,) or already N rows. Give the token pair, the pooled pair,
  or both (a model reads only what its `cond` needs)."""
  y: dict[str, jax.Array] = {}
  if tokens is not None:
    if mask is None or null_tokens is None or null_mask is None:
      raise ValueError("a token condition needs tokens, mask, null_tokens and null_mask "
                       "(the null = the empty caption's embedding, text.embeddings null.*)")
    tokens = jnp.asarray(tokens)
    n = tokens.shape[0]
    y["tokens"], y["mask"] = tokens, jnp.asarray(mask).astype(bool)
    y["null_tokens"] = _rows(jnp.asarray(null_tokens, tokens.dtype), n, tokens.ndim)
    y["null_mask"] = _rows(jnp.asarray(null_mask).astype(bool), n, 2)
  if pooled is not None:
    if null_pooled is None:
      raise ValueError("a pooled condition needs null_pooled (the empty caption's pooled "
                       "embedding, text.embeddings null.pooled)")
    pooled = jnp.asarray(pooled)
    y["pooled"] = pooled
    y["null_pooled"] = _rows(jnp.asarray(null_pooled, pooled.dtype), pooled.shape[0], 2)
  if not y:
    raise ValueError("caption_condition needs tokens (+ mask) or pooled embeddings")
  check_condition(y, "text_tokens" if "tokens" in y else "text_pooled")
  return y


def _rows(a: jax.Array, n: int, ndim: int) -> jax.Array:
  return jnp.broadcast_to(a, (n,) + a.shape[-(ndim - 1):]) if a.ndim == ndim - 1 else a


def batch_size(y: Any) -> int:
  """N of a condition: labels (N,) or a text dict whose arrays lead with N."""
  leaves = jax.tree_util.tree_leaves(y)
  if not leaves:
    raise ValueError("the condition y is empty")
  return int(np.shape(leaves[0])[0])


def check_condition(y: Any, cond: str, caption_channels: Optional[int] = None) -> None:
  """A clear error for a `y` that does not fit `model.cond` (shapes only; no compute)."""
  if cond == "class":
    if isinstance(y, Mapping):
      raise ValueError(f"model.cond='class' takes (N,) int labels, got a dict with keys "
                       f"{sorted(y)}: set model.cond='text_tokens' or 'text_pooled' for "
                       "captions")
    return
  if not isinstance(y, Mapping):
    raise ValueError(f"model.cond={cond!r} takes a caption dict (text_cond."
                     f"caption_condition), got {type(y).__name__} "
                     f"{getattr(y, 'shape', '')}: class labels need model.cond='class'")
  missing = [k for k in KEYS[cond] if k not in y]
  if missing:
    raise ValueError(f"model.cond={cond!r} needs condition keys {list(KEYS[cond])}; "
                     f"missing {missing} (build y with text_cond.caption_condition)")
  n = np.shape(y[KEYS[cond][0]])[0]
  for k in KEYS[cond]:
    if np.shape(y[k])[0] != n:
      raise ValueError(f"condition {k!r} has batch {np.shape(y[k])[0]}, {KEYS[cond][0]!r} "
                       f"has {n}")
  data, null = (y["tokens"], y["null_tokens"]) if cond == "text_tokens" else (
      y["pooled"], y["null_pooled"])
  if np.shape(data) != np.shape(null):
    raise ValueError(f"the null condition has shape {np.shape(null)}, the captions "
                     f"{np.shape(data)}: encode the empty caption with the same encoder and "
                     "max tokens")
  if cond == "text_tokens" and np.shape(y["mask"]) != np.shape(data)[:2]:
    raise ValueError(f"mask has shape {np.shape(y['mask'])}, tokens {np.shape(data)}: "
                     "the mask is (N, L)")
  if caption_channels is not None and np.shape(data)[-1] != caption_channels:
    raise ValueError(f"captions are {np.shape(data)[-1]}-d but model.caption_channels="
                     f"{caption_channels}: set it to the encoder's width (MiniLM 384, "
                     "T5-XXL 4096)")


def validate(m: Any) -> None:
  """Field checks for `cond` / `caption_channels` (called from the models' validators)."""
  cond = getattr(m, "cond", "class")
  if cond not in CONDS:
    raise ValueError(f"model.cond={cond!r} is not one of {list(CONDS)}")
  proj = getattr(m, "pooled_projection", "linear")
  if proj not in POOLED_PROJECTIONS:
    raise ValueError(f"model.pooled_projection={proj!r} is not one of "
                     f"{list(POOLED_PROJECTIONS)}")
  if proj != "linear" and cond != "text_pooled":
    raise ValueError(f"model.pooled_projection={proj!r} projects pooled captions: it needs "
                     f"model.cond='text_pooled', got {cond!r} (leave it 'linear')")
  if cond != "class" and m.caption_channels < 1:
    raise ValueError(f"model.caption_channels={m.caption_channels} must be >= 1 (the "
                     "caption encoder's width: MiniLM 384, T5-XXL 4096)")


def drop_mask(module: nn.Module, n: int, prob: float, train: bool,
              force_drop_ids: Optional[jax.Array]) -> Optional[jax.Array]:
  """(N,) bool: rows that take the null caption (training dropout | CFG's null half)."""
  drop = None
  if train and prob > 0:
    drop = jax.random.uniform(module.make_rng("dropout"), (n,)) < prob
  if force_drop_ids is not None:
    force = jnp.asarray(force_drop_ids).astype(bool)
    drop = force if drop is None else drop | force
  return drop


def select(drop: Optional[jax.Array], data: jax.Array, null: jax.Array) -> jax.Array:
  """Rows of `null` where `drop`, else `data` (any rank, batch leading)."""
  if drop is None:
    return data
  return jnp.where(drop.reshape((-1,) + (1,) * (data.ndim - 1)), null, data)


class PooledTextEmbedder(nn.Module):
  """y["pooled"] (N, C_txt) -> (N, D) by one Linear (`projection="mlp"`: Linear `fc1`,
  SiLU, Linear `fc2`); the null caption replaces dropped rows. Same call as
  `LabelEmbedder`, so c = t_emb + this is unchanged downstream."""
  caption_channels: int
  hidden_size: int
  dropout_prob: float
  dtype: Dtype = jnp.float32
  projection: str = "linear"

  @nn.compact
  def __call__(self, y: Mapping[str, jax.Array], train: bool = False,
               force_drop_ids: Optional[jax.Array] = None) -> jax.Array:
    check_condition(y, "text_pooled", self.caption_channels)
    drop = drop_mask(self, y["pooled"].shape[0], self.dropout_prob, train, force_drop_ids)
    pooled = select(drop, y["pooled"], y["null_pooled"]).astype(self.dtype)
    if self.projection == "linear":
      return dense(self.hidden_size, ("caption", "embed"), dtype=self.dtype,
                   kernel_init=normal002, name="proj")(pooled)
    h = dense(self.hidden_size, ("caption", "embed"), dtype=self.dtype,
              kernel_init=normal002, name="fc1")(pooled)
    return dense(self.hidden_size, ("embed_in", "embed"), dtype=self.dtype,
                 kernel_init=normal002, name="fc2")(nn.silu(h))


def condition_embedder(m: Any, dt: Dtype) -> nn.Module:
  """The `y_embedder` of a "class" or "text_pooled" model."""
  if m.cond == "text_pooled":
    return PooledTextEmbedder(m.caption_channels, m.hidden_size, m.class_dropout_prob, dt,
                              getattr(m, "pooled_projection", "linear"))
  if m.cond == "class":
    return LabelEmbedder(m.num_classes, m.hidden_size, m.class_dropout_prob, dt)
  raise ValueError(f"model.cond={m.cond!r} needs the cross-attention model: build it with "
                   "models.create(name, cond='text_tokens') (models/latte_t2v.py)")


def has_condition(m: Any) -> bool:
  """Whether the model embeds a condition at all (an unconditional Latte does not)."""
  return m.cond != "class" or m.num_classes > 0


# --- the T2V pieces (PixArt-α / diffusers naming, VIDEO.md §2.1) -----------------------------
class CaptionProjection(nn.Module):
  """(N, L, C_txt) -> (N, L, D): linear_1, GELU(tanh), linear_2."""
  hidden_size: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = dense(self.hidden_size, ("caption", "embed"), dtype=self.dtype,
              kernel_init=normal002, name="linear_1")(x.astype(self.dtype))
    h = nn.gelu(h, approximate=True)
    return dense(self.hidden_size, ("embed_in", "embed"), dtype=self.dtype,
                 kernel_init=normal002, name="linear_2")(h)


class AdaLNSingle(nn.Module):
  """t (N,) -> (embedded t (N, D), shared modulation (N, 6D) = Linear(SiLU(t_emb)))."""
  hidden_size: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    emb = TimestepEmbedder(self.hidden_size, self.dtype, name="t_embedder")(t)
    t6 = dense(6 * self.hidden_size, ("embed", "modulation"), dtype=self.dtype,
               kernel_init=normal002, name="linear")(nn.silu(emb))
    return emb, t6


class MHA(nn.Module):
  """Multi-head attention with separate to_q / to_k / to_v / to_out (all with bias).

  x (N, ..., T, D) attends over T; with `context` (N, L, D) and `mask` (N, L) it is
  cross-attention: every query of sample n (all of x's middle axes; queries do not
  interact, so folding them is exact) attends to n's caption tokens. Masked keys get
  the official additive -10000 bias."""
  hidden_size: int
  num_heads: int
  dtype: Dtype = jnp.float32
  zero_out: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, context: Optional[jax.Array] = None,
               mask: Optional[jax.Array] = None) -> jax.Array:
    d, nh = self.hidden_size, self.num_heads
    hd = d // nh
    shape = x.shape
    if context is None:
      xq = x.reshape(-1, shape[-2], d)
      kv = xq
    else:
      xq = x.reshape(shape[0], -1, d)
      kv = context.astype(self.dtype)
    lin = lambda name, init=None: dense(d, ("embed", "heads") if name != "to_out" else
                                        ("heads", "embed"), dtype=self.dtype, name=name,
                                        **({} if init is None else {"kernel_init": init}))
    q = lin("to_q")(xq).reshape(xq.shape[0], xq.shape[1], nh, hd)
    k = lin("to_k")(kv).reshape(kv.shape[0], kv.shape[1], nh, hd)
    v = lin("to_v")(kv).reshape(kv.shape[0], kv.shape[1], nh, hd)
    logits = jnp.einsum("nqhd,nkhd->nhqk", q, k).astype(jnp.float32) * hd ** -0.5
    if mask is not None:
      logits = logits + jnp.where(mask, 0.0, -10000.0)[:, None, None, :].astype(jnp.float32)
    probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
    out = jnp.einsum("nhqk,nkhd->nqhd", probs, v).reshape(xq.shape)
    out = lin("to_out", zeros if self.zero_out else None)(out)
    return out.reshape(shape)


def dummy_condition(m: Any, batch: int = 1, num_tokens: int = 1) -> Any:
  """A zero `y` for `m`'s cond (initialisation, shape tracing): labels or a caption dict."""
  cond = getattr(m, "cond", "class")
  if cond == "class":
    return jnp.zeros((batch,), jnp.int32)
  if cond == "text_pooled":
    z = jnp.zeros((batch, m.caption_channels), jnp.float32)
    return {"pooled": z, "null_pooled": z}
  z = jnp.zeros((batch, num_tokens, m.caption_channels), jnp.float32)
  mask = jnp.ones((batch, num_tokens), bool)
  return {"tokens": z, "mask": mask, "null_tokens": z, "null_mask": mask}
