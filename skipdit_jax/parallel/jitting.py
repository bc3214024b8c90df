"""Sharded init and the train step jitted with explicit shardings.

Params, optimizer state and EMA are born sharded (`jax.jit(init, out_shardings=...)`), so
no host ever holds a whole XL/2; the steps then keep every array where the rules put it
and the train state is donated, so each step updates it in place. (The sampler's sharded
steps are `skipdit_jax.sampling.sharded`.)
"""
from __future__ import annotations

from typing import Any, Callable

import jax
from jax.sharding import Mesh

from skipdit_jax.parallel.batch import batch_sharding, replicated
from skipdit_jax.parallel.rules import Rules, constrained, param_shardings, state_shardings


def sharded_init(init_fn: Callable[[], Any], model: Any, mesh: Mesh, rules: Rules
                 ) -> tuple[Any, Any]:
  """Runs `init_fn() -> state` (any pytree holding the model's params, e.g. the train
  state) under jit with every output already sharded. Returns (state, shardings).

  The shapes come from `jax.eval_shape`, so nothing is allocated before the sharded run.
  """
  shardings = state_shardings(jax.eval_shape(init_fn), param_shardings(model, mesh, rules),
                              mesh)
  return jax.jit(init_fn, out_shardings=shardings)(), shardings


def step_jit_kwargs(mesh: Mesh, state_sh: Any, *, extra_state: int = 0) -> dict[str, Any]:
  """`jax.jit` keywords for `step(state, *extra, images, labels) -> (state, *extra, metrics)`.

  The state keeps `state_sh`; `extra_state` further replicated state args (e.g. the
  non-finite guard's counters) are threaded the same way; images and labels are split
  over the batch axes; metrics come back replicated. All state arguments are donated.
  """
  rep, batch = replicated(mesh), batch_sharding(mesh)
  return dict(in_shardings=(state_sh,) + (rep,) * extra_state + (batch, batch),
              out_shardings=(state_sh,) + (rep,) * extra_state + (rep,),
              donate_argnums=tuple(range(1 + extra_state)))


def jit_train_step(step: Callable, mesh: Mesh, state_sh: Any, *, extra_state: int = 0,
                   rules: Rules | None = None) -> Callable:
  """`step` jitted with `step_jit_kwargs` (the trainer's `train_step`, bound by partial);
  with `rules`, traced under their activation constraints (`rules.constrained`)."""
  if rules is not None:
    step = constrained(step, mesh, rules)
  return jax.jit(step, **step_jit_kwargs(mesh, state_sh, extra_state=extra_state))


def sharding_key(shardings: Any) -> tuple:
  """A hashable, value-equal key for a pytree of shardings (e.g. a params tree's):
  equal trees of equal shardings give equal keys, whichever objects hold them."""
  leaves, treedef = jax.tree.flatten(shardings)
  return treedef, tuple(leaves)


def shard_params(params: Any, shardings: Any) -> Any:
  """Place an existing params tree (e.g. restored or imported) on the mesh."""
  return jax.device_put(params, shardings)

