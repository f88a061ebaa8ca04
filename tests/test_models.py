"""Every registered model: shapes, train mode and batch statistics, dropout rngs, parameter counts.

Shapes are checked abstractly (``jax.eval_shape``) and concrete runs start from parameters
filled in with numpy: compiling ``model.init`` (its random initialisers) costs 5-15 s per
network on this 2-core CPU, and ResNet-50's forward pass alone about 3 s.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmu_jax import models
from tmu_jax.models.vit import LocalitySelfAttention

# Tiny constructor arguments per model, and the feature width they give.
TINY = dict(resnet18=dict(width=8), resnet50=dict(width=4), allcnn=dict(width=8),
            vit=dict(dim=16, depth=1, heads=2, mlp_dim=16), mlp=dict(hidden=(16,)),
            cnn=dict(channels=(4, 8), width=16), label_mlp=dict(hidden=(8, 4)))
FEATURES = dict(resnet18=64, resnet50=128, allcnn=16, vit=16, mlp=16, cnn=16, label_mlp=4)
IMAGE_SHAPES = [(32, 32, 3), (28, 28, 1)]
CASES = [(name, shape) for name in models.available()
         for shape in ([(3,)] if name == "label_mlp" else IMAGE_SHAPES)]


def _build(name: str, num_classes: int, channels: int, **kw):
  """Tiny model ``name`` with per-channel normalisation for ``channels`` channels."""
  kw = {**TINY.get(name, {}), **kw}
  return models.get_model(name, num_classes, (0.5,) * channels, (0.25,) * channels, **kw)


def _materialize(abstract, seed: int = 0):
  """Concrete variables for an ``eval_shape`` tree: N(0, 0.1²) weights, unit variances."""
  rng = np.random.default_rng(seed)

  def fill(path, s):
    if jax.tree_util.keystr(path).endswith("['var']"):
      return np.ones(s.shape, s.dtype)
    return (0.1 * rng.standard_normal(s.shape)).astype(s.dtype)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def test_every_model_has_a_case():
  """Every registered model has tiny arguments and a feature width here."""
  assert set(models.available()) == set(TINY) == set(FEATURES)
  assert {"resnet18", "resnet50", "allcnn", "vit", "mlp", "cnn", "label_mlp"} <= set(TINY)


@pytest.mark.parametrize("name,shape", CASES)
def test_output_shapes(name, shape):
  """Logits and features have the expected shapes in eval and train mode."""
  model = _build(name, 7, shape[-1])
  x = jax.ShapeDtypeStruct((2,) + shape, jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  logits, feats = jax.eval_shape(model.apply, variables, x)
  assert logits.shape == (2, 7) and feats.shape == (2, FEATURES[name])
  assert logits.dtype == feats.dtype == jnp.float32
  if "batch_stats" in variables:
    (logits, feats), updates = jax.eval_shape(
        lambda v, z: model.apply(v, z, train=True, mutable=["batch_stats"]), variables, x)
    assert logits.shape == (2, 7) and feats.shape == (2, FEATURES[name])
    assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(
        variables["batch_stats"])


# ResNet-50 runs only abstractly (test_output_shapes): its concrete compile costs about 5 s.
@pytest.mark.parametrize("name", ["resnet18", "allcnn", "vit", "cnn", "mlp"])
def test_train_mode_runs_and_updates_batch_stats(name):
  """Train mode runs; BatchNorm models update every running statistic."""
  model = _build(name, 5, 1)
  x = jax.random.uniform(jax.random.key(1), (2, 12, 12, 1))
  variables = _materialize(jax.eval_shape(model.init, jax.random.key(0), x))
  uses_bn = "batch_stats" in variables
  assert uses_bn == (name in ("resnet18", "allcnn"))
  if uses_bn:
    (logits, feats), updates = jax.jit(
        lambda v, z: model.apply(v, z, train=True, mutable=["batch_stats"]))(variables, x)
    changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), updates["batch_stats"],
                           variables["batch_stats"])
    assert all(jax.tree.leaves(changed))  # every BN layer's running mean and var moved
  else:
    logits, feats = jax.jit(lambda v, z: model.apply(v, z, train=True))(variables, x)
  assert logits.shape == (2, 5) and feats.shape == (2, FEATURES[name])
  assert bool(jnp.all(jnp.isfinite(logits)))


def test_allcnn_dropout_uses_the_dropout_rng_only_in_training():
  """All-CNN's dropout needs and uses a dropout rng in training only."""
  x = jnp.full((2, 12, 12, 1), 0.5)
  model = _build("allcnn", 3, 1, dropout=0.5)
  variables = _materialize(jax.eval_shape(model.init, jax.random.key(0), x))
  train = jax.jit(lambda v, z, key: model.apply(v, z, train=True, mutable=["batch_stats"],
                                                rngs={"dropout": key})[0][0])
  # An rbg key: threefry's bit generator alone takes seconds to compile on this CPU.
  a, b = (train(variables, x, jax.random.key(seed, impl="rbg")) for seed in (1, 2))
  assert not np.allclose(a, b)
  # Tracing is enough to see which rngs are requested (and far cheaper than compiling).
  with pytest.raises(Exception, match="dropout"):
    jax.eval_shape(lambda v: model.apply(v, x, train=True, mutable=["batch_stats"]), variables)
  jax.eval_shape(lambda v: model.apply(v, x), variables)  # eval: no rng needed
  model0 = _build("allcnn", 3, 1)  # rate 0 (the default): no rng, even in training
  jax.eval_shape(lambda v: model0.apply(v, x, train=True, mutable=["batch_stats"]), variables)


