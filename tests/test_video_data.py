"""Video data: moving digits, clip folders, tfds video sets, rank-5 batches through the
pipeline (skipdit_jax/data), GIF writing (skipdit_jax/eval/video_io.py)."""
import ml_collections
import numpy as np
import pytest

from skipdit_jax import data
from skipdit_jax.data import moving_digits as md
from skipdit_jax.errors import ConfigError


def _data(**video):
  return dict(num_frames=video.pop("num_frames", 10), image_size=video.pop("image_size", 20),
              video=dict(num_clips=64, num_test_clips=16, **video))


def _reflect(p0, v, f, limit):
  """Closed-form bounce: unfold the wall reflections into a triangle wave of period 2L."""
  q = np.mod(p0 + v * np.arange(f), 2 * limit)
  return limit - np.abs(limit - q)


def _paste(canvas_size, glyphs, positions, colours):
  """Independent compositing: per-pixel max of each coloured glyph at (y, x)."""
  c = colours[0].shape[0]
  out = np.zeros((canvas_size, canvas_size, c))
  for g, (y, x), col in zip(glyphs, positions, colours):
    s = g.shape[0]
    out[y:y + s, x:x + s] = np.maximum(out[y:y + s, x:x + s], g[..., None] * col)
  return out * 2 - 1


@pytest.mark.parametrize("speed", [1, 3, 7])
def test_positions_follow_the_closed_form_bounce_and_pixels_are_the_digit(speed):
  # digits are 8x8 on a 20 px canvas: positions in [0, 12]; speed 7 reflects every ~2 frames
  clips = md.MovingDigits(md.MovingDigitsSpec.from_config(_data(speed=speed)), "train")
  assert clips.limit == 12
  sk = data.load_source("digits")[0]
  for i in range(8):
    p = clips.params(i)
    ys = _reflect(p["start"][0, 0], p["velocity"][0, 0], 10, 12)
    xs = _reflect(p["start"][0, 1], p["velocity"][0, 1], 10, 12)
    np.testing.assert_array_equal(clips.positions(i)[0], np.stack([ys, xs], -1))
    assert abs(p["velocity"][0, 0]) == abs(p["velocity"][0, 1]) == speed
    # the pixels: the sklearn image with that pool row, scaled to [0, 1], at (ys, xs)
    train_rows = np.flatnonzero(np.arange(len(sk)) % 5 != 0)
    glyph = (sk[train_rows[p["rows"][0]], ..., 0] + 1) / 2
    clip = clips[np.array([i])][0]
    assert clip.shape == (10, 20, 20, 1) and clip.dtype == np.float32
    for f in range(10):
      want = _paste(20, [glyph], [(int(ys[f]), int(xs[f]))], [np.ones(1)])
      np.testing.assert_allclose(clip[f], want, atol=1e-6)
    # the label is the class of the digit image used
    assert clips.labels[i] == data.load_source("digits")[1][train_rows[p["rows"][0]]]


def test_centre_start_keeps_every_other_draw_and_bounces_from_the_middle():
  rand = md.MovingDigits(md.MovingDigitsSpec.from_config(_data()), "train")
  cent = md.MovingDigits(md.MovingDigitsSpec.from_config(_data(start="center")), "train")
  np.testing.assert_array_equal(cent.labels, rand.labels)  # same digits, same classes
  for i in range(6):
    a, b = rand.params(i), cent.params(i)
    np.testing.assert_array_equal(a["rows"], b["rows"])
    np.testing.assert_array_equal(a["velocity"], b["velocity"])
    v = b["velocity"][0]
    want = np.stack([_reflect(6, v[k], 10, 12) for k in range(2)], -1)  # limit 12: start 6
    np.testing.assert_array_equal(cent.positions(i)[0], want)
  with pytest.raises(ValueError, match="data.video.start"):
    data.load_source("moving_digits", data=_data(start="middle"))


