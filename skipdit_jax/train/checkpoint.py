"""Orbax checkpoints of the train state plus a JSON of host-side positions, and the
resolved config written into the workdir.

Layout: `<workdir>/checkpoints/<step>/{state, meta}`; `meta` holds the data iterator
position, the guard counters and the resolved config, so a rerun of the same command
resumes exactly. Orbax writes each step into a temporary directory and renames it when
complete (on gs://, where there are no renames, it writes `commit_success.txt` last), and
its `all_steps()` lists only such finalized steps, so a run killed mid-save leaves no step.
Orbax does not look inside a finalized step, so a step folder with files missing (a
partial copy) would still be listed; `complete_steps` drops those. Paths go through
`skipdit_jax.paths` (etils.epath), so a `gs://` workdir and a local one take the same code.
Restores compare the saved tree with the expected one first, so a checkpoint of another
model or optimizer is refused with the parameter paths that differ, and unreadable files
give a `CheckpointError` naming the step and the fix, not a TensorStore traceback.
"""
from __future__ import annotations

import json
import re
import time
from typing import Any

import jax
import ml_collections
import orbax.checkpoint as ocp
from absl import logging

from skipdit_jax import paths
from skipdit_jax.train.guard import all_finite

CONFIG_JSON = "config.json"   # the resolved config; config_check reads it back
CONFIG_PY = "config.py"       # the same, as a loadable ml_collections config file
CHECKPOINTS = "checkpoints"
# Files orbax writes last into each item of a step (the step's metadata, the state's
# tree metadata, the JSON item); a finalized step without them is a partial copy.
_COMPLETE_MARKERS = ("_CHECKPOINT_METADATA", "state/_METADATA", "meta/metadata")
_SHOWN = 8  # mismatching paths listed in an error


class CheckpointError(RuntimeError):
  """A checkpoint cannot be used; the message names the step, the paths and the fix."""


