"""Multi-layer perceptrons: the fast image classifier for CPU runs and the TMU §2.4 label MLP."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from tmu_jax.models import register
from tmu_jax.models.common import normalize


class MLP(nn.Module):
  """Flatten → [Dense → ReLU]* → Dense. Features are the last hidden activations."""

  num_classes: int
  hidden: Sequence[int] = (512, 256)
  mean: Sequence[float] = (0.5,)
  std: Sequence[float] = (0.5,)
  normalize_input: bool = True

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False):
    del train  # no dropout or batch norm
    if self.normalize_input:
      x = normalize(x, self.mean, self.std)
    h = x.reshape((x.shape[0], -1))
    for width in self.hidden:
      h = nn.relu(nn.Dense(width)(h))
    return nn.Dense(self.num_classes)(h), h


@register("mlp")
def mlp(num_classes: int, mean, std, hidden: Sequence[int] = (512, 256)) -> nn.Module:
  """MLP 784-512-256-C (FINDINGS.md's memorizing Fashion-MNIST net)."""
  return MLP(num_classes=num_classes, hidden=tuple(hidden), mean=mean, std=std)


@register("label_mlp")
def label_mlp(num_classes: int = 1, mean=(0.0,), std=(1.0,), hidden: Sequence[int] = (64, 32)):
  """TMU §2.4 generalization-label classifier: 3 → 64 → 32 → 1 (a logit; sigmoid in the loss)."""
  del mean, std
  return MLP(num_classes=num_classes, hidden=tuple(hidden), normalize_input=False)
