"""ResNet-18 / ResNet-50 with the CIFAR stem (METHODS §1 architectures).

He et al. 2016 ("Deep Residual Learning"), laid out as the CIFAR code the unlearning papers use
(kuangliu/pytorch-cifar): a 3x3 stride-1 stem conv and no max-pool, then four stages of width
w, 2w, 4w, 8w whose first block (from stage 2 on) halves the resolution, then a global average
pool. With w = 64 and 10 classes ResNet-18 has 11,173,962 parameters and ResNet-50 23,520,842,
exactly PyTorch's counts (batch-norm running statistics excluded, as ``model.parameters()`` does).
"""

from functools import partial
from numbers import Integral
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from tmu_jax.models import register
from tmu_jax.models.common import normalize
from tmu_jax.models.conv import conv_general_dilated

# PyTorch's BatchNorm2d defaults: running-average momentum 0.1 (= flax's 0.9), eps 1e-5.
_BatchNorm = partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)


def _conv_layer(impl: str):
  """nn.Conv without bias (every conv is followed by batch norm, whose shift makes a conv bias
  redundant), with the convolution ``impl`` of tmu_jax.models.conv."""
  return partial(nn.Conv, use_bias=False, conv_general_dilated=conv_general_dilated(impl))


class BasicBlock(nn.Module):
  """Two 3x3 convs plus shortcut (He et al. §3.3, ResNet-18/34): f32[B,H,W,C] → [B,H/s,W/s,F]."""

  features: int
  stride: int = 1
  conv: str = "auto"
  expansion = 1  # output channels = features · expansion

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    norm = partial(_BatchNorm, use_running_average=not train)
    conv = _conv_layer(self.conv)
    y = nn.relu(norm()(conv(self.features, (3, 3), self.stride, padding=1)(x)))
    y = norm()(conv(self.features, (3, 3), padding=1)(y))
    if self.stride != 1 or x.shape[-1] != self.features:
      # Projection shortcut (option B of §3.3) where the shape changes.
      x = norm()(conv(self.features, (1, 1), self.stride)(x))
    return nn.relu(x + y)


class Bottleneck(nn.Module):
  """1x1 → 3x3 (strided) → 1x1 ×4 plus shortcut (He et al. §4.1): f32[B,H,W,C] → [..., 4F]."""

  features: int
  stride: int = 1
  conv: str = "auto"
  expansion = 4

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
    norm = partial(_BatchNorm, use_running_average=not train)
    conv = _conv_layer(self.conv)
    out = self.features * self.expansion
    y = nn.relu(norm()(conv(self.features, (1, 1))(x)))
    y = nn.relu(norm()(conv(self.features, (3, 3), self.stride, padding=1)(y)))
    y = norm()(conv(out, (1, 1))(y))
    if self.stride != 1 or x.shape[-1] != out:
      x = norm()(conv(out, (1, 1), self.stride)(x))
    return nn.relu(x + y)


class ResNet(nn.Module):
  """CIFAR ResNet: f32[B,H,W,C] in [0,1] → (logits [B,classes], features [B, 8w·expansion])."""

  num_classes: int
  block: type[nn.Module] = BasicBlock
  stages: Sequence[int] = (2, 2, 2, 2)
  width: int = 64
  mean: Sequence[float] = (0.5,)
  std: Sequence[float] = (0.5,)
  conv: str = "auto"  # tmu_jax.models.conv: "patches" (im2col) on CPU, the library conv else

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False):
    x = normalize(x, self.mean, self.std)
    # CIFAR stem: stride 1, no max-pool.
    x = _conv_layer(self.conv)(self.width, (3, 3), padding=1)(x)
    x = nn.relu(_BatchNorm(use_running_average=not train)(x))
    for i, blocks in enumerate(self.stages):
      for j in range(blocks):
        stride = 2 if i > 0 and j == 0 else 1
        x = self.block(self.width * 2**i, stride, self.conv)(x, train)
    features = jnp.mean(x, axis=(1, 2))  # global average pool: the penultimate vector
    return nn.Dense(self.num_classes)(features), features


def _check_width(width: int) -> int:
  """Returns ``width`` as an int, or raises ValueError naming the config field."""
  if not isinstance(width, Integral) or width < 1:
    raise ValueError(f"model.kwargs.width must be a positive int (64 = the paper's ResNet); "
                     f"got {width!r}")
  return int(width)


@register("resnet18")
def resnet18(num_classes: int, mean, std, width: int = 64, conv: str = "auto") -> nn.Module:
  """ResNet-18, BasicBlock [2,2,2,2]: 512-d features, 11,173,962 parameters (10 classes, w=64)."""
  conv_general_dilated(conv)  # validates
  return ResNet(num_classes, BasicBlock, (2, 2, 2, 2), _check_width(width), mean, std, conv)


@register("resnet50")
def resnet50(num_classes: int, mean, std, width: int = 64, conv: str = "auto") -> nn.Module:
  """ResNet-50, Bottleneck [3,4,6,3]: 2048-d features, 23,520,842 parameters (10 classes, w=64).

  L2UL's CIFAR-100 network (METHODS §1).
  """
  conv_general_dilated(conv)  # validates
  return ResNet(num_classes, Bottleneck, (3, 4, 6, 3), _check_width(width), mean, std, conv)
