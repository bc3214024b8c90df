"""Video clips to files: an animated GIF of a grid of clips (Pillow) and an .npz.

Clips are float (N, F, H, W, C) in [-1, 1], as the data sources and the sampler produce.
Frame f of the GIF is the grid of every clip's frame f (`image_grid.make_grid`).

  python -m skipdit_jax.eval.video_io --out DIR [--num 16 --colour rgb ...]

writes DIR/moving_digits.gif and .npz: a preview of the moving-digits training clips.
"""
from __future__ import annotations

import argparse
import io
import json
import os

import numpy as np
from PIL import Image

from skipdit_jax import paths
from skipdit_jax.data import moving_digits as md
from skipdit_jax.eval.image_grid import make_grid


def _check_clips(clips: np.ndarray) -> np.ndarray:
  clips = np.asarray(clips)
  if clips.ndim != 5 or clips.shape[-1] not in (1, 3):
    raise ValueError(f"clips must be (N, F, H, W, C) with C = 1 or 3, got {clips.shape}")
  return clips


def grid_frames(clips: np.ndarray, ncol: int, *, pad: int = 1, scale: int = 1) -> np.ndarray:
  """(N, F, H, W, C) in [-1, 1] -> uint8 (F, rows*(H+pad)+pad, ncol*(W+pad)+pad, C)."""
  clips = _check_clips(clips)
  return np.stack([make_grid(clips[:, f], ncol, pad=pad, scale=scale)
                   for f in range(clips.shape[1])])


def gif_bytes(frames: np.ndarray, fps: float = 8.0) -> bytes:
  """uint8 (F, H, W, C) -> an animated GIF that loops forever."""
  pics = [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in frames]
  buf = io.BytesIO()
  pics[0].save(buf, format="GIF", save_all=True, append_images=pics[1:],
               duration=max(1, round(1000.0 / fps)), loop=0, optimize=False)
  return buf.getvalue()


def save_gif(clips: np.ndarray, path: str | os.PathLike, ncol: int, *, scale: int = 1,
             fps: float = 8.0) -> np.ndarray:
  """Writes the grid of `clips` (N, F, H, W, C) in [-1, 1] as an animated GIF to `path`
  (local or gs://); returns the uint8 frames (F, h, w, C) written."""
  frames = grid_frames(clips, ncol, scale=scale)
  paths.write_bytes(path, gif_bytes(frames, fps))
  return frames


def save_npz(path: str | os.PathLike, clips: np.ndarray, labels: np.ndarray | None = None
             ) -> None:
  """Writes clips (float32, as given) and optional labels to an .npz (local or gs://)."""
  arrays = {"clips": np.asarray(_check_clips(clips), np.float32)}
  if labels is not None:
    arrays["labels"] = np.asarray(labels)
  buf = io.BytesIO()
  np.savez_compressed(buf, **arrays)
  paths.write_bytes(path, buf.getvalue())


def read_gif(path: str | os.PathLike) -> np.ndarray:
  """All frames of a (local) GIF as uint8 (F, H, W, C), C = 3 (RGB)."""
  with Image.open(path) as im:
    frames = []
    for k in range(getattr(im, "n_frames", 1)):
      im.seek(k)
      frames.append(np.asarray(im.convert("RGB")))
  return np.stack(frames)


def main(argv: list[str] | None = None) -> None:
  """Preview: a few moving-digits clips as an animated GIF grid (+ .npz) to look at;
  `--colour rgb`, `--label digit_direction`, ... set the data.video fields."""
  ap = argparse.ArgumentParser(description="Writes moving-digits clips as an animated GIF.")
  ap.add_argument("--out", required=True, help="output directory")
  ap.add_argument("--num", type=int, default=16, help="clips to write")
  ap.add_argument("--split", default="train")
  ap.add_argument("--num_frames", type=int, default=md.DEFAULT_NUM_FRAMES)
  ap.add_argument("--image_size", type=int, default=md.DEFAULT_IMAGE_SIZE)
  ap.add_argument("--scale", type=int, default=4, help="nearest-neighbour upscale in the GIF")
  ap.add_argument("--fps", type=float, default=8.0)
  fields = {k: v for k, v in md.MovingDigitsSpec().__dict__.items()
            if k not in ("num_frames", "canvas")}  # the data.video fields of moving_digits
  for k, v in fields.items():
    ap.add_argument(f"--{k}", type=type(v), default=v)
  a = ap.parse_args(argv)
  video = {k: getattr(a, k) for k in fields}
  video["num_clips"] = max(video["num_clips"], a.num)
  video["num_test_clips"] = max(video["num_test_clips"], a.num)
  spec = md.MovingDigitsSpec.from_config(dict(num_frames=a.num_frames,
                                              image_size=a.image_size, video=video))
  clips = md.MovingDigits(spec, a.split)
  x = clips[np.arange(a.num)]
  os.makedirs(a.out, exist_ok=True)
  gif = os.path.join(a.out, "moving_digits.gif")
  save_gif(x, gif, ncol=int(np.ceil(np.sqrt(a.num))), scale=a.scale, fps=a.fps)
  save_npz(os.path.join(a.out, "moving_digits.npz"), x, clips.labels[:a.num])
  print(json.dumps(dict(gif=gif, shape=list(x.shape), labels=clips.labels[:a.num].tolist(),
                        num_classes=spec.num_classes)))


if __name__ == "__main__":
  main()
