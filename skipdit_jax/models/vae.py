"""The Stable Diffusion KL-f8 autoencoder (`sd-vae-ft-mse` / `-ema`) in Flax, NHWC.

Architecture and parameter names follow the diffusers `AutoencoderKL` release (the file
users download as `diffusion_pytorch_model.safetensors`): our module names are the
diffusers ones with `.N` written `_N`, so the key map is mechanical (`_torch_key`).
DiT works on `0.18215 * z`, z a sample (or the mean) of the encoder's Gaussian.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from skipdit_jax.models.state_dict_io import StateDict, load_state_dict

SCALE = 0.18215  # DiT's latent scale for the SD VAE
_EPS = 1e-6


def _conv(features: int, k: int, name: str, stride: int = 1, padding="SAME") -> nn.Conv:
  return nn.Conv(features, (k, k), (stride, stride), padding=padding, name=name)


def _norm(groups: int, name: str) -> nn.GroupNorm:
  return nn.GroupNorm(num_groups=groups, epsilon=_EPS, name=name)


class ResnetBlock(nn.Module):
  """GN -> SiLU -> conv3 -> GN -> SiLU -> conv3, plus a 1x1 shortcut when widths differ."""
  out_channels: int
  groups: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = _conv(self.out_channels, 3, "conv1")(nn.silu(_norm(self.groups, "norm1")(x)))
    h = _conv(self.out_channels, 3, "conv2")(nn.silu(_norm(self.groups, "norm2")(h)))
    if x.shape[-1] != self.out_channels:
      x = _conv(self.out_channels, 1, "conv_shortcut")(x)
    return x + h


class SelfAttention(nn.Module):
  """Single-head spatial self-attention with a GroupNorm and a residual."""
  groups: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n, h, w, c = x.shape
    t = _norm(self.groups, "group_norm")(x).reshape(n, h * w, c)
    q, k, v = (nn.Dense(c, name=nm)(t) for nm in ("to_q", "to_k", "to_v"))
    att = jax.nn.softmax(jnp.einsum("nqc,nkc->nqk", q, k) * c ** -0.5, axis=-1)
    out = nn.Dense(c, name="to_out_0")(jnp.einsum("nqk,nkc->nqc", att, v))
    return x + out.reshape(n, h, w, c)


class MidBlock(nn.Module):
  channels: int
  groups: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = ResnetBlock(self.channels, self.groups, name="resnets_0")(x)
    x = SelfAttention(self.groups, name="attentions_0")(x)
    return ResnetBlock(self.channels, self.groups, name="resnets_1")(x)


class Downsample(nn.Module):
  """Pad right/bottom by one, then a stride-2 3x3 conv (as diffusers, padding=0)."""
  channels: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    return _conv(self.channels, 3, "conv", stride=2, padding="VALID")(x)


class Upsample(nn.Module):
  """Nearest-neighbour x2, then a 3x3 conv."""
  channels: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return _conv(self.channels, 3, "conv")(x)


class Block(nn.Module):
  """A down/up block: `num_resnets` ResnetBlocks then an optional resampler."""
  channels: int
  num_resnets: int
  resample: str | None  # "down" | "up" | None
  groups: int = 32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    for i in range(self.num_resnets):
      x = ResnetBlock(self.channels, self.groups, name=f"resnets_{i}")(x)
    if self.resample == "down":
      x = Downsample(self.channels, name="downsamplers_0")(x)
    elif self.resample == "up":
      x = Upsample(self.channels, name="upsamplers_0")(x)
    return x


class Encoder(nn.Module):
  block_out_channels: Sequence[int]
  layers_per_block: int
  latent_channels: int
  groups: int

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    ch = self.block_out_channels
    x = _conv(ch[0], 3, "conv_in")(x)
    for i, c in enumerate(ch):
      x = Block(c, self.layers_per_block, "down" if i < len(ch) - 1 else None, self.groups,
                name=f"down_blocks_{i}")(x)
    x = MidBlock(ch[-1], self.groups, name="mid_block")(x)
    x = nn.silu(_norm(self.groups, "conv_norm_out")(x))
    return _conv(2 * self.latent_channels, 3, "conv_out")(x)


class Decoder(nn.Module):
  block_out_channels: Sequence[int]
  layers_per_block: int
  out_channels: int
  groups: int

  @nn.compact
  def __call__(self, z: jax.Array) -> jax.Array:
    ch = tuple(reversed(self.block_out_channels))
    x = _conv(ch[0], 3, "conv_in")(z)
    x = MidBlock(ch[0], self.groups, name="mid_block")(x)
    for i, c in enumerate(ch):
      x = Block(c, self.layers_per_block + 1, "up" if i < len(ch) - 1 else None, self.groups,
                name=f"up_blocks_{i}")(x)
    x = nn.silu(_norm(self.groups, "conv_norm_out")(x))
    return _conv(self.out_channels, 3, "conv_out")(x)


class AutoencoderKL(nn.Module):
  """x (N, H, W, 3) in [-1, 1] <-> z (N, H/f, W/f, 4), f = 2**(len(block_out_channels)-1).

  The defaults are the SD KL-f8 VAE (83.7M parameters).
  """
  in_channels: int = 3
  latent_channels: int = 4
  block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
  layers_per_block: int = 2
  norm_num_groups: int = 32

  def setup(self):
    if any(c % self.norm_num_groups for c in self.block_out_channels):
      raise ValueError(f"vae.block_out_channels={self.block_out_channels} must be multiples "
                       f"of vae.norm_num_groups={self.norm_num_groups}")
    self.encoder = Encoder(self.block_out_channels, self.layers_per_block,
                           self.latent_channels, self.norm_num_groups)
    self.decoder = Decoder(self.block_out_channels, self.layers_per_block, self.in_channels,
                           self.norm_num_groups)
    self.quant_conv = _conv(2 * self.latent_channels, 1, "quant_conv")
    self.post_quant_conv = _conv(self.latent_channels, 1, "post_quant_conv")

  @property
  def factor(self) -> int:
    return 2 ** (len(self.block_out_channels) - 1)

  def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Mean and log-variance (clipped to [-30, 20]) of q(z|x), each (N, h, w, 4)."""
    f = self.factor
    if x.shape[1] % f or x.shape[2] % f:
      raise ValueError(f"image size {x.shape[1:3]} must be a multiple of {f}")
    moments = self.quant_conv(self.encoder(x))
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.clip(logvar, -30.0, 20.0)

  def decode(self, z: jax.Array) -> jax.Array:
    return self.decoder(self.post_quant_conv(z))

  def __call__(self, x: jax.Array) -> jax.Array:
    """Reconstruction from the posterior mean (used for init and round trips)."""
    return self.decode(self.encode(x)[0])


