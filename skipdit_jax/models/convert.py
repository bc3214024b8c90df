"""Official PyTorch DiT / Skip-DiT state_dicts <-> our parameter trees.

One table (`_entries`) pairs every official key with our parameter path and a layout
rule, so import and export are exact inverses:
  linear: torch (out, in) weight  <-> our (in, out) kernel (transpose)
  conv:   patch conv (D, C, p, p) <-> Dense kernel (p*p*C, D) over (row, col, channel)
  copy:   biases, LayerNorm scale/bias (torch `weight`), the label table
`pos_embed` is a fixed buffer in the official model; import checks it equals our sin-cos
table and drops it, export writes it back.
"""
from __future__ import annotations

import math
import os
from typing import Any

import jax
import numpy as np

from skipdit_jax.models.dit import DiT, validate_shape
from skipdit_jax.models.layers import sincos_2d
from skipdit_jax.models.registry import SIZES, init_params
from skipdit_jax.models.state_dict_io import StateDict, load_state_dict, save_safetensors

Path = tuple[str, ...]
_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers


def _entries(m: DiT) -> list[tuple[str, Path, str]]:
  """(official key, our param path, layout rule) for every trainable tensor of `m`."""
  out: list[tuple[str, Path, str]] = []

  def lin(name: str, path: Path) -> None:
    out.append((name + ".weight", path + ("kernel",), "linear"))
    out.append((name + ".bias", path + ("bias",), "copy"))

  out.append(("x_embedder.proj.weight", ("x_embedder", "kernel"), "conv"))
  out.append(("x_embedder.proj.bias", ("x_embedder", "bias"), "copy"))
  lin("t_embedder.mlp.0", ("t_embedder", "mlp_0"))
  lin("t_embedder.mlp.2", ("t_embedder", "mlp_2"))
  out.append(("y_embedder.embedding_table.weight", ("y_embedder", "embedding_table"), "copy"))
  for i in range(m.depth):
    b = (f"blocks_{i}",)
    lin(f"blocks.{i}.attn.qkv", b + ("attn", "qkv"))
    lin(f"blocks.{i}.attn.proj", b + ("attn", "proj"))
    lin(f"blocks.{i}.mlp.fc1", b + ("mlp", "fc1"))
    lin(f"blocks.{i}.mlp.fc2", b + ("mlp", "fc2"))
    lin(f"blocks.{i}.adaLN_modulation.1", b + ("adaLN_modulation",))
  for j in range(m.depth // 2 if m.long_skip else 0):
    f = (f"skip_fusions_{j}",)
    out.append((f"skip_norms.{j}.weight", f + ("norm", "scale"), "copy"))
    out.append((f"skip_norms.{j}.bias", f + ("norm", "bias"), "copy"))
    lin(f"skip_linears.{j}.linear", f + ("linear",))
  lin("final_layer.linear", ("final_layer", "linear"))
  lin("final_layer.adaLN_modulation.1", ("final_layer", "adaLN_modulation"))
  return out


def _official_shape(rule: str, shape: tuple[int, ...], m: DiT) -> tuple[int, ...]:
  if rule == "linear":
    return shape[::-1]
  if rule == "conv":
    return (shape[1], m.in_channels, m.patch_size, m.patch_size)
  return shape


def _to_ours(rule: str, a: np.ndarray, m: DiT) -> np.ndarray:
  a = np.asarray(a, np.float32)
  if rule == "linear":
    return np.ascontiguousarray(a.T)
  if rule == "conv":  # (D, C, p, p) -> (p, p, C, D) -> (p*p*C, D)
    return np.ascontiguousarray(a.transpose(2, 3, 1, 0).reshape(-1, a.shape[0]))
  return a


def _to_official(rule: str, a: np.ndarray, m: DiT) -> np.ndarray:
  a = np.asarray(a, np.float32)
  if rule == "linear":
    return np.ascontiguousarray(a.T)
  if rule == "conv":
    p, c = m.patch_size, m.in_channels
    return np.ascontiguousarray(a.reshape(p, p, c, -1).transpose(3, 2, 0, 1))
  return a


def _unrolled(m: DiT) -> DiT:
  """The same model with one parameter subtree per block (the layout the table names)."""
  return m.clone(scan_blocks=False) if getattr(m, "scan_blocks", False) else m


def _param_shapes(m: DiT) -> dict[Path, tuple[int, ...]]:
  tree = jax.eval_shape(lambda r: init_params(_unrolled(m), r), jax.random.key(0))
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {tuple(k.key for k in path): tuple(s.shape) for path, s in flat}


def official_shapes(m: DiT) -> dict[str, tuple[int, ...]]:
  """Every official key of `m` (without `pos_embed`) and its shape."""
  shapes = _param_shapes(m)
  return {name: _official_shape(rule, shapes[path], m) for name, path, rule in _entries(m)}


def _strip_prefixes(sd: StateDict) -> StateDict:
  out = {}
  for k, v in sd.items():
    for p in _PREFIXES:
      if k.startswith(p):
        k = k[len(p):]
    out[k] = v
  return out


def _listing(names: list[str], limit: int = 12) -> str:
  names = sorted(names)
  more = f", ... ({len(names) - limit} more)" if len(names) > limit else ""
  return ", ".join(names[:limit]) + more


def check_pos_embed(pos: np.ndarray, m: DiT, atol: float = 1e-5) -> None:
  """The official fixed table must equal ours, or the imported model would differ."""
  t, d = m.num_tokens, m.hidden_size
  if tuple(pos.shape) not in ((1, t, d), (t, d)):
    raise ValueError(f"pos_embed has shape {tuple(pos.shape)}, expected (1, {t}, {d}) for "
                     f"input_size={m.input_size}, patch {m.patch_size}: pass the "
                     "input_size the checkpoint was trained at")
  want = sincos_2d(d, m.input_size // m.patch_size)
  err = float(np.abs(np.asarray(pos, np.float64).reshape(t, d) - want).max())
  if err > atol:
    raise ValueError(f"pos_embed differs from the fixed 2-D sin-cos table by {err:.3g}; "
                     "this model's positions are not trainable, so the checkpoint would "
                     "not reproduce its outputs")


def from_official(state_dict: StateDict, m: DiT) -> dict:
  """Official state_dict (numpy arrays) -> our float32 params for module `m`.

  Raises a ValueError naming every missing, unexpected and misshaped key.
  """
  sd = _strip_prefixes(state_dict)
  pos = sd.pop("pos_embed", None)
  want = official_shapes(m)
  missing = [k for k in want if k not in sd]
  extra = [k for k in sd if k not in want]
  bad = [f"{k} {tuple(np.shape(sd[k]))} != {want[k]}" for k in want
         if k in sd and tuple(np.shape(sd[k])) != want[k]]
  if missing or extra or bad:
    msg = [f"state_dict does not fit {_describe(m)}:"]
    if missing:
      msg.append(f"missing keys ({len(missing)}): {_listing(missing)}")
    if extra:
      msg.append(f"unexpected keys ({len(extra)}): {_listing(extra)}")
    if bad:
      msg.append(f"misshaped keys ({len(bad)}): {_listing(bad)}")
    raise ValueError("\n  ".join(msg))
  if pos is not None:
    check_pos_embed(np.asarray(pos), m)
  params: dict[str, Any] = {}
  for name, path, rule in _entries(m):
    node = params
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = _to_ours(rule, sd[name], m)
  if getattr(m, "scan_blocks", False):
    from skipdit_jax.models import scan  # pylint: disable=import-outside-toplevel
    params = scan.stack_params(params, m.depth, m.long_skip)
  return params


def to_official(params: dict, m: DiT, *, with_pos_embed: bool = True) -> StateDict:
  """Our params -> an official-named float32 state_dict that the PyTorch code loads."""
  if "block_stack" in params:
    from skipdit_jax.models import scan  # pylint: disable=import-outside-toplevel
    params = scan.unstack_params(params)
  flat = {tuple(k.key for k in path): leaf for path, leaf
          in jax.tree_util.tree_flatten_with_path(params)[0]}
  entries = _entries(m)
  known = {path for _, path, _ in entries}
  missing = ["/".join(p) for p in known if p not in flat]
  extra = ["/".join(p) for p in flat if p not in known]
  if missing or extra:
    raise ValueError(f"params do not fit {_describe(m)}: missing {_listing(missing)}; "
                     f"unexpected {_listing(extra)}")
  sd = {name: _to_official(rule, np.asarray(flat[path]), m) for name, path, rule in entries}
  if with_pos_embed:
    sd["pos_embed"] = sincos_2d(m.hidden_size, m.input_size // m.patch_size)[None].astype(
        np.float32)
  return sd


def _describe(m: DiT) -> str:
  return (f"{'Skip-DiT' if m.long_skip else 'DiT'} depth={m.depth} hidden={m.hidden_size} "
          f"patch={m.patch_size} in_channels={m.in_channels} learn_sigma={m.learn_sigma}")


def detect_fields(state_dict: StateDict, *, input_size: int | None = None,
                  num_classes: int | None = None, num_heads: int | None = None) -> dict:
  """DiT fields read from an official state_dict's shapes.

  `num_heads` is not visible in the shapes: by default it comes from the size registry
  by (depth, width). `input_size` comes from `pos_embed` when present (else 32);
  `num_classes` from the label table (its last row is the null class).
  """
  sd = _strip_prefixes(state_dict)
  if "x_embedder.proj.weight" not in sd:
    raise ValueError("not a DiT state_dict: no key 'x_embedder.proj.weight' (keys start "
                     f"with {_listing(list(sd), 5)})")
  d, c, p, p2 = np.shape(sd["x_embedder.proj.weight"])
  if p != p2:
    raise ValueError(f"x_embedder.proj.weight has a non-square patch {p}x{p2}")
  idx = {int(k.split(".")[1]) for k in sd if k.startswith("blocks.")}
  fusions = {int(k.split(".")[1]) for k in sd if k.startswith(("skip_norms.", "skip_linears."))}
  long_skip = bool(fusions)
  # L/2 fusions also fix the depth, so a dict that lost its last blocks is caught too.
  depth = max(max(idx, default=-1) + 1, 2 * (max(fusions) + 1) if fusions else 0)
  if sorted(idx) != list(range(depth)):
    gaps = sorted(set(range(depth)) - idx)
    raise ValueError(f"state_dict implies {depth} blocks but has none for blocks {gaps}")
  fields = dict(patch_size=int(p), in_channels=int(c), hidden_size=int(d), depth=depth,
                long_skip=long_skip)

  if "final_layer.linear.weight" in sd:
    c_out, rem = divmod(np.shape(sd["final_layer.linear.weight"])[0], p * p)
    if rem or c_out not in (c, 2 * c):
      raise ValueError(f"final_layer.linear.weight has {c_out * p * p + rem} outputs; "
                       f"expected {p * p * c} or {2 * p * p * c} (patch {p}, {c} channels)")
    fields["learn_sigma"] = c_out == 2 * c
  if "blocks.0.mlp.fc1.weight" in sd:
    fields["mlp_ratio"] = np.shape(sd["blocks.0.mlp.fc1.weight"])[0] / d

  rows = np.shape(sd.get("y_embedder.embedding_table.weight", (1001, d)))[0]
  if num_classes is None or rows == num_classes + 1:
    fields.update(num_classes=int(rows) - 1, class_dropout_prob=0.1)
  elif rows == num_classes:  # trained without label dropout: no null row
    fields.update(num_classes=int(rows), class_dropout_prob=0.0)
  else:
    raise ValueError(f"num_classes={num_classes} does not fit the label table of {rows} "
                     f"rows (num_classes + 1 with the null class): pass num_classes="
                     f"{rows - 1}")

  if "pos_embed" in sd:
    t = int(np.shape(sd["pos_embed"])[-2])
    g = math.isqrt(t)
    if g * g != t:
      raise ValueError(f"pos_embed has {t} tokens, not a square grid")
    if input_size is not None and input_size != g * p:
      raise ValueError(f"input_size={input_size} does not fit pos_embed ({t} tokens of "
                       f"patch {p} = {g * p}x{g * p} latents): pass input_size={g * p}")
    input_size = g * p
  fields["input_size"] = 32 if input_size is None else input_size

  if num_heads is None:
    by_shape = {(dep, wid): h for dep, wid, h in SIZES.values()}
    if (depth, d) not in by_shape:
      raise ValueError(f"no registry size has depth {depth} and width {d}, so the number "
                       "of attention heads is unknown: pass num_heads=")
    num_heads = by_shape[(depth, d)]
  fields["num_heads"] = num_heads
  return fields


def load_official(path_or_state_dict: str | os.PathLike | StateDict, *,
                  input_size: int | None = None, num_classes: int | None = None,
                  num_heads: int | None = None, **overrides) -> tuple[DiT, dict]:
  """An official DiT / Skip-DiT checkpoint -> (our module, float32 params).

  Accepts a path (.safetensors; .pt/.pth with torch installed; .npz) or a dict of numpy
  arrays. Size, patch, channels, long skips and learned sigma come from the shapes;
  `overrides` set other DiT fields (e.g. dtype="bfloat16").
  """
  sd = (path_or_state_dict if isinstance(path_or_state_dict, dict)
        else load_state_dict(path_or_state_dict))
  fields = detect_fields(sd, input_size=input_size, num_classes=num_classes,
                         num_heads=num_heads)
  fields.update(overrides)
  module = DiT(**fields)
  validate_shape(module)
  return module, from_official(sd, module)


def save_official(path: str | os.PathLike, params: dict, m: DiT) -> None:
  """Write params under official names: .safetensors, or .npz."""
  sd = to_official(params, m)
  ext = os.path.splitext(os.fspath(path))[1].lower()
  if ext == ".safetensors":
    save_safetensors(path, sd, metadata={"format": "pt"})
  elif ext == ".npz":
    np.savez(path, **sd)
  else:
    raise ValueError(f"{os.fspath(path)}: write .safetensors or .npz (torch users load "
                     "either with safetensors.torch.load_file or numpy)")
