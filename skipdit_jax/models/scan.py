"""Large-model options for DiT: rematerialised blocks and a `lax.scan` over stacked blocks.

`DiT(remat=...)` wraps every block in `jax.checkpoint` with a named policy; parameter names
do not change. `DiT(scan_blocks=True)` stores the blocks (and Skip-DiT's fusions) as one
stacked tree with a leading "layers" axis and runs any block range with `lax.scan`, so the
staged forward (`run_blocks(h, c, skips, start, stop)`) and hence the cached sampler keep
working. `stack_params` / `unstack_params` map exactly between the two layouts:

  unrolled: blocks_{i}/...            skip_fusions_{j}/...
  scanned:  block_stack/blocks/... (L, ...)   block_stack/fusions/... (L/2, ...)
"""
from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from skipdit_jax.models import skip_pairs
from skipdit_jax.models.blocks import DiTBlock, SkipFusion

REMAT_POLICIES: dict[str, Callable | None] = {
    "full": None,  # save nothing: recompute the whole block in the backward pass
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}
REMAT_CHOICES = ("none",) + tuple(REMAT_POLICIES)
LAYERS = "layers"  # logical name of the stacked axis; the rules never shard it


def validate(remat: str) -> None:
  if remat not in REMAT_CHOICES:
    raise ValueError(f"model.remat={remat!r} is not one of {', '.join(REMAT_CHOICES)}")


def maybe_remat(cls: type[nn.Module], remat: str) -> type[nn.Module]:
  """`cls` itself, or `nn.remat(cls)` with the named policy (same parameter names)."""
  validate(remat)
  if remat == "none":
    return cls
  return nn.remat(cls, policy=REMAT_POLICIES[remat])


def _stacked_init(module: nn.Module, n: int, *sample: jax.Array) -> Callable:
  """An init fn giving `n` independently initialised copies of `module`'s params, stacked.

  The logical names gain a leading "layers" axis so sharding rules still apply.
  """
  def init(rng: jax.Array) -> Any:
    boxed = jax.vmap(lambda k: module.init(k, *sample)["params"])(jax.random.split(rng, n))
    return jax.tree.map(lambda b: b.replace(names=(LAYERS,) + b.names)
                        if isinstance(b, nn.Partitioned) else b, boxed,
                        is_leaf=lambda b: isinstance(b, nn.Partitioned))
  return init


class BlockStack(nn.Module):
  """All DiT blocks (and Skip-DiT fusions) as stacked params, run with `lax.scan`."""
  hidden_size: int
  num_heads: int
  mlp_ratio: float
  depth: int
  long_skip: bool
  remat: str = "none"
  dtype: Any = jnp.float32
  attention: str = "xla"

  def setup(self):
    validate(self.remat)
    d = self.hidden_size
    h, c = jnp.zeros((1, 1, d), jnp.float32), jnp.zeros((1, d), jnp.float32)
    # parent=None: templates used functionally, not children of this module.
    self._block = DiTBlock(d, self.num_heads, self.mlp_ratio, self.dtype,
                           attention=self.attention, parent=None)
    self._fusion = SkipFusion(d, self.dtype, parent=None)
    self.blocks = self.param("blocks", _stacked_init(self._block, self.depth, h, c))
    if self.long_skip:
      self.fusions = self.param("fusions", _stacked_init(self._fusion, self.depth // 2, h, h))

  def _scan(self, body: Callable, h: jax.Array, xs: Any) -> tuple[jax.Array, jax.Array]:
    if self.remat != "none":
      body = jax.checkpoint(body, policy=REMAT_POLICIES[self.remat])
    return jax.lax.scan(body, h, xs)

  def __call__(self, h: jax.Array, c: jax.Array, skips: tuple[jax.Array, ...], start: int,
               stop: int) -> tuple[jax.Array, tuple[jax.Array, ...]]:
    """Same contract as `DiT.run_blocks`: blocks start..stop-1, pushing/popping skips."""
    take = lambda tree, a, b: jax.tree.map(lambda p: p[a:b], tree)
    apply_block = lambda p, x: self._block.apply({"params": p}, x, c)
    for kind, a, b in skip_pairs.segments(self.depth, self.long_skip, start, stop):
      blocks = take(self.blocks, a, b)
      if kind == skip_pairs.PLAIN:
        h, _ = self._scan(lambda x, p: (apply_block(p, x), None), h, blocks)
      elif kind == skip_pairs.SHALLOW:  # each block's output is pushed
        def shallow(x, p):
          x = apply_block(p, x)
          return x, x
        h, ys = self._scan(shallow, h, blocks)
        skips = skips + tuple(ys[i] for i in range(b - a))
      else:  # deep: each block first fuses the skip it pairs with
        popped, skips = skip_pairs.pop(skips, a, b)
        fusions = take(self.fusions, skip_pairs.fusion_index(a, self.depth),
                       skip_pairs.fusion_index(b, self.depth))

        def deep(x, inp):
          pb, pf, skip = inp
          x = self._fusion.apply({"params": pf}, x, skip)
          return apply_block(pb, x), None
        h, _ = self._scan(deep, h, (blocks, fusions, jnp.stack(popped)))
    return h, skips


def _stack(trees: list[Any]) -> Any:
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def stack_params(params: dict, depth: int, long_skip: bool) -> dict:
  """Unrolled params (`blocks_{i}`, `skip_fusions_{j}`) -> the scanned layout."""
  out = {k: v for k, v in params.items()
         if not (k.startswith("blocks_") or k.startswith("skip_fusions_"))}
  stack = {"blocks": _stack([params[f"blocks_{i}"] for i in range(depth)])}
  if long_skip:
    stack["fusions"] = _stack([params[f"skip_fusions_{j}"] for j in range(depth // 2)])
  out["block_stack"] = stack
  return out


def unstack_params(params: dict) -> dict:
  """The scanned layout -> unrolled params (inverse of `stack_params`)."""
  out = {k: v for k, v in params.items() if k != "block_stack"}
  stack = params["block_stack"]
  for prefix, key in (("blocks", "blocks"), ("skip_fusions", "fusions")):
    if key in stack:
      n = jax.tree.leaves(stack[key])[0].shape[0]
      for i in range(n):
        out[f"{prefix}_{i}"] = jax.tree.map(lambda p: p[i], stack[key])
  return out
