"""Latent datasets: encode images once into .npy shards, then train from the shards.

Layout of a latent directory (one shard per host that encoded):
  meta.json                                   {"num_classes", "image_size", "shape", ...}
  {split}-{i:05d}-of-{n:05d}.latents.npy      float32 (rows, h, w, c), already x0.18215
  {split}-{i:05d}-of-{n:05d}.labels.npy       int32 (rows,)
With `flip=True` each image is stored twice, as is and mirrored (rows = 2 x images), which
stands in for DiT's random horizontal flips (a flipped latent is not the latent of the
flipped image, so flips cannot be applied to latents later).

The `latents` data source reads the directory named by $SKIPDIT_LATENTS_DIR. One shard
is memory-mapped (nothing read up front); several are concatenated in memory, so at
ImageNet scale run `merge_shards` once after encoding. This module knows nothing of the
VAE: `encode_dataset` takes any `encode_fn`; `skipdit_jax.encode_latents` wires the VAE in.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from skipdit_jax.data.sources import register_source

ENV_DIR = "SKIPDIT_LATENTS_DIR"
EncodeFn = Callable[[np.ndarray, int], np.ndarray]  # (images [-1,1] NHWC, first row) -> latents


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
  """ADM/DiT preprocessing: halve with BOX filtering while the short side is >= 2x size,
  resize the short side to `size` with BICUBIC, then centre-crop. uint8 (H, W, 3) in/out."""
  img = Image.fromarray(np.asarray(image, np.uint8)).convert("RGB")
  while min(img.size) >= 2 * size:
    img = img.resize(tuple(s // 2 for s in img.size), resample=Image.BOX)
  scale = size / min(img.size)
  img = img.resize(tuple(round(s * scale) for s in img.size), resample=Image.BICUBIC)
  a = np.asarray(img)
  top, left = (a.shape[0] - size) // 2, (a.shape[1] - size) // 2
  return a[top:top + size, left:left + size]


def class_folder_items(root: str, *, spec: str, layout: str
                       ) -> tuple[list[tuple[str, int]], list[str]]:
  """The official class-folder layout: ([(path of each entry of root/<class>/, class
  index)], class names), classes and entries in sorted order, hidden entries skipped."""
  if not os.path.isdir(root):
    raise ValueError(f"{spec}{root} is not a directory (expected {layout})")
  classes = sorted(d for d in os.listdir(root)
                   if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
  if not classes:
    raise ValueError(f"{spec}{root} has no class sub-folders (expected {layout})")
  items = [(os.path.join(root, c, f), i) for i, c in enumerate(classes)
           for f in sorted(os.listdir(os.path.join(root, c))) if not f.startswith(".")]
  return items, classes


def open_source(spec: str, split: str) -> tuple[Sequence[dict], int]:
  """A random-access sequence of {"image": uint8 HWC, "label": int}, and num_classes.

  spec: "tfds:NAME" (tfds.data_source, needs the prepared dataset) or "folder:DIR"
  (DIR/<class name>/<image>, classes in sorted order).
  """
  kind, _, arg = spec.partition(":")
  if kind == "tfds":
    import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
    builder = tfds.builder(arg)
    ds = tfds.data_source(arg, split=split)
    return ds, builder.info.features["label"].num_classes
  if kind == "folder":
    files, classes = class_folder_items(arg, spec="folder:", layout="DIR/<class>/<img>")
    return _FolderSource(files), len(classes)
  raise ValueError(f"unknown image source {spec!r}: use tfds:NAME or folder:DIR")


class _FolderSource:
  def __init__(self, files: list[tuple[str, int]]):
    self._files = files

  def __len__(self) -> int:
    return len(self._files)

  def __getitem__(self, i: int) -> dict:
    path, label = self._files[i]
    with Image.open(path) as im:
      return {"image": np.asarray(im.convert("RGB")), "label": label}


def shard_name(split: str, index: int, count: int) -> str:
  return f"{split}-{index:05d}-of-{count:05d}"


def encode_dataset(source: Sequence[dict], encode_fn: EncodeFn, out_dir: str, *,
                   num_classes: int, split: str = "train", image_size: int = 256,
                   batch_size: int = 32, flip: bool = True, process_index: int = 0,
                   process_count: int = 1, log_every: int = 0) -> str:
  """Encode this host's contiguous slice of `source` into one shard; returns its prefix.

  Rows are written as they are encoded (np.lib.format.open_memmap), so memory stays at one
  batch. encode_fn(images float32 (B, S, S, 3) in [-1, 1], first_row) -> (B, h, w, c).
  """
  n = len(source)
  lo, hi = process_index * n // process_count, (process_index + 1) * n // process_count
  if hi <= lo:
    raise ValueError(f"host {process_index} of {process_count} gets no images of {n}")
  os.makedirs(out_dir, exist_ok=True)
  prefix = os.path.join(out_dir, shard_name(split, process_index, process_count))
  copies = 2 if flip else 1
  lat_file = lab_file = None
  for start in range(lo, hi, batch_size):
    idx = range(start, min(start + batch_size, hi))
    exs = [source[i] for i in idx]
    imgs = np.stack([center_crop(e["image"], image_size) for e in exs]).astype(np.float32)
    imgs = imgs / 127.5 - 1.0
    labels = np.asarray([int(e["label"]) for e in exs], np.int32)
    if flip:
      imgs = np.concatenate([imgs, imgs[:, :, ::-1]])
      labels = np.concatenate([labels, labels])
    lat = np.asarray(encode_fn(imgs, start), np.float32)
    if lat_file is None:
      lat_file = np.lib.format.open_memmap(prefix + ".latents.npy.part", mode="w+",
                                           dtype=np.float32,
                                           shape=((hi - lo) * copies,) + lat.shape[1:])
      lab_file = np.lib.format.open_memmap(prefix + ".labels.npy.part", mode="w+",
                                           dtype=np.int32, shape=((hi - lo) * copies,))
    b, r = len(idx), (start - lo) * copies
    lat_file[r:r + copies * b] = lat
    lab_file[r:r + copies * b] = labels
    if log_every and (start - lo) // batch_size % log_every == 0:
      print(f"encoded {start - lo + b}/{hi - lo} images of shard {prefix}", flush=True)
  for f, ext in ((lat_file, ".latents.npy"), (lab_file, ".labels.npy")):
    f.flush()
    del f
    os.replace(prefix + ext + ".part", prefix + ext)  # complete shards only
  if process_index == 0:
    meta = dict(num_classes=num_classes, image_size=image_size, flip=flip,
                shape=list(lat.shape[1:]), split=split)
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
      json.dump(meta, f)
  return prefix


def _shards(directory: str, split: str) -> list[str]:
  found = sorted(glob.glob(os.path.join(directory, f"{split}-*-of-*.latents.npy")))
  if not found:
    raise FileNotFoundError(f"no latent shards {split}-*-of-*.latents.npy in {directory}; "
                            "encode them first: python -m skipdit_jax.encode_latents")
  count = int(os.path.basename(found[0]).rsplit("-of-", 1)[1].split(".")[0])
  if len(found) != count:
    raise FileNotFoundError(f"{directory} has {len(found)} of {count} {split} shards; "
                            "some hosts have not finished encoding")
  return [f[:-len(".latents.npy")] for f in found]


def load_latents(directory: str, split: str = "train") -> tuple[np.ndarray, np.ndarray, int]:
  """(latents float32 (N, h, w, c), labels int32 (N,), num_classes)."""
  with open(os.path.join(directory, "meta.json")) as f:
    meta = json.load(f)
  parts = _shards(directory, split)
  lats = [np.load(p + ".latents.npy", mmap_mode="r") for p in parts]
  labs = [np.load(p + ".labels.npy") for p in parts]
  if len(parts) == 1:
    return lats[0], labs[0], int(meta["num_classes"])
  return np.concatenate(lats), np.concatenate(labs), int(meta["num_classes"])


def merge_shards(directory: str, split: str = "train") -> None:
  """Join the hosts' shards into one (memory-mappable) shard, row by row from disk."""
  parts = _shards(directory, split)
  if len(parts) == 1:
    return
  lats = [np.load(p + ".latents.npy", mmap_mode="r") for p in parts]
  total = sum(len(a) for a in lats)
  prefix = os.path.join(directory, shard_name(split, 0, 1))
  out = np.lib.format.open_memmap(prefix + ".latents.npy.part", mode="w+", dtype=np.float32,
                                  shape=(total,) + lats[0].shape[1:])
  r = 0
  for a in lats:
    for s in range(0, len(a), 4096):
      out[r + s:r + s + len(a[s:s + 4096])] = a[s:s + 4096]
    r += len(a)
  out.flush()
  del out
  labels = np.concatenate([np.load(p + ".labels.npy") for p in parts])
  np.save(prefix + ".labels.npy", labels)
  os.replace(prefix + ".latents.npy.part", prefix + ".latents.npy")
  for p in parts:
    os.remove(p + ".latents.npy")
    os.remove(p + ".labels.npy")


@register_source("latents", video_check=lambda data: [])
def latents(split: str, data=None):
  """Encoded latents from $SKIPDIT_LATENTS_DIR: (N, h, w, C) image latents, or clip latents
  (N, F, h, w, C) (shards written frame by frame; checked against data.num_frames once
  loaded, by `check_data_shape`)."""
  directory = os.environ.get(ENV_DIR)
  if not directory:
    raise ValueError(f"config.data.name='latents' reads the directory in ${ENV_DIR}; set it "
                     "to the output of `python -m skipdit_jax.encode_latents --out=DIR`")
  return load_latents(directory, split)
