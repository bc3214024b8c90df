"""Official PyTorch DiT / Skip-DiT and Latte / Skip-Latte state_dicts <-> our parameter trees.

One table (`_entries`) pairs every official key with our parameter path and a layout
rule, so import and export are exact inverses:
  linear: torch (out, in) weight  <-> our (in, out) kernel (transpose)
  conv:   patch conv (D, C, p, p) <-> Dense kernel (p*p*C, D) over (row, col, channel)
  copy:   biases, LayerNorm scale/bias (torch `weight`), the label table
`pos_embed` (and Latte's `temp_embed`) are fixed buffers in the official model; import
checks they equal our sin-cos tables and drops them, export writes them back.
Latte (shared/docs/VIDEO.md §1.6) has DiT's keys: `blocks.{i}` with even i spatial and odd
i temporal, `skip_*.{j}` one per deep block pair (depth/4), no `y_embedder` when
unconditional, plus `temp_embed (1, F, D)`.
Caption-token models (`cond="text_tokens"`) use the Latte-T2V(-skip) names of VIDEO.md §2.1
(`_t2v_entries`): `transformer_blocks.{i}` (our blocks_{2i}; DiTT2V: blocks_{i}),
`temporal_transformer_blocks.{i}` (blocks_{2i+1}), `adaln_single.*`, `caption_projection.*`,
`scale_shift_table`, `proj_out`; the buffers `pos_embed.pos_embed`, `temp_pos_embed` are
checked when present and not written back (non-persistent), `caption_projection.y_embedding`
(an unused buffer) is dropped.
"""
from __future__ import annotations

import math
import os
from typing import Any

import jax
import numpy as np

from skipdit_jax.models.dit import DiT, validate_shape
from skipdit_jax.models.latte import Latte, temp_embed_table, validate_latte
from skipdit_jax.models.latte_t2v import DiTT2V, LatteT2V, validate_t2v
from skipdit_jax.models.layers import sincos_2d
from skipdit_jax.models.registry import SIZES, Model, init_params
from skipdit_jax.models.state_dict_io import StateDict, load_state_dict, save_safetensors

Path = tuple[str, ...]
_PREFIXES = ("module.", "_orig_mod.")  # DDP and torch.compile wrappers
_WRAPPERS = ("ema", "model", "state_dict")  # training checkpoints: the EMA weights first


def _num_fusions(m: Model) -> int:
  """Skip fusions: one per deep block (DiT), one per deep block pair (Latte)."""
  if not m.long_skip:
    return 0
  return m.depth // 4 if isinstance(m, Latte) else m.depth // 2


def _linear(name: str, path: Path) -> list[tuple[str, Path, str]]:
  """A torch Linear's two entries: the weight transposed to our kernel, the bias copied."""
  return [(name + ".weight", path + ("kernel",), "linear"),
          (name + ".bias", path + ("bias",), "copy")]


def _conv(name: str, path: Path) -> list[tuple[str, Path, str]]:
  """A torch patch Conv2d's two entries: OIHW weight to our HWIO kernel, bias copied."""
  return [(name + ".weight", path + ("kernel",), "conv"),
          (name + ".bias", path + ("bias",), "copy")]


def _skip_fusions(m: Model) -> list[tuple[str, Path, str]]:
  """The long skips' LayerNorm + Linear, named alike in every official model."""
  out: list[tuple[str, Path, str]] = []
  for j in range(_num_fusions(m)):
    f = (f"skip_fusions_{j}",)
    out.append((f"skip_norms.{j}.weight", f + ("norm", "scale"), "copy"))
    out.append((f"skip_norms.{j}.bias", f + ("norm", "bias"), "copy"))
    out += _linear(f"skip_linears.{j}.linear", f + ("linear",))
  return out


