"""Batched PGD attacks (L∞ and L2, targeted or untargeted), TMU's AF and L2UL's adversarial set.

Built like DeepMind's adversarial_robustness/jax: an attack is an *init* (the start point), a
*step* (one move along the objective's gradient) and a *projection* (back onto the feasible set),
composed by :func:`pgd_loop` in a ``lax.fori_loop``; randomness comes from an explicit key and the
result is wrapped in ``stop_gradient``.

``logits_fn`` maps ``f32[B, H, W, C]`` in pixel space [0, 1] to ``f32[B, K]`` (a closure over the
parameters in eval mode). The gradient of the *summed* loss with respect to the input batch is
each example's own gradient only if the model has no cross-example interaction: eval mode, batch
norm with running statistics, no batch-level attention. Under that condition a batch of B
attacks is B independent attacks, and padding a batch never changes the real rows.

Nothing here is jitted: callers jit. ``steps`` must be a Python int and ``num_classes``,
``num_adv`` and ``chunk_size`` Python ints (pass them as static arguments); ``eps`` and
``step_size`` may be Python floats or traced scalars, but only a Python ``eps == 0`` or
``steps == 0`` short-circuits (a traced zero eps still returns x, after a wasted loop).
"""

from __future__ import annotations

import operator
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from tmu_jax.batched import batched

LogitsFn = Callable[[jax.Array], jax.Array]      # f32[B, H, W, C] -> f32[B, K]
InitFn = Callable[[jax.Array, jax.Array], jax.Array]     # (key, x) -> x_start
StepFn = Callable[[jax.Array, jax.Array], jax.Array]     # (x_adv, grad) -> x_adv
ProjectFn = Callable[[jax.Array, jax.Array], jax.Array]  # (x_adv, x) -> x_adv (feasible)


# --------------------------------------------------------------------------- helpers


def _per_example_norm(v: jax.Array) -> jax.Array:
  """L2 norm over all non-batch axes, shaped to broadcast: f32[B, ...] -> f32[B, 1, 1, 1]."""
  norm = jnp.sqrt(jnp.sum(jnp.square(v.reshape(v.shape[0], -1)), axis=1))
  return norm.reshape((-1,) + (1,) * (v.ndim - 1))


def _safe_divide(v: jax.Array, norm: jax.Array) -> jax.Array:
  """v / norm per example, and 0 where the norm is 0 (a zero gradient makes no step)."""
  return jnp.where(norm > 0, v / jnp.where(norm > 0, norm, 1.0), 0.0)


def _is_python_zero(v) -> bool:
  """True for a concrete 0 (Python or numpy number); False for nonzero values and tracers."""
  try:
    return float(v) == 0.0
  except (TypeError, jax.errors.ConcretizationTypeError):
    return False


def _check_budget(name: str, eps, steps) -> int:
  """Validates eps ≥ 0 and a Python-int steps ≥ 0; returns steps as int."""
  try:
    steps = operator.index(steps)
  except TypeError:
    raise TypeError(f"{name}: steps must be a Python int (static under jit), got {steps!r}")
  if steps < 0:
    raise ValueError(f"{name}: steps must be >= 0, got {steps}")
  try:
    if float(eps) < 0:
      raise ValueError(f"{name}: eps must be >= 0, got {eps}")
  except (TypeError, jax.errors.ConcretizationTypeError):
    pass  # a traced eps cannot be checked here
  return steps


def _objective(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, targeted: bool):
  """Summed CE (untargeted: to maximise) or −CE of the targets (targeted): a scalar."""
  logits = logits_fn(x)
  if not isinstance(logits, jax.Array) or logits.shape[:1] != x.shape[:1] or logits.ndim != 2:
    raise ValueError("logits_fn must map f32[B, H, W, C] to logits f32[B, K]; got "
                     f"{jax.tree_util.tree_map(jnp.shape, logits)} for input {x.shape} "
                     "(for a model returning (logits, features), take [0])")
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  return jnp.sum(-ce if targeted else ce)


# --------------------------------------------------------------------------- pieces


def linf_init(eps: float, random_start: bool = True) -> InitFn:
  """Start uniformly in the L∞ ball (each pixel ± U[0, eps]), or at x.

  ``key`` is one key for the batch, or a key per example (shape [B]): then each example's start
  depends on its own key only, whatever batch it is attacked in.
  """
  def init(key, x):
    if not random_start:
      return x
    if key.ndim == 1:
      noise = jax.vmap(lambda k, xi: jax.random.uniform(k, xi.shape, xi.dtype, -eps, eps))
      return x + noise(key, x)
    return x + jax.random.uniform(key, x.shape, x.dtype, -eps, eps)
  return init


def linf_step(step_size: float) -> StepFn:
  """Signed-gradient ascent step (Madry et al.)."""
  return lambda x_adv, grad: x_adv + step_size * jnp.sign(grad)


