"""ViT for small datasets (Lee, Lee and Song 2021): Shifted Patch Tokenization (SPT) and
Locality Self-Attention (LSA)."""

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
  """SPT: concat x with its 4 diagonal half-patch shifts, patchify, LayerNorm, linear."""
  patch: int
  dim: int

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    s = self.patch // 2
    x = jnp.concatenate([x] + [shift(x, dy, dx) for dy, dx in
                               ((-s, -s), (-s, s), (s, -s), (s, s))], axis=-1)
    p = self.patch
    x = x.reshape(b, h // p, p, w // p, p, 5 * c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, (h // p) * (w // p), p * p * 5 * c)
    return nn.Dense(self.dim)(nn.LayerNorm()(x))


class LocalitySelfAttention(nn.Module):
  """LSA: multi-head attention with a learnable temperature (init √d_head) and the diagonal
  (a token attending to itself) masked out."""
  heads: int
  dim_head: int

  @nn.compact
  def __call__(self, x):
    b, n, _ = x.shape
    qkv = nn.Dense(3 * self.heads * self.dim_head, use_bias=False)(x)
    q, k, v = jnp.split(qkv.reshape(b, n, 3 * self.heads, self.dim_head), 3, axis=2)
    log_t = self.param("log_temperature", lambda *_: jnp.log(jnp.sqrt(float(self.dim_head))))
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.exp(log_t)
    scores = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, scores)
    out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(scores, -1), v)
    return nn.Dense(x.shape[-1])(out.reshape(b, n, self.heads * self.dim_head))


class Block(nn.Module):
  heads: int
  dim_head: int
  mlp_dim: int

  @nn.compact
  def __call__(self, x):
    x = x + LocalitySelfAttention(self.heads, self.dim_head)(nn.LayerNorm()(x))
    y = nn.Dense(x.shape[-1])(nn.gelu(nn.Dense(self.mlp_dim)(nn.LayerNorm()(x))))
    return x + y


class ViT(nn.Module):
  """SPT + LSA ViT with a CLS token; features = the final LayerNorm'ed CLS token."""
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
    del train
    if x.shape[1] % self.patch or x.shape[2] % self.patch:
      raise ValueError(f"ViT patch size {self.patch} must divide the image size {x.shape[1:3]}")
    x = normalize(x, self.mean, self.std)
    tokens = ShiftedPatchTokenizer(self.patch, self.dim)(x)
    cls = self.param("cls", nn.initializers.zeros, (1, 1, self.dim))
    tokens = jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, self.dim)), tokens], 1)
    pos = self.param("pos", nn.initializers.normal(0.02), tokens.shape[1:])
    h = tokens + pos
    for _ in range(self.depth):
      h = Block(self.heads, self.dim // self.heads, self.mlp_dim)(h)
    features = nn.LayerNorm()(h[:, 0])
    return nn.Dense(self.num_classes)(features), features


@register("vit")
def vit(num_classes: int, mean, std, patch: int = 4, dim: int = 192, depth: int = 9,
        heads: int = 12, mlp_dim: int = 384) -> nn.Module:
  """Defaults follow the paper's CIFAR setting (patch 4, dim 192, depth 9, 12 heads)."""
  return ViT(num_classes, patch, dim, depth, heads, mlp_dim, mean, std)
