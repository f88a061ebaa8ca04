"""A small, fast CNN for CPU-size runs."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from tmu_jax.models import register
from tmu_jax.models.common import normalize
from tmu_jax.models.conv import conv_general_dilated


class SmallCNN(nn.Module):
  """[Conv3x3 → ReLU → MaxPool2]* → Dense → ReLU → Dense; features = the last hidden layer."""

  num_classes: int
  channels: Sequence[int] = (32, 64)
  width: int = 128
  mean: Sequence[float] = (0.5,)
  std: Sequence[float] = (0.5,)
  conv: str = "auto"  # tmu_jax.models.conv: "patches" (im2col) on CPU, the library conv else

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False):
    del train
    h = normalize(x, self.mean, self.std)
    for c in self.channels:
      h = nn.relu(nn.Conv(c, (3, 3), conv_general_dilated=conv_general_dilated(self.conv))(h))
      h = nn.max_pool(h, (2, 2), strides=(2, 2))
    h = h.reshape((h.shape[0], -1))
    h = nn.relu(nn.Dense(self.width)(h))
    return nn.Dense(self.num_classes)(h), h


@register("cnn")
def cnn(num_classes: int, mean, std, channels: Sequence[int] = (32, 64), width: int = 128,
        conv: str = "auto"):
  """Two conv blocks and a 128-wide head; ``conv`` picks the convolution (models/conv.py)."""
  conv_general_dilated(conv)  # validates
  return SmallCNN(num_classes=num_classes, channels=tuple(channels), width=width, mean=mean,
                  std=std, conv=conv)
