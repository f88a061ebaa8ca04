"""Every registered model: output shapes, train mode with batch statistics, parameter counts."""

import jax
import jax.numpy as jnp
import pytest

from tmu_jax import models

TINY = dict(resnet18=dict(width=8), resnet50=dict(width=4), allcnn=dict(width=8),
            vit=dict(dim=16, depth=1, heads=2, mlp_dim=16), mlp=dict(hidden=(16,)),
            cnn=dict(channels=(4, 8), width=16))
IMAGE_MODELS = [n for n in models.available() if n != "label_mlp"]


@pytest.mark.parametrize("name", IMAGE_MODELS)
@pytest.mark.parametrize("shape", [(32, 32, 3), (28, 28, 1)])
def test_output_shapes(name, shape):
  # Shapes are checked abstractly (eval_shape): compiling ResNet-50 on 2 CPU cores takes ~20 s.
  model = models.get_model(name, 7, (0.5,) * shape[-1], (0.5,) * shape[-1], **TINY.get(name, {}))
  x = jax.ShapeDtypeStruct((2,) + shape, jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.key(0), x)
  logits, feats = jax.eval_shape(model.apply, variables, x)
  assert logits.shape == (2, 7) and feats.ndim == 2 and feats.shape[0] == 2
  if "batch_stats" in variables:
    (logits, _), updates = jax.eval_shape(
        lambda v, z: model.apply(v, z, train=True, mutable=["batch_stats"]), variables, x)
    assert logits.shape == (2, 7)
    assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(
        variables["batch_stats"])


@pytest.mark.parametrize("name", ["allcnn", "vit", "cnn", "mlp"])
def test_runs_and_train_mode_updates_batch_stats(name):
  model = models.get_model(name, 5, (0.5,), (0.5,), **TINY.get(name, {}))
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 1))
  variables = model.init(jax.random.key(0), x)
  logits, feats = model.apply(variables, x)
  assert logits.shape == (2, 5) and bool(jnp.all(jnp.isfinite(logits)))
  if "batch_stats" in variables:
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    changed = jax.tree.leaves(jax.tree.map(lambda a, b: jnp.any(a != b),
                                           updates["batch_stats"], variables["batch_stats"]))
    assert any(bool(c) for c in changed)


def test_label_mlp():
  model = models.get_model("label_mlp", 1)
  v = model.init(jax.random.key(0), jnp.zeros((4, 3)))
  logits, feats = model.apply(v, jnp.ones((4, 3)))
  assert logits.shape == (4, 1) and feats.shape == (4, 32)


def _count(name, **kw):
  model = models.get_model(name, 10, (0.5,) * 3, (0.5,) * 3, **kw)
  shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  return sum(x.size for x in jax.tree.leaves(shapes["params"]))


def test_resnet18_parameter_count_matches_pytorch():
  assert _count("resnet18") == 11_173_962  # torchvision-style CIFAR ResNet-18


def test_resnet50_parameter_count():
  assert _count("resnet50") == 23_520_842  # CIFAR ResNet-50 (kuangliu/pytorch-cifar)


def test_vit_rejects_bad_patch():
  model = models.get_model("vit", 10, (0.5,), (0.5,), patch=5, **{k: v for k, v in
                                                                   TINY["vit"].items()})
  with pytest.raises(ValueError, match="patch size 5"):
    jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))


def test_unknown_model():
  with pytest.raises(KeyError, match="unknown model"):
    models.get_model("nope", 10)