def test_lsa_temperature_and_diagonal_mask():
  """ViT's locality self-attention: τ starts at √d, the diagonal is masked, gradients finite."""
  lsa = LocalitySelfAttention(heads=2, dim_head=8)
  tokens = jax.random.normal(jax.random.key(1), (2, 5, 16))
  variables = jax.jit(lsa.init)(jax.random.key(0), tokens)
  # §3.2: τ starts at √d_head.
  np.testing.assert_allclose(jnp.exp(variables["params"]["log_temperature"]), np.sqrt(8), rtol=1e-6)
  # §3.2 diagonal masking: rows are distributions that give a token's own position no weight.
  _, state = jax.jit(lambda v, z: lsa.apply(v, z, mutable=["intermediates"]))(variables, tokens)
  (weights,) = state["intermediates"]["attention"]
  assert weights.shape == (2, 2, 5, 5)
  np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-5)
  np.testing.assert_array_equal(jnp.diagonal(weights, axis1=-2, axis2=-1), 0.0)
  assert bool(jnp.all(weights + jnp.eye(5) > 0))  # every other token keeps some weight
  # The -inf scores must not leak NaN into the gradients.
  grads = jax.jit(jax.grad(lambda v, z: lsa.apply(v, z).sum(), argnums=(0, 1)))(variables, tokens)
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_vit_rejects_bad_sizes():
  """A patch size that does not divide the image, or dim not divisible by heads, is refused."""
  model = _build("vit", 10, 1, patch=5)
  with pytest.raises(ValueError, match=r"patch size 5 must divide the image size 28x28.*\[1, 2, 4, "
                                       r"7, 14, 28\]"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  with pytest.raises(ValueError, match="model.kwargs.dim"):
    models.get_model("vit", 10, dim=20, heads=3)


def test_allcnn_rejects_too_small_images():
  """All-CNN refuses images smaller than 9x9."""
  with pytest.raises(ValueError, match="at least 9x9 pixels; got 8x8"):
    jax.eval_shape(_build("allcnn", 10, 1).init, jax.random.key(0), jnp.zeros((1, 8, 8, 1)))


@pytest.mark.parametrize("name,kw", [("resnet18", dict(width=0)), ("allcnn", dict(width=2.5)),
                                     ("allcnn", dict(dropout=1.0)), ("vit", dict(depth=0))])
def test_bad_kwargs_name_the_field(name, kw):
  """A bad constructor argument names its model.kwargs field."""
  with pytest.raises(ValueError, match=f"model.kwargs.{next(iter(kw))}"):
    models.get_model(name, 10, **kw)


def _count(name: str, **kw) -> tuple[int, int]:
  """(parameter count, feature width) of ``name`` at full size for 10 classes on 32x32x3."""
  model = models.get_model(name, 10, (0.5,) * 3, (0.5,) * 3, **kw)
  x = jnp.zeros((1, 32, 32, 3))
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)
  _, feats = jax.eval_shape(model.apply, shapes, x)
  return sum(p.size for p in jax.tree.leaves(shapes["params"])), feats.shape[-1]