def test_two_rgb_digits_direction_labels_and_resized_mnist():
  spec = md.MovingDigitsSpec.from_config(_data(
      digit_source="mnist5k", digit_size=12, num_digits=2, colour="rgb",
      label="digit_direction", speed=2, image_size=32, num_frames=6))
  assert spec.channels == 3 and spec.num_classes == 40
  clips = md.MovingDigits(spec, "test")
  x = clips[np.arange(4)]
  assert x.shape == (4, 6, 32, 32, 3) and -1 <= x.min() and x.max() <= 1
  assert clips.pool.shape[1:] == (12, 12)
  for i in range(4):
    p = clips.params(i)
    pos = [np.stack([_reflect(p["start"][j, a], p["velocity"][j, a], 6, 20) for a in range(2)],
                    -1).astype(int) for j in range(2)]
    for f in range(6):
      want = _paste(32, clips.pool[p["rows"]], [pos[0][f], pos[1][f]], p["colour"])
      np.testing.assert_allclose(x[i, f], want, atol=1e-6)
    dy, dx = np.sign(p["velocity"][0])
    direction = {(1, 1): 0, (1, -1): 1, (-1, 1): 2, (-1, -1): 3}[(dy, dx)]
    assert clips.labels[i] == 4 * p["digit"][0] + direction
  labels = clips.labels
  assert labels.min() >= 0 and labels.max() < 40


def test_seeded_and_split_dependent():
  a = data.load_source("moving_digits", data=_data(seed=1))[0]
  b = data.load_source("moving_digits", data=_data(seed=1))[0]
  c = data.load_source("moving_digits", data=_data(seed=2))[0]
  t = data.load_source("moving_digits", split="test", data=_data(seed=1))[0]
  rows = np.arange(8)
  np.testing.assert_array_equal(a[rows], b[rows])
  assert not np.array_equal(a[rows], c[rows]) and not np.array_equal(a[rows], t[rows])
  # clip i depends only on (seed, split, i): asking in another order gives the same clips
  np.testing.assert_array_equal(a[np.array([5, 2])], a[rows][[5, 2]])
  assert a.shape == (64, 10, 20, 20, 1) and t.shape == (16, 10, 20, 20, 1)


def test_batch_iterator_resume_and_process_shards_on_clips():
  clips, labels, _ = data.load_source("moving_digits", data=_data())
  whole = data.BatchIterator(clips, labels, 8, 5, random_flip=True)
  ref = [next(whole) for _ in range(10)]  # 8 batches per epoch: crosses an epoch
  resumed = data.BatchIterator(clips, labels, 8, 5, random_flip=True)
  for _ in range(3):
    next(resumed)
  state = resumed.state()
  again = data.BatchIterator(clips, labels, 8, 5, random_flip=True)
  again.restore(state)
  for k in range(3, 10):
    b = next(again)
    np.testing.assert_array_equal(b["image"], ref[k]["image"])
    np.testing.assert_array_equal(b["label"], ref[k]["label"])
  for k in (0, 9):
    parts = [data.BatchIterator(clips, labels, 8, 5, random_flip=True, start_position=k,
                                process_index=p, process_count=2) for p in range(2)]
    halves = [next(p) for p in parts]
    np.testing.assert_array_equal(np.concatenate([h["image"] for h in halves]),
                                  ref[k]["image"])
    # disjoint rows: the generated clips of the two halves are different clips
    a, b = (h["image"].reshape(4, -1) for h in halves)
    assert not any(np.array_equal(u, w) for u in a for w in b)
  # flips mirror W, the second-last axis of a clip: compare to the unflipped clip
  perm = np.random.default_rng([5, 0]).permutation(64)[:8]
  raw = clips[perm]
  flip = np.random.default_rng([5, 0, 0]).random(8) < 0.5
  want = np.where(flip[:, None, None, None, None], raw[:, :, :, ::-1], raw)
  np.testing.assert_array_equal(ref[0]["image"], want)


