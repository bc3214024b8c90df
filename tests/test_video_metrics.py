"""Video metrics against hand-built clips whose answers are known in closed form."""
import numpy as np
import pytest

from skipdit_jax.eval import video_metrics as vm
from skipdit_jax.eval.image_metrics import ssim


def square_clip(positions, size=16, side=3):
  """(F, size, size, 1) in [-1, 1]: a bright side×side square at each (row, col) corner."""
  clip = -np.ones((len(positions), size, size, 1))
  for f, (r, c) in enumerate(positions):
    clip[f, r:r + side, c:c + side] = 1.0
  return clip


def linear_track(start, vel, frames=8):
  return [(start[0] + vel[0] * f, start[1] + vel[1] * f) for f in range(frames)]


def test_center_of_mass_is_the_square_centre():
  pos = linear_track((1, 2), (1, 1))
  com = vm.center_of_mass(square_clip(pos)[None])[0]
  np.testing.assert_allclose(com, np.asarray(pos, float) + 1.0)  # side 3: centre at +1


def test_constant_velocity_passes_shuffled_and_still_fail():
  rng = np.random.default_rng(0)
  moving = np.stack([square_clip(linear_track((rng.integers(0, 3), rng.integers(0, 3)),
                                              (1, 1))) for _ in range(6)])
  real = vm.motion_figure(moving)
  assert real["motion_pass"] == 1.0
  assert real["mean_step"] == pytest.approx(np.sqrt(2))
  assert real["mean_accel_ratio"] == pytest.approx(0.0)
  assert vm.motion_figure(vm.shuffle_frames(moving, seed=1))["motion_pass"] <= 1 / 6
  still = np.stack([square_clip([(5, 5)] * 8)] * 3)
  assert vm.motion_figure(still)["motion_pass"] == 0.0


def test_one_bounce_still_counts_as_smooth():
  # right 2 px per frame, reflecting off a wall after frame 4: one large second difference
  cols = [0, 2, 4, 6, 8, 6, 4, 2]
  clip = square_clip([(6, c) for c in cols])[None]
  assert vm.motion_figure(clip)["motion_pass"] == 1.0


def test_per_frame_psnr_matches_a_direct_computation():
  rng = np.random.default_rng(0)
  a = rng.uniform(-1, 1, (3, 4, 8, 8, 1))
  b = a + rng.normal(0, 0.1, a.shape) * np.arange(1, 5)[None, :, None, None, None]
  mse = ((a - b) ** 2).mean(axis=(2, 3, 4))               # (N, F)
  expected = (10 * np.log10(4.0 / mse)).mean(axis=0)
  np.testing.assert_allclose(vm.per_frame("psnr", a, b), expected, rtol=1e-12)
  # SSIM per frame index: slicing frame f out of every clip, a second path to the same value
  direct = [ssim(a[:, f], b[:, f]).mean() for f in range(a.shape[1])]
  np.testing.assert_allclose(vm.per_frame("ssim", a, b), direct, rtol=1e-12)


def test_frames_and_labels_line_up():
  clips = np.arange(2 * 3 * 1 * 1 * 1, dtype=float).reshape(2, 3, 1, 1, 1)
  np.testing.assert_array_equal(vm.frames(clips)[:, 0, 0, 0], np.arange(6))
  np.testing.assert_array_equal(vm.frame_labels([4, 7], 3), [4, 4, 4, 7, 7, 7])


def test_bad_shapes_are_named():
  with pytest.raises(ValueError, match=r"\(N, F, H, W, C\)"):
    vm.motion_figure(np.zeros((2, 8, 8, 1)))
  with pytest.raises(ValueError, match="at least 3 frames"):
    vm.motion_figure(np.zeros((1, 2, 8, 8, 1)))
  with pytest.raises(ValueError, match="unknown video metric"):
    vm.per_frame("lpips", np.zeros((1, 3, 8, 8, 1)), np.zeros((1, 3, 8, 8, 1)))


def _video_data(**video):
  from configs import default
  d = default.get_config().data
  d.name, d.image_size, d.channels, d.num_frames, d.num_classes = "moving_digits", 12, 1, 4, 10
  d.video.num_clips, d.video.num_test_clips = 64, 16
  d.video.update(video)
  return d


def test_feature_net_reads_clips_with_frames_as_channels():
  import jax
  from skipdit_jax.eval import feature_net
  net = feature_net.FeatureCNN((4,), 8, 3)
  clips = np.random.default_rng(0).normal(size=(2, 4, 6, 6, 2)).astype(np.float32)
  folded = np.concatenate([clips[:, f] for f in range(4)], axis=-1)  # (N, H, W, F*C)
  params = net.init(jax.random.key(0), clips)["params"]
  a = net.apply({"params": params}, clips)
  b = net.apply({"params": params}, folded)
  np.testing.assert_allclose(np.asarray(a[1]), np.asarray(b[1]), rtol=1e-6, atol=1e-6)


def test_video_references_follow_the_clip_fields():
  from skipdit_jax.eval import feature_net, sample_quality
  d = _video_data()
  x, y = sample_quality.real_images("moving_digits", 10, seed=0, data=d)
  assert x.shape == (10, 4, 12, 12, 1) and y.shape == (10,)
  spec = feature_net.SPECS["moving_digits"]
  taught = feature_net.data_for("moving_digits", spec, d)
  assert taught.video.label == "digit_direction" and d.video.label == "digit"
  other = _video_data(speed=2.0)
  assert (feature_net.cache_path("/c", "moving_digits", spec, d)
          != feature_net.cache_path("/c", "moving_digits", spec, other))
  assert feature_net.data_digest(None) == ""