def encode_latents(vae: AutoencoderKL, params: dict, images: jax.Array,
                   rng: jax.Array | None = None) -> jax.Array:
  """Images (N, H, W, 3) in [-1, 1] -> DiT latents 0.18215 * z; z sampled when `rng` is
  given (as DiT's training does), else the posterior mean."""
  mean, logvar = vae.apply({"params": params}, images, method="encode")
  z = mean if rng is None else mean + jnp.exp(0.5 * logvar) * jax.random.normal(
      rng, mean.shape, mean.dtype)
  return z * SCALE


def decode_latents(vae: AutoencoderKL, params: dict, latents: jax.Array) -> jax.Array:
  """DiT latents -> images (N, H, W, 3), roughly in [-1, 1]."""
  return vae.apply({"params": params}, latents / SCALE, method="decode")


def init_vae(vae: AutoencoderKL, rng: jax.Array, image_size: int = 64) -> dict:
  x = jnp.zeros((1, image_size, image_size, vae.in_channels), jnp.float32)
  return jax.jit(vae.init)(rng, x)["params"]


# --- diffusers state_dict <-> params ------------------------------------------

# Older diffusers files (and the first sd-vae-ft-* uploads) name the attention layers so.
_LEGACY_ATTENTION = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}


def _torch_key(path: tuple[str, ...]) -> str:
  """("encoder", "down_blocks_0", ..., "kernel") -> "encoder.down_blocks.0....weight"."""
  parts = [re.sub(r"_(\d+)$", r".\1", p) for p in path[:-1]]
  return ".".join(parts + ["bias" if path[-1] == "bias" else "weight"])


@dataclasses.dataclass
class LoadReport:
  missing: list[str]
  unexpected: list[str]
  misshaped: list[str]

  def __str__(self) -> str:
    return (f"missing {len(self.missing)}: {self.missing[:8]}; unexpected "
            f"{len(self.unexpected)}: {self.unexpected[:8]}; misshaped "
            f"{len(self.misshaped)}: {self.misshaped[:8]}")