def save_config(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Writes the resolved config as JSON and as a `get_config()` python file."""
  root = paths.resolve(workdir)
  paths.write_text(root / CONFIG_JSON,
                   config.to_json_best_effort(indent=2, sort_keys=True) + "\n")
  paths.write_text(root / CONFIG_PY,
                   '"""Resolved config of this run (written by skipdit_jax)."""\n'
                   "import ml_collections\n\n\ndef get_config():\n"
                   f"  return ml_collections.ConfigDict({config.to_dict()!r})\n")


def move_aside(workdir: str) -> str | None:
  """Renames `<workdir>/checkpoints` (and its config) to `*.replaced-<time>`; for
  `train.allow_new_model=True`. Returns the new checkpoint path, or None if none."""
  root = paths.resolve(workdir)
  src = root / CHECKPOINTS
  if not src.is_dir():
    return None
  tag = time.strftime("%Y%m%d-%H%M%S")
  dst = root / f"{CHECKPOINTS}.replaced-{tag}"
  src.rename(dst)  # on object storage: a copy of every object, then a delete
  cfg = root / CONFIG_JSON
  if cfg.exists():
    cfg.rename(dst / CONFIG_JSON)
  logging.warning("moved the checkpoints of the previous model to %s", dst)
  return str(dst)


def leaf_specs(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
  """{"params.blocks_0.attn.qkv.kernel": (shape, dtype)} with orbax's dotted names."""
  def name(path) -> str:
    parts = []
    for k in path:
      for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
          parts.append(str(getattr(k, attr)))
          break
      else:
        parts.append(str(k))
    return ".".join(parts)
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {name(p): (tuple(x.shape), str(x.dtype)) for p, x in flat}


def compare_trees(saved: dict[str, tuple], expected: dict[str, tuple]) -> list[str]:
  """One line per parameter path that is missing, unexpected or of another shape/dtype."""
  # Parameters first: they say what changed in the model; optimizer paths follow.
  order = lambda paths: sorted(paths, key=lambda p: (not p.startswith("params."), p))
  lines = [f"{p}: not in the checkpoint (expected {expected[p][0]} {expected[p][1]})"
           for p in order(set(expected) - set(saved))]
  lines += [f"{p}: in the checkpoint {saved[p][0]} {saved[p][1]}, not expected by this "
            f"config" for p in order(set(saved) - set(expected))]
  lines += [f"{p}: checkpoint {saved[p][0]} {saved[p][1]}, expected {expected[p][0]} "
            f"{expected[p][1]}" for p in order(set(saved) & set(expected))
            if saved[p] != expected[p]]
  return lines


def _failing_path(error: BaseException) -> str | None:
  """The array path inside a TensorStore read error (its spec is all the error names)."""
  text = str(error)
  rel = [p for p in re.findall(r"'path': '([^']+)'", text) if not p.startswith("/")]
  return rel[-1].rstrip("/") if rel else None


class Checkpointer:
  """An `ocp.CheckpointManager` over items "state" (pytree) and "meta" (JSON).

  Keeps the last `keep` steps and every step divisible by `keep_every` (0: none); saves
  asynchronously when `async_save`. `read_only=True` (sampling, evaluation) requires the
  checkpoints to exist and never creates or deletes anything.
  """

  def __init__(self, workdir: str, *, keep: int = 3, keep_every: int = 0,
               async_save: bool = True, read_only: bool = False):
    root = paths.resolve(workdir)
    self.path = root / CHECKPOINTS
    self.directory = str(self.path)
    # An object store has no directories: a "directory" exists when objects lie under it.
    if read_only and not root.is_dir():
      raise CheckpointError(f"workdir {workdir!r} does not exist; train first with "
                            f"--workdir={workdir} or point --workdir at a trained run")
    if read_only and not self.path.is_dir():
      raise CheckpointError(f"workdir {workdir!r} holds no checkpoints (no {CHECKPOINTS}/ "
                            f"directory); train into it first")
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, keep_period=keep_every or None,
        enable_async_checkpointing=async_save and not read_only, create=not read_only,
        read_only=read_only, cleanup_tmp_directories=not read_only)
    # Handlers named up front, so a fresh process can read metadata before any save.
    self.manager = ocp.CheckpointManager(
        self.path, options=options,
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})
    self._all_finite = jax.jit(all_finite)

  def complete_steps(self) -> list[int]:
    """Finalized steps (orbax's `all_steps`) whose every item is in place, oldest first."""
    steps = []
    for step in self.manager.all_steps():
      root = self.path / str(step)
      if all((root / m).exists() for m in _COMPLETE_MARKERS):
        steps.append(step)
      else:
        logging.warning("ignoring incomplete checkpoint %s", root)
    return sorted(steps)

  def latest_step(self) -> int | None:
    steps = self.complete_steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: Any, meta: dict[str, Any]) -> bool:
    """Saves `state` and `meta` at `step`; returns before an async write completes.

    A step already on disk is left as it is (returns False). A state with a NaN/Inf
    parameter is refused, so the last good checkpoint is never followed by a bad one.
    """
    if step in self.manager.all_steps():
      return False
    if not bool(self._all_finite((state.params, state.ema_params))):
      raise CheckpointError(f"refusing to save step {step}: the parameters hold NaN/Inf; "
                            f"the last checkpoint (step {self.latest_step()}) is kept. "
                            f"Set train.nonfinite='skip' or 'stop' to keep them finite")
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)), force=True)
    return True

  def _step_dir(self, step: int) -> str:
    return str(self.path / str(step))

  def read_meta(self, step: int) -> dict[str, Any]:
    path = self.path / str(step) / "meta" / "metadata"
    try:
      return dict(json.loads(path.read_text()) or {})
    except (OSError, ValueError) as e:
      raise CheckpointError(f"checkpoint {self._step_dir(step)}: its meta file {path} is "
                            f"unreadable ({e}); {self._fix(step)}") from e

  def _fix(self, step: int) -> str:
    older = [s for s in self.complete_steps() if s < step]
    if older:
      return (f"remove {self._step_dir(step)} to resume from step {older[-1]}, or use a "
              f"new --workdir")
    return f"remove {self._step_dir(step)} to start fresh, or use a new --workdir"

  def check_compatible(self, step: int, abstract_state: Any) -> None:
    """Raises CheckpointError naming every parameter path that differs from the target."""
    try:
      saved_tree = self.manager.item_metadata(step)["state"]
      saved_tree = getattr(saved_tree, "tree", saved_tree)
      saved = leaf_specs(saved_tree)
      if not saved:
        raise ValueError("no arrays listed")
    except Exception as e:  # orbax raises several types for unreadable metadata
      raise CheckpointError(f"checkpoint {self._step_dir(step)} is damaged: cannot read "
                            f"its tree metadata ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:160]}); {self._fix(step)}") from e
    expected = leaf_specs(abstract_state)
    diff = compare_trees(saved, expected)
    if diff:
      shown = "\n  ".join(diff[:_SHOWN])
      more = f"\n  ... and {len(diff) - _SHOWN} more" if len(diff) > _SHOWN else ""
      only_opt = all(line.startswith("opt_state.") for line in diff)
      hint = ("Only the optimizer state differs: the optimizer chain changed (e.g. "
              "train.grad_clip switched between 0 and > 0). " if only_opt else "")
      raise CheckpointError(
          f"checkpoint {self._step_dir(step)} does not fit this model/optimizer "
          f"({len(diff)} array paths differ; this config expects {len(expected)} "
          f"arrays):\n  {shown}{more}\n{hint}It was "
          f"written by another config (compare {CONFIG_JSON} in the workdir). Use a new "
          f"--workdir, restore the old model/optimizer fields, or pass "
          f"--config.train.allow_new_model=True to move it aside and start fresh.")

  def restore(self, abstract_state: Any, step: int | None = None
              ) -> tuple[Any, dict[str, Any]] | None:
    """(state, meta) of `step` (default: the latest complete one); None if there is none.

    `abstract_state` may hold arrays or ShapeDtypeStructs; their shardings (when given)
    place the restored arrays, so a checkpoint written on one mesh restores onto another.
    Give ShapeDtypeStructs to allocate the state once (a resume): orbax writes straight
    into new arrays, no fresh state is built first.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_state)
    self.check_compatible(step, target)
    meta = self.read_meta(step)
    out = self._read(step, lambda: self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target))))
    return out["state"], meta

  def restore_ema(self, abstract_state: Any, step: int | None = None
                  ) -> tuple[Any, int] | None:
    """(EMA params, step number) of `step` (default: the latest); None if there is none.

    Reads only the `ema_params` and `step` arrays of the checkpoint (orbax partial
    restore): the raw params and the optimizer state, two thirds of the state with Adam,
    are neither read nor allocated. For sampling and evaluation.
    """
    step = self.latest_step() if step is None else step
    if step is None:
      return None
    target = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, abstract_state)
    self.check_compatible(step, target)
    item = {"step": target.step, "ema_params": target.ema_params}
    args = ocp.args.PyTreeRestore(
        item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item),
        partial_restore=True)

    def read():
      with ocp.PyTreeCheckpointer() as reader:
        return reader.restore(self.path / str(step) / "state", args=args)
    out = self._read(step, read)
    return out["ema_params"], int(jax.device_get(out["step"]))

  def _read(self, step: int, fn):
    """fn() with TensorStore/orbax errors turned into a CheckpointError naming the fix."""
    try:
      return fn()
    except Exception as e:  # TensorStore/orbax raise bare Exceptions for damaged files
      where = _failing_path(e)
      first = str(e).splitlines()[0].split(" See full TensorStore")[0][:160]
      raise CheckpointError(
          f"checkpoint {self._step_dir(step)} is damaged: cannot read "
          f"{'array ' + where if where else 'its arrays'} ({first}); "
          f"{self._fix(step)}") from e

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()
