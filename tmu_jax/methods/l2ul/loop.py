"""The L2UL unlearning loop (METHODS §3) on the one engine, with its stop rule in the graph.

The step loss −CE·B_f/(B_a+B_f) + CE·B_a/(B_a+B_f) + λR is the engine's Σwℓ/Σ|w| with weights
−1 (forget) and +1 (adversarial), plus the MAS penalty. The stop rule runs inside the compiled
loop after every step: code 1 once every forget row is as requested, code 2 when one class takes
≥ ``collapse_share`` of a probe set's predictions (checked every ``collapse_every`` steps). λ,
the collapse share and period are data (in ``aux``) and lr sits in the optimizer state, so a
λ/lr grid compiles the update once.
"""

from __future__ import annotations

import functools
import math
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from tmu_jax import attacks, data as data_lib, train
from tmu_jax.methods.l2ul.losses import ForgetLoss
from tmu_jax.methods.l2ul.mas import Penalty, invert_importance, mas_importance
from tmu_jax.methods.l2ul.settings import CASES, L2UL, MODES

FORGOTTEN, COLLAPSED = 1, 2


def _predict(spec: train.StepSpec, variables: dict, x: jax.Array) -> jax.Array:
  return jnp.argmax(spec.model.apply(variables, x, train=False)[0], -1)


def remaining(spec: train.StepSpec, variables: dict, aux: dict) -> jax.Array:
  """Number of forget rows not yet as requested (pred ≠ target to relabel, = y to forget)."""
  pred = _predict(spec, variables, aux["x_f"])
  return jnp.sum(jnp.where(aux["relabel"], pred != aux["target"], pred == aux["target"]))


def top_share(spec: train.StepSpec, variables: dict, probe: jax.Array):
  """(the class predicted most on the probe, its share of the probe): the collapse check."""
  counts = jnp.bincount(_predict(spec, variables, probe), length=spec.num_classes)
  return jnp.argmax(counts), jnp.max(counts) / probe.shape[0]


def request_met(spec, variables, aux, step) -> jax.Array:
  """Stop rule without a probe: code 1 once the request holds."""
  del step
  return jnp.where(remaining(spec, variables, aux) == 0, FORGOTTEN, 0).astype(jnp.int32)


def request_met_or_collapsed(spec, variables, aux, step) -> jax.Array:
  """Stop rule with a probe: code 1 once the request holds, else 2 on a collapse."""
  code = request_met(spec, variables, aux, step)
  check = (code == 0) & (step % aux["collapse_every"] == 0)
  share = jax.lax.cond(check, lambda: top_share(spec, variables, aux["probe"])[1],
                       lambda: jnp.float32(0.0))
  return jnp.where(check & (share >= aux["collapse_share"]), COLLAPSED, code).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("model", "num_classes", "num_adv", "steps",
                                             "chunk"))
def adversarial_set(model: nn.Module, variables: dict, x_f: jax.Array, y_f: jax.Array,
                    key: jax.Array, eps, step_size, *, num_classes: int, num_adv: int,
                    steps: int, chunk: int):
  """L2UL's targeted L2 PGD examples of M_o in eval mode, labelled with their targets."""
  logits_fn = lambda x: model.apply(variables, x, train=False)[0]
  return attacks.l2ul_adversarial_set(logits_fn, x_f, y_f, key, num_classes=num_classes,
                                      num_adv=num_adv, eps=eps, step_size=step_size,
                                      steps=steps, chunk_size=chunk)