def _leaf_paths(vae: AutoencoderKL) -> dict[tuple[str, ...], tuple[int, ...]]:
  shapes = jax.eval_shape(lambda r: init_vae(vae, r), jax.random.key(0))
  flat = jax.tree_util.tree_flatten_with_path(shapes)[0]
  return {tuple(k.key for k in p): tuple(s.shape) for p, s in flat}


def _from_torch(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
  """Torch layout -> ours for a leaf of `shape`, or None when it cannot fit."""
  a = np.asarray(a, np.float32)
  if len(shape) == 4 and a.ndim == 4:
    a = a.transpose(2, 3, 1, 0)      # (O, I, kh, kw) -> (kh, kw, I, O)
  elif len(shape) == 2:
    if a.ndim == 4 and a.shape[2:] == (1, 1):
      a = a[:, :, 0, 0]              # attention as 1x1 convs (original LDM layout)
    a = a.T
  return np.ascontiguousarray(a) if a.shape == shape else None


def vae_from_diffusers(state_dict: StateDict, vae: AutoencoderKL) -> tuple[dict, LoadReport]:
  """diffusers-named VAE weights -> our params, and what did not fit."""
  sd = dict(state_dict)
  params: dict = {}
  used, missing, misshaped = set(), [], []
  for path, shape in _leaf_paths(vae).items():
    key = _torch_key(path)
    if key not in sd:
      for new, old in _LEGACY_ATTENTION.items():
        alt = key.replace(f".{new}.", f".{old}.")
        if alt != key and alt in sd:
          key = alt
          break
    if key not in sd:
      missing.append(key)
      continue
    used.add(key)
    a = _from_torch(sd[key], shape)
    if a is None:
      misshaped.append(f"{key} {tuple(np.shape(sd[key]))} (ours {shape})")
      continue
    node = params
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = a
  unexpected = sorted(k for k in sd if k not in used)
  return params, LoadReport(sorted(missing), unexpected, misshaped)


def vae_to_diffusers(params: dict) -> StateDict:
  """Our params -> diffusers names and layouts (float32)."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    a = np.asarray(leaf, np.float32)
    if a.ndim == 4:
      a = a.transpose(3, 2, 0, 1)
    elif a.ndim == 2:
      a = a.T
    out[_torch_key(tuple(k.key for k in path))] = np.ascontiguousarray(a)
  return out


def infer_vae(state_dict: StateDict, norm_num_groups: int = 32) -> AutoencoderKL:
  """The AutoencoderKL whose shapes a diffusers state_dict has (GroupNorm groups are not
  visible in shapes: 32 in every released SD VAE)."""
  sd = state_dict
  widths, i = [], 0
  while f"encoder.down_blocks.{i}.resnets.0.conv1.weight" in sd:
    widths.append(int(np.shape(sd[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"])[0]))
    i += 1
  layers = len({k.split(".")[4] for k in sd if k.startswith("encoder.down_blocks.0.resnets.")})
  if not widths or "encoder.conv_in.weight" not in sd or "post_quant_conv.weight" not in sd:
    raise ValueError("not a diffusers AutoencoderKL state_dict: expected encoder.conv_in, "
                     "encoder.down_blocks.N.resnets.M and post_quant_conv keys")
  return AutoencoderKL(in_channels=int(np.shape(sd["encoder.conv_in.weight"])[1]),
                       latent_channels=int(np.shape(sd["post_quant_conv.weight"])[0]),
                       block_out_channels=tuple(widths), layers_per_block=layers,
                       norm_num_groups=norm_num_groups)


def load_vae(path_or_state_dict: str | os.PathLike | StateDict, *,
             vae: AutoencoderKL | None = None, strict: bool = True
             ) -> tuple[AutoencoderKL, dict, LoadReport]:
  """Load a diffusers AutoencoderKL file (`.safetensors`, or `.bin` with torch).

  `vae=None` reads the architecture from the shapes (`infer_vae`). Missing or misshaped
  keys raise (the model could not run); unexpected keys are logged and returned in the
  report (`strict=False` also tolerates missing ones).
  """
  sd = (path_or_state_dict if isinstance(path_or_state_dict, dict)
        else load_state_dict(path_or_state_dict))
  vae = vae or infer_vae(sd)
  params, report = vae_from_diffusers(sd, vae)
  if report.misshaped or (strict and report.missing):
    raise ValueError(f"VAE weights do not fit AutoencoderKL{vae.block_out_channels}: "
                     f"{report}")
  if report.unexpected:
    logging.warning("VAE: %d unexpected keys ignored: %s", len(report.unexpected),
                    report.unexpected[:8])
  return vae, params, report
