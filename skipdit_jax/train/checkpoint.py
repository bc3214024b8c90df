"""Orbax checkpoints of the train state plus a JSON of host-side positions, and the
resolved config written into the workdir.

Layout: `<workdir>/checkpoints/<step>/{state, meta}`; `meta` holds the data iterator
position and small counters, so a rerun of the same command resumes exactly.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp

CONFIG_JSON = "config.json"   # the resolved config; config_check reads it back
CONFIG_PY = "config.py"       # the same, as a loadable ml_collections config file


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes the resolved config as JSON and as a `get_config()` python file."""
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, CONFIG_JSON), "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
  with open(os.path.join(workdir, CONFIG_PY), "w") as f:
    f.write('"""Resolved config of this run (written by skipdit_jax)."""\n'
            "import ml_collections\n\n\ndef get_config():\n"
            f"  return ml_collections.ConfigDict({config.to_dict()!r})\n")


class Checkpointer:
  """A thin `ocp.CheckpointManager` over items "state" (pytree) and "meta" (JSON)."""

  def __init__(self, workdir: str, *, keep: int = 3, keep_every: int = 0,
               async_save: bool = True):
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, keep_period=keep_every or None,
        enable_async_checkpointing=async_save, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "meta"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> None:
    """Saves `state` and `meta` at `step` (returns before an async write completes)."""
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)

  def restore(self, abstract_state: Any, step: int | None = None
              ) -> tuple[Any, dict[str, Any]] | None:
    """(state, meta) of `step` (default latest), shaped like `abstract_state`; None if
    there is no checkpoint. `abstract_state` may hold arrays or ShapeDtypeStructs."""
    step = self.manager.latest_step() if step is None else step
    if step is None:
      return None
    target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_state)
    out = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore()))
    return out["state"], dict(out["meta"] or {})

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