def test_full_size_parameter_counts():
  """Full-size parameter counts and feature widths match PyTorch's and our hand counts."""
  # PyTorch CIFAR ResNets (kuangliu/pytorch-cifar), BN running statistics excluded.
  assert _count("resnet18") == (11_173_962, 512)
  assert _count("resnet50") == (23_520_842, 2048)
  # Our own layouts, counted by hand and pinned so an accidental change shows up. All-CNN-C:
  # bias-free convs 1,366,560 + BN scale/shift 2,496 + Dense 1,930.
  assert _count("allcnn") == (1_370_986, 192)
  # ViT: SPT 46,752; CLS 192 + positions 65·192; 9 blocks of 296,449; final LN 384; head 1,930.
  assert _count("vit") == (2_729_779, 192)


def test_unknown_model():
  """An unknown model name is a KeyError."""
  with pytest.raises(KeyError, match="unknown model"):
    models.get_model("nope", 10)


def _torch_nets():
  """bench/torch_nets.py (plain PyTorch), imported by path: bench/ is not a package."""
  import importlib.util  # pylint: disable=import-outside-toplevel
  import os  # pylint: disable=import-outside-toplevel
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench",
                      "torch_nets.py")
  spec = importlib.util.spec_from_file_location("torch_nets", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def _scaled(abstract, seed: int = 0):
  """Variables that keep activations O(1) through depth: He-scaled kernels, BN scale ~1, random
  running means and variances in [0.5, 1.5] (so the test sees whether they are used)."""
  rng = np.random.default_rng(seed)

  def fill(path, s):
    name = jax.tree_util.keystr(path)
    if name.endswith("['kernel']"):
      return (rng.standard_normal(s.shape) * np.sqrt(2.0 / np.prod(s.shape[:-1]))).astype(s.dtype)
    if name.endswith("['var']"):
      return rng.uniform(0.5, 1.5, s.shape).astype(s.dtype)
    if name.endswith("['scale']"):
      return (1.0 + 0.2 * rng.standard_normal(s.shape)).astype(s.dtype)
    return (0.2 * rng.standard_normal(s.shape)).astype(s.dtype)  # biases, BN shift and mean

  return jax.tree_util.tree_map_with_path(fill, abstract)


@pytest.mark.parametrize("name,kw", [("cnn", dict(channels=(4, 8), width=16)),
                                     ("resnet18", dict(width=8))])
def test_forward_agrees_with_pytorch(name, kw):
  """Eval logits match bench/torch_nets.py on the same weights: max |Δ|/max|logit| measured
  3.3e-7 (cnn), 2.9e-7 (resnet18, width 8; 4.0e-7 at width 64), asserted ≤ 1e-4 (float32)."""
  torch = pytest.importorskip("torch")
  nets = _torch_nets()
  mean, std = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)
  model = models.get_model(name, 10, mean, std, **kw)
  x = np.random.default_rng(1).random((4, 32, 32, 3), np.float32)
  variables = _scaled(jax.eval_shape(model.init, jax.random.key(0), jnp.asarray(x)))
  ours = np.asarray(jax.jit(lambda v, z: model.apply(v, z, train=False)[0])(variables, x))
  if name == "cnn":
    net = nets.SmallCNN(in_ch=3, hw=32, num_classes=10, **kw)
  else:
    net = nets.ResNet18(num_classes=10, **kw)
  net.load_flax(jax.tree.map(np.asarray, variables)).eval()
  normalized = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
  with torch.no_grad():
    theirs = net(torch.from_numpy(normalized.transpose(0, 3, 1, 2).copy())).numpy()
  assert theirs.dtype == ours.dtype == np.float32
  scale = np.abs(ours).max()
  assert scale > 0.1  # the logits carry signal, so a relative check means something
  np.testing.assert_array_less(np.abs(ours - theirs).max() / scale, 1e-4)
  assert (ours.argmax(-1) == theirs.argmax(-1)).all()