def linf_project(eps: float) -> ProjectFn:
  """Onto the L∞ ball of radius eps around x, then [0, 1] (the box is inside neither)."""
  return lambda x_adv, x: jnp.clip(jnp.clip(x_adv, x - eps, x + eps), 0.0, 1.0)


def l2_init(eps: float, random_start: bool = True) -> InitFn:
  """Start uniformly in the L2 ball of radius eps (by volume), or at x.

  Direction: a normalised Gaussian (uniform on the sphere); radius: eps·u^(1/d), u ~ U[0, 1], d
  the pixels per example, which is uniform by volume. In high d this sits near the surface (for
  d = 3072 the median radius is 0.9998·eps). The projection that follows clips to [0, 1].
  """
  def init(key, x):
    if not random_start:
      return x
    k_dir, k_rad = jax.random.split(key)
    direction = jax.random.normal(k_dir, x.shape, x.dtype)
    direction = _safe_divide(direction, _per_example_norm(direction))
    u = jax.random.uniform(k_rad, (x.shape[0],) + (1,) * (x.ndim - 1), x.dtype)
    return x + eps * u ** (1.0 / x[0].size) * direction
  return init


def l2_step(step_size: float) -> StepFn:
  """Step of length step_size along the per-example unit gradient (L2UL §3)."""
  return lambda x_adv, grad: x_adv + step_size * _safe_divide(grad, _per_example_norm(grad))


def l2_project(eps: float) -> ProjectFn:
  """Clip to [0, 1], then onto the L2 ball of radius eps around x (L2UL §3's order).

  Both constraints hold after: shrinking δ toward x (which is in [0, 1]) stays in the box.
  """
  def project(x_adv, x):
    delta = jnp.clip(x_adv, 0.0, 1.0) - x
    norm = _per_example_norm(delta)
    outside = norm > eps
    return x + delta * jnp.where(outside, eps / jnp.where(outside, norm, 1.0), 1.0)
  return project


# --------------------------------------------------------------------------- attacks


def pgd_loop(logits_fn: LogitsFn, x: jax.Array, labels: jax.Array, x_start: jax.Array, *,
             step_fn: StepFn, project_fn: ProjectFn, steps: int,
             targeted: bool) -> jax.Array:
  """``steps`` projected steps from project(x_start): f32[B, H, W, C] -> f32[B, H, W, C]."""
  x = jax.lax.stop_gradient(x)
  grad_fn = jax.grad(lambda z: _objective(logits_fn, z, labels, targeted))
  body = lambda _, x_adv: project_fn(step_fn(x_adv, grad_fn(x_adv)), x)
  x_adv = jax.lax.fori_loop(0, steps, body, project_fn(x_start, x))
  return jax.lax.stop_gradient(x_adv)


def pgd_linf(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *, eps: float,
             step_size: float, steps: int, random_start: bool = True,
             targeted: bool = False) -> jax.Array:
  """L∞ PGD: f32[B, H, W, C], labels int[B] -> x_adv f32[B, H, W, C] with ‖x_adv − x‖∞ ≤ eps.

  Untargeted: ``y`` are true labels and CE(y) is maximised. Targeted: ``y`` are targets and
  CE(y) is minimised. eps = 0 or steps = 0 returns x (under stop_gradient) exactly.
  """
  steps = _check_budget("pgd_linf", eps, steps)
  if steps == 0 or _is_python_zero(eps):
    return jax.lax.stop_gradient(x)
  x_start = linf_init(eps, random_start)(key, x)
  return pgd_loop(logits_fn, x, y, x_start, step_fn=linf_step(step_size),
                  project_fn=linf_project(eps), steps=steps, targeted=targeted)


def pgd_l2(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *, eps: float,
           step_size: float, steps: int, random_start: bool = True,
           targeted: bool = True) -> jax.Array:
  """L2 PGD (L2UL §3): f32[B, H, W, C], labels int[B] -> x_adv with ‖x_adv − x‖₂ ≤ eps per sample.

  Each step normalises the gradient per sample, steps by step_size (toward the target if
  targeted, away from y if not), clips to [0, 1] and projects onto the ball. Random start: see
  :func:`l2_init`. eps = 0 or steps = 0 returns x (under stop_gradient) exactly.
  """
  steps = _check_budget("pgd_l2", eps, steps)
  if steps == 0 or _is_python_zero(eps):
    return jax.lax.stop_gradient(x)
  x_start = l2_init(eps, random_start)(key, x)
  return pgd_loop(logits_fn, x, y, x_start, step_fn=l2_step(step_size),
                  project_fn=l2_project(eps), steps=steps, targeted=targeted)


