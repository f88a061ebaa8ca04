"""Batched PGD attacks (L∞ and L2, targeted or untargeted) in the style of DeepMind's
adversarial_robustness/jax: an init, a step and a projection composed in ``lax.fori_loop``
with an explicit key; the result is wrapped in ``stop_gradient``.

``logits_fn`` maps ``f32[B, H, W, C]`` in [0, 1] to ``f32[B, K]`` and must treat examples
independently (eval mode: no batch statistics), so the gradient of the summed loss with
respect to the input batch is each example's own gradient.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

LogitsFn = Callable[[jax.Array], jax.Array]


def _per_example_norm(x: jax.Array) -> jax.Array:
  """L2 norm of each example over all non-batch axes, shaped to broadcast: f32[B, 1, ...]."""
  flat = jnp.sqrt(jnp.sum(jnp.square(x.reshape(x.shape[0], -1)), axis=1))
  return flat.reshape((-1,) + (1,) * (x.ndim - 1))


def _loss_grad(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, targeted: bool):
  """Gradient of the summed CE w.r.t. x; its direction *increases* the attack objective."""

  def objective(z):
    ce = optax.softmax_cross_entropy_with_integer_labels(logits_fn(z), labels)
    return jnp.sum(-ce if targeted else ce)  # targeted: descend on CE(target)

  return jax.grad(objective)(x)


def project_linf(x_adv: jax.Array, x: jax.Array, eps: float) -> jax.Array:
  return jnp.clip(jnp.clip(x_adv, x - eps, x + eps), 0.0, 1.0)


def project_l2(x_adv: jax.Array, x: jax.Array, eps: float) -> jax.Array:
  """Onto the L2 ball of radius eps around each x (after the [0, 1] clip of the step)."""
  delta = x_adv - x
  norm = _per_example_norm(delta)
  factor = jnp.minimum(1.0, eps / jnp.maximum(norm, 1e-12))
  return x + delta * factor


def pgd_linf(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *, eps: float,
             step_size: float, steps: int, random_start: bool = True,
             targeted: bool = False) -> jax.Array:
  """L∞ PGD with sign steps; ``y`` are true labels (untargeted) or targets (targeted)."""
  if eps == 0 or steps == 0:
    return x
  x_adv = x
  if random_start:
    x_adv = project_linf(x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps), x, eps)

  def body(_, z):
    g = _loss_grad(logits_fn, z, y, targeted)
    return project_linf(z + step_size * jnp.sign(g), x, eps)

  return jax.lax.stop_gradient(jax.lax.fori_loop(0, steps, body, x_adv))


def pgd_l2(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *, eps: float,
           step_size: float, steps: int, random_start: bool = True,
           targeted: bool = True) -> jax.Array:
  """L2 PGD (L2UL §3): per-sample normalised gradient step, clip to [0, 1], project to the ball.

  The random start is uniform in the ball: a Gaussian direction scaled by eps·u^(1/d).
  """
  if eps == 0 or steps == 0:
    return x
  x_adv = x
  if random_start:
    k_dir, k_rad = jax.random.split(key)
    direction = jax.random.normal(k_dir, x.shape, x.dtype)
    direction = direction / jnp.maximum(_per_example_norm(direction), 1e-12)
    d = x[0].size
    radius = eps * jax.random.uniform(k_rad, (x.shape[0],) + (1,) * (x.ndim - 1)) ** (1.0 / d)
    x_adv = project_l2(jnp.clip(x + radius * direction, 0.0, 1.0), x, eps)

  def body(_, z):
    g = _loss_grad(logits_fn, z, y, targeted)
    g = g / jnp.maximum(_per_example_norm(g), 1e-12)
    return project_l2(jnp.clip(z + step_size * g, 0.0, 1.0), x, eps)

  return jax.lax.stop_gradient(jax.lax.fori_loop(0, steps, body, x_adv))


def random_targets(key: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
  """A uniform class ≠ label for every entry (METHODS §3 Follow line; never returns y)."""
  shift = jax.random.randint(key, labels.shape, 1, num_classes)
  return ((labels + shift) % num_classes).astype(jnp.int32)


def adversarial_feature(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *,
                        eps: float, steps: int, step_size: float | None = None,
                        subtract_entropy: bool = False) -> jax.Array:
  """TMU's AF (§2.2): −Σ_k p_k(x) log p_k(x_adv) after untargeted L∞ PGD: f32[B].

  ``step_size`` defaults to eps/4. With ``subtract_entropy`` the clean entropy H(p(x)) is
  removed, leaving KL(p(x) ‖ p(x_adv)), which is exactly 0 when the attack is disabled.
  """
  step_size = eps / 4 if step_size is None else step_size
  x_adv = pgd_linf(logits_fn, x, y, key, eps=eps, step_size=step_size, steps=steps)
  logp_clean = jax.nn.log_softmax(logits_fn(x))
  logp_adv = jax.nn.log_softmax(logits_fn(x_adv))
  p = jnp.exp(logp_clean)
  ce = -jnp.sum(p * logp_adv, axis=-1)
  if subtract_entropy:
    ce = ce + jnp.sum(p * logp_clean, axis=-1)
  return ce


def l2ul_adversarial_set(logits_fn: LogitsFn, x_forget: jax.Array, y_forget: jax.Array,
                         key: jax.Array, *, num_classes: int, num_adv: int, eps: float = 4.0,
                         step_size: float = 0.1, steps: int = 100) -> tuple[jax.Array, jax.Array]:
  """L2UL §3: ``num_adv`` targeted L2 PGD examples per forget image, labelled by their targets.

  Returns (x_adv f32[k·num_adv, ...], y_adv int32[k·num_adv]), all made in one batched program.
  """
  k_target, k_attack = jax.random.split(key)
  x_rep = jnp.repeat(x_forget, num_adv, axis=0)
  targets = random_targets(k_target, jnp.repeat(y_forget, num_adv), num_classes)
  x_adv = pgd_l2(logits_fn, x_rep, targets, k_attack, eps=eps, step_size=step_size,
                 steps=steps, targeted=True)
  return x_adv, targets
