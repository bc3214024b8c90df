"""The SD KL-f8 VAE: diffusers key names and shapes, a float64 numpy forward, the loader."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view
from PIL import Image

from skipdit_jax.models import state_dict_io
from skipdit_jax.models import vae as V

SMALL = V.AutoencoderKL(block_out_channels=(16, 32, 32, 32), norm_num_groups=8)


@functools.lru_cache(maxsize=None)
def small_params(seed=0):
  """Random weights everywhere (biases and norms too), in diffusers layout and ours."""
  shapes = V._leaf_paths(SMALL)
  rng = np.random.default_rng(seed)
  sd = {}
  for path, shape in shapes.items():
    key = V._torch_key(path)
    if len(shape) == 4:    # ours (kh, kw, I, O) -> torch (O, I, kh, kw)
      fan_in = shape[0] * shape[1] * shape[2]
      sd[key] = rng.normal(0, 1 / np.sqrt(fan_in), (shape[3], shape[2]) + shape[:2])
    elif len(shape) == 2:  # ours (I, O) -> torch (O, I)
      sd[key] = rng.normal(0, 1 / np.sqrt(shape[0]), shape[::-1])
    else:
      sd[key] = rng.normal(1.0 if key.endswith("norm1.weight") or "norm" in key
                           and key.endswith("weight") else 0.0, 0.1, shape)
    sd[key] = sd[key].astype(np.float32)
  _, params, report = V.load_vae(sd, vae=SMALL)
  assert not (report.missing or report.unexpected or report.misshaped)
  return sd, params


_encode = jax.jit(lambda p, x, rng=None: V.encode_latents(SMALL, p, x, rng))
_decode = jax.jit(lambda p, z: V.decode_latents(SMALL, p, z))


def photo(size=32):
  """A real photo bundled with scikit-learn, resized, in [-1, 1]."""
  from sklearn.datasets import load_sample_image
  img = Image.fromarray(load_sample_image("china.jpg")).resize((size, size), Image.BICUBIC)
  return (np.asarray(img, np.float32) / 127.5 - 1.0)[None]


# --- float64 numpy reference, written from the diffusers AutoencoderKL description ---

def conv(sd, name, x, stride=1, pad=None):
  w = np.asarray(sd[name + ".weight"], np.float64)   # (O, I, k, k)
  k = w.shape[-1]
  p = (k // 2, k // 2, k // 2, k // 2) if pad is None else pad  # top, bottom, left, right
  x = np.pad(x, ((0, 0), (p[0], p[1]), (p[2], p[3]), (0, 0)))
  win = sliding_window_view(x, (k, k), axis=(1, 2))[:, ::stride, ::stride]  # n,h,w,c,k,k
  return np.einsum("nhwcab,ocab->nhwo", win, w) + sd[name + ".bias"]


def group_norm(sd, name, x, groups):
  n, h, w, c = x.shape
  g = x.reshape(n, h, w, groups, c // groups)
  mu = g.mean(axis=(1, 2, 4), keepdims=True)
  var = g.var(axis=(1, 2, 4), keepdims=True)
  y = ((g - mu) / np.sqrt(var + 1e-6)).reshape(x.shape)
  return y * sd[name + ".weight"] + sd[name + ".bias"]


def silu(x):
  return x / (1 + np.exp(-x))


def resnet(sd, name, x, groups):
  h = conv(sd, name + ".conv1", silu(group_norm(sd, name + ".norm1", x, groups)))
  h = conv(sd, name + ".conv2", silu(group_norm(sd, name + ".norm2", h, groups)))
  if name + ".conv_shortcut.weight" in sd:
    x = conv(sd, name + ".conv_shortcut", x)
  return x + h


def attention(sd, name, x, groups):
  n, h, w, c = x.shape
  t = group_norm(sd, name + ".group_norm", x, groups).reshape(n, h * w, c)
  lin = lambda nm, a: a @ np.asarray(sd[f"{name}.{nm}.weight"], np.float64).T + sd[
      f"{name}.{nm}.bias"]
  q, k, v = lin("to_q", t), lin("to_k", t), lin("to_v", t)
  s = q @ k.transpose(0, 2, 1) / np.sqrt(c)
  a = np.exp(s - s.max(-1, keepdims=True))
  a /= a.sum(-1, keepdims=True)
  return x + lin("to_out.0", a @ v).reshape(x.shape)


def mid(sd, name, x, groups):
  x = resnet(sd, name + ".resnets.0", x, groups)
  x = attention(sd, name + ".attentions.0", x, groups)
  return resnet(sd, name + ".resnets.1", x, groups)


def np_encode_decode(sd, x, channels, layers, groups):
  x = conv(sd, "encoder.conv_in", np.asarray(x, np.float64))
  for i in range(len(channels)):
    for r in range(layers):
      x = resnet(sd, f"encoder.down_blocks.{i}.resnets.{r}", x, groups)
    if i < len(channels) - 1:  # zero-pad bottom/right by one, stride-2 3x3 conv
      x = conv(sd, f"encoder.down_blocks.{i}.downsamplers.0.conv", x, 2, (0, 1, 0, 1))
  x = mid(sd, "encoder.mid_block", x, groups)
  x = conv(sd, "encoder.conv_out", silu(group_norm(sd, "encoder.conv_norm_out", x, groups)))
  moments = conv(sd, "quant_conv", x)
  mean = moments[..., :moments.shape[-1] // 2]
  z = conv(sd, "post_quant_conv", mean)
  x = mid(sd, "decoder.mid_block", conv(sd, "decoder.conv_in", z), groups)
  for i in range(len(channels)):
    for r in range(layers + 1):
      x = resnet(sd, f"decoder.up_blocks.{i}.resnets.{r}", x, groups)
    if i < len(channels) - 1:
      x = x.repeat(2, axis=1).repeat(2, axis=2)
      x = conv(sd, f"decoder.up_blocks.{i}.upsamplers.0.conv", x)
  x = conv(sd, "decoder.conv_out", silu(group_norm(sd, "decoder.conv_norm_out", x, groups)))
  return moments, x


# --- tests --------------------------------------------------------------------------

def test_full_size_names_shapes_and_count():
  """The SD KL-f8 VAE: 248 tensors, 83,653,863 parameters, diffusers names (eval_shape)."""
  shapes = {V._torch_key(p): s for p, s in V._leaf_paths(V.AutoencoderKL()).items()}
  assert len(shapes) == 248
  assert sum(int(np.prod(s)) for s in shapes.values()) == 83_653_863
  torch_shape = lambda s: (s[3], s[2], s[0], s[1]) if len(s) == 4 else s[::-1]
  known = {  # diffusers AutoencoderKL, torch layouts
      "encoder.conv_in.weight": (128, 3, 3, 3),
      "encoder.down_blocks.0.downsamplers.0.conv.weight": (128, 128, 3, 3),
      "encoder.down_blocks.1.resnets.0.conv_shortcut.weight": (256, 128, 1, 1),
      "encoder.down_blocks.2.resnets.1.norm2.weight": (512,),
      "encoder.mid_block.attentions.0.to_q.weight": (512, 512),
      "encoder.mid_block.attentions.0.to_out.0.bias": (512,),
      "encoder.conv_out.weight": (8, 512, 3, 3),
      "quant_conv.weight": (8, 8, 1, 1), "post_quant_conv.weight": (4, 4, 1, 1),
      "decoder.conv_in.weight": (512, 4, 3, 3),
      "decoder.up_blocks.0.upsamplers.0.conv.weight": (512, 512, 3, 3),
      "decoder.up_blocks.2.resnets.0.conv_shortcut.weight": (256, 512, 1, 1),
      "decoder.up_blocks.3.resnets.2.conv2.weight": (128, 128, 3, 3),
      "decoder.conv_out.weight": (3, 128, 3, 3),
  }
  for k, s in known.items():
    assert torch_shape(shapes[k]) == s, k
  for k in ("encoder.down_blocks.3.downsamplers.0.conv.weight",
            "decoder.up_blocks.3.upsamplers.0.conv.weight"):
    assert k not in shapes


def test_encode_decode_matches_float64_numpy_on_a_photo():
  sd, params = small_params()
  x = photo(32)
  lat = _encode(params, x)
  rec = _decode(params, lat)
  assert lat.shape == (1, 4, 4, 4) and rec.shape == (1, 32, 32, 3)
  moments, want = np_encode_decode(sd, x, SMALL.block_out_channels, 2, 8)
  np.testing.assert_allclose(np.asarray(lat) / V.SCALE, moments[..., :4], rtol=1e-4,
                             atol=1e-4 * np.abs(moments).max())
  np.testing.assert_allclose(np.asarray(rec), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
  # Sampling adds exp(logvar / 2) noise around the mean.
  s = _encode(params, x, jax.random.key(0))
  std = np.exp(0.5 * np.clip(moments[..., 4:], -30, 20)) * V.SCALE
  z = (np.asarray(s) - np.asarray(lat)) / std
  assert 0.5 < z.std() < 1.5 and np.all(np.isfinite(z))


def test_random_init_round_trip_runs_on_a_photo():
  # rbg keys compile much faster on CPU than threefry; the initialisers are the same.
  params = V.init_vae(SMALL, jax.random.key(0, impl="unsafe_rbg"), image_size=32)
  lat = _encode(params, photo(32))
  rec = _decode(params, lat)
  assert lat.shape == (1, 4, 4, 4) and rec.shape == (1, 32, 32, 3)
  assert np.all(np.isfinite(np.asarray(rec))) and np.asarray(rec).std() > 0


def test_loader_reports_and_accepts_legacy_names(tmp_path):
  sd, params = small_params()
  back = V.vae_to_diffusers(params)
  assert sorted(back) == sorted(sd)
  for k in sd:
    np.testing.assert_array_equal(back[k], sd[k], err_msg=k)
  # Older files: query/key/value/proj_attn, the original LDM stored them as 1x1 convs.
  legacy = {}
  for k, v in sd.items():
    for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"),
                     ("to_out.0", "proj_attn")):
      if f".{new}." in k:
        k = k.replace(f".{new}.", f".{old}.")
        v = v[:, :, None, None] if v.ndim == 2 else v
    legacy[k] = v
  legacy["encoder.extra.weight"] = np.zeros(3, np.float32)
  path = tmp_path / "diffusion_pytorch_model.safetensors"
  state_dict_io.save_safetensors(path, legacy)
  _, p2, report = V.load_vae(path, vae=SMALL)
  assert report.unexpected == ["encoder.extra.weight"] and not report.missing
  jax.tree_util.tree_map(np.testing.assert_array_equal, p2, params)
  # Missing and misshaped keys stop the load and are named.
  cut = dict(sd)
  cut.pop("decoder.up_blocks.1.resnets.2.conv1.bias")
  with pytest.raises(ValueError, match=r"missing 1: \['decoder\.up_blocks\.1\.resnets\.2"):
    V.load_vae(cut, vae=SMALL)
  bad = dict(sd)
  bad["quant_conv.weight"] = np.zeros((8, 8, 3, 3), np.float32)
  with pytest.raises(ValueError, match=r"misshaped 1: \['quant_conv\.weight"):
    V.load_vae(bad, vae=SMALL)
  _, _, rep = V.load_vae(cut, vae=SMALL, strict=False)
  assert rep.missing == ["decoder.up_blocks.1.resnets.2.conv1.bias"]


def test_image_size_must_be_a_multiple_of_the_factor():
  _, params = small_params()
  with pytest.raises(ValueError, match="multiple of 8"):
    V.encode_latents(SMALL, params, jnp.zeros((1, 20, 20, 3)))


def test_architecture_is_read_from_the_shapes():
  sd, _ = small_params()
  vae = V.infer_vae(sd, norm_num_groups=8)
  assert vae == SMALL
  full = {V._torch_key(p): np.zeros(s[::-1] if len(s) == 2 else
                                    (s[3], s[2], s[0], s[1]) if len(s) == 4 else s, np.int8)
          for p, s in V._leaf_paths(V.AutoencoderKL()).items()}
  assert V.infer_vae(full) == V.AutoencoderKL()
  with pytest.raises(ValueError, match="not a diffusers AutoencoderKL"):
    V.infer_vae({"decoder.conv_in.weight": np.zeros((1, 1, 1, 1))})
