"""Datasets installed as Debian packages under /usr/share/datasets."""
import os

from skipdit_jax.data.idx import read_idx
from skipdit_jax.data.sources import check_split, register_source, to_unit_range

# Module-level so tests (or a site with another layout) can point it elsewhere.
FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_PREFIX = {"train": "train", "test": "t10k"}


@register_source("fashion_mnist")
def fashion_mnist(split: str):
  """Fashion-MNIST from `apt-get install dataset-fashion-mnist`; 28x28, 0..255."""
  check_split("fashion_mnist", split, tuple(_FASHION_PREFIX))
  prefix = os.path.join(FASHION_MNIST_DIR, _FASHION_PREFIX[split])
  paths = [f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"]
  missing = [p for p in paths if not os.path.exists(p)]
  if missing:
    raise FileNotFoundError(
        f"dataset 'fashion_mnist' needs the Debian package dataset-fashion-mnist; "
        f"missing {missing}. Install it with `apt-get install dataset-fashion-mnist` "
        f"(run `apt-get update` first on a fresh machine).")
  images, labels = (read_idx(p) for p in paths)
  if images.ndim != 3 or labels.shape != images.shape[:1]:
    raise ValueError(f"{paths}: images {images.shape} and labels {labels.shape} do not "
                     f"match (expected (N, 28, 28) and (N,))")
  return to_unit_range(images[..., None], 255.0), labels, 10
