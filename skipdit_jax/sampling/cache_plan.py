"""The static cache plan: which sampling step is full and which is cached.

A plan is plain Python, built and validated before `jit`. Steps are listed in
execution order (respaced index S-1 down to 0), each with the original timestep
the model sees. Rule: a step is full when it lies outside the timestep window
[lo, hi), or when the interval counter says so, or when it comes after the first step
with t < tail_t; every other step is cached. The first step is always full.

Interval counters (`counter`): "since_full" (default) makes a step full when `interval`
steps have passed since the last full step; "global" when its index s (0 = the first
step) is a multiple of `interval`, whatever forced full steps came before: the official
class-to-video Latte's call counter `cache_cont % N` (shared/docs/VIDEO.md §1.5), which
with its t >= 900 full steps gives another phase than "since_full" for N >= 3.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional, Sequence

import numpy as np

from skipdit_jax.sampling.policies import POLICIES

FULL = "full"
COUNTERS = ("since_full", "global")


@dataclasses.dataclass(frozen=True)
class CachePlan:
  """A validated per-step plan. Build it with `CachePlan.create`.

  actions[s]: "full", "cached", or for delta_dit "front" / "rear" (which block
  range the cached step skips); cost[s]: transformer blocks that step runs.
  """
  policy: str
  depth: int
  interval: int
  k: int
  window: tuple[int, int]
  timesteps: tuple[int, ...]
  actions: tuple[str, ...]
  cost: tuple[int, ...]
  forecast_order: int = 2
  delta_blocks: int = 0
  delta_switch_t: int = 500
  counter: str = "since_full"
  tail_t: int = 0

  @classmethod
  def create(cls, policy: str, *, timesteps: Sequence[int], depth: int, long_skip: bool,
             interval: int = 1, k: int = 1, window: Sequence[int] = (0, 1000),
             forecast_order: int = 2, delta_blocks: int = 0,
             delta_switch_t: int = 500, counter: str = "since_full",
             tail_t: int = 0) -> "CachePlan":
    """Validates every field (errors name the config field) and lays out the steps.

    timesteps: original timesteps in execution order (high noise first).
    window: (lo, hi), cache only at steps with lo <= t < hi.
    counter: "since_full" or "global" (see the module docstring).
    tail_t: every step after the first one with t < tail_t is full (the official caches
      drop their feature there: Latte t < 50, so 50; DiT t <= 20, so 21); 0 = off.
    delta_blocks: Δ-DiT range size m; 0 picks L - 2k (the cost of Skip-Cache).
    """
    if policy not in POLICIES:
      raise ValueError(f"sample.cache.policy={policy!r} is not one of {list(POLICIES)}.")
    _check_int("sample.cache.interval", interval, 1, "a full step every N steps; 1 = no caching")
    _check_int("sample.num_steps", len(timesteps), 1, "at least one sampling step")
    lo, hi = _check_window(window)
    if counter not in COUNTERS:
      raise ValueError(f"sample.cache.counter={counter!r} is not one of {list(COUNTERS)} "
                       "('global' = the official Latte step counter).")
    _check_int("sample.cache.tail_t", tail_t, 0,
               "steps after the first one with t < tail_t are full; 0 = off", 1000)
    if not any(lo <= t < hi for t in timesteps) and interval > 1 and policy != "none":
      raise ValueError(f"sample.cache.window=({lo}, {hi}) contains none of the sampling "
                       f"timesteps {timesteps[0]}..{timesteps[-1]}, so nothing would be "
                       "cached; widen the window or set sample.cache.interval=1.")
    half = depth // 2
    if policy in ("skip_cache", "skip_cache_forecast"):
      if not long_skip:
        raise ValueError(f"sample.cache.policy={policy!r} needs a model with long skips "
                         "(model.long_skip=True); for vanilla DiT use 'deep_cache'.")
      _check_int("sample.cache.k", k, 1, f"recompute k < depth/2 = {half} blocks", half - 1)
    if policy == "deep_cache":
      if long_skip:
        raise ValueError("sample.cache.policy='deep_cache' is the vanilla-DiT baseline; "
                         "with model.long_skip=True use 'skip_cache'.")
      _check_int("sample.cache.k", k, 1, f"run the last k < depth={depth} blocks", depth - 1)
    if policy == "skip_cache_forecast":
      _check_int("sample.cache.forecast_order", forecast_order, 0, "0, 1 or 2", 2)
    m = 0
    if policy == "delta_dit":
      m = delta_blocks or depth - 2 * k
      _check_int("sample.cache.delta_blocks", m, 1,
                 f"reuse 1..{depth - 1} blocks (0 = depth - 2k)", depth - 1)
    actions, since, tail = [], 0, False
    for s, t in enumerate(timesteps):
      due = s % interval == 0 if counter == "global" else since + 1 >= interval
      if s == 0 or not lo <= t < hi or due or tail or policy == "none":
        actions.append(FULL)
        since = 0
      else:
        since += 1
        actions.append(("rear" if t >= delta_switch_t else "front")
                       if policy == "delta_dit" else "cached")
      tail = tail or t < tail_t
    cached_cost = {"skip_cache": 2 * k, "skip_cache_forecast": 2 * k, "deep_cache": k,
                   "fora": 0, "delta_dit": depth - m}.get(policy, depth)
    cost = tuple(depth if a == FULL else cached_cost for a in actions)
    return cls(policy=policy, depth=depth, interval=interval, k=k, window=(lo, hi),
               timesteps=tuple(int(t) for t in timesteps), actions=tuple(actions),
               cost=cost, forecast_order=forecast_order, delta_blocks=m,
               delta_switch_t=delta_switch_t, counter=counter, tail_t=int(tail_t))

  @property
  def num_steps(self) -> int:
    return len(self.actions)

  @property
  def num_cached(self) -> int:
    return sum(a != FULL for a in self.actions)

  @property
  def ideal_speedup(self) -> float:
    """Block-count speedup over running every block at every step: S·L / Σ cost.
    For Skip-Cache inside a full window this is N·L / (L + (N-1)·2k)."""
    total = sum(self.cost)
    return float("inf") if total == 0 else self.num_steps * self.depth / total

  @property
  def variants(self) -> tuple[str, ...]:
    """The distinct cached-step programs this plan needs (one jit each)."""
    return tuple(sorted({a for a in self.actions if a != FULL}))


def _check_int(field: str, value: Any, lo: int, meaning: str, hi: Optional[int] = None):
  ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
  if not ok or value < lo or (hi is not None and value > hi):
    bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
    raise ValueError(f"{field}={value!r} must be an int {bound} ({meaning}).")


def _check_window(window: Sequence[int]) -> tuple[int, int]:
  try:
    lo, hi = (int(v) for v in window)
  except (TypeError, ValueError):
    raise ValueError(f"sample.cache.window={window!r} must be two timesteps (lo, hi): "
                     "cache only while lo <= t < hi, e.g. (50, 700).") from None
  if lo < 0 or hi <= lo:
    raise ValueError(f"sample.cache.window=({lo}, {hi}) is empty or inverted: it needs "
                     "0 <= lo < hi, e.g. (50, 700); (0, 1000) caches everywhere.")
  return lo, hi


def describe(plan: CachePlan) -> str:
  """A few human lines: policy, schedule, the step pattern, block counts, ideal speedup."""
  marks = "".join("F" if a == FULL else a[0] for a in plan.actions)
  tail = f" tail t<{plan.tail_t}" if plan.tail_t else ""
  lines = [f"cache plan: policy={plan.policy} interval N={plan.interval} ({plan.counter}) "
           f"k={plan.k} window=[{plan.window[0]}, {plan.window[1]}){tail} "
           f"steps={plan.num_steps} "
           f"(full {plan.num_steps - plan.num_cached}, cached {plan.num_cached})"]
  if plan.policy == "skip_cache_forecast":
    lines.append(f"  forecast order {plan.forecast_order} (finite differences in t)")
  if plan.policy == "delta_dit":
    lines.append(f"  delta over {plan.delta_blocks} blocks: rear while t >= "
                 f"{plan.delta_switch_t}, front after (f=front, r=rear)")
  lines.append(f"  steps (F=full, c/f/r=cached): {marks}")
  lines.append(f"  blocks per step: full {plan.depth}, cached "
               f"{min(plan.cost) if plan.num_cached else '-'}; "
               f"ideal speedup {plan.ideal_speedup:.3f}x")
  return "\n".join(lines)


def official_t2v(setting: str = "N2-700-50") -> dict[str, Any]:
  """The official Latte-T2V cache setting `N{gap}-{start}-{end}` (shared/docs/VIDEO.md
  §2.2) as `sample.cache` fields: Skip-Cache with k = 1 layer at each end, the call counter
  `cache_cont % N` ("global"), full while t >= start (window (0, start)), and full after
  the first step with t <= end (tail_t = end + 1). With `sample.num_steps="ddim50"` (the
  diffusers "leading" timesteps 980, 960, ..., 0) N2-700-50 gives 33 full / 17 cached
  steps, ideal 1.46x. The text configs' default."""
  try:
    gap, start, end = setting.split("-")
    if not gap.startswith("N"):
      raise ValueError
    n, lo, hi = int(gap[1:]), int(start), int(end)
  except ValueError:
    raise ValueError(f"sample.cache setting {setting!r} is not N<gap>-<start t>-<end t>, "
                     "e.g. 'N2-700-50' (the official T2V default)") from None
  return dict(policy="skip_cache", interval=n, k=1, counter="global", window=(0, lo),
              tail_t=hi + 1)
