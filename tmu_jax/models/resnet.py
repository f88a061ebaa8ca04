"""ResNet-18 / ResNet-50 with the CIFAR stem (3x3 conv, stride 1, no max-pool) (METHODS §1)."""

from functools import partial
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from tmu_jax.models import register
from tmu_jax.models.common import normalize

# PyTorch's BatchNorm2d defaults: running average momentum 0.1 (= flax 0.9), eps 1e-5.
_BatchNorm = partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)
_Conv = partial(nn.Conv, use_bias=False)


class BasicBlock(nn.Module):
  """Two 3x3 convs with a (projected) identity shortcut (ResNet-18/34)."""
  features: int
  stride: int = 1
  expansion = 1

  @nn.compact
  def __call__(self, x, train: bool):
    norm = partial(_BatchNorm, use_running_average=not train)
    y = nn.relu(norm()(_Conv(self.features, (3, 3), self.stride, padding=1)(x)))
    y = norm()(_Conv(self.features, (3, 3), padding=1)(y))
    if self.stride != 1 or x.shape[-1] != self.features:
      x = norm()(_Conv(self.features, (1, 1), self.stride)(x))
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  """1x1 → 3x3 (strided) → 1x1 ×4 with a projected shortcut (ResNet-50)."""
  features: int
  stride: int = 1
  expansion = 4

  @nn.compact
  def __call__(self, x, train: bool):
    norm = partial(_BatchNorm, use_running_average=not train)
    out = self.features * self.expansion
    y = nn.relu(norm()(_Conv(self.features, (1, 1))(x)))
    y = nn.relu(norm()(_Conv(self.features, (3, 3), self.stride, padding=1)(y)))
    y = norm()(_Conv(out, (1, 1))(y))
    if self.stride != 1 or x.shape[-1] != out:
      x = norm()(_Conv(out, (1, 1), self.stride)(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """CIFAR ResNet; features = the globally pooled penultimate vector."""
  num_classes: int
  block: type = BasicBlock
  stages: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  mean: Sequence[float] = (0.5,)
  std: Sequence[float] = (0.5,)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False):
    x = normalize(x, self.mean, self.std)
    x = _Conv(self.width, (3, 3), padding=1)(x)
    x = nn.relu(_BatchNorm(use_running_average=not train)(x))
    for i, blocks in enumerate(self.stages):
      for j in range(blocks):
        stride = 2 if i > 0 and j == 0 else 1
        x = self.block(self.width * 2 ** i, stride)(x, train)
    features = jnp.mean(x, axis=(1, 2))
    return nn.Dense(self.num_classes)(features), features


@register("resnet18")
def resnet18(num_classes: int, mean, std, width: int = 64) -> nn.Module:
  """ResNet-18, CIFAR stem (11.17 M parameters for 10 classes at width 64)."""
  return ResNet(num_classes, BasicBlock, (2, 2, 2, 2), width, mean, std)


@register("resnet50")
def resnet50(num_classes: int, mean, std, width: int = 64) -> nn.Module:
  """ResNet-50, CIFAR stem (L2UL's CIFAR-100 network)."""
  return ResNet(num_classes, Bottleneck, (3, 4, 6, 3), width, mean, std)