def test_config_errors_name_the_fields():
  with pytest.raises(ValueError, match="data.num_frames"):
    data.load_source("moving_digits", data=dict(num_frames=0, image_size=32))
  with pytest.raises(ValueError, match="data.video.colour"):
    data.load_source("moving_digits", data=_data(colour="blue"))
  with pytest.raises(ValueError, match="data.image_size"):
    data.load_source("moving_digits", data=_data(image_size=8))
  with pytest.raises(ValueError, match="unknown field"):
    data.load_source("moving_digits", data=_data(speeed=2))
  cfg = ml_collections.ConfigDict(dict(data=dict(name="moving_digits", image_size=20,
                                                 channels=1, num_classes=10, num_frames=8)))
  with pytest.raises(ConfigError, match="data.num_frames=10"):
    data.check_data_shape(cfg, (64, 10, 20, 20, 1), 10)
  cfg.data.num_frames = 0
  with pytest.raises(ConfigError, match="data.num_frames=10"):
    data.check_data_shape(cfg, (64, 10, 20, 20, 1), 10)
  cfg.data.num_frames = 10
  data.check_data_shape(cfg, (64, 10, 20, 20, 1), 10)
  with pytest.raises(ConfigError, match="data.channels=3"):
    data.check_data_shape(cfg, (64, 10, 20, 20, 3), 10)
  with pytest.raises(ConfigError, match="video source"):
    data.check_data_shape(cfg, (64, 20, 20, 1), 10)


def test_preview_cli_writes_an_animated_gif(tmp_path):
  from skipdit_jax.eval import video_io
  video_io.main(["--out", str(tmp_path), "--num", "4", "--num_frames", "5",
                 "--image_size", "16", "--scale", "2", "--colour", "rgb"])
  frames = video_io.read_gif(tmp_path / "moving_digits.gif")
  saved = np.load(tmp_path / "moving_digits.npz")
  assert saved["clips"].shape == (4, 5, 16, 16, 3) and saved["labels"].shape == (4,)
  # 2x2 grid of 2x-upscaled 16 px clips with 1 px padding: 2 * (32 + 1) + 1 = 67
  assert frames.shape == (5, 67, 67, 3)
  # frame f's top-left tile is clip 0's frame f, upscaled (GIF palette: close, not exact)
  want = np.round((saved["clips"][0] + 1) * 127.5).repeat(2, 1).repeat(2, 2)
  assert np.abs(frames[:, 1:33, 1:33].astype(float) - want).mean() < 8


def _problems(config):
  from skipdit_jax.config_check import check_config
  with pytest.raises(ConfigError) as info:
    check_config(config, num_devices=1)
  return "\n".join(info.value.problems)


def test_config_check_video_fields_before_loading():
  from configs.default import get_config
  from skipdit_jax.config_check import check_config
  from skipdit_jax.data import video_fields
  c = get_config()
  assert dict(c.data.video) == video_fields.DEFAULTS  # the documented defaults are the code's
  c.data.name, c.data.num_frames, c.data.image_size = "moving_digits", 8, 16
  check_config(c, num_devices=1)
  c.data.video.colour, c.data.video.label = "rgb", "digit_direction"
  text = _problems(c)
  assert "data.channels=3" in text and "data.num_classes=40" in text
  c = get_config()
  c.data.num_frames = 8  # digits are images
  assert "data.num_frames=0" in _problems(c)
  c.data.name = "moving_digits"  # 8 px canvas cannot hold a moving 8 px digit
  assert "config.data.image_size" in _problems(c)
  c.data.num_frames = -1
  assert "data.num_frames=-1" in _problems(c)


_SHARD_SCRIPT = r"""
import numpy as np
from skipdit_jax import parallel
mesh = parallel.make_mesh((2, 2, 2))
x = np.arange(8 * 3 * 4 * 4 * 2, dtype=np.float32).reshape(8, 3, 4, 4, 2)
g = parallel.make_global_batch({"image": x}, mesh)["image"]
assert g.shape == x.shape, g.shape
np.testing.assert_array_equal(np.asarray(g), x)
rows = set()
for shard in g.addressable_shards:  # rows split over data x fsdp; F, H, W, C whole
  assert shard.data.shape == (2, 3, 4, 4, 2), shard.data.shape
  np.testing.assert_array_equal(np.asarray(shard.data), x[shard.index])
  rows.add(shard.index[0].start)
assert rows == {0, 2, 4, 6}, rows
print("ok")
"""


