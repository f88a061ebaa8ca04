"""tmu_jax.models.conv: im2col convolutions equal the library's, gradients included, and leave
no convolution inside a compiled training loop for XLA:CPU's naive fallback."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax import lax

from tmu_jax import models
from tmu_jax.models import conv

NHWC = ("NHWC", "HWIO", "NHWC")
CASES = [  # (kernel hw, strides, padding, rhs_dilation)
    ((3, 3), (1, 1), "SAME", None),
    ((3, 3), (2, 2), "SAME", None),
    ((3, 3), (1, 1), "VALID", None),
    ((1, 1), (2, 2), "VALID", None),
    ((3, 3), (2, 1), ((1, 1), (1, 1)), None),
    ((2, 3), (1, 2), ((0, 1), (2, 0)), None),
    ((3, 3), (1, 1), "SAME", (2, 2)),
]


@pytest.mark.parametrize("kernel,strides,padding,dilation", CASES)
def test_patch_conv_equals_the_library_conv_and_its_gradients(kernel, strides, padding,
                                                              dilation):
  """Values and both gradients agree with lax.conv_general_dilated to float32 rounding."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 9, 8, 3)), jnp.float32)
  w = jnp.asarray(rng.standard_normal(kernel + (3, 5)), jnp.float32)

  def run(f):
    def loss(x, w):
      y = f(x, w, strides, padding, rhs_dilation=dilation, dimension_numbers=NHWC)
      return jnp.sum(y * jnp.cos(y)), y
    (_, y), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, w)
    return y, grads

  y0, (gx0, gw0) = run(lax.conv_general_dilated)
  y1, (gx1, gw1) = run(conv.patch_conv)
  assert y1.shape == y0.shape
  for a, b in ((y1, y0), (gx1, gx0), (gw1, gw0)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_patch_conv_passes_other_convolutions_to_the_library():
  """Feature groups, input dilation and non-NHWC layouts fall back to lax, unchanged."""
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((1, 6, 6, 4)), jnp.float32)
  w = jnp.asarray(rng.standard_normal((3, 3, 2, 4)), jnp.float32)
  kw = dict(window_strides=(1, 1), padding="SAME", dimension_numbers=NHWC,
            feature_group_count=2)
  np.testing.assert_array_equal(conv.patch_conv(x, w, **kw), lax.conv_general_dilated(x, w, **kw))
  w = jnp.asarray(rng.standard_normal((3, 3, 4, 2)), jnp.float32)
  kw = dict(window_strides=(1, 1), padding=((1, 1), (1, 1)), lhs_dilation=(2, 2),
            dimension_numbers=NHWC)
  np.testing.assert_array_equal(conv.patch_conv(x, w, **kw), lax.conv_general_dilated(x, w, **kw))
  xc = jnp.moveaxis(x, -1, 1)
  wc = jnp.asarray(rng.standard_normal((2, 4, 3, 3)), jnp.float32)
  np.testing.assert_array_equal(conv.patch_conv(xc, wc, (1, 1), "SAME"),
                                lax.conv_general_dilated(xc, wc, (1, 1), "SAME"))


def test_auto_is_patches_on_cpu_and_bad_names_are_refused():
  """"auto" means im2col on the CPU backend; an unknown name names the config field."""
  assert jax.default_backend() == "cpu"
  assert conv.conv_general_dilated("auto") is conv.patch_conv
  assert conv.conv_general_dilated("patches") is conv.patch_conv
  assert conv.conv_general_dilated("xla") is None
  for name in ("cnn", "allcnn", "resnet18"):
    with pytest.raises(ValueError, match="model.kwargs.conv"):
      models.get_model(name, 10, conv="im2col")


@pytest.mark.parametrize("name,kw,train", [("cnn", dict(channels=(4, 8), width=16), False),
                                           ("allcnn", dict(width=4), True),
                                           ("resnet18", dict(width=4), True)])
def test_models_give_the_same_outputs_with_either_conv(name, kw, train):
  """The same variables (same names, same shapes) give the same logits, features and batch
  statistics through either convolution."""
  x = jnp.asarray(np.random.default_rng(2).random((2, 16, 16, 3)), jnp.float32)
  m_xla = models.get_model(name, 10, (0.5,) * 3, (0.25,) * 3, conv="xla", **kw)
  m_patch = models.get_model(name, 10, (0.5,) * 3, (0.25,) * 3, conv="patches", **kw)
  variables = m_xla.init(jax.random.key(0), x)
  assert jax.tree.structure(variables) == jax.tree.structure(m_patch.init(jax.random.key(0), x))
  mutable = ["batch_stats"] if "batch_stats" in variables else False
  out_xla = m_xla.apply(variables, x, train=train, mutable=mutable)
  out_patch = m_patch.apply(variables, x, train=train, mutable=mutable)
  for a, b in zip(jax.tree.leaves(out_xla), jax.tree.leaves(out_patch)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def _loop_hlo(impl: str) -> str:
  """Optimized HLO of 3 SGD steps of the small CNN inside a lax.fori_loop."""
  model = models.get_model("cnn", 10, channels=(4, 8), width=16, conv=impl)
  x = jnp.zeros((4, 12, 12, 1))
  y = jnp.zeros((4,), jnp.int32)
  params = model.init(jax.random.key(0), x)

  def step(_, p):
    def loss(p):
      logits, _ = model.apply(p, x)
      return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return jax.tree.map(lambda a, g: a - 0.1 * g, p, jax.grad(loss)(p))

  return jax.jit(lambda p: lax.fori_loop(0, 3, step, p)).lower(params).compile().as_text()


def test_no_convolution_is_left_inside_the_training_loop():
  """With the library conv, the loop body holds the backward convolutions XLA:CPU cannot
  canonicalize there (the slow path); with im2col it holds none."""
  assert " convolution(" in _loop_hlo("xla")
  assert " convolution(" not in _loop_hlo("patches")
