"""tfds:<name> sources (skipdit_jax/data/tfds_source.py), offline via tfds.testing.mock_data."""
import ml_collections
import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from skipdit_jax import data  # noqa: E402
from skipdit_jax.data import tfds_source  # noqa: E402


def _config(name, image_size, channels, num_classes, batch=8, flip=True):
  return ml_collections.ConfigDict(dict(
      seed=3, data=dict(name=name, image_size=image_size, channels=channels,
                        num_classes=num_classes, random_flip=flip, num_workers=2),
      train=dict(batch_size=batch)))


def test_stream_equals_batch_iterator_over_the_decoded_split():
  """Same order, flips and per-process slices as the in-memory BatchIterator."""
  with tfds.testing.mock_data(num_examples=40):
    cfg = _config("tfds:mnist", 28, 1, 10)
    key = tfds_source.register_tfds("mnist")
    images, labels, k = data.load_source(key)  # whole split, native 28x28x1
    assert images.shape == (40, 28, 28, 1) and k == 10
    assert images.min() >= -1 and images.max() <= 1 and images.dtype == np.float32
    ref = data.BatchIterator(images, labels, 8, 3, random_flip=True, start_position=2)
    for pid in range(2):
      ref_p = data.BatchIterator(images, labels, 8, 3, random_flip=True, start_position=2,
                                 process_index=pid, process_count=2)
      it = tfds_source.make_iterator(cfg, start_position=2, process_index=pid,
                                     process_count=2)
      for _ in range(6):  # crosses an epoch boundary (5 batches per epoch)
        a, b = next(it), next(ref_p)
        assert a["image"].shape == (4, 28, 28, 1)
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["label"], b["label"])
      assert it.state() == {"position": 8}
    whole = next(ref)
    assert whole["image"].shape == (8, 28, 28, 1)


def test_varying_sizes_are_resized_and_center_cropped():
  with tfds.testing.mock_data(num_examples=6):
    ds, k = tfds_source.open_split("imagenet2012", "train")
    cfg = _config("tfds:imagenet2012", 16, 3, k, batch=4, flip=False)
    b = next(tfds_source.make_iterator(cfg))
    assert b["image"].shape == (4, 16, 16, 3) and b["label"].dtype == np.int32
    # independent check of one row: PIL's plain resize of the centre square
    from PIL import Image
    perm = np.random.default_rng([3, 0]).permutation(6)
    raw = np.asarray(ds[int(perm[0])]["image"])
    h, w = raw.shape[:2]
    s = min(h, w)
    sq = raw[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
    want = np.asarray(Image.fromarray(sq).resize((16, 16), Image.BICUBIC), np.float32)
    got = (b["image"][0] + 1) * 127.5
    assert np.abs(got - want).mean() < 40  # same picture; crop-then-resize differs slightly
    with pytest.raises(ValueError, match="varying size"):
      tfds_source.load_whole("imagenet2012", "train")


def test_unlabelled_dataset_is_one_class_and_errors_name_fields():
  with tfds.testing.mock_data(num_examples=4):
    cfg = _config("tfds:celeb_a", 8, 3, 1, batch=2)
    b = next(tfds_source.make_iterator(cfg))
    assert b["image"].shape == (2, 8, 8, 3) and set(b["label"].tolist()) == {0}
    with pytest.raises(ValueError, match="data.num_classes=1"):
      tfds_source.make_iterator(_config("tfds:celeb_a", 8, 3, 10))
    with pytest.raises(ValueError, match="data.channels=3"):
      next(tfds_source.make_iterator(_config("tfds:celeb_a", 8, 1, 1, batch=2)))


def test_prepared_names_scans_the_data_dir(tmp_path):
  for rel in ("cifar10/3.0.2", "lsun/bedroom/3.1.0", "notes"):
    (tmp_path / rel).mkdir(parents=True)
  assert tfds_source.prepared_names(str(tmp_path)) == ["cifar10", "lsun/bedroom"]
