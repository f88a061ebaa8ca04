"""All-CNN-C (Springenberg et al. 2014, "Striving for Simplicity", Tables 1-2).

Batch norm follows every conv, as in the unlearning reference codes (e.g. Golatkar et al.'s
AllCNN); the paper itself has none. Width w = 96 gives the paper's 96/192 channels.
"""

from functools import partial
from numbers import Integral
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from tmu_jax.models import register
from tmu_jax.models.common import normalize
from tmu_jax.models.conv import conv_general_dilated


class AllCNN(nn.Module):
  """f32[B,H,W,C] in [0,1] → (logits [B, classes], features [B, 2w]).

  Layers (Table 2's All-CNN-C, with Table 1's top): 3x3 w, 3x3 w, 3x3/2 w, 3x3 2w, 3x3 2w,
  3x3/2 2w, 3x3 2w valid, 1x1 2w, 1x1 classes, global average pool.
  On 32x32 inputs the maps are 32 → 16 → 8 → 6.

  The last 1x1 conv is linear here (the paper puts a ReLU on it; the reference codes do not), so
  "1x1 conv to classes, then average pool" equals "average pool, then Dense to classes": both are
  the same linear map of the spatial mean, and the Dense kernel is the 1x1 conv kernel. We pool
  first so the 2w-d pooled vector is the penultimate ``features`` (METHODS §1).
  """

  num_classes: int
  width: int = 96
  dropout: float = 0.0  # the paper uses 0.5 after each stride-2 conv (and 0.2 on the input)
  mean: Sequence[float] = (0.5,)
  std: Sequence[float] = (0.5,)
  conv: str = "auto"  # tmu_jax.models.conv: "patches" (im2col) on CPU, the library conv else

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False):
    w1, w2 = self.width, 2 * self.width
    h, w = x.shape[1:3]
    if min(h, w) < 9:  # two stride-2 convs give ceil(H/4), and the valid 3x3 conv needs ≥ 3
      raise ValueError(f"allcnn needs images of at least 9x9 pixels; got {h}x{w}")

    def conv(h, feats: int, kernel: int = 3, stride: int = 1, padding: int = 1):
      # BN's shift makes a conv bias redundant; PyTorch BN defaults (momentum 0.1, eps 1e-5).
      h = nn.Conv(feats, (kernel, kernel), stride, padding=padding, use_bias=False,
                  conv_general_dilated=conv_general_dilated(self.conv))(h)
      h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(h)
      return nn.relu(h)

    # Deterministic unless training with rate > 0, so eval and rate-0 need no 'dropout' rng.
    drop = partial(nn.Dropout(self.dropout), deterministic=not train or self.dropout == 0)
    h = normalize(x, self.mean, self.std)
    h = conv(conv(h, w1), w1)
    h = drop(conv(h, w1, stride=2))  # the paper's replacement for max-pooling
    h = conv(conv(h, w2), w2)
    h = drop(conv(h, w2, stride=2))
    h = conv(h, w2, padding=0)
    h = conv(h, w2, kernel=1, padding=0)
    features = jnp.mean(h, axis=(1, 2))
    return nn.Dense(self.num_classes)(features), features


@register("allcnn")
def allcnn(num_classes: int, mean, std, width: int = 96, dropout: float = 0.0,
           conv: str = "auto") -> nn.Module:
  """All-CNN-C with batch norm; ``width`` 96 is the paper's, ``dropout`` 0 is off."""
  if not isinstance(width, Integral) or width < 1:
    raise ValueError(f"model.kwargs.width must be a positive int (96 = the paper's All-CNN-C); "
                     f"got {width!r}")
  if not 0.0 <= dropout < 1.0:
    raise ValueError(f"model.kwargs.dropout must be in [0, 1); got {dropout!r}")
  conv_general_dilated(conv)  # validates
  return AllCNN(num_classes=num_classes, width=int(width), dropout=float(dropout), mean=mean,
                std=std, conv=conv)