def _t2v_entries(m: Model) -> list[tuple[str, Path, str]]:
  """The Latte-T2V-skip table (VIDEO.md §2.1): official key, our path, rule."""
  out: list[tuple[str, Path, str]] = []
  out += _conv("pos_embed.proj", ("x_embedder",))
  for n in (1, 2):
    out += _linear(f"adaln_single.emb.timestep_embedder.linear_{n}",
                   ("adaln_single", "t_embedder", f"mlp_{2 * n - 2}"))
  out += _linear("adaln_single.linear", ("adaln_single", "linear"))
  out += _linear("caption_projection.linear_1", ("caption_projection", "linear_1"))
  out += _linear("caption_projection.linear_2", ("caption_projection", "linear_2"))
  video = isinstance(m, Latte)
  for i in range(m.depth):
    layer, temporal = (i // 2, bool(i % 2)) if video else (i, False)
    name = f"{'temporal_' if temporal else ''}transformer_blocks.{layer}"
    b = (f"blocks_{i}",)
    for a in ("attn1",) if temporal else ("attn1", "attn2"):
      for q in ("to_q", "to_k", "to_v"):
        out += _linear(f"{name}.{a}.{q}", b + (a, q))
      out += _linear(f"{name}.{a}.to_out.0", b + (a, "to_out"))
    out += _linear(f"{name}.ff.net.0.proj", b + ("ff", "fc1"))
    out += _linear(f"{name}.ff.net.2", b + ("ff", "fc2"))
    out.append((f"{name}.scale_shift_table", b + ("scale_shift_table",), "copy"))
  out += _skip_fusions(m)
  out.append(("scale_shift_table", ("final_layer", "scale_shift_table"), "copy"))
  out += _linear("proj_out", ("final_layer", "proj_out"))
  return out


def _entries(m: Model) -> list[tuple[str, Path, str]]:
  """(official key, our param path, layout rule) for every trainable tensor of `m`."""
  if getattr(m, "cond", "class") == "text_tokens":
    return _t2v_entries(m)
  out: list[tuple[str, Path, str]] = []
  out += _conv("x_embedder.proj", ("x_embedder",))
  out += _linear("t_embedder.mlp.0", ("t_embedder", "mlp_0"))
  out += _linear("t_embedder.mlp.2", ("t_embedder", "mlp_2"))
  if m.num_classes > 0:  # an unconditional Latte has no label table
    out.append(("y_embedder.embedding_table.weight", ("y_embedder", "embedding_table"),
                "copy"))
  for i in range(m.depth):
    b = (f"blocks_{i}",)
    out += _linear(f"blocks.{i}.attn.qkv", b + ("attn", "qkv"))
    out += _linear(f"blocks.{i}.attn.proj", b + ("attn", "proj"))
    out += _linear(f"blocks.{i}.mlp.fc1", b + ("mlp", "fc1"))
    out += _linear(f"blocks.{i}.mlp.fc2", b + ("mlp", "fc2"))
    out += _linear(f"blocks.{i}.adaLN_modulation.1", b + ("adaLN_modulation",))
  out += _skip_fusions(m)
  out += _linear("final_layer.linear", ("final_layer", "linear"))
  out += _linear("final_layer.adaLN_modulation.1", ("final_layer", "adaLN_modulation"))
  return out


def _official_shape(rule: str, shape: tuple[int, ...], m: Model) -> tuple[int, ...]:
  if rule == "linear":
    return shape[::-1]
  if rule == "conv":
    return (shape[1], m.in_channels, m.patch_size, m.patch_size)
  return shape


def _to_ours(rule: str, a: np.ndarray, m: Model) -> np.ndarray:
  a = np.asarray(a, np.float32)
  if rule == "linear":
    return np.ascontiguousarray(a.T)
  if rule == "conv":  # (D, C, p, p) -> (p, p, C, D) -> (p*p*C, D)
    return np.ascontiguousarray(a.transpose(2, 3, 1, 0).reshape(-1, a.shape[0]))
  return a


def _to_official(rule: str, a: np.ndarray, m: Model) -> np.ndarray:
  a = np.asarray(a, np.float32)
  if rule == "linear":
    return np.ascontiguousarray(a.T)
  if rule == "conv":
    p, c = m.patch_size, m.in_channels
    return np.ascontiguousarray(a.reshape(p, p, c, -1).transpose(3, 2, 0, 1))
  return a


def _unrolled(m: Model) -> DiT:
  """The same model with one parameter subtree per block (the layout the table names)."""
  return m.clone(scan_blocks=False) if getattr(m, "scan_blocks", False) else m


def _param_shapes(m: Model) -> dict[Path, tuple[int, ...]]:
  tree = jax.eval_shape(lambda r: init_params(_unrolled(m), r), jax.random.key(0))
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  return {tuple(k.key for k in path): tuple(s.shape) for path, s in flat}


def official_shapes(m: Model) -> dict[str, tuple[int, ...]]:
  """Every official key of `m` (without `pos_embed`) and its shape."""
  shapes = _param_shapes(m)
  return {name: _official_shape(rule, shapes[path], m) for name, path, rule in _entries(m)}


def _strip_prefixes(sd: StateDict) -> StateDict:
  for key in _WRAPPERS:  # {"ema": {...}, "opt": ...} as the released .pt files
    if isinstance(sd.get(key), dict):
      sd = sd[key]
      break
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


def check_temp_embed(temp: np.ndarray, m: Latte, atol: float = 1e-5) -> None:
  """Latte's fixed frame table must equal ours and fit `num_frames`."""
  f, d = m.num_frames, m.hidden_size
  if tuple(temp.shape) not in ((1, f, d), (f, d)):
    raise ValueError(f"temp_embed has shape {tuple(temp.shape)}, expected (1, {f}, {d}) for "
                     f"num_frames={f}: pass the num_frames the checkpoint was trained with "
                     f"(temp_embed's second axis)")
  err = float(np.abs(np.asarray(temp, np.float64).reshape(f, d)
                     - temp_embed_table(d, f)).max())
  if err > atol:
    raise ValueError(f"temp_embed differs from the fixed 1-D sin-cos frame table by "
                     f"{err:.3g}; it is not trainable, so the checkpoint would not "
                     "reproduce its outputs")


def from_official(state_dict: StateDict, m: Model) -> dict:
  """Official state_dict (numpy arrays) -> our float32 params for module `m`.

  Raises a ValueError naming every missing, unexpected and misshaped key.
  """
  sd = _strip_prefixes(state_dict)
  t2v = getattr(m, "cond", "class") == "text_tokens"
  pos = sd.pop("pos_embed.pos_embed" if t2v else "pos_embed", None)
  temp = (sd.pop("temp_pos_embed" if t2v else "temp_embed", None)
          if isinstance(m, Latte) else None)
  if t2v:
    sd.pop("caption_projection.y_embedding", None)  # a buffer the forward never reads
  if temp is not None:
    check_temp_embed(np.asarray(temp), m)
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


def to_official(params: dict, m: Model, *, with_pos_embed: bool = True) -> StateDict:
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
  if with_pos_embed and getattr(m, "cond", "class") != "text_tokens":  # T2V: non-persistent
    sd["pos_embed"] = sincos_2d(m.hidden_size, m.input_size // m.patch_size)[None].astype(
        np.float32)
    if isinstance(m, Latte):
      sd["temp_embed"] = temp_embed_table(m.hidden_size, m.num_frames)[None].astype(np.float32)
  return sd


def _describe(m: Model) -> str:
  family = ("Latte" if isinstance(m, Latte) else "DiT") + (
      "-T2V" if getattr(m, "cond", "class") == "text_tokens" else "")
  extra = f" num_frames={m.num_frames}" if isinstance(m, Latte) else ""
  return (f"{'Skip-' if m.long_skip else ''}{family}{extra} depth={m.depth} hidden={m.hidden_size} "
          f"patch={m.patch_size} in_channels={m.in_channels} learn_sigma={m.learn_sigma}")


def detect_fields(state_dict: StateDict, *, input_size: int | None = None,
                  num_classes: int | None = None, num_heads: int | None = None,
                  num_frames: int | None = None) -> dict:
  """DiT or Latte fields read from an official state_dict's shapes.

  `num_heads` is not visible in the shapes: by default it comes from the size registry
  by (depth, width). `input_size` comes from `pos_embed` when present (else 32);
  `num_classes` from the label table (its last row is the null class). A Latte is
  recognised by `temp_embed` (which fixes `num_frames`), by depth/4 skip fusions, or by
  `num_frames` given; it has `video=True` in the result and no label table means
  num_classes=0 (unconditional).
  """
  sd = _strip_prefixes(state_dict)
  if "caption_projection.linear_1.weight" in sd:
    return _t2v_fields(sd, input_size=input_size, num_heads=num_heads, num_frames=num_frames)
  if "x_embedder.proj.weight" not in sd:
    raise ValueError("not a DiT state_dict: no key 'x_embedder.proj.weight' (keys start "
                     f"with {_listing(list(sd), 5)})")
  d, c, p, p2 = np.shape(sd["x_embedder.proj.weight"])
  if p != p2:
    raise ValueError(f"x_embedder.proj.weight has a non-square patch {p}x{p2}")
  idx = {int(k.split(".")[1]) for k in sd if k.startswith("blocks.")}
  fusions = {int(k.split(".")[1]) for k in sd if k.startswith(("skip_norms.", "skip_linears."))}
  long_skip = bool(fusions)
  blocks, n_fusions = max(idx, default=-1) + 1, max(fusions, default=-1) + 1
  video = ("temp_embed" in sd or num_frames is not None
           or (long_skip and 4 * n_fusions == blocks))
  # L/2 fusions (L/4 for Latte's pairs) also fix the depth, so a dict that lost its last
  # blocks is caught too.
  depth = max(blocks, (4 if video else 2) * n_fusions)
  if sorted(idx) != list(range(depth)):
    gaps = sorted(set(range(depth)) - idx)
    raise ValueError(f"state_dict implies {depth} blocks but has none for blocks {gaps}")
  fields = dict(patch_size=int(p), in_channels=int(c), hidden_size=int(d), depth=depth,
                long_skip=long_skip)

  if "final_layer.linear.weight" in sd:
    fields["learn_sigma"] = _learn_sigma(sd, "final_layer.linear.weight", p, c)
  if "blocks.0.mlp.fc1.weight" in sd:
    fields["mlp_ratio"] = np.shape(sd["blocks.0.mlp.fc1.weight"])[0] / d

  if video:
    fields.update(_video_fields(sd, num_frames))
  table = "y_embedder.embedding_table.weight"
  rows = np.shape(sd.get(table, (1001, d)))[0]
  if video and table not in sd:
    if num_classes:
      raise ValueError(f"num_classes={num_classes}, but the state_dict has no {table}: it "
                       "is an unconditional Latte; pass num_classes=0 (or leave it out)")
    fields.update(num_classes=0, class_dropout_prob=0.0)
  elif num_classes is None or rows == num_classes + 1:
    fields.update(num_classes=int(rows) - 1, class_dropout_prob=0.1)
  elif rows == num_classes:  # trained without label dropout: no null row
    fields.update(num_classes=int(rows), class_dropout_prob=0.0)
  else:
    raise ValueError(f"num_classes={num_classes} does not fit the label table of {rows} "
                     f"rows (num_classes + 1 with the null class): pass num_classes="
                     f"{rows - 1}")

  fields["input_size"] = _grid_input_size(sd, "pos_embed", p, input_size)

  fields["num_heads"] = _registry_heads(num_heads, depth, d, f"depth {depth}")
  return fields


def _grid_input_size(sd: StateDict, key: str, p: int, input_size: int | None) -> int:
  """The latent size that the stored positional table `key` (.., T, D) implies for patch
  p (T must be a square grid; a given input_size must agree); 32 without the table."""
  if key not in sd:
    return 32 if input_size is None else input_size
  t = int(np.shape(sd[key])[-2])
  g = math.isqrt(t)
  if g * g != t:
    raise ValueError(f"{key} has {t} tokens, not a square grid")
  if input_size is not None and input_size != g * p:
    raise ValueError(f"input_size={input_size} does not fit {key} ({t} tokens of patch "
                     f"{p} = {g * p}x{g * p} latents): pass input_size={g * p}")
  return g * p


def _learn_sigma(sd: StateDict, key: str, p: int, c: int) -> bool:
  """Whether the output projection `key` predicts the variance too (2C channels per
  pixel of a p x p patch) or only epsilon (C); any other width is an error."""
  c_out, rem = divmod(np.shape(sd[key])[0], p * p)
  if rem or c_out not in (c, 2 * c):
    raise ValueError(f"{key} has {c_out * p * p + rem} outputs; expected "
                     f"{p * p * c} or {2 * p * p * c} (patch {p}, {c} channels)")
  return c_out == 2 * c


def _t2v_fields(sd: StateDict, *, input_size: int | None, num_heads: int | None,
                num_frames: int | None) -> dict:
  """Fields of a Latte-T2V(-skip) state_dict (DiTT2V when it has no temporal blocks).
  `num_heads` from the registry by (layers, width) unless given (XL: 16); input_size from
  `pos_embed.pos_embed` when present, else the argument, else 32 (the official is 64)."""
  d, c, p, p2 = np.shape(sd["pos_embed.proj.weight"])
  if p != p2:
    raise ValueError(f"pos_embed.proj.weight has a non-square patch {p}x{p2}")
  layers = {int(k.split(".")[1]) for k in sd if k.startswith("transformer_blocks.")}
  temporal = {int(k.split(".")[1]) for k in sd if k.startswith("temporal_transformer_blocks.")}
  fusions = {int(k.split(".")[1]) for k in sd if k.startswith(("skip_norms.", "skip_linears."))}
  n = max(max(layers, default=-1) + 1, 2 * (max(fusions, default=-1) + 1))
  if sorted(layers) != list(range(n)) or (temporal and sorted(temporal) != list(range(n))):
    raise ValueError(f"state_dict implies {n} layers but transformer_blocks has "
                     f"{sorted(layers)} and temporal_transformer_blocks {sorted(temporal)}")
  video = bool(temporal) or num_frames is not None
  fields = dict(cond="text_tokens", patch_size=int(p), in_channels=int(c), hidden_size=int(d),
                depth=2 * n if video else n, long_skip=bool(fusions),
                caption_channels=int(np.shape(sd["caption_projection.linear_1.weight"])[1]),
                num_classes=0, class_dropout_prob=0.1)
  if "proj_out.weight" in sd:
    fields["learn_sigma"] = _learn_sigma(sd, "proj_out.weight", p, c)
  if "transformer_blocks.0.ff.net.0.proj.weight" in sd:
    fields["mlp_ratio"] = np.shape(sd["transformer_blocks.0.ff.net.0.proj.weight"])[0] / d
  if video:
    frames = num_frames
    if "temp_pos_embed" in sd:
      frames = int(np.shape(sd["temp_pos_embed"])[-2])
      if num_frames is not None and num_frames != frames:
        raise ValueError(f"num_frames={num_frames} does not fit temp_pos_embed "
                         f"{tuple(np.shape(sd['temp_pos_embed']))}: pass num_frames={frames}")
    fields.update(video=True, num_frames=16 if frames is None else int(frames))
  fields["input_size"] = _grid_input_size(sd, "pos_embed.pos_embed", p, input_size)
  fields["num_heads"] = _registry_heads(num_heads, n, d, f"{n} layers")
  return fields


def _registry_heads(num_heads: int | None, depth: int, width: int, what: str) -> int:
  """`num_heads` as given, else the registry size's with this (depth, width); a state_dict
  does not record the number of heads."""
  if num_heads is not None:
    return num_heads
  by_shape = {(dep, wid): h for dep, wid, h in SIZES.values()}
  if (depth, width) not in by_shape:
    raise ValueError(f"no registry size has {what} and width {width}, so the number of "
                     "attention heads is unknown: pass num_heads=")
  return by_shape[(depth, width)]


def _video_fields(sd: StateDict, num_frames: int | None) -> dict:
  """`video` and `num_frames` of a Latte state_dict (temp_embed fixes the frame count)."""
  if "temp_embed" not in sd:
    return dict(video=True, num_frames=16 if num_frames is None else int(num_frames))
  frames = int(np.shape(sd["temp_embed"])[-2])
  if num_frames is not None and num_frames != frames:
    raise ValueError(f"num_frames={num_frames} does not fit temp_embed "
                     f"{tuple(np.shape(sd['temp_embed']))} (the official model is fixed to "
                     f"its table's length): pass num_frames={frames}")
  return dict(video=True, num_frames=frames)


def load_official(path_or_state_dict: str | os.PathLike | StateDict, *,
                  input_size: int | None = None, num_classes: int | None = None,
                  num_heads: int | None = None, num_frames: int | None = None,
                  **overrides) -> tuple[Model, dict]:
  """An official DiT / Skip-DiT, Latte / Skip-Latte or Latte-T2V(-skip) checkpoint ->
  (module, float32 params). A T2V dict (it has `caption_projection.*`) gives `LatteT2V`
  with caption_channels read from it (4096 = T5-XXL officially).

  Accepts a path (.safetensors; .pt/.pth with torch installed; .npz) or a dict of numpy
  arrays (or one wrapped as {"ema": ...} / {"model": ...}). Size, patch, channels, long
  skips, learned sigma and (Latte) frames come from the shapes; `overrides` set other
  fields (e.g. dtype="bfloat16").
  """
  sd = (path_or_state_dict if isinstance(path_or_state_dict, dict)
        else load_state_dict(path_or_state_dict))
  sd = _strip_prefixes(sd)
  fields = detect_fields(sd, input_size=input_size, num_classes=num_classes,
                         num_heads=num_heads, num_frames=num_frames)
  fields.update(overrides)
  if fields.get("cond") == "text_tokens":
    module = LatteT2V(**fields) if fields.pop("video", False) else DiTT2V(**fields)
    validate_t2v(module)
    return module, from_official(sd, module)
  if fields.pop("video", False):
    module = Latte(**fields)
    validate_latte(module)
  else:
    module = DiT(**fields)
    validate_shape(module)
  return module, from_official(sd, module)


def save_official(path: str | os.PathLike, params: dict, m: Model) -> None:
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