def unlearn_state(model: nn.Module, state: train.TrainState, x_forget: jax.Array,
                  y_forget: jax.Array, key: jax.Array, s: L2UL, *, num_classes: int,
                  mode: str = "misclassify", new_labels: jax.Array | None = None,
                  retain: tuple[jax.Array, jax.Array] | None = None,
                  probe: jax.Array | None = None, eval_batch_size: int = 1024,
                  verbose: bool = False) -> tuple[train.TrainState, dict[str, Any]]:
  """The L2UL loop from ``state`` (M_o) of ``model`` (returning (logits, features)).

  x_forget uint8/f32[k, H, W, C], y_forget int[k]; ``new_labels`` int[k] for relabel mode;
  ``retain`` (images, labels) for the oracle case; ``probe`` images for collapse detection.
  Returns the unlearned state (a copy; ``state`` is untouched) and an info dict.
  """
  if s.case not in CASES or mode not in MODES:
    raise ValueError(f"L2UL case {s.case!r} / mode {mode!r}: expected a case in {CASES} and a "
                     f"mode in {MODES}")
  k = int(x_forget.shape[0])
  relabel = mode == "relabel"
  if relabel and new_labels is None:
    raise ValueError("L2UL relabel mode needs new_labels (int[k], the requested labels)")
  if s.case == "oracle" and retain is None:
    raise ValueError("L2UL case 'oracle' needs retain = (images, labels) of D_r")
  x_f = data_lib.to_float(jnp.asarray(x_forget))
  y_f = jnp.asarray(y_forget, jnp.int32)
  target = jnp.asarray(new_labels, jnp.int32) if relabel else y_f
  variables = state.variables
  info: dict[str, Any] = dict(case=s.case, mode=mode, k=k)
  k_adv, k_fit = jax.random.split(key)

  # §3 forget loss: −CE toward y (misclassify) or +CE toward the requested label (relabel).
  forget = dict(image=x_f, label=target, weight=jnp.full((k,), 1.0 if relabel else -1.0))
  streams = [train.Stream(forget, min(k, s.forget_batch_size))]
  if s.case in ("adv", "l2ul"):
    # Made once from M_o in eval mode, before unlearning, never refreshed (§3).
    t0 = time.perf_counter()
    x_adv, y_adv = jax.block_until_ready(adversarial_set(
        model, variables, x_f, y_f, k_adv, s.eps, s.adv_step, num_classes=num_classes,
        num_adv=s.num_adv, steps=s.adv_steps, chunk=s.adv_chunk))
    info["adv_time_s"] = time.perf_counter() - t0
    adv_pred = jnp.argmax(train.logits(model, variables, x_adv, eval_batch_size), -1)
    info["adv_target_rate"] = float(100 * jnp.mean(adv_pred == y_adv))
    streams.append(train.Stream(dict(image=x_adv, label=y_adv, weight=jnp.ones(y_adv.shape)),
                                min(int(y_adv.shape[0]), s.adv_batch_size)))
    if probe is None:
      probe = x_adv  # their targets are spread over all classes: a healthy model is too
  if s.case == "oracle":
    x_r, y_r = retain
    # f32 like the forget and adversarial rows: one batch concatenates all streams.
    streams.append(train.Stream(dict(image=data_lib.to_float(jnp.asarray(x_r)),
                                     label=jnp.asarray(y_r, jnp.int32),
                                     weight=jnp.ones(y_r.shape)),
                                min(int(y_r.shape[0]), s.retain_batch_size)))
  aux: dict[str, Any] = dict(x_f=x_f, target=target, relabel=jnp.bool_(relabel))
  penalty_fn = None
  if s.case == "l2ul":
    t0 = time.perf_counter()
    omega = invert_importance(mas_importance(model, variables, x_f, chunk=min(s.mas_chunk, k)),
                              s.mas_norm)
    aux.update(omega=jax.block_until_ready(omega), anchor=jax.tree.map(jnp.copy, state.params),
               lam=jnp.float32(s.lam))
    info["mas_time_s"] = time.perf_counter() - t0
  rep = s.rep_lam > 0 and s.case in ("adv", "l2ul")
  if rep:  # a fixed sample of the adversarial set and M_o's features on it
    pick = jax.random.permutation(jax.random.fold_in(k_adv, 1), x_adv.shape[0])[:s.rep_size]
    rep_x = x_adv[pick]
    aux.update(rep_x=rep_x, rep_h=model.apply(variables, rep_x, train=False)[1],
               rep_lam=jnp.float32(s.rep_lam), batch_stats=state.batch_stats)
  if s.case == "l2ul" or rep:
    penalty_fn = Penalty(model, mas=s.case == "l2ul", rep=rep)
  if probe is not None:
    aux.update(probe=data_lib.to_float(probe), collapse_share=jnp.float32(s.collapse_share),
               collapse_every=jnp.int32(s.collapse_every))
  opt = train.Optimizer("sgd", s.lr, s.momentum, s.weight_decay)
  # BatchNorm stays in eval mode: batches of k forget + adversarial images are no sample of the
  # data, and their statistics would move every other prediction (our choice; §3 is silent).
  spec = train.StepSpec(model=model, optimizer=opt.family, loss_fn=ForgetLoss(s.forget_loss),
                        penalty_fn=penalty_fn, augment=False, bn_train=False,
                        num_classes=num_classes)
  rule = train.StopRule(request_met if probe is None else request_met_or_collapsed,
                        check_start=True)
  spe = train.steps_per_epoch(tuple(streams))
  t0 = time.perf_counter()
  out, fit_info = train.fit(train.start_from(state, opt), tuple(streams), spec=spec,
                            epochs=math.ceil(s.max_steps / spe), key=k_fit, aux=aux,
                            stop=rule, max_steps=s.max_steps, name=f"l2ul_{s.case}",
                            verbose=verbose)
  left = int(remaining(spec, out.variables, aux))
  code = fit_info["stop_code"]
  steps = int(fit_info["steps"])
  info["released_steps"] = 0
  if s.case == "l2ul" and s.release_steps and code == 0 and left:
    # The release (issue 11; our lever, not §3's): the MAS anchor can hold the last forget
    # rows at the step cap. λ is data, so the same compiled update runs on, from the state at
    # the cap, with λ = 0 (the representation anchor, where on, stays).
    out, fit_info = train.fit(out, tuple(streams), spec=spec,
                              epochs=math.ceil(s.release_steps / spe),
                              key=jax.random.fold_in(k_fit, 1), aux=dict(aux, lam=jnp.float32(0)),
                              stop=rule, max_steps=s.release_steps, name=f"l2ul_{s.case}/release",
                              verbose=verbose)
    info["released_steps"] = int(fit_info["steps"])
    steps += info["released_steps"]
    left = int(remaining(spec, out.variables, aux))
    code = fit_info["stop_code"]
  info["unlearn_time_s"] = time.perf_counter() - t0
  reason = {0: "max_steps", FORGOTTEN: "relabelled" if relabel else "forgotten",
            COLLAPSED: "collapsed"}[code]
  info.update(steps=steps, stopped=reason, stopped_early=code != 0)
  if relabel:  # % of D_f at its requested label
    info["relabel_acc"] = 100.0 * (k - left) / k
  else:  # % of D_f still predicted as y
    info["forget_acc"] = 100.0 * left / k
  info["collapsed"] = False
  if probe is not None:
    top, share = (int(v) if i == 0 else float(v) for i, v in
                  enumerate(top_share(spec, out.variables, aux["probe"])))
    info["collapsed"] = bool(share >= s.collapse_share or code == COLLAPSED)
    if info["collapsed"]:
      info["note"] = (f"collapsed: predicts class {top} for {100 * share:.0f}% of probe images "
                      f"after {info['steps']} steps")
  return out, info
