"""Cache policies: what a full step stores and what a cached step recomputes.

Each policy is a frozen (hashable) dataclass whose methods run *inside*
`model.apply(..., method=...)`, composed from the model's staged forward
(`embed`, `run_blocks`, `head`), so every policy uses the same model code.

- `entry(mod, x, t, y, drop) -> (out, entry)`: one full forward that also returns
  the features the policy keeps; `update(cache, entry)` folds them into the cache
  (a history for the forecaster, a plain replacement otherwise).
- `cached_method(variant)` returns `fn(mod, x, t, y, drop, cache, i, aux) -> out`,
  the cheap path; `aux` is a per-step table built on the host by `aux_table`.

Shapes: x (B, H, W, C) with B = 2N under guidance (both halves share one cache),
hidden states (B, T, D).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from skipdit_jax.models import scan

POLICIES = ("none", "skip_cache", "deep_cache", "fora", "delta_dit", "skip_cache_forecast")


def split_pass(mod, x, t, y, drop, points):
  """Full forward that records (h, skips) entering each block index in `points`.

  Splitting `run_blocks` at any points gives the model's own forward (the model
  guarantees it), so full steps of every policy equal the plain sampler's.
  Returns (out (B, H, W, C_out), {point: (h, skips)}, c).
  """
  h, c = mod.embed(x, t, y, force_drop_ids=drop)
  states, skips, start = {0: (h, ())}, (), 0
  for p in sorted(set(points) | {mod.num_units}):
    h, skips = mod.run_blocks(h, c, skips, start, p)
    states[p], start = (h, skips), p
  return mod.head(h, c), states, c


@dataclasses.dataclass(frozen=True)
class NoCache:
  """Every step full; the plain sampler."""
  name = "none"

  def entry(self, mod, x, t, y, drop):
    return mod(x, t, y, force_drop_ids=drop), ()

  def update(self, cache, entry):
    return entry

  def empty(self, entry_shapes):
    return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), entry_shapes)

  def full(self, mod, x, t, y, drop, cache):
    out, entry = self.entry(mod, x, t, y, drop)
    return out, self.update(cache, entry)

  def aux_table(self, plan) -> np.ndarray:
    return np.zeros((plan.num_steps, 1), np.float32)

  def cached_method(self, variant: str) -> Callable:
    raise ValueError(f"policy {self.name!r} has no cached step ({variant!r})")


@dataclasses.dataclass(frozen=True)
class SkipCache(NoCache):
  """REFERENCE §4: keep the feature entering deep block L-k; recompute blocks 0..k-1
  (for their skips) and L-k..L-1. Cost 2k of L blocks."""
  depth: int = 0
  k: int = 1
  name = "skip_cache"

  def entry(self, mod, x, t, y, drop):
    out, states, _ = split_pass(mod, x, t, y, drop, [self.depth - self.k])
    return out, states[self.depth - self.k][0]

  def feature(self, cache, i, aux):
    return cache

  def cached_method(self, variant: str) -> Callable:
    def cached(mod, x, t, y, drop, cache, i, aux):
      h, c = mod.embed(x, t, y, force_drop_ids=drop)
      _, skips = mod.run_blocks(h, c, (), 0, self.k)
      h, _ = mod.run_blocks(self.feature(cache, i, aux).astype(h.dtype), c, skips,
                            self.depth - self.k, self.depth)
      return mod.head(h, c)
    return cached


@dataclasses.dataclass(frozen=True)
class SkipCacheForecast(SkipCache):
  """Ours: Skip-Cache whose deep feature is extrapolated, not reused.

  The cache is a history of the last `order + 1` full-step deep features (most
  recent first); a cached step uses sum_j w_j h_j with Lagrange extrapolation
  weights in the timestep, computed on the host per step (`aux_table`), which is
  the Newton / finite-difference Taylor forecast of TaylorSeer. Steps with a
  shorter history use the highest order it allows (order 0 = plain reuse).
  """
  order: int = 2
  name = "skip_cache_forecast"

  def update(self, cache, entry):
    return jnp.concatenate([entry[None].astype(cache.dtype), cache[:-1]], axis=0)

  def empty(self, entry_shapes):
    return jnp.zeros((self.order + 1,) + entry_shapes.shape, jnp.float32)

  def feature(self, cache, i, aux):
    return jnp.tensordot(aux[i], cache, axes=1)

  def aux_table(self, plan) -> np.ndarray:
    return forecast_weights(plan.timesteps, plan.actions, self.order)


def forecast_weights(timesteps, actions, order: int) -> np.ndarray:
  """(S, order+1) float32 Lagrange weights extrapolating the full-step history to
  each cached step's timestep; rows of full steps are zero. float64 on the host."""
  w = np.zeros((len(actions), order + 1), np.float64)
  hist: list[float] = []  # timesteps of past full steps, most recent first
  for s, (a, t) in enumerate(zip(actions, timesteps)):
    if a == "full":
      hist = ([float(t)] + hist)[: order + 1]
      continue
    nodes = hist[: order + 1]
    for j, tj in enumerate(nodes):
      w[s, j] = np.prod([(t - tm) / (tj - tm) for m, tm in enumerate(nodes) if m != j])
  return w.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class DeepCache(SkipCache):
  """DeepCache-style reuse on vanilla DiT: keep the feature entering block L-k and
  run only blocks L-k..L-1 (without long skips the first blocks cannot reach the
  output, so they are not run). Cost k of L blocks."""
  name = "deep_cache"

  def cached_method(self, variant: str) -> Callable:
    def cached(mod, x, t, y, drop, cache, i, aux):
      h, c = mod.embed(x, t, y, force_drop_ids=drop)
      h, _ = mod.run_blocks(cache.astype(h.dtype), c, (), self.depth - self.k, self.depth)
      return mod.head(h, c)
    return cached