def test_rank5_batches_shard_over_the_batch_axes_only():
  import os
  import subprocess
  import sys
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-c", _SHARD_SCRIPT], env=env, capture_output=True,
                     text=True, timeout=300)
  assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]


# --- clip folders (clips:DIR) --------------------------------------------------------------

def _write_folder(root):
  """Two classes; clips as a frame folder, a .npy and a .gif. Frame k of every clip is a
  flat colour whose red value is 10 * k (+ 100 for the .npy), so the frame index shows."""
  from PIL import Image
  rng = np.random.default_rng(0)
  frames = {}
  (root / "b_run").mkdir(parents=True)
  (root / "a_jump" / "clip0").mkdir(parents=True)
  f0 = np.zeros((12, 24, 24, 3), np.uint8)  # frame folder, 12 frames of 24x24
  for k in range(12):
    f0[k, ..., 0] = 10 * k
    f0[k, ..., 1] = rng.integers(0, 255)
    Image.fromarray(f0[k]).save(root / "a_jump" / "clip0" / f"frame_{k}.png")  # frame_10 > frame_9
  frames["a_jump/clip0"] = f0
  f1 = np.zeros((9, 16, 16, 3), np.uint8)  # .npy, 9 frames
  f1[..., 0] = (100 + 10 * np.arange(9))[:, None, None]
  np.save(root / "b_run" / "c1.npy", f1)
  frames["b_run/c1"] = f1
  f2 = np.zeros((7, 16, 16, 3), np.uint8)  # .gif, 7 frames (palette: grey levels stay exact)
  f2[...] = (20 * np.arange(7))[:, None, None, None]
  pics = [Image.fromarray(f) for f in f2]
  pics[0].save(root / "b_run" / "c2.gif", save_all=True, append_images=pics[1:], duration=100)
  frames["b_run/c2"] = f2
  return frames


def _clip_data(**video):
  return dict(num_frames=video.pop("num_frames", 3), image_size=video.pop("image_size", 8),
              channels=3, video=video)


def test_clip_folders_take_strided_windows_resized(tmp_path):
  raw = _write_folder(tmp_path)
  spec = f"clips:{tmp_path}"
  x, y, k = data.load_source(spec, data=_clip_data(frame_stride=3))
  assert k == 2 and x.shape == (3, 3, 8, 8, 3) and y.tolist() == [0, 1, 1]
  got = (x[np.arange(3)].astype(np.float64) + 1) * 127.5
  # flat frames survive resizing unchanged: frame j of the clip is raw frame 3 * j
  for row, name in enumerate(["a_jump/clip0", "b_run/c1", "b_run/c2"]):
    want = raw[name][[0, 3, 6], :1, :1].astype(np.float64)  # (3, 1, 1, 3)
    np.testing.assert_allclose(got[row], np.broadcast_to(want, got[row].shape), atol=0.6)
  # random start: inside each clip, a strided window, fixed by the seed
  xr, _, _ = data.load_source(spec, data=_clip_data(frame_stride=2, random_start=True, seed=4))
  xr2, _, _ = data.load_source(spec, data=_clip_data(frame_stride=2, random_start=True, seed=4))
  a = (xr[np.arange(3)].astype(np.float64) + 1) * 127.5
  np.testing.assert_array_equal(a, xr2[np.arange(3)].astype(np.float64) * 127.5 + 127.5)
  starts = []
  for row, name in enumerate(["a_jump/clip0", "b_run/c1", "b_run/c2"]):
    t = len(raw[name])
    ref = raw[name][:, 0, 0].astype(np.float64)
    match = [s for s in range(t - 4) if np.allclose(a[row, :, 0, 0], ref[s:s + 5:2], atol=0.6)]
    assert len(match) == 1, (name, a[row, :, 0, 0])
    starts.append(match[0])
  sk = np.random.default_rng([4, 0]).integers(0, 12 - 5 + 1)  # the clip's own seeded draw
  assert starts[0] == sk
  # grey conversion and the batch iterator over the lazy column and labels
  xg, yg, _ = data.load_source(spec, data=dict(_clip_data(), channels=1))
  b = next(data.BatchIterator(xg, yg, 2, 0))
  perm = np.random.default_rng([0, 0]).permutation(3)[:2]
  assert b["image"].shape == (2, 3, 8, 8, 1) and b["label"].tolist() == [[0, 1, 1][p] for p in perm]


