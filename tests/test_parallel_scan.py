"""Scan over blocks and remat give the unrolled model's loss and gradients (models/scan.py)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from skipdit_jax import diffusion as dfn
from skipdit_jax import models
from skipdit_jax.models import scan


def _perturbed_params(model, seed=0):
  """Random params of the model's shapes (numpy, so nothing compiles): every gate is open."""
  shapes = jax.eval_shape(lambda r: models.init_params(model, r), jax.random.key(0))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.1 * rng.standard_normal(s.shape), s.dtype),
                      shapes)


def _loss(model, params, x, t, y, noise):
  diff = dfn.Diffusion.create(dfn.betas_for("linear", 1000))
  x_t = dfn.q_sample(diff, x, t, noise)
  out = model.apply({"params": params}, x_t, t, y)
  return dfn.training_losses(diff, out, x, x_t, t, noise,
                             learn_sigma=model.learn_sigma)["loss"].mean()


def _tiny(name, **kw):
  return models.create(name, input_size=8, in_channels=1, num_classes=10, depth=4,
                       hidden_size=32, num_heads=2, **kw)


def _inputs(model):
  k = jax.random.split(jax.random.key(7), 2)
  shape = (3, model.input_size, model.input_size, model.in_channels)
  return (jax.random.normal(k[0], shape), jnp.array([0, 400, 999]), jnp.array([1, 2, 10]),
          jax.random.normal(k[1], shape))


@pytest.mark.parametrize("name,scan_blocks,remat", [
    ("SkipDiT-Tiny/2", True, "none"), ("SkipDiT-Tiny/2", True, "dots"),
    ("DiT-Tiny/2", True, "none"), ("SkipDiT-Tiny/2", False, "full")])
def test_same_loss_and_grads_as_unrolled(name, scan_blocks, remat):
  ref = _tiny(name)
  alt = ref.clone(scan_blocks=scan_blocks, remat=remat)
  p = _perturbed_params(ref)
  p_alt = scan.stack_params(p, ref.depth, ref.long_skip) if scan_blocks else p
  args = _inputs(ref)
  l_ref, g_ref = jax.jit(jax.value_and_grad(lambda q: _loss(ref, q, *args)))(p)
  l_alt, g_alt = jax.jit(jax.value_and_grad(lambda q: _loss(alt, q, *args)))(p_alt)
  if scan_blocks:
    g_alt = scan.unstack_params(g_alt)
  np.testing.assert_allclose(float(l_alt), float(l_ref), rtol=1e-6)
  assert jax.tree.structure(g_alt) == jax.tree.structure(g_ref)
  for a, b in zip(jax.tree.leaves(g_alt), jax.tree.leaves(g_ref)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_scanned_layout_has_same_count_and_exact_name_mapping():
  ref = _tiny("SkipDiT-Tiny/2")
  alt = ref.clone(scan_blocks=True)
  assert models.param_count(alt) == models.param_count(ref)
  abstract = jax.eval_shape(lambda r: models.init_params(alt, r), jax.random.key(0))
  p = _perturbed_params(ref)
  stacked = scan.stack_params(p, ref.depth, ref.long_skip)
  assert jax.tree.structure(abstract) == jax.tree.structure(stacked)
  assert [a.shape for a in jax.tree.leaves(abstract)] == [
      a.shape for a in jax.tree.leaves(stacked)]
  back = scan.unstack_params(stacked)
  assert jax.tree.structure(back) == jax.tree.structure(p)
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(p)))
  axes = models.logical_axes(alt)["block_stack"]
  assert tuple(axes["blocks"]["mlp"]["fc1"]["kernel"]) == ("layers", "embed", "mlp")
  assert tuple(axes["fusions"]["linear"]["kernel"]) == ("layers", "skip_in", "embed")


def test_scanned_staged_forward_matches_one_pass():
  """The cached sampler splits [0, depth) into ranges; scan must give the same output."""
  ref = _tiny("SkipDiT-Tiny/2")
  alt = ref.clone(scan_blocks=True)
  p = _perturbed_params(ref)
  ps = scan.stack_params(p, ref.depth, ref.long_skip)
  x, t, y, _ = _inputs(ref)

  def staged(m):
    h, c = m.embed(x, t, y)
    skips = ()
    for a, b in ((0, 1), (1, 3), (3, 4)):
      h, skips = m.run_blocks(h, c, skips, a, b)
    assert skips == ()
    return m.head(h, c)
  out_ref = ref.apply({"params": p}, x, t, y)
  out_alt = alt.apply({"params": ps}, method=staged)
  np.testing.assert_allclose(np.asarray(out_alt), np.asarray(out_ref), rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="need 2 skips"):
    alt.apply({"params": ps}, method=lambda m: m.run_blocks(
        *m.embed(x, t, y), (), 2, 4))


def test_unknown_remat_policy_names_the_field():
  with pytest.raises(ValueError, match="model.remat"):
    models.init_params(_tiny("DiT-Tiny/2", remat="sometimes"), jax.random.key(0))