_BLOCK = re.compile(r"blocks_(\d+)$")


@dataclasses.dataclass(frozen=True)
class Fora(NoCache):
  """FORA: reuse every block's attention and MLP outputs (before their gates);
  a cached step recomputes only the adaLN modulations, gates, residual adds (and
  the skip fusions of a Skip-DiT). Branch outputs are captured and replaced by
  intercepting the blocks' `attn_branch` / `mlp_branch`, so the model code runs as is
  (on a scanned or rematerialised model, with its blocks unrolled: `_per_block_call`)."""
  depth: int = 0
  name = "fora"

  def entry(self, mod, x, t, y, drop):
    seen: dict[tuple[str, int], jax.Array] = {}

    def record(next_fun, args, kwargs, ctx):
      out = next_fun(*args, **kwargs)
      m = _BLOCK.search(ctx.module.name or "")
      if ctx.method_name in ("attn_branch", "mlp_branch") and m:
        seen[(ctx.method_name, int(m.group(1)))] = out
      return out

    with nn.intercept_methods(record):
      out = _per_block_call(mod, x, t, y, drop)
    # every block the model ran, by the index in its name (a video model has 2 per unit)
    stack = lambda kind: jnp.stack([seen[key] for key in sorted(seen) if key[0] == kind])
    return out, (stack("attn_branch"), stack("mlp_branch"))

  def cached_method(self, variant: str) -> Callable:
    def cached(mod, x, t, y, drop, cache, i, aux):
      def replay(next_fun, args, kwargs, ctx):
        m = _BLOCK.search(ctx.module.name or "")
        if ctx.method_name in ("attn_branch", "mlp_branch") and m:
          kind = 0 if ctx.method_name == "attn_branch" else 1
          return cache[kind][int(m.group(1))].astype(args[0].dtype)
        return next_fun(*args, **kwargs)

      with nn.intercept_methods(replay):
        return _per_block_call(mod, x, t, y, drop)
    return cached


def _per_block_call(mod, x, t, y, drop):
  """`mod(x, t, y)` with the blocks run one by one as `blocks_{i}` and no remat.

  FORA reads and replaces values inside each block; inside a `lax.scan` body or a
  `jax.checkpoint` trace those are tracers of that inner trace and cannot leave it
  (UnexpectedTracerError). Without a gradient remat changes nothing, and the stacked
  weights unstack inside the step (static slices), so this is the same model on the same
  parameters, and the arguments keep the training layout.
  """
  if not (getattr(mod, "scan_blocks", False) or getattr(mod, "remat", "none") != "none"):
    return mod(x, t, y, force_drop_ids=drop)
  params = mod.variables["params"]
  if mod.scan_blocks:
    params = scan.unstack_params(params)
  plain = mod.clone(parent=None, scan_blocks=False, remat="none")
  return plain.apply({"params": params}, x, t, y, force_drop_ids=drop)


@dataclasses.dataclass(frozen=True)
class DeltaDit(NoCache):
  """Δ-DiT: reuse the residual delta (output - input) of m consecutive blocks.
  Early steps (t >= switch_t) skip the rear blocks L-m..L-1, later steps the front
  blocks 0..m-1 (whose skip-stack state is stored too). Cost L-m of L blocks."""
  depth: int = 0
  m: int = 1
  name = "delta_dit"

  def entry(self, mod, x, t, y, drop):
    lo, hi = self.m, self.depth - self.m
    out, st, _ = split_pass(mod, x, t, y, drop, [lo, hi])
    front = (st[lo][0] - st[0][0], st[lo][1])
    rear = st[self.depth][0] - st[hi][0]
    return out, {"front": front, "rear": rear}

  def cached_method(self, variant: str) -> Callable:
    if variant not in ("front", "rear"):
      raise ValueError(f"delta_dit has cached variants 'front' and 'rear', not {variant!r}")

    def cached(mod, x, t, y, drop, cache, i, aux):
      h, c = mod.embed(x, t, y, force_drop_ids=drop)
      if variant == "front":
        delta, skips = cache["front"]
        h, _ = mod.run_blocks(h + delta.astype(h.dtype), c, skips, self.m, self.depth)
      else:
        h, _ = mod.run_blocks(h, c, (), 0, self.depth - self.m)
        h = h + cache["rear"].astype(h.dtype)
      return mod.head(h, c)
    return cached


def from_plan(plan: Any) -> NoCache:
  """The policy object a validated `CachePlan` asks for."""
  L = plan.depth
  return {
      "none": lambda: NoCache(),
      "skip_cache": lambda: SkipCache(depth=L, k=plan.k),
      "skip_cache_forecast": lambda: SkipCacheForecast(depth=L, k=plan.k,
                                                       order=plan.forecast_order),
      "deep_cache": lambda: DeepCache(depth=L, k=plan.k),
      "fora": lambda: Fora(depth=L),
      "delta_dit": lambda: DeltaDit(depth=L, m=plan.delta_blocks),
  }[plan.policy]()