def test_clip_folder_errors(tmp_path):
  _write_folder(tmp_path)
  spec = f"clips:{tmp_path}"
  with pytest.raises(ValueError, match="frame_stride=5"):  # 7-frame gif cannot give 3 x 5
    data.load_source(spec, data=_clip_data(frame_stride=5))[0][np.arange(3)]
  (tmp_path / "b_run" / "c3.mp4").write_bytes(b"\x00")
  import importlib.util
  if importlib.util.find_spec("av") is None:
    with pytest.raises(ValueError, match=r"\.mp4.*pip install av"):
      data.load_source(spec, data=_clip_data())
  (tmp_path / "b_run" / "c3.mp4").unlink()
  (tmp_path / "b_run" / "notes.txt").write_text("x")
  with pytest.raises(ValueError, match="notes.txt: not a clip"):
    data.load_source(spec, data=_clip_data())
  with pytest.raises(ValueError, match="not a directory"):
    data.load_source(f"clips:{tmp_path}/missing", data=_clip_data())
  from skipdit_jax.data import clips
  assert "frame_stride=0" in clips.check_config(_clip_data(frame_stride=0))[0]


# --- tfds video sets (tfds:NAME with data.num_frames > 0) ------------------------------------

def test_tfds_video_set_reads_strided_resized_clips():
  """bair_robot_pushing_small (30 frames of 64x64x3, no labels) under tfds mock data.
  ucf101's `Video` feature needs TensorFlow even when mocked, so it cannot run here."""
  tfds = pytest.importorskip("tensorflow_datasets")
  pytest.importorskip("tensorflow_datasets.video.bair_robot_pushing")
  from skipdit_jax.data import tfds_source
  with tfds.testing.mock_data(num_examples=6):
    key = tfds_source.register_tfds("bair_robot_pushing_small")
    cfg = dict(num_frames=4, image_size=16, channels=3,
               video=dict(feature="image_main", frame_stride=3))
    x, y, k = data.load_source(key, split="train", data=cfg)
    assert k == 1 and x.shape == (6, 4, 16, 16, 3)
    ds = tfds.data_source("bair_robot_pushing_small", split="train")
    got = x[np.array([2, 5])]
    assert y[np.array([2, 5])].tolist() == [0, 0]
    for row, i in enumerate((2, 5)):
      raw = np.asarray(ds[i]["image_main"], np.float64)[[0, 3, 6, 9]]  # (4, 64, 64, 3)
      box = raw.reshape(4, 16, 4, 16, 4, 3).mean(axis=(2, 4))  # 4x4 box = 64 -> 16
      # PIL's two BOX halvings round each up (~+0.5 each), so allow 2 grey levels; a wrong
      # frame or crop would be off by tens (the mock pixels are uniform random)
      np.testing.assert_allclose((got[row] + 1) * 127.5, box, atol=2.0)
      assert np.abs((got[row] + 1) * 127.5 - box).mean() < 1.5
    with pytest.raises(ValueError, match="data.video.feature='video'.*image_main"):
      data.load_source(key, data=dict(cfg, video=dict(frame_stride=3)))
    b = next(data.BatchIterator(x, y, 2, 1, process_index=1, process_count=2))
    perm = np.random.default_rng([1, 0]).permutation(6)
    np.testing.assert_array_equal(b["image"], x[perm[1:2]])
