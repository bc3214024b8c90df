"""PSNR / SSIM / cosine against written-out loops and known values."""
import math

import numpy as np
import pytest

from skipdit_jax.eval import image_metrics as M


def _ssim_loop(x, y, size, sigma=1.5, rng=2.0):
  """SSIM of one (H, W) channel by explicit windows and weighted moments."""
  c = (size - 1) / 2
  w = np.array([[math.exp(-((i - c) ** 2 + (j - c) ** 2) / (2 * sigma ** 2))
                 for j in range(size)] for i in range(size)])
  w /= w.sum()
  c1, c2, vals = (0.01 * rng) ** 2, (0.03 * rng) ** 2, []
  for i in range(x.shape[0] - size + 1):
    for j in range(x.shape[1] - size + 1):
      px, py = x[i:i + size, j:j + size], y[i:i + size, j:j + size]
      mx, my = (w * px).sum(), (w * py).sum()
      vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
      cxy = (w * (px - mx) * (py - my)).sum()
      vals.append((2 * mx * my + c1) * (2 * cxy + c2)
                  / ((mx * mx + my * my + c1) * (vx + vy + c2)))
  return float(np.mean(vals))


@pytest.mark.parametrize("shape,size", [((2, 8, 8, 1), 7), ((1, 13, 12, 2), 11)])
def test_ssim_matches_explicit_windows(shape, size):
  r = np.random.default_rng(0)
  a = r.uniform(-1, 1, shape)
  b = np.clip(a + 0.3 * r.standard_normal(shape), -1, 1)
  got = M.ssim(a, b)
  want = [np.mean([_ssim_loop(a[n, ..., c], b[n, ..., c], size) for c in range(shape[3])])
          for n in range(shape[0])]
  np.testing.assert_allclose(got, want, rtol=1e-10)
  np.testing.assert_allclose(M.ssim(a, a), 1.0, rtol=1e-12)


def test_psnr_known_values():
  a = np.zeros((2, 4, 4, 1))
  b = a.copy()
  b[0] += 0.2            # MSE 0.04, range 2: 10 log10(4 / 0.04) = 20 dB
  assert M.psnr(a, b)[0] == pytest.approx(20.0, abs=1e-12)
  assert M.psnr(a, b)[1] == np.inf
  with pytest.raises(ValueError, match="one shape"):
    M.psnr(a, b[:1])


def test_cosine_similarity():
  a = np.array([[1.0, 0.0], [1.0, 1.0]]).reshape(2, 1, 1, 2)
  b = np.array([[0.0, 3.0], [2.0, 2.0]]).reshape(2, 1, 1, 2)
  np.testing.assert_allclose(M.cosine_similarity(a, b), [0.0, 1.0], atol=1e-15)
