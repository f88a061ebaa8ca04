"""Model registry: every classifier maps images in [0, 1] to (logits, features).

A model is a linen ``Module`` whose ``__call__(x, train)`` takes ``x: f32[B, H, W, C]`` in
pixel space [0, 1] and returns ``(logits f32[B, num_classes], features f32[B, D])`` where
``features`` are the penultimate activations (METHODS §1: every classifier exposes both).
Normalisation happens inside the model so attacks work in pixel space.
"""

from typing import Callable, Sequence

import flax.linen as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
  """Decorator: registers a model factory ``f(num_classes, mean, std, **kw) -> Module``."""

  def wrap(factory):
    _REGISTRY[name] = factory
    return factory

  return wrap


def available() -> list[str]:
  """Names accepted by :func:`get_model`."""
  _import_all()
  return sorted(_REGISTRY)


def get_model(name: str, num_classes: int, mean: Sequence[float] = (0.5,),
              std: Sequence[float] = (0.5,), **kwargs) -> nn.Module:
  """Builds the registered model ``name`` for ``num_classes`` outputs."""
  _import_all()
  if name not in _REGISTRY:
    raise KeyError(f"unknown model {name!r}; valid: {', '.join(available())}")
  return _REGISTRY[name](num_classes=num_classes, mean=tuple(mean), std=tuple(std), **kwargs)


def _import_all():
  # Importing the modules runs their @register decorators.
  from tmu_jax.models import cnn, mlp  # noqa: F401
  for optional in ("resnet", "allcnn", "vit"):
    try:
      __import__(f"tmu_jax.models.{optional}")
    except ModuleNotFoundError as e:  # a family not written yet
      if e.name != f"tmu_jax.models.{optional}":
        raise
