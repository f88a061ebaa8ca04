"""L2UL: instance-wise unlearning of a pre-trained classifier (Cha et al., AAAI 2024; METHODS §3).

For each forget instance x ∈ D_f the model must stop predicting y (``mode="misclassify"``) or
predict a requested label (``mode="relabel"``) while keeping everything else. Three pieces:

- the forget loss −CE(f(x_f), y_f) (or CE toward the requested label),
- targeted L2 PGD examples of the *original* model, labelled with their targets
  (:func:`tmu_jax.attacks.l2ul_adversarial_set`): representation-level retention,
- a MAS anchor λ·Σ Ω'·(θ − θ_o)²/2 with Ω' the inverted, per-tensor min-max normalised
  importance of each weight for the forget set (:func:`mas_importance`, :func:`invert_importance`).

The step loss −CE·B_f/(B_a+B_f) + CE·B_a/(B_a+B_f) + λR is the engine's Σwℓ/Σ|w| with weights
−1 (forget) and +1 (adversarial), plus ``StepSpec.penalty_fn``. SGD, stop as soon as the request
holds (checked after every step), ``max_steps`` cap. Cases (registered by name): ``l2ul_naive``
(forget loss only), ``l2ul_adv`` (+adv), ``l2ul`` (+adv+MAS), ``l2ul_oracle`` (CE(D_r) − CE(D_f)).

Bring your own model: :func:`unlearn_instances` needs only a linen ``apply_fn``, its variables
and the instances to forget, no training set::

    import jax, jax.numpy as jnp
    from tmu_jax.models import get_model
    from tmu_jax.methods.l2ul import unlearn_instances

    model = get_model("mlp", 10, (0.5,), (0.5,), hidden=(64,))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
    # ... train it, then forget 4 images (uint8[4, 28, 28, 1] or f32 in [0, 1]) ...
    x_forget = jax.random.uniform(jax.random.key(1), (4, 28, 28, 1))
    y_forget = jnp.argmax(model.apply(variables, x_forget)[0], -1)
    variables, info = unlearn_instances(model.apply, variables, x_forget, y_forget,
                                        num_classes=10, key=jax.random.key(2), num_adv=8,
                                        max_steps=300)
    print(info["stopped"], info["steps"], info["forget_acc"])  # forgotten, ..., 0.0

On a saturated model (float32 cross-entropy exactly 0 on the forget images, so −CE has no
gradient) pass ``forget_loss="complement"`` and a small ``lam`` (docs/l2ul.md).
``apply_fn(variables, x, **eval_kwargs)`` may return logits or (logits, features); the default
``eval_kwargs`` is ``{"train": False}`` (pass ``{}`` for a module without that argument).
A NaN loss raises :class:`tmu_jax.engine.NonFiniteLoss`; a model that predicts one class for
(nearly) every probe image ends the run with ``info["collapsed"] = True`` and a ``note``.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from typing import Any, Callable

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from tmu_jax import attacks, data as data_lib, engine
from tmu_jax.methods import Context, register

PyTree = Any
CASES = ("naive", "adv", "l2ul", "oracle")
MODES = ("misclassify", "relabel")


# ----------------------------------------------------------------------------- MAS (§3)


def _logits(out) -> jax.Array:
  return out[0] if isinstance(out, (tuple, list)) else out


def _safe_norm(v: jax.Array) -> jax.Array:
  """‖v‖₂ with a zero (not NaN) gradient at v = 0."""
  sq = jnp.sum(jnp.square(v))
  return jnp.where(sq > 0, jnp.sqrt(jnp.where(sq > 0, sq, 1.0)), 0.0)


@functools.partial(jax.jit, static_argnames=("apply_fn", "chunk", "eval_kwargs"))
def _mas(apply_fn, variables, x, chunk: int, eval_kwargs: tuple) -> PyTree:
  kw = dict(eval_kwargs)
  n = x.shape[0]

  def norm(params, xi):
    out = apply_fn({**variables, "params": params}, xi[None], **kw)
    return _safe_norm(_logits(out)[0])

  per_sample = jax.vmap(jax.grad(norm), in_axes=(None, 0))
  pad = -n % chunk
  xs = jnp.pad(x, [(0, pad)] + [(0, 0)] * (x.ndim - 1)).reshape((-1, chunk) + x.shape[1:])
  mask = (jnp.arange(n + pad) < n).astype(jnp.float32).reshape(-1, chunk)

  def body(acc, batch):
    xb, mb = batch
    g = per_sample(variables["params"], xb)
    return jax.tree.map(lambda a, gi: a + jnp.tensordot(mb, jnp.abs(gi), axes=1), acc, g), None

  zero = jax.tree.map(jnp.zeros_like, variables["params"])
  total, _ = jax.lax.scan(body, zero, (xs, mask))
  return jax.tree.map(lambda t: t / n, total)


def mas_importance(apply_fn: Callable, variables: dict, x_forget: jax.Array, *, chunk: int = 16,
                   eval_kwargs: dict | None = None) -> PyTree:
  """MAS Ω = mean_x |∂‖f(x)‖₂/∂θ| over x_forget f32/uint8[k, H, W, C]: a pytree like params.

  Per-sample gradients under ``vmap`` in eval mode, ``chunk`` samples at a time in one jitted
  scan (memory k-independent). The norm is of the logits, not squared (METHODS §3).
  """
  kw = (("train", False),) if eval_kwargs is None else tuple(sorted(eval_kwargs.items()))
  return _mas(apply_fn, variables, data_lib.to_float(jnp.asarray(x_forget)),
              min(chunk, x_forget.shape[0]), kw)


def invert_importance(omega: PyTree) -> PyTree:
  """Ω' = 1 − (Ω − min)/(max − min) per tensor; a constant tensor gives all ones (never NaN)."""

  def one(o):
    lo, hi = jnp.min(o), jnp.max(o)
    span = hi - lo
    return 1.0 - jnp.where(span > 0, (o - lo) / jnp.where(span > 0, span, 1.0), 0.0)

  return jax.tree.map(one, omega)


