"""Small per-dataset CNN classifiers whose penultimate features define "FD-<dataset>".

No Inception weights exist offline, so each dataset gets its own classifier, trained in a
minute or two with optax and cached in the workdir as an `.npz`. Its feature layer is the
penultimate Dense *before* its ReLU (dense, roughly Gaussian features keep the covariance
well conditioned). Distances on these features are labelled `FD-digits`, `FD-fmnist`, …
and are NOT comparable with Inception FID or with each other across datasets.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Sequence

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import optax

from skipdit_jax.data import load_source


@dataclasses.dataclass(frozen=True)
class FeatureNetSpec:
  """Architecture and training budget of one feature classifier."""
  widths: tuple[int, ...]      # conv widths; every conv after the first has stride 2
  feature_dim: int
  train_steps: int
  batch_size: int = 128
  lr: float = 1e-3
  test_split: str = ""         # a dataset split to score on; "" holds out 20 % of train
  max_examples: int = 0        # > 0: train on at most this many (a seeded subset)
  video_label: str = ""        # video sources: the label mode to learn (data.video.label)

  def digest(self) -> str:
    return hashlib.sha1(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
                        ).hexdigest()[:10]


SPECS: dict[str, FeatureNetSpec] = {
    "digits": FeatureNetSpec(widths=(32, 64), feature_dim=64, train_steps=300),
    "mnist5k": FeatureNetSpec(widths=(32, 64, 128), feature_dim=128, train_steps=800),
    "fashion_mnist": FeatureNetSpec(widths=(32, 64, 128), feature_dim=128,
                                    train_steps=1500, test_split="test"),
    # Clips with frames folded into channels, taught digit x initial direction: features
    # that see both what moves and how (FD-mdigits; not FVD).
    "moving_digits": FeatureNetSpec(widths=(32, 64, 128), feature_dim=128,
                                    train_steps=1500, test_split="test",
                                    max_examples=20000, video_label="digit_direction"),
}
SCORE_NAMES = {"digits": "FD-digits", "mnist5k": "FD-mnist5k", "fashion_mnist": "FD-fmnist",
               "moving_digits": "FD-mdigits"}


class FeatureCNN(nn.Module):
  """x (N, H, W, C) in [-1, 1] -> (logits (N, classes), features (N, feature_dim)).
  Clips (N, F, H, W, C) are read with their frames folded into channels (N, H, W, F·C)."""
  widths: Sequence[int]
  feature_dim: int
  num_classes: int

  @nn.compact
  def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
    if x.ndim == 5:
      n, f, h, w, c = x.shape
      x = jnp.moveaxis(x, 1, 3).reshape(n, h, w, f * c)
    for i, w in enumerate(self.widths):
      x = nn.relu(nn.Conv(w, (3, 3), strides=1 if i == 0 else 2, padding="SAME")(x))
    x = x.reshape(x.shape[0], -1)
    feats = nn.Dense(self.feature_dim)(x)
    return nn.Dense(self.num_classes)(nn.relu(feats)), feats


@dataclasses.dataclass
class FeatureNet:
  """A trained classifier: `features`/`logits` take numpy images and run in batches."""
  module: FeatureCNN
  params: dict
  dataset: str
  test_accuracy: float
  spec_digest: str = ""

  @property
  def score_name(self) -> str:
    return SCORE_NAMES.get(self.dataset, f"FD-{self.dataset}")

  @property
  def cache_tag(self) -> str:
    """Names files derived from this network (reference features differ per spec)."""
    return f"{self.score_name}-{self.spec_digest}"

  def _apply(self, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    fn = _jitted_apply(self.module)
    images = np.asarray(images, np.float32)
    batch_size = min(batch_size, len(images))
    logits, feats = [], []
    for s in range(0, len(images), batch_size):
      chunk = images[s:s + batch_size]
      n = len(chunk)
      if n < batch_size:  # pad the last chunk: one compiled shape per call size
        chunk = np.concatenate([chunk, np.zeros((batch_size - n,) + chunk.shape[1:],
                                                np.float32)])
      lo, fe = fn(self.params, jnp.asarray(chunk))
      logits.append(np.asarray(lo)[:n])
      feats.append(np.asarray(fe, np.float64)[:n])
    return np.concatenate(logits), np.concatenate(feats)

  def features(self, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """images (N, H, W, C) in [-1, 1] -> float64 features (N, feature_dim)."""
    return self._apply(images, batch_size)[1]

  def predict(self, images: np.ndarray, batch_size: int = 500) -> np.ndarray:
    """Predicted class per image (N,)."""
    return self._apply(images, batch_size)[0].argmax(-1)


def conditional_accuracy(net: FeatureNet, images: np.ndarray, labels: np.ndarray) -> float:
  """Fraction of images (N, H, W, C) that the classifier reads as their asked label (N,)."""
  labels = np.asarray(labels)
  if labels.shape != (len(images),):
    raise ValueError(f"labels {labels.shape} must be ({len(images)},) to match the images")
  return float((net.predict(images) == labels).mean())


_APPLY_CACHE: dict[int, Callable] = {}


def _jitted_apply(module: FeatureCNN) -> Callable:
  key = hash(module)
  if key not in _APPLY_CACHE:
    _APPLY_CACHE[key] = jax.jit(lambda p, x: module.apply({"params": p}, x))
  return _APPLY_CACHE[key]


def data_for(dataset: str, spec: FeatureNetSpec, data: Any = None) -> Any:
  """The `config.data` a dataset's classifier reads: video sources get `spec.video_label`."""
  if data is None or not spec.video_label:
    return data
  out = copy.deepcopy(data)
  with out.unlocked() if hasattr(out, "unlocked") else contextlib.nullcontext():
    out.video.label = spec.video_label
  return out


