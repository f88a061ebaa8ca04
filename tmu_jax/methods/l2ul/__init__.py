"""L2UL: instance-wise unlearning of a pre-trained classifier (Cha et al., AAAI 2024; METHODS §3).

For each forget instance x ∈ D_f the model must stop predicting y (``mode="misclassify"``) or
predict a requested label (``mode="relabel"``) while keeping everything else. Three pieces:

- the forget loss −CE(f(x_f), y_f) (or CE toward the requested label), :mod:`.losses`;
- targeted L2 PGD examples of the *original* model, labelled with their targets
  (:func:`tmu_jax.attacks.l2ul_adversarial_set`): representation-level retention;
- a MAS anchor λ·Σ Ω'·(θ − θ_o)²/2 with Ω' the inverted, per-tensor min-max normalised
  importance of each weight for the forget set, :mod:`.mas`.

:mod:`.loop` runs them on the one engine; :mod:`.api` unlearns a user's own model. The
registered method ``l2ul`` runs the case of its settings: config sections ``l2ul_naive``,
``l2ul_adv``, ``l2ul_oracle`` are ``l2ul`` with ``base = "l2ul"`` and another ``case``.
"""

from __future__ import annotations

import jax

from tmu_jax import attacks, rng
from tmu_jax.methods.common import Context, Result
from tmu_jax.methods.l2ul.api import unlearn_instances
from tmu_jax.methods.l2ul.loop import unlearn_state
from tmu_jax.methods.l2ul.settings import CASES, L2UL, MODES
from tmu_jax.methods.registry import register

__all__ = ["CASES", "L2UL", "MODES", "l2ul", "probe_images", "requested_labels",
           "unlearn_instances", "unlearn_state"]


def requested_labels(problem, forget) -> jax.Array:
  """Relabel mode's requested labels: uniform ≠ y, fixed by the run's seed (same for every case)."""
  y_f = problem.take(forget)[1]
  return attacks.random_targets(rng.named(rng.seed_key(problem.seed), "l2ul/requested_labels"), y_f, problem.num_classes)


def probe_images(problem, size: int) -> jax.Array | None:
  """A fixed sample of D_test (``size`` images) on which collapse is detected (None when the
  problem has no test images: the loop then probes its adversarial set)."""
  n = problem.y_test.shape[0]
  if n == 0:
    return None
  pick = jax.random.choice(rng.named(rng.seed_key(problem.seed), "l2ul/probe"), n, (min(size, n),),
                           replace=False)
  return problem.x_test[pick]


@register("l2ul", L2UL, group="l2ul", needs=(), ensemble=False)
def l2ul(ctx: Context, s: L2UL) -> Result:
  """One L2UL case (``s.case``) on the experiment's forget set (METHODS §3)."""
  problem = ctx.problem
  forget = problem.split.forget
  x_f, y_f = problem.take(forget)
  new = requested_labels(problem, forget) if problem.mode == "relabel" else None
  retain = problem.take(problem.split.retain) if s.case == "oracle" else None
  state, info = unlearn_state(ctx.model, ctx.original, x_f, y_f, ctx.key, s,
                              num_classes=problem.num_classes, mode=problem.mode,
                              new_labels=new, retain=retain,
                              probe=probe_images(problem, s.probe_size),
                              eval_batch_size=ctx.recipe.eval_batch_size, verbose=ctx.verbose)
  keys = ("relabel_acc", "collapsed", "note", "adv_time_s", "mas_time_s", "adv_target_rate",
          "released_steps")
  report = {k: info[k] for k in keys if k in info}
  report["stopped"] = info["stopped"]
  return Result(state, steps=info["steps"],
                stopped=info["stopped"] if info["stopped_early"] else "", report=report)
