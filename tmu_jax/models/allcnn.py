"""All-CNN-C (Springenberg et al. 2014), with batch norm as in common unlearning code."""

from functools import partial
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from tmu_jax.models import register
from tmu_jax.models.common import normalize


class AllCNN(nn.Module):
  """Convolutions only: 3x3 ×2, 3x3/2, 3x3 ×2, 3x3/2, 3x3 valid, 1x1, 1x1 → classes, pool.

  The last 1x1 conv followed by global average pooling equals pooling first and a Dense layer
  (both are linear), so we pool the 2w-channel map to get the features and apply a Dense.
  """
  num_classes: int
  width: int = 96
  dropout: float = 0.0
  mean: Sequence[float] = (0.5,)
  std: Sequence[float] = (0.5,)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False):
    w1, w2 = self.width, 2 * self.width

    def conv(h, feats, kernel=3, stride=1, padding=1):
      h = nn.Conv(feats, (kernel, kernel), stride, padding=padding, use_bias=False)(h)
      h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(h)
      return nn.relu(h)

    drop = partial(nn.Dropout(self.dropout), deterministic=not train or self.dropout == 0)
    h = normalize(x, self.mean, self.std)
    h = conv(conv(h, w1), w1)
    h = drop(conv(h, w1, stride=2))
    h = conv(conv(h, w2), w2)
    h = drop(conv(h, w2, stride=2))
    h = conv(h, w2, padding=0)
    h = conv(h, w2, kernel=1, padding=0)
    features = jnp.mean(h, axis=(1, 2))
    return nn.Dense(self.num_classes)(features), features


@register("allcnn")
def allcnn(num_classes: int, mean, std, width: int = 96, dropout: float = 0.0) -> nn.Module:
  return AllCNN(num_classes, width, dropout, mean, std)
