"""Deterministic, resumable batches over an in-memory dataset.

The stream is a pure function of (seed, position): global batch `p` belongs to
epoch `p // steps_per_epoch`, whose order is `default_rng([seed, epoch])`'s
permutation, and its flips come from `default_rng([seed, epoch, index])`. So a
run restored at position `k` sees exactly the batches an uninterrupted run
would, and every process, whatever the process count, agrees on the global batch
and takes its own contiguous slice of it.
"""
from typing import Any, Iterator

import numpy as np


class LazyRows:
  """A column that `BatchIterator` indexes without holding it: `column[rows]` builds just
  those rows (decoded or generated on demand). Subclasses set `shape` (N, ...) and
  implement `__getitem__(rows: int ndarray) -> ndarray (len(rows), ...)`."""
  shape: tuple[int, ...]

  def __len__(self) -> int:
    return self.shape[0]

  def __getitem__(self, rows: np.ndarray) -> np.ndarray:
    raise NotImplementedError


class BatchIterator:
  """Endless iterator of {"image": (B, H, W, C) or clips (B, F, H, W, C) float32,
  "label": (B,) int32, "index": (B,) int64 the dataset rows}; `images` may be an ndarray
  or a `LazyRows` column. (Rows let per-example columns ride along, e.g. captions.)

  `batch_size` is the global batch; with `process_count > 1` each process gets
  rows `[i * B / P, (i + 1) * B / P)` of every global batch. `position` counts
  global batches already yielded (all processes advance together).
  """

  def __init__(self, images: np.ndarray, labels: np.ndarray, batch_size: int, seed: int,
               *, random_flip: bool = False, drop_remainder: bool = True,
               start_position: int = 0, process_index: int = 0, process_count: int = 1):
    if not isinstance(images, LazyRows):
      images = np.asarray(images)
    if not isinstance(labels, LazyRows):
      labels = np.asarray(labels)
    if len(images.shape) not in (4, 5):
      raise ValueError(f"images must be (N, H, W, C) or clips (N, F, H, W, C), got shape "
                       f"{images.shape}")
    n = images.shape[0]
    if tuple(labels.shape) != (n,):
      raise ValueError(f"labels must be ({n},) to match images, got {labels.shape}")
    if n == 0:
      raise ValueError("the dataset is empty (0 examples)")
    if not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
      raise ValueError(f"config.train.batch_size must be a positive integer, got {batch_size!r}")
    if batch_size > n:
      raise ValueError(f"config.train.batch_size={batch_size} exceeds the dataset size {n}; "
                       f"lower it to at most {n}")
    if process_count < 1 or not 0 <= process_index < process_count:
      raise ValueError(f"process_index={process_index} must lie in [0, process_count="
                       f"{process_count})")
    if batch_size % process_count:
      raise ValueError(f"config.train.batch_size={batch_size} must be divisible by the "
                       f"process count {process_count}")
    if not drop_remainder and process_count > 1 and n % batch_size:
      raise ValueError(f"drop_remainder=False would end each epoch with a batch of "
                       f"{n % batch_size}, which cannot be split over {process_count} "
                       f"processes; use drop_remainder=True")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
      raise ValueError(f"config.seed must be a non-negative integer, got {seed!r}")
    self._images, self._labels = images, labels
    self.batch_size, self.seed = int(batch_size), int(seed)
    self.random_flip, self.drop_remainder = random_flip, drop_remainder
    self.process_index, self.process_count = process_index, process_count
    self.steps_per_epoch = n // batch_size if drop_remainder else -(-n // batch_size)
    self._perm_epoch, self._perm = -1, None
    self.position = 0
    self.restore({"position": start_position})

  @property
  def num_examples(self) -> int:
    return self._images.shape[0]

  @property
  def epoch(self) -> int:
    """The epoch the next batch belongs to."""
    return self.position // self.steps_per_epoch

  def state(self) -> dict[str, int]:
    return {"position": self.position}

  def restore(self, state: dict[str, Any]) -> None:
    position = state.get("position") if isinstance(state, dict) else None
    if not isinstance(position, (int, np.integer)) or position < 0:
      raise ValueError(f"data iterator state needs a non-negative integer 'position', "
                       f"got {state!r}")
    self.position = int(position)

  def _permutation(self, epoch: int) -> np.ndarray:
    if epoch != self._perm_epoch:  # one permutation per epoch, reused by its batches
      self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
      self._perm_epoch = epoch
    return self._perm

  def batch_at(self, position: int) -> dict[str, np.ndarray]:
    """This process's part of global batch `position` (does not move the iterator)."""
    epoch, index = divmod(position, self.steps_per_epoch)
    rows = self._permutation(epoch)[index * self.batch_size:(index + 1) * self.batch_size]
    local = len(rows) // self.process_count
    lo = self.process_index * local
    take = rows[lo:lo + local]
    image = self._images[take].astype(np.float32, copy=False)
    if self.random_flip:
      # Drawn for the whole global batch, so flips do not depend on process_count.
      flip = np.random.default_rng([self.seed, epoch, index]).random(len(rows)) < 0.5
      flip = flip[lo:lo + local]
      flip = flip.reshape((-1,) + (1,) * (image.ndim - 1))
      image = np.where(flip, image[..., ::-1, :], image)  # the W axis of images and clips
    return {"image": image, "label": self._labels[take].astype(np.int32, copy=False),
            "index": take.astype(np.int64)}

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    batch = self.batch_at(self.position)
    self.position += 1
    return batch
