"""bench/peer_torch.py does our train step's work: from the same weights and batch it gives
the JAX hybrid loss and gradients; its optimizer step is clipped AdamW + EMA; the `--peer`
JSON of bench/train_throughput.py. Skipped without torch (`pip install -e '.[peer]'`)."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import peer_torch  # noqa: E402

from skipdit_jax import diffusion as dfn  # noqa: E402
from skipdit_jax.models import convert  # noqa: E402
import tiny_models  # noqa: E402

N, SIZE, C, WIDTH, DEPTH = 4, 8, 4, 32, 4


def _batch():
  rng = np.random.default_rng(3)
  x0 = rng.uniform(-1.0, 1.0, (N, SIZE, SIZE, C)).astype(np.float32)
  x0[0, 0, 0], x0[0, 0, 1] = -1.0, 1.0  # the discretised likelihood's two edge bins
  t = np.array([0, 1, 517, 999], np.int32)  # t = 0: the NLL branch of the VLB term
  noise = rng.standard_normal((N, SIZE, SIZE, C)).astype(np.float32)
  # At t = 0 the decoder NLL takes log(cdf(z + bin) - cdf(z - bin)) at z = (x0 - mean) / std,
  # which float32 rounds to noise once |z| > ~4 (both cdfs round to 1): keep z small there.
  noise[0] *= 0.25
  y = np.array([0, 5, 2, 4], np.int32)  # 5 = the null class
  return x0, t, noise, y


def _tiny(long_skip: bool):
  """A random tiny model whose output is small (|eps| << 1: z stays small at t = 0)."""
  model, params = tiny_models.tiny(long_skip, depth=DEPTH, width=WIDTH, size=SIZE, channels=C)
  params["final_layer"]["linear"] = jax.tree_util.tree_map(
      lambda a: 0.05 * a, params["final_layer"]["linear"])
  return model, params


def _peer(model, params):
  peer = peer_torch.PeerDiT(input_size=SIZE, patch=model.patch_size, channels=C, dim=WIDTH,
                            depth=DEPTH, heads=model.num_heads, num_classes=5,
                            long_skip=model.long_skip)
  peer_torch.load_official(peer, convert.to_official(params, model))
  return peer


def _nchw(a: np.ndarray):
  return torch.from_numpy(np.ascontiguousarray(a.transpose(0, 3, 1, 2)))


@pytest.mark.parametrize("long_skip", [False, True])
def test_peer_loss_and_grads_match_jax(long_skip):
  model, params = _tiny(long_skip)
  diffusion = dfn.Diffusion.create(dfn.betas_for("linear", 1000))
  x0, t, noise, y = _batch()

  def loss_fn(p):
    x_t = dfn.q_sample(diffusion, x0, t, noise)
    out = model.apply({"params": p}, x_t, dfn.model_timesteps(diffusion, t), y)
    losses = dfn.training_losses(diffusion, out, x0, x_t, t, noise, learn_sigma=True)
    return losses["loss"].mean(), losses

  (loss, losses), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)

  peer = _peer(model, params)
  got = peer_torch.hybrid_losses(peer, peer_torch.Tables(), _nchw(x0),
                                 torch.from_numpy(t.astype(np.int64)), _nchw(noise),
                                 torch.from_numpy(y.astype(np.int64)))
  got["loss"].mean().backward()
  for k in ("mse", "vb", "loss"):
    np.testing.assert_allclose(got[k].detach().numpy(), np.asarray(losses[k]), rtol=2e-5,
                               atol=1e-6, err_msg=k)
  assert float(got["vb"][0]) != 0.0 and float(loss) > 0.1  # a non-trivial loss
  want = convert.to_official(grads, model, with_pos_embed=False)
  names = dict(peer.named_parameters())
  assert set(names) == set(want)
  for name, p in names.items():
    g = want[name]
    scale = float(np.abs(g).max()) + 1e-12
    np.testing.assert_allclose(p.grad.numpy(), g, rtol=1e-3, atol=2e-5 * scale, err_msg=name)


def test_peer_step_is_clipped_adamw_and_ema():
  model, params = _tiny(True)
  peer = _peer(model, params)
  step = peer_torch.PeerStep(peer, num_classes=5, lr=1e-4, grad_clip=1.0, ema_decay=0.99)
  before = [p.detach().clone() for p in step.params]
  x0, _, _, y = _batch()
  loss = step.step(_nchw(x0), torch.from_numpy(y.astype(np.int64)))
  assert np.isfinite(loss)
  moved = 0
  for p0, p, e in zip(before, step.params, step.ema):
    d = (p.detach() - p0).numpy()
    # Adam's first update is lr * g / (|g| + eps) after bias correction: lr where |g| >> eps
    # (up to the rounding of the updated parameter).
    assert np.all(np.abs(d) <= 1e-4 + 2 * np.spacing(np.abs(p0.numpy()) + 1e-4))
    moved += int(np.sum(np.abs(d) > 0.99e-4))
    np.testing.assert_allclose(e.numpy(), (p0 + 0.01 * (p.detach() - p0)).numpy(),
                               rtol=1e-6, atol=1e-8)
  assert moved > 1000


@pytest.mark.slow
def test_train_throughput_peer_json():
  env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  cmd = [sys.executable, "bench/train_throughput.py", "--peer", "--size", "Tiny/2",
         "--image_size", "8", "--batch", "2", "--warmup", "0", "--repeats", "2",
         "--matmul_n", "64"]
  proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = json.loads(proc.stdout.strip().splitlines()[-1])
  assert set(out["vs_torch"]) == {"dit", "skipdit"}
  for key in ("dit", "skipdit"):
    r = out["vs_torch"][key]
    assert isinstance(r, float) and r > 0
    assert out["torch"][key]["img_per_s"] == pytest.approx(2e3 / out["torch"][key]["step_ms"])
  assert out["torch"]["threads"] >= 1
