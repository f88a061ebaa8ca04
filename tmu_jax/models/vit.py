"""ViT for small datasets (Lee, Lee and Song 2021, "Vision Transformer for Small-Size Datasets").

Two changes to a pre-LN ViT with a CLS token: Shifted Patch Tokenization (SPT, §3.1) and
Locality Self-Attention (LSA, §3.2). Defaults are the paper's small-dataset ViT (§4): patch 4 on
32x32 images, dim 192, depth 9, 12 heads (head dim 16), MLP dim 384 (the authors' code uses an
MLP ratio of 2). The authors' code also trains with stochastic depth 0.1; we have no dropout.
"""

from numbers import Integral
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from tmu_jax.models import register
from tmu_jax.models.common import normalize


def shift(x: jnp.ndarray, dy: int, dx: int) -> jnp.ndarray:
  """Translates images by (dy, dx) pixels with zero fill: f32[B, H, W, C] → same."""
  h, w = x.shape[1:3]
  x = jnp.pad(x, ((0, 0), (max(dy, 0), max(-dy, 0)), (max(dx, 0), max(-dx, 0)), (0, 0)))
  return x[:, max(-dy, 0):max(-dy, 0) + h, max(-dx, 0):max(-dx, 0) + w]


class ShiftedPatchTokenizer(nn.Module):
  """SPT (§3.1): f32[B, H, W, C] → tokens f32[B, (H/p)(W/p), dim].

  The image is concatenated channel-wise with its 4 diagonal shifts by half a patch, then cut into
  p x p patches, flattened (p·p·5C), LayerNorm'ed and linearly projected.
  """

  patch: int
  dim: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, h, w, c = x.shape
    s, p = self.patch // 2, self.patch
    shifted = [shift(x, dy, dx) for dy, dx in ((-s, -s), (-s, s), (s, -s), (s, s))]
    x = jnp.concatenate([x] + shifted, axis=-1)
    x = x.reshape(b, h // p, p, w // p, p, 5 * c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, (h // p) * (w // p), p * p * 5 * c)
    return nn.Dense(self.dim)(nn.LayerNorm()(x))


class LocalitySelfAttention(nn.Module):
  """LSA (§3.2): multi-head attention f32[B, N, D] → f32[B, N, D].

  Two changes to softmax(q kᵀ / √d_head) v: the token's score with itself is -inf (diagonal
  masking), and the divisor is a learnable temperature τ initialised to √d_head. We learn log τ
  so τ stays positive; one τ is shared by all heads, as in the paper's equations.
  """

  heads: int
  dim_head: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    b, n, _ = x.shape
    qkv = nn.Dense(3 * self.heads * self.dim_head, use_bias=False)(x)
    q, k, v = jnp.split(qkv.reshape(b, n, 3 * self.heads, self.dim_head), 3, axis=2)
    log_tau = self.param("log_temperature",
                         lambda _: jnp.log(jnp.sqrt(jnp.float32(self.dim_head))))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.exp(log_tau)
    # Every row keeps n - 1 ≥ 1 finite scores (the CLS token plus ≥ 1 patch), so no NaN.
    scores = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, scores)
    weights = jax.nn.softmax(scores, axis=-1)  # f32[B, heads, N, N]
    self.sow("intermediates", "attention", weights)  # kept only if the caller asks for it
    out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
    return nn.Dense(x.shape[-1])(out.reshape(b, n, self.heads * self.dim_head))


class Block(nn.Module):
  """Pre-LN transformer block: x + LSA(LN x), then x + MLP(LN x) with GELU. f32[B,N,D] → same."""

  heads: int
  dim_head: int
  mlp_dim: int

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    x = x + LocalitySelfAttention(self.heads, self.dim_head)(nn.LayerNorm()(x))
    y = nn.Dense(x.shape[-1])(nn.gelu(nn.Dense(self.mlp_dim)(nn.LayerNorm()(x))))
    return x + y


class ViT(nn.Module):
  """SPT + LSA ViT: f32[B,H,W,C] in [0,1] → (logits [B, classes], features [B, dim]).

  ``features`` is the CLS token after the final LayerNorm, the classifier head's input.
  """

  num_classes: int
  patch: int = 4
  dim: int = 192
  depth: int = 9
  heads: int = 12
  mlp_dim: int = 384
  mean: Sequence[float] = (0.5,)
  std: Sequence[float] = (0.5,)

  @nn.compact
  def __call__(self, x: jnp.ndarray, train: bool = False):
    del train  # no dropout or batch norm
    h, w = x.shape[1:3]
    if h % self.patch or w % self.patch:
      valid = [p for p in range(1, min(h, w) + 1) if h % p == 0 and w % p == 0]
      raise ValueError(f"vit: patch size {self.patch} must divide the image size {h}x{w}; "
                       f"set model.kwargs.patch to one of {valid}")
    x = normalize(x, self.mean, self.std)
    tokens = ShiftedPatchTokenizer(self.patch, self.dim)(x)
    cls = self.param("cls", nn.initializers.zeros, (1, 1, self.dim))
    tokens = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.dim)), tokens], axis=1)
    # Learned position embedding; its length (1 + patches) is fixed by the image size at init.
    tokens = tokens + self.param("pos", nn.initializers.normal(0.02), tokens.shape[1:])
    for _ in range(self.depth):
      tokens = Block(self.heads, self.dim // self.heads, self.mlp_dim)(tokens)
    features = nn.LayerNorm()(tokens[:, 0])
    return nn.Dense(self.num_classes)(features), features


@register("vit")
def vit(num_classes: int, mean, std, patch: int = 4, dim: int = 192, depth: int = 9,
        heads: int = 12, mlp_dim: int = 384) -> nn.Module:
  """The paper's small-dataset ViT (§4: patch 4, dim 192, depth 9, 12 heads, MLP 384)."""
  sizes = dict(patch=patch, dim=dim, depth=depth, heads=heads, mlp_dim=mlp_dim)
  for field, value in sizes.items():
    if not isinstance(value, Integral) or value < 1:
      raise ValueError(f"model.kwargs.{field} must be a positive int; got {value!r}")
  if dim % heads:
    raise ValueError(f"model.kwargs.dim ({dim}) must be a multiple of model.kwargs.heads "
                     f"({heads}); the paper uses dim 192 with 12 heads of 16")
  return ViT(num_classes=num_classes, mean=mean, std=std, **{k: int(v) for k, v in sizes.items()})