def random_targets(key: jax.Array, labels: jax.Array, num_classes: int) -> jax.Array:
  """Uniform class ≠ label for each entry: int[...] -> int32[...] (METHODS §3 Follow line).

  y + U{1, ..., K−1} mod K is uniform over the K − 1 other classes and never y.
  """
  if operator.index(num_classes) < 2:
    raise ValueError(f"random_targets: num_classes must be >= 2, got {num_classes}")
  shift = jax.random.randint(key, labels.shape, 1, num_classes, jnp.int32)
  return (labels.astype(jnp.int32) + shift) % num_classes


def l2ul_adversarial_set(logits_fn: LogitsFn, x_forget: jax.Array, y_forget: jax.Array,
                         key: jax.Array, *, num_classes: int, num_adv: int, eps: float = 4.0,
                         step_size: float = 0.1, steps: int = 100,
                         chunk_size: int | None = None) -> tuple[jax.Array, jax.Array]:
  """L2UL §3: f32[k, H, W, C], int[k] -> (x_adv f32[k·num_adv, H, W, C], y_adv int32[k·num_adv]).

  Each forget image is repeated ``num_adv`` times (rows i·num_adv … (i+1)·num_adv − 1 come from
  image i), given a random target ≠ its label, and attacked by targeted L2 PGD from a random
  start; the label of each example is its target. Targets and start points are drawn for the
  whole set first, so ``chunk_size`` (attack at most that many rows at a time through
  :func:`tmu_jax.batched.batched`, one compiled body) changes memory use but not the randomness.
  """
  if operator.index(num_adv) < 1:
    raise ValueError(f"l2ul_adversarial_set: num_adv must be >= 1, got {num_adv}")
  if chunk_size is not None and operator.index(chunk_size) < 1:
    raise ValueError(f"l2ul_adversarial_set: chunk_size must be >= 1 or None, got {chunk_size}")
  if y_forget.shape != x_forget.shape[:1]:
    raise ValueError(f"l2ul_adversarial_set: y_forget shape {y_forget.shape} does not match "
                     f"x_forget's batch {x_forget.shape[:1]}")
  steps = _check_budget("l2ul_adversarial_set", eps, steps)
  k_target, k_start = jax.random.split(key)
  x_rep = jnp.repeat(x_forget, num_adv, axis=0)
  targets = random_targets(k_target, jnp.repeat(y_forget, num_adv), num_classes)
  if steps == 0 or _is_python_zero(eps):
    return jax.lax.stop_gradient(x_rep), targets
  x_start = l2_init(eps)(k_start, x_rep)

  attack = lambda xs, ts, starts, valid: pgd_loop(
      logits_fn, xs, ts, starts, step_fn=l2_step(step_size), project_fn=l2_project(eps),
      steps=steps, targeted=True)
  chunk = x_rep.shape[0] if chunk_size is None else chunk_size
  return batched(attack, x_rep, targets, x_start, chunk=chunk), targets


# --------------------------------------------------------------------------- TMU's AF


def af_cross_entropy(logits_clean: jax.Array, logits_adv: jax.Array) -> jax.Array:
  """TMU §2.2's AF as written, −Σ_k p_k(x) log p_k(x_adv): f32[B, K] × 2 -> f32[B]."""
  p = jax.nn.softmax(logits_clean, axis=-1)
  return -jnp.sum(p * jax.nn.log_softmax(logits_adv, axis=-1), axis=-1)


def af_kl(logits_clean: jax.Array, logits_adv: jax.Array) -> jax.Array:
  """KL(p(x) ‖ p(x_adv)) = AF − H(p(x)), 0 for identical logits: f32[B, K] × 2 -> f32[B]."""
  logp = jax.nn.log_softmax(logits_clean, axis=-1)
  return jnp.sum(jnp.exp(logp) * (logp - jax.nn.log_softmax(logits_adv, axis=-1)), axis=-1)


def adversarial_feature(logits_fn: LogitsFn, x: jax.Array, y: jax.Array, key: jax.Array, *,
                        eps: float, steps: int, step_size: float | None = None,
                        subtract_entropy: bool = False) -> jax.Array:
  """TMU's AF (§2.2): f32[B, H, W, C], int[B] -> f32[B], after untargeted L∞ PGD on (x, y).

  PGD uses a random start and step eps/4 unless ``step_size`` is given. By default this is the
  paper's formula (:func:`af_cross_entropy`), which at eps = 0 equals the clean entropy H(p(x)),
  not 0. With ``subtract_entropy=True`` it returns KL(p(x) ‖ p(x_adv)) (:func:`af_kl`), which
  differs only by H(p(x)) and is exactly 0 when the attack is disabled (eps = 0 or steps = 0).
  """
  step_size = eps / 4 if step_size is None else step_size
  x_adv = pgd_linf(logits_fn, x, y, key, eps=eps, step_size=step_size, steps=steps)
  logits_clean = logits_fn(x)
  disabled = steps == 0 or _is_python_zero(eps)
  logits_adv = logits_clean if disabled else logits_fn(x_adv)
  return (af_kl if subtract_entropy else af_cross_entropy)(logits_clean, logits_adv)
