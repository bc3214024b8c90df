"""Multi-host start-up: `jax.distributed.initialize` when the config or the cluster asks.

JAX finds the coordinator, process count and id itself on Cloud TPU pods and in SLURM
jobs (and under Open MPI / Kubernetes); elsewhere the config supplies them:
`config.distributed.{coordinator_address, num_processes, process_id}`.
"""
from __future__ import annotations

import os
from typing import Any

import jax
from absl import logging

_initialized = False


def _get(cfg: Any, key: str, default: Any) -> Any:
  return cfg.get(key, default) if cfg is not None and hasattr(cfg, "get") else default


def detected_cluster(environ: dict[str, str] | None = None) -> str | None:
  """The multi-process cluster the environment describes, or None for a single process.

  SLURM: a job step with more than one task (SLURM_NTASKS > 1; `srun` sets the rest).
  TPU pods: several workers listed in TPU_WORKER_HOSTNAMES, or a Megascale coordinator.
  Explicit: JAX_COORDINATOR_ADDRESS set by the launcher.
  """
  env = os.environ if environ is None else environ
  slurm_vars = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
                "SLURM_LOCALID")
  if all(v in env for v in slurm_vars) and int(env.get("SLURM_NTASKS", "1")) > 1:
    return "slurm"
  if len([h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h]) > 1 \
      or env.get("MEGASCALE_COORDINATOR_ADDRESS"):
    return "tpu"
  if env.get("JAX_COORDINATOR_ADDRESS"):
    return "env"
  return None


def initialize_kwargs(config: Any, environ: dict[str, str] | None = None
                      ) -> dict[str, Any] | None:
  """The `jax.distributed.initialize` arguments this config asks for, or None (no call).

  Called when `distributed.enabled`, when a coordinator address is configured, or when
  `distributed.auto` and `detected_cluster()` finds one. Unset fields are left to JAX's
  own cluster detection.
  """
  cfg = config.get("distributed") if hasattr(config, "get") else None
  address = _get(cfg, "coordinator_address", "") or None
  num = _get(cfg, "num_processes", 0)
  pid = _get(cfg, "process_id", -1)
  asked = bool(_get(cfg, "enabled", False)) or address is not None
  if not asked and not (_get(cfg, "auto", True) and detected_cluster(environ)):
    return None
  if address is not None and (num <= 0 or pid < 0) and not detected_cluster(environ):
    raise ValueError(
        f"config.distributed.coordinator_address={address!r} needs "
        f"config.distributed.num_processes (got {num}) and config.distributed.process_id "
        f"(got {pid}) outside a TPU pod / SLURM job: set both, e.g. --config.distributed."
        "num_processes=2 --config.distributed.process_id=0 on the first host")
  if num > 0 and not 0 <= pid < num and pid != -1:
    raise ValueError(f"config.distributed.process_id={pid} must lie in [0, "
                     f"config.distributed.num_processes={num})")
  kwargs: dict[str, Any] = {}
  if address is not None:
    kwargs["coordinator_address"] = address
  if num > 0:
    kwargs["num_processes"] = num
  if pid >= 0:
    kwargs["process_id"] = pid
  return kwargs


def maybe_initialize_distributed(config: Any) -> bool:
  """Starts the multi-process runtime if asked; True if this run is multi-process.

  Must run before anything touches the devices. Calling it twice is harmless.
  """
  global _initialized
  kwargs = initialize_kwargs(config)
  if kwargs is None or _initialized:
    return _initialized
  jax.distributed.initialize(**kwargs)
  _initialized = True
  logging.info("jax.distributed: process %d of %d, %d local / %d global devices",
               jax.process_index(), jax.process_count(), jax.local_device_count(),
               jax.device_count())
  return True


def is_main_process() -> bool:
  """Only process 0 writes logs, images and checkpoint metadata."""
  return jax.process_index() == 0
