"""Preemption: a SIGTERM (or a TPU maintenance notice) -> finish the step, save, exit.

Single process: a Python handler sets a flag that the loop polls after each step (the
handler runs between bytecodes, so a step in flight always completes). Several
processes: JAX's preemption sync manager (started by `jax.distributed.initialize`)
already listens for SIGTERM and agrees with the other hosts on one safe step, so every
host saves the same step; there the flag handler is not installed, since replacing the
manager's handler would hide the notice from it.
"""
from __future__ import annotations

import signal
import sys
import types
from typing import Iterable

import jax
from jax.experimental import multihost_utils

# Exit status of a run that stopped for a preemption after saving: 128 + SIGTERM, which
# schedulers read as "terminated" and requeue, while the checkpoint makes the rerun resume.
PREEMPTED_EXIT_CODE = 128 + signal.SIGTERM


def _sync_manager_active() -> bool:
  """True when `jax.distributed.initialize` started JAX's preemption sync manager.

  `initialize` starts it exactly when the `jax_enable_preemption_service` flag is on.
  """
  return jax.distributed.is_initialized() and bool(jax.config.jax_enable_preemption_service)


class PreemptionWatcher:
  """Answers `should_stop(step)` after every step; use as a context manager.

  `signals` are caught in a single-process run (SIGTERM by default; add SIGINT to save on
  Ctrl-C too). The previous handlers come back on exit.
  """

  def __init__(self, signals: Iterable[int] = (signal.SIGTERM,)):
    self.signals = tuple(signals)
    self.received: int | None = None
    self._previous: dict[int, object] = {}
    self._multihost = False

  def _handle(self, signum: int, frame: types.FrameType | None) -> None:
    del frame
    self.received = signum
    print(f"received {signal.Signals(signum).name}: finishing the current step, then "
          "saving a checkpoint", file=sys.stderr, flush=True)

  def install(self) -> "PreemptionWatcher":
    self._multihost = jax.process_count() > 1 and _sync_manager_active()
    if not self._multihost:
      for s in self.signals:
        self._previous[s] = signal.signal(s, self._handle)
    return self

  def uninstall(self) -> None:
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    self._previous.clear()

  def __enter__(self) -> "PreemptionWatcher":
    return self.install()

  def __exit__(self, *exc) -> None:
    self.uninstall()

  def should_stop(self, step: int) -> bool:
    """True once a preemption notice arrived; `step` is the number of finished steps.

    Call it after every step on every host with the same `step` (the multi-host
    protocol requires it).
    """
    if self._multihost:
      if multihost_utils.reached_preemption_sync_point(int(step)):
        self.received = signal.SIGTERM
    return self.received is not None