def take(x: Any, y: Any, num: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """At most `num` rows (a seeded subset, in order; all when num <= 0) as ndarrays; lazy
  columns (generated clips) are built only for the rows taken."""
  rows = np.arange(len(x))
  if 0 < num < len(x):
    rows = np.sort(np.random.default_rng(seed).permutation(len(x))[:num])
  return np.asarray(x[rows], np.float32), np.asarray(np.asarray(y)[rows])


def _split(dataset: str, spec: FeatureNetSpec, seed: int, data: Any = None):
  data = data_for(dataset, spec, data)
  x, y, classes = load_source(dataset, split="train", data=data)
  x, y = take(x, y, spec.max_examples, seed)
  if spec.test_split:
    xt, yt, _ = load_source(dataset, split=spec.test_split, data=data)
    return (x, y), take(xt, yt, spec.max_examples // 4, seed), classes
  perm = np.random.default_rng(seed).permutation(len(x))
  cut = int(0.8 * len(x))
  return (x[perm[:cut]], y[perm[:cut]]), (x[perm[cut:]], y[perm[cut:]]), classes


def train_feature_net(dataset: str, spec: FeatureNetSpec | None = None, *, seed: int = 0,
                      log: Callable[[str], None] = print, data: Any = None) -> FeatureNet:
  """Trains the classifier of `dataset` (Adam, cross-entropy) and scores it on held-out
  data; `data` is the run's `config.data` (video sources read their clip fields there)."""
  spec = spec or _spec_for(dataset)
  train, held, classes = _split(dataset, spec, seed, data)
  return fit_feature_net(train, held, classes, spec, name=dataset, seed=seed, log=log)


def fit_feature_net(train: tuple[np.ndarray, np.ndarray], held: tuple[np.ndarray, np.ndarray],
                    num_classes: int, spec: FeatureNetSpec, *, name: str, seed: int = 0,
                    log: Callable[[str], None] = print) -> FeatureNet:
  """Trains a `FeatureCNN` on train = (images (N, H, W, C), labels (N,)) and scores it on
  `held`; `name` labels the network (its FD name and log lines)."""
  (x, y), (xt, yt) = train, held
  module = FeatureCNN(tuple(spec.widths), spec.feature_dim, num_classes)
  params = module.init(jax.random.key(seed), jnp.asarray(x[:1]))["params"]
  tx = optax.adam(spec.lr)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, xb, yb):
    def loss_fn(p):
      logits, _ = module.apply({"params": p}, xb)
      return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  rng = np.random.default_rng(seed)
  for i in range(spec.train_steps):
    idx = rng.integers(0, len(x), spec.batch_size)
    params, opt_state, loss = step(params, opt_state, jnp.asarray(x[idx]), jnp.asarray(y[idx]))
    if (i + 1) % max(spec.train_steps // 4, 1) == 0:
      log(f"feature net {name}: step {i + 1}/{spec.train_steps} loss {float(loss):.3f}")
  net = FeatureNet(module, params, name, test_accuracy=0.0, spec_digest=spec.digest())
  net.test_accuracy = conditional_accuracy(net, xt, yt)
  log(f"feature net {name}: held-out accuracy {net.test_accuracy:.3f}")
  return net


def _spec_for(dataset: str) -> FeatureNetSpec:
  if dataset not in SPECS:
    raise ValueError(f"no feature classifier is defined for data.name={dataset!r}; known: "
                     f"{sorted(SPECS)} (add a FeatureNetSpec to eval/feature_net.SPECS)")
  return SPECS[dataset]


def data_digest(data: Any) -> str:
  """A short digest of the fields a video source reads ("" for image datasets)."""
  if data is None or not int(data.get("num_frames", 0) or 0):
    return ""
  fields = {k: data.get(k) for k in ("image_size", "channels", "num_frames")}
  video = data.get("video")
  fields["video"] = video.to_dict() if hasattr(video, "to_dict") else video
  return "_" + hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode()
                            ).hexdigest()[:8]


def cache_path(cache_dir: str, dataset: str, spec: FeatureNetSpec, data: Any = None) -> str:
  return os.path.join(cache_dir,
                      f"feature_net_{dataset}_{spec.digest()}{data_digest(data)}.npz")


def save_feature_net(path: str, net: FeatureNet) -> None:
  flat = {"/".join(k): np.asarray(v) for k, v in
          flax.traverse_util.flatten_dict(net.params).items()}
  meta = json.dumps({"dataset": net.dataset, "test_accuracy": net.test_accuracy,
                     "spec_digest": net.spec_digest,
                     "widths": list(net.module.widths), "feature_dim": net.module.feature_dim,
                     "num_classes": net.module.num_classes})
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    np.savez(f, __meta__=np.asarray(meta), **flat)
  os.replace(tmp, path)  # a crash mid-write never leaves a half file under the real name


def load_feature_net(path: str) -> FeatureNet:
  with np.load(path) as z:
    meta = json.loads(str(z["__meta__"]))
    flat = {tuple(k.split("/")): jnp.asarray(z[k]) for k in z.files if k != "__meta__"}
  module = FeatureCNN(tuple(meta["widths"]), meta["feature_dim"], meta["num_classes"])
  return FeatureNet(module, flax.traverse_util.unflatten_dict(flat), meta["dataset"],
                    float(meta["test_accuracy"]), meta.get("spec_digest", ""))


def load_or_train(dataset: str, cache_dir: str, *, spec: FeatureNetSpec | None = None,
                  seed: int = 0, log: Callable[[str], None] = print,
                  data: Any = None) -> FeatureNet:
  """The cached classifier of `dataset` under `cache_dir`, training it on first use."""
  spec = spec or _spec_for(dataset)
  path = cache_path(cache_dir, dataset, spec, data)
  if os.path.exists(path):
    return load_feature_net(path)
  net = train_feature_net(dataset, spec, seed=seed, log=log, data=data)
  save_feature_net(path, net)
  return net
