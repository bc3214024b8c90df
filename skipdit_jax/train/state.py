"""The train state: everything a step reads and writes, as one donated pytree."""
from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """step () int32; params / ema_params float32 pytrees; opt_state optax's; rng (2,) uint32.

  The optimizer itself is not a field: the step closes over it, so the state holds only
  arrays and checkpoints as a plain pytree.
  """
  step: jax.Array
  params: Any
  opt_state: Any
  ema_params: Any
  rng: jax.Array

  @classmethod
  def create(cls, params: Any, tx: optax.GradientTransformation,
             rng: jax.Array) -> "TrainState":
    """Fresh state at step 0; the EMA starts as a copy of `params`."""
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
               ema_params=jax.tree_util.tree_map(jnp.array, params), rng=rng)
