"""The non-finite guard: a NaN/Inf loss, gradient or parameter never reaches the state.

The check runs inside the jitted step (no host sync per step): the update is computed,
then kept or dropped with a `lax.cond` over the state, as `optax.apply_if_finite` does
for an optimizer. `train.nonfinite` chooses what a bad step does:
  - "skip": the update is dropped, the step counter and rng advance (the batch is spent),
    and the drop is counted;
  - "stop": the state freezes at the last good step; the host raises `NonFiniteError`
    naming the step the next time it looks (`GuardedStep.check`, which the loop calls
    before every checkpoint save, so a bad state is never written).
"""
from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp

from skipdit_jax.train.state import TrainState

NONFINITE_MODES = ("skip", "stop")
Metrics = dict[str, jax.Array]
RawStep = Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, Metrics]]


class NonFiniteError(FloatingPointError):
  """Training met a NaN/Inf under `train.nonfinite="stop"`; `.step` names the step."""

  def __init__(self, step: int, message: str):
    super().__init__(message)
    self.step = step


@flax.struct.dataclass
class GuardState:
  """skipped () int32: bad steps dropped so far; first_bad () int32: -1 or its step."""
  skipped: jax.Array
  first_bad: jax.Array

  @classmethod
  def create(cls, skipped: int = 0, first_bad: int = -1) -> "GuardState":
    return cls(skipped=jnp.asarray(skipped, jnp.int32),
               first_bad=jnp.asarray(first_bad, jnp.int32))


def all_finite(tree: Any) -> jax.Array:
  """() bool: every element of every leaf is finite (an exact test, no norm overflow)."""
  leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
  return jnp.all(jnp.stack(leaves)) if leaves else jnp.asarray(True)


def _select(ok: jax.Array, new: Any, old: Any) -> Any:
  # lax.cond rather than a where per leaf: it passes one tree through untouched, which
  # costs no extra pass over the state and compiles ~30 % faster than ~4 selects per
  # parameter (measured on the tiny CPU model: 15.7 s vs 21.5 s).
  return jax.lax.cond(ok, lambda: new, lambda: old)


def guard_step(raw_step: RawStep, mode: str) -> Callable:
  """Wraps an un-jitted `(state, images, labels) -> (state, metrics)` step.

  `metrics` must hold scalar "loss" and "grad_norm" (a NaN/Inf anywhere in the
  gradients makes their global norm non-finite). The result takes and returns a
  `GuardState` too and adds metrics "nonfinite" (0/1) and "skipped" (running count).
  """
  if mode not in NONFINITE_MODES:
    raise ValueError(f"config.train.nonfinite={mode!r}; use one of {list(NONFINITE_MODES)}")

  def step(state: TrainState, guard: GuardState, images: jax.Array, labels: jax.Array):
    new, metrics = raw_step(state, images, labels)
    ok = (jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
          & all_finite(new.params))
    if mode == "skip":
      kept = _select(ok, new, state).replace(step=new.step, rng=new.rng)
      guard = guard.replace(skipped=guard.skipped + (~ok).astype(jnp.int32),
                            first_bad=jnp.where((guard.first_bad < 0) & ~ok, state.step,
                                                guard.first_bad))
    else:  # stop: freeze at the last good state from the first bad step on
      halted = guard.first_bad >= 0
      kept = _select(ok & ~halted, new, state)
      guard = guard.replace(first_bad=jnp.where(~halted & ~ok, state.step, guard.first_bad))
    metrics = dict(metrics, nonfinite=(~ok).astype(jnp.float32),
                   skipped=guard.skipped.astype(jnp.float32))
    return kept, guard, metrics

  return step


class GuardedStep:
  """Callable `(state, images, labels) -> (state, metrics)` with the guard inside.

  Holds the guard counters as device arrays between calls (updated asynchronously), so
  the loop keeps its call signature; `check()` and `counters()` are the host-side views.
  """

  def __init__(self, raw_step: RawStep, mode: str, *, guard: GuardState | None = None,
               jit: Callable = jax.jit, **jit_kwargs):
    self.mode = mode
    self.guard = GuardState.create() if guard is None else guard
    jit_kwargs.setdefault("donate_argnums", (0, 1))
    self._step = jit(guard_step(raw_step, mode), **jit_kwargs)

  def __call__(self, state: TrainState, images: jax.Array, labels: jax.Array):
    state, self.guard, metrics = self._step(state, self.guard, images, labels)
    return state, metrics

  def counters(self) -> dict[str, int]:
    """{"skipped": int, "first_bad": int}, for logs and the checkpoint metadata."""
    return {"skipped": int(self.guard.skipped), "first_bad": int(self.guard.first_bad)}

  def restore(self, counters: dict[str, int] | None) -> None:
    counters = counters or {}
    self.guard = GuardState.create(int(counters.get("skipped", 0)),
                                   int(counters.get("first_bad", -1)))

  def check(self) -> None:
    """In "stop" mode, raises `NonFiniteError` if a bad step happened (waits for it)."""
    if self.mode != "stop":
      return
    first_bad = int(self.guard.first_bad)
    if first_bad >= 0:
      raise NonFiniteError(first_bad, (
          f"non-finite loss, gradient or parameter at step {first_bad} (0-based update "
          f"index); training stopped with train.nonfinite='stop' and the state frozen at "
          f"the last good step. The checkpoints written so far are intact. Fixes: lower "
          f"train.lr, set train.grad_clip > 0, use model.dtype='float32', or set "
          f"train.nonfinite='skip' to drop such steps."))