def mas_penalty(params: PyTree, aux: dict) -> jax.Array:
  """λ·Σ Ω'·(θ − θ_o)²/2 over all parameters; ``aux`` holds omega (Ω'), anchor (θ_o), lam."""
  terms = jax.tree.map(lambda p, o, a: jnp.sum(o * jnp.square(p - a)), params, aux["omega"],
                       aux["anchor"])
  return aux["lam"] * 0.5 * sum(jax.tree.leaves(terms))


# ----------------------------------------------------------------------------- forget loss


FORGET_LOSSES = ("ce", "ce_correct", "complement")


@dataclasses.dataclass(frozen=True)
class ForgetLoss:
  """Per-example loss f32[B]: CE on rows with weight ≥ 0 (adversarial, retain, relabel rows);
  on gradient-ascent rows (weight < 0) the chosen forget loss, which the weight −1 negates.

  ``ce``: −CE, METHODS §3 as written. Deviations, for saturated models (docs/l2ul.md):
  ``ce_correct``: −CE only on rows still predicted y (a forgotten row stops being pushed, so its
  unbounded −CE cannot run away); ``complement``: the ascent row's term is −log(1 − p_y), written
  here as ℓ = log(1 − p_y) = logsumexp_{j≠y} z_j − logsumexp z: bounded, its gradient is largest
  where p_y ≈ 1 (where −CE's vanishes in float32) and fades once y is no longer likely.
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
    elif self.kind == "complement":
      others = jnp.where(jax.nn.one_hot(y, logits.shape[-1], dtype=bool), -jnp.inf, logits)
      forget = jax.nn.logsumexp(others, -1) - jax.nn.logsumexp(logits, -1)
    else:
      raise ValueError(f"forget_loss {self.kind!r} is not valid; expected one of "
                       f"{', '.join(FORGET_LOSSES)}")
    return jnp.where(ascent, forget, ce)


# ----------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class Settings:
  """Everything of one L2UL run; fields match ``config.methods.l2ul*`` (configs/default.py)."""
  case: str = "l2ul"  # naive | adv | l2ul | oracle (METHODS §3 ablation cases)
  mode: str = "misclassify"  # misclassify | relabel
  num_adv: int = 20  # adversarial examples per forget image
  eps: float = 4.0  # L2 budget in [0, 1] pixel space
  adv_step: float = 0.1
  adv_steps: int = 100
  adv_chunk: int = 2048  # rows attacked at once (memory only)
  lam: float = 1.0  # λ of the MAS anchor
  lr: float = 1e-3
  momentum: float = 0.9
  weight_decay: float = 1e-4
  max_steps: int = 1000
  forget_batch_size: int = 128  # B_f (at most k)
  adv_batch_size: int = 256  # B_a (at most k·num_adv)
  retain_batch_size: int = 128  # oracle's D_r batch
  collapse_share: float = 0.9  # collapsed: one class predicted for ≥ this share of the probe
  collapse_every: int = 10  # steps between collapse checks on the probe set
  mas_chunk: int = 16
  forget_loss: str = "ce"  # ce (METHODS §3) | ce_correct | complement (deviations, ForgetLoss)

  @classmethod
  def from_config(cls, cfg, **overrides) -> "Settings":
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: cfg[k] for k in names if cfg is not None and k in cfg}
    values.update(overrides)
    return cls(**values)


def check_settings(s: Settings) -> None:
  if s.case not in CASES:
    raise ValueError(f"L2UL case {s.case!r} is not valid; expected one of {', '.join(CASES)}")
  if s.forget_loss not in FORGET_LOSSES:
    raise ValueError(f"L2UL forget_loss {s.forget_loss!r} is not valid; expected one of "
                     f"{', '.join(FORGET_LOSSES)}")
  if s.mode not in MODES:
    raise ValueError(f"L2UL mode {s.mode!r} is not valid; expected one of {', '.join(MODES)}")


# ----------------------------------------------------------------------------- the loop


class _Holder(flax.struct.PyTreeNode):
  apply_fn: Callable = flax.struct.field(pytree_node=False)


@jax.jit
def _remaining(holder: _Holder, variables, x_f, labels, relabel: jax.Array) -> jax.Array:
  """Number of forget rows not yet as requested (the stop rule, checked every step)."""
  pred = jnp.argmax(holder.apply_fn(variables, x_f, train=False)[0], -1)
  return jnp.sum(jnp.where(relabel, pred != labels, pred == labels))


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _top_share(holder: _Holder, variables, probe, num_classes: int):
  """(top predicted class on the probe, its share): the collapse check."""
  pp = jnp.argmax(holder.apply_fn(variables, probe, train=False)[0], -1)
  counts = jnp.bincount(pp, length=num_classes)
  return jnp.argmax(counts), jnp.max(counts) / pp.shape[0]


def _adv_set(apply_fn, variables, x_f, y_f, key, s: Settings, num_classes: int):
  logits_fn = lambda x: apply_fn(variables, x, train=False)[0]
  return attacks.l2ul_adversarial_set(logits_fn, x_f, y_f, key, num_classes=num_classes,
                                      num_adv=s.num_adv, eps=s.eps, step_size=s.adv_step,
                                      steps=s.adv_steps, chunk_size=s.adv_chunk)


_adv_set_jit = jax.jit(_adv_set, static_argnames=("apply_fn", "s", "num_classes"))


def unlearn_state(state: engine.TrainState, x_forget: jax.Array, y_forget: jax.Array,
                  key: jax.Array, s: Settings, *, num_classes: int,
                  new_labels: jax.Array | None = None,
                  retain: tuple[jax.Array, jax.Array] | None = None,
                  probe: jax.Array | None = None, verbose: bool = False
                  ) -> tuple[engine.TrainState, dict]:
  """The L2UL loop from ``state`` (M_o, engine-style apply returning (logits, features)).

  x_forget uint8/f32[k, H, W, C], y_forget int[k]; ``new_labels`` int[k] for relabel mode;
  ``retain`` (images, labels) for the oracle case; ``probe`` images for collapse detection.
  Returns the unlearned state (a copy; ``state`` is untouched) and an info dict.
  """
  check_settings(s)
  k = int(x_forget.shape[0])
  relabel = s.mode == "relabel"
  if relabel and new_labels is None:
    raise ValueError("L2UL relabel mode needs new_labels (int[k], the requested labels)")
  if s.case == "oracle" and retain is None:
    raise ValueError("L2UL case 'oracle' needs retain = (images, labels) of D_r")
  x_f = data_lib.to_float(jnp.asarray(x_forget))
  y_f = jnp.asarray(y_forget, jnp.int32)
  target = jnp.asarray(new_labels, jnp.int32) if relabel else y_f
  variables = state.variables
  info: dict[str, Any] = dict(case=s.case, mode=s.mode, k=k)
  k_adv, k_fit = jax.random.split(key)

  # §3 forget loss: −CE toward y (misclassify) or +CE toward the requested label (relabel).
  forget = dict(image=x_f, label=target, weight=jnp.full((k,), 1.0 if relabel else -1.0))
  streams = [engine.Stream(forget, min(k, s.forget_batch_size))]
  if s.case in ("adv", "l2ul"):
    # Made once from M_o in eval mode, before unlearning, never refreshed (§3).
    t0 = time.perf_counter()
    x_adv, y_adv = jax.block_until_ready(
        _adv_set_jit(state.apply_fn, variables, x_f, y_f, k_adv, s, num_classes))
    info["adv_time_s"] = time.perf_counter() - t0
    adv_pred = jnp.argmax(engine.predict(state.apply_fn, variables, x_adv)[0], -1)
    info["adv_target_rate"] = float(100 * jnp.mean(adv_pred == y_adv))
    streams.append(engine.Stream(dict(image=x_adv, label=y_adv,
                                      weight=jnp.ones(y_adv.shape)),
                                 min(int(y_adv.shape[0]), s.adv_batch_size)))
    if probe is None:
      probe = x_adv  # their targets are spread over all classes: a healthy model is too
  if s.case == "oracle":
    x_r, y_r = retain
    # f32 like the forget and adversarial rows: one batch concatenates all streams.
    streams.append(engine.Stream(dict(image=data_lib.to_float(jnp.asarray(x_r)),
                                      label=jnp.asarray(y_r, jnp.int32),
                                      weight=jnp.ones(y_r.shape)),
                                 min(int(y_r.shape[0]), s.retain_batch_size)))
  penalty_fn, aux = None, None
  if s.case == "l2ul":
    t0 = time.perf_counter()
    omega = invert_importance(mas_importance(state.apply_fn, variables, x_f, chunk=s.mas_chunk))
    aux = dict(omega=jax.block_until_ready(omega), anchor=jax.tree.map(jnp.copy, state.params),
               lam=jnp.float32(s.lam))
    info["mas_time_s"] = time.perf_counter() - t0
    penalty_fn = mas_penalty
  tx = engine.make_optimizer("sgd", s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
  start = engine.with_optimizer(state, tx)
  # BatchNorm stays in eval mode: batches of k forget + adversarial images are no sample of the
  # data, and their statistics would move every other prediction (our choice; §3 is silent).
  spec = engine.StepSpec(loss_fn=ForgetLoss(s.forget_loss), penalty_fn=penalty_fn,
                         augment=False, bn_train=False,
                         num_classes=num_classes)
  holder = _Holder(state.apply_fn)
  probe_f = data_lib.to_float(probe) if probe is not None else x_f
  status = dict(reason="max_steps", top=0, share=0.0)

  def stop(st: engine.TrainState) -> bool:
    if int(_remaining(holder, st.variables, x_f, target, jnp.bool_(relabel))) == 0:
      status["reason"] = "relabelled" if relabel else "forgotten"
      return True
    # The probe's forward pass runs only on the steps where collapse is checked.
    if probe is not None and int(st.step) % s.collapse_every == 0:
      top, share = _top_share(holder, st.variables, probe_f, num_classes)
      if float(share) >= s.collapse_share:
        status.update(reason="collapsed", top=int(top), share=float(share))
        return True
    return False

  spe = engine.steps_per_epoch(tuple(streams))
  t0 = time.perf_counter()
  if stop(start):  # nothing to do: the request already holds
    out, fit_info = start, dict(steps=0, stopped_early=True)
  else:
    out, fit_info = engine.fit(start, tuple(streams), epochs=math.ceil(s.max_steps / spe),
                               key=k_fit, spec=spec, aux=aux, name=f"l2ul_{s.case}",
                               verbose=verbose, stop_fn=stop, stop_every=1,
                               max_steps=s.max_steps)
  info["unlearn_time_s"] = time.perf_counter() - t0
  remaining = _remaining(holder, out.variables, x_f, target, jnp.bool_(relabel))
  top, share = _top_share(holder, out.variables, probe_f, num_classes)
  info.update(steps=int(fit_info["steps"]), stopped=status["reason"],
              stopped_early=status["reason"] != "max_steps")
  if relabel:  # % of D_f at its requested label
    info["relabel_acc"] = 100.0 * (k - int(remaining)) / k
  else:  # % of D_f still predicted as y
    info["forget_acc"] = 100.0 * int(remaining) / k
  collapsed = probe is not None and float(share) >= s.collapse_share
  info["collapsed"] = bool(collapsed or status["reason"] == "collapsed")
  if info["collapsed"]:
    top, share = (status["top"], status["share"]) if status["reason"] == "collapsed" else (
        int(top), float(share))
    info["note"] = (f"collapsed: predicts class {top} for {100 * share:.0f}% of probe images "
                    f"after {info['steps']} steps")
  return out, info


# ----------------------------------------------------------------------------- bring your own model


@functools.lru_cache(maxsize=64)
def _engine_apply(apply_fn: Callable, eval_kwargs: tuple) -> Callable:
  """``apply_fn`` as the engine calls it: (variables, x, train=...) -> (logits, features)."""

  def apply(variables, x, train: bool = False, mutable=False):
    del train, mutable  # L2UL unlearns in eval mode
    out = apply_fn(variables, x, **dict(eval_kwargs))
    if isinstance(out, (tuple, list)):
      return out[0], out[1]
    return out, out

  return apply


def unlearn_instances(apply_fn: Callable, variables: dict, x_forget, y_forget, *,
                      num_classes: int, key: jax.Array, mode: str = "misclassify",
                      new_labels=None, case: str = "l2ul", num_adv: int = 20, eps: float = 4.0,
                      lam: float = 1.0, lr: float = 1e-3, max_steps: int = 1000,
                      x_probe=None, x_retain=None, y_retain=None,
                      eval_kwargs: dict | None = None, verbose: bool = False,
                      **settings) -> tuple[dict, dict]:
  """L2UL on any linen classifier: x_forget uint8/f32[k, H, W, C], y_forget int[k] -> (variables,
  info). No training set needed (except ``x_retain``/``y_retain`` for case ``oracle``).

  ``new_labels`` int[k] for ``mode="relabel"``; ``x_probe`` (e.g. a few hundred test images)
  for collapse detection (default: the adversarial set); further :class:`Settings` fields as
  keywords. ``info``: steps, stopped, forget_acc / relabel_acc, collapsed, note, timings.
  """
  kw = (("train", False),) if eval_kwargs is None else tuple(sorted(eval_kwargs.items()))
  s = Settings(case=case, mode=mode, num_adv=num_adv, eps=eps, lam=lam, lr=lr,
               max_steps=max_steps, **settings)
  params = variables["params"]
  stats = {k: v for k, v in variables.items() if k != "params"}
  if set(stats) - {"batch_stats"}:
    raise ValueError(f"unlearn_instances: only params and batch_stats are supported, got "
                     f"{sorted(variables)}")
  tx = engine.make_optimizer("sgd", lr)
  state = engine.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                            batch_stats=stats.get("batch_stats", {}), opt_state=tx.init(params),
                            apply_fn=_engine_apply(apply_fn, kw), tx=tx)
  retain = None if x_retain is None else (jnp.asarray(x_retain), jnp.asarray(y_retain))
  out, info = unlearn_state(state, jnp.asarray(x_forget), jnp.asarray(y_forget), key, s,
                            num_classes=num_classes, new_labels=new_labels, retain=retain,
                            probe=None if x_probe is None else jnp.asarray(x_probe),
                            verbose=verbose)
  return out.variables, info


# ----------------------------------------------------------------------------- registered cases


def requested_labels(problem, forget: np.ndarray) -> jax.Array:
  """Relabel mode's requested labels: uniform ≠ y, fixed by the run's seed (same for every case)."""
  y_f = problem.take(forget)[1]
  return attacks.random_targets(jax.random.key(problem.seed + 7757), y_f, problem.num_classes)


def probe_images(problem, size: int) -> jax.Array:
  """A fixed sample of D_test (``size`` images) on which collapse is detected."""
  n = problem.y_test.shape[0]
  pick = jax.random.choice(jax.random.key(problem.seed + 4111), n, (min(size, n),), replace=False)
  return problem.x_test[pick]


def l2ul_method(ctx: Context, cfg) -> tuple[engine.TrainState, dict]:
  """One L2UL case (``cfg.case``) on the experiment's forget set (METHODS §3)."""
  mode = ctx.config.data.get("mode", "misclassify")
  s = Settings.from_config(cfg, mode=mode)
  forget = ctx.problem.split.forget
  x_f, y_f = ctx.problem.take(forget)
  new = requested_labels(ctx.problem, forget) if mode == "relabel" else None
  retain = ctx.problem.take(ctx.problem.split.retain) if s.case == "oracle" else None
  probe = probe_images(ctx.problem, cfg.get("probe_size", 1000))
  state, info = unlearn_state(ctx.original, x_f, y_f, ctx.key, s,
                              num_classes=ctx.problem.num_classes, new_labels=new,
                              retain=retain, probe=probe, verbose=ctx.verbose)
  keys = ("stopped", "relabel_acc", "collapsed", "note", "adv_time_s", "mas_time_s",
          "adv_target_rate")
  report = {k: info[k] for k in keys if k in info}
  return state, dict(steps=info["steps"], stopped_early=info["stopped_early"], report=report)


for _name in ("l2ul", "l2ul_naive", "l2ul_adv", "l2ul_oracle"):
  register(_name)(l2ul_method)
