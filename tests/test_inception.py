"""The FID Inception-v3 path without real weights: pooling rule, weight files, shapes."""
import json
import struct

import jax.numpy as jnp
import numpy as np
import pytest

from skipdit_jax.eval import inception


def test_avg_pool_excludes_padding_from_the_count():
  x = np.random.default_rng(0).normal(size=(1, 4, 5, 2))
  got = np.asarray(inception.avg_pool_exclude_pad(jnp.asarray(x, jnp.float32)))
  want = np.zeros_like(x)
  for i in range(4):
    for j in range(5):
      win = x[0, max(i - 1, 0):i + 2, max(j - 1, 0):j + 2]
      want[0, i, j] = win.reshape(-1, 2).mean(0)  # corners average 4 pixels, not 9
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _random_state_dict(seed=0):
  rng = np.random.default_rng(seed)
  sd = {}
  for k, shape in inception.expected_shapes().items():
    if k.endswith("running_var"):
      sd[k] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    elif k.endswith("conv.weight"):
      fan_in = np.prod(shape[1:])
      sd[k] = (rng.normal(size=shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
    else:
      sd[k] = (0.1 * rng.normal(size=shape)).astype(np.float32)
  sd["fc.weight"] = np.zeros((1008, 2048), np.float32)  # extra entries are ignored
  return sd


def _write_safetensors(path, tensors):
  # Written from the format description: u64 LE header length, JSON header, raw bytes.
  header, blobs, off = {}, [], 0
  for name, a in tensors.items():
    b = np.ascontiguousarray(a).tobytes()
    header[name] = {"dtype": {"float32": "F32", "float16": "F16"}[a.dtype.name],
                    "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
    blobs.append(b)
    off += len(b)
  h = json.dumps(header).encode()
  with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def test_weight_files_and_validation(tmp_path):
  sd = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(4, np.float16)}
  _write_safetensors(tmp_path / "w.safetensors", sd)
  back = inception.read_weights(str(tmp_path / "w.safetensors"))
  for k in sd:
    np.testing.assert_array_equal(back[k], sd[k])
  with pytest.raises(ValueError, match="not pytorch-fid"):
    inception.convert(sd)
  with pytest.raises(ValueError, match=".npz or .safetensors"):
    inception.read_weights(__file__)


def test_architecture_matches_torchvision_parameter_count():
  # torchvision's inception_v3 has 27,161,264 parameters; less its auxiliary classifier
  # (768->128 1x1 conv + BN, 128->768 5x5 conv + BN, Linear 768->1000: 3,326,696) and the
  # final Linear 2048->1000 (2,049,000), the trunk pytorch-fid uses has 21,785,568.
  shapes = inception.expected_shapes()
  trainable = sum(int(np.prod(v)) for k, v in shapes.items()
                  if not k.endswith(("running_mean", "running_var")))
  assert trainable == 27_161_264 - 3_326_696 - 2_049_000
  assert len(inception.conv_specs()) == 94


def test_features_shape_on_random_weights(tmp_path):
  np.savez(tmp_path / "w.npz", **_random_state_dict())
  net = inception.load_inception(str(tmp_path / "w.npz"), size=75)  # the smallest valid
  feats = net.features(np.random.default_rng(1).uniform(-1, 1, (2, 28, 28, 1)))
  assert feats.shape == (2, 2048) and np.isfinite(feats).all() and (feats >= 0).all()
