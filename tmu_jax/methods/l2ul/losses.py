"""L2UL's per-example loss (METHODS §3) and its documented deviations for saturated models."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax

FORGET_LOSSES = ("ce", "ce_correct", "complement", "complement_correct")


@dataclasses.dataclass(frozen=True)
class ForgetLoss:
  """Per-example loss f32[B]: CE on rows with weight ≥ 0 (adversarial, retain, relabel rows);
  on gradient-ascent rows (weight < 0) the chosen forget loss, which the weight −1 negates.

  ``ce``: −CE, METHODS §3 as written. Deviations, for saturated models (docs/l2ul.md):
  ``ce_correct``: −CE only on rows still predicted y (a forgotten row stops being pushed, so its
  unbounded −CE cannot run away); ``complement``: the ascent row's term is −log(1 − p_y), written
  here as ℓ = log(1 − p_y) = logsumexp_{j≠y} z_j − logsumexp z: bounded, its gradient is largest
  where p_y ≈ 1 (where −CE's vanishes in float32) and fades once y is no longer likely;
  ``complement_correct``: the complement term only on rows still predicted y (a per-instance
  stop: a forgotten row is no longer pushed away from its class, issue 11's stop-rule lever).
  """
  kind: str = "ce"

  def __call__(self, logits, batch, aux=None):
    del aux
    y = batch["label"]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y)
    ascent = batch["weight"] < 0
    if self.kind == "ce":
      forget = ce
    elif self.kind == "ce_correct":
      forget = ce * (jnp.argmax(logits, -1) == y)
    elif self.kind in ("complement", "complement_correct"):
      others = jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits)
      forget = jax.nn.logsumexp(others, -1) - jax.nn.logsumexp(logits, -1)
      if self.kind == "complement_correct":
        forget = forget * (jnp.argmax(logits, -1) == y)
    else:
      raise ValueError(f"forget_loss {self.kind!r} is not valid; expected one of "
                       f"{', '.join(FORGET_LOSSES)}")
    return jnp.where(ascent, forget, ce)
