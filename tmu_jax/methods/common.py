"""What every method shares: its :class:`Context` (inputs), its :class:`Result` (output), the
optimizer settings most methods carry, and small helpers.

A method sees the original model M_o, the request's data (D_f, D_r, the holdout pool P) and its
own typed settings; never the gold model, which exists only to score it. It trains through the
one engine through :func:`fit` and :func:`start`, contributing a loss and data mixing.

**Seeds as one program** (METHODS §5b's N unlearned models). With ``Context.members = m`` a
method's :func:`start` states carry a leading member axis and :func:`fit` trains members
``member_start … member_start+m−1`` of ``train.member_keys(key, ·)`` as one ensemble: member 0
would be the single run itself (the experiment runs it alone, for its timing, and stacks it in
front). Members differ in everything drawn inside the engine — batch order, augmentation,
relabel draws — and share the method's preparation drawn outside it (a retain subsample, Bad
Teacher's incompetent teacher, TMU's twins and hard set): docs/evaluation.md says what that
means for the ε score.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import numpy as np

from tmu_jax import schema, train
from tmu_jax.protocol import Problem, Recipe


@dataclasses.dataclass
class Context:
  """A method's inputs. ``spec`` is the training StepSpec of the problem (model, augmentation
  as configured); ``shared`` is this run's content-keyed store of artefacts that several
  methods derive alike (TMU's twin features): it lives as long as the run, nothing global."""
  problem: Problem
  original: train.TrainState  # M_o
  model: nn.Module
  spec: train.StepSpec
  recipe: Recipe
  key: jax.Array
  original_key: str = ""  # M_o's cache key: with the split, the content key of shared artefacts
  shared: dict = dataclasses.field(default_factory=dict)
  verbose: bool = True
  members: int = 0  # 0: one model; m >= 1: an ensemble of m seeds (see the module docstring)
  member_start: int = 1  # the first member's index in train.member_keys
  how: str = "auto"  # how the member axis runs (train.ensemble.HOW)
  member_mesh: object = None  # the ensemble's ("models", "data") mesh (None: one device)
  gold_easy: np.ndarray | None = None  # oracles only (needs "gold"): M_g right on each of D_f

  def spec_for(self, opt: train.Optimizer, **overrides) -> train.StepSpec:
    """The problem's StepSpec with ``opt``'s optimizer family and other overrides."""
    return self.spec.replace(optimizer=opt.family, **overrides)

  def fresh_state(self, key: jax.Array, opt: train.Optimizer) -> train.TrainState:
    """A randomly initialised model of the same architecture (e.g. Bad Teacher's teacher)."""
    return train.new_state(key, self.model, self.problem.image_shape, opt)

  def logits(self, state: train.TrainState, images: jax.Array) -> jax.Array:
    """Eval-mode logits of ``state`` (a model of this architecture)."""
    return train.logits(self.model, state.variables, images, self.recipe.eval_batch_size)


@dataclasses.dataclass
class Result:
  """A method's output: the unlearned state and what it reports.

  ``pred_easy`` (bool[|D_f|], optional): the method's own prediction of which forget samples
  the gold model gets right (TMU's easy/hard split); the experiment scores it against gold.
  ``arrays``: per-sample arrays saved beside the results (e.g. TMU's features).
  """
  state: train.TrainState
  steps: int = 0
  stopped: str = ""  # why it ended early ("" = it ran its full budget)
  report: dict = dataclasses.field(default_factory=dict)
  pred_easy: np.ndarray | None = None
  arrays: dict = dataclasses.field(default_factory=dict)


def start(ctx: Context, opt: train.Optimizer, state: train.TrainState | None = None,
          prepare=None) -> train.TrainState:
  """A copy of M_o (or ``state``) with a fresh ``opt`` state, optionally passed through
  ``prepare`` (e.g. SalUn's mask), then repeated over ``ctx.members`` when an ensemble."""
  out = train.start_from(ctx.original if state is None else state, opt)
  if prepare is not None:
    out = prepare(out)
  return train.ensemble.broadcast(out, ctx.members) if ctx.members else out


def fit(ctx: Context, state: train.TrainState, streams, *, key: jax.Array, **kwargs
        ) -> tuple[train.TrainState, dict]:
  """``train.fit`` of a method, or its ``ctx.members`` seeds as one ``train.fit_ensemble``
  (member i's key: ``train.member_keys(key, ·)[i]``, what ``fit(key=…)`` uses for member 0)."""
  if not ctx.members:
    return train.fit(state, streams, key=key, **kwargs)
  keys = train.member_keys(key, ctx.members, start=ctx.member_start)
  kwargs["spec"] = kwargs["spec"].replace(mesh=ctx.member_mesh)
  return train.fit_ensemble(state, streams, keys=keys, how=ctx.how, **kwargs)


def fit_steps(info: dict) -> int:
  """Steps of a fit; of an ensemble, its members' mean (rounded)."""
  steps = info["steps"]
  return int(round(float(np.mean(steps)))) if isinstance(steps, list) else int(steps)


def fit_result(fit_out: tuple[train.TrainState, dict], stopped: str = "", **report) -> Result:
  """A Result from :func:`fit`'s (state, info)."""
  state, info = fit_out
  return Result(state, steps=fit_steps(info), stopped=stopped if info["stopped_early"]
                else "", report=report)


@dataclasses.dataclass(frozen=True)
class OptimizerSettings:
  """The optimizer fields of a method's section (METHODS §4 defaults per method)."""
  optimizer: str = schema.field("sgd", choices=train.optim.NAMES)
  lr: float = schema.field(0.01, lo=0.0, lo_open=True)
  momentum: float = schema.field(0.9, lo=0.0, hi=1.0, hi_open=True)
  weight_decay: float = schema.field(5e-4, lo=0.0)
  batch_size: int = schema.field(128, lo=1)

  def optimizer_for(self, total_steps: int = 1, masked: bool = False) -> train.Optimizer:
    """A constant-lr optimizer of these settings."""
    return train.Optimizer(self.optimizer, self.lr, self.momentum, self.weight_decay,
                           "constant", total_steps, masked)


def retain_subset(problem: Problem, fraction: float, key: jax.Array) -> np.ndarray:
  """A random ``fraction`` of D_r's indices (all of it for fraction ≥ 1)."""
  retain = problem.split.retain
  if fraction >= 1.0:
    return retain
  n = max(1, int(round(fraction * len(retain))))
  pick = np.asarray(jax.random.choice(key, len(retain), (n,), replace=False))
  return np.sort(retain[pick])


def relabel_stream(problem: Problem, retain: np.ndarray, relabeled: np.ndarray,
                   kept: np.ndarray, batch_size: int) -> train.Stream:
  """D_r ∪ kept (true labels) ∪ relabeled (a fresh label ≠ y each epoch, METHODS §4)."""
  index = np.concatenate([retain, kept, relabeled])
  flags = np.concatenate([np.zeros(len(retain) + len(kept), bool), np.ones(len(relabeled), bool)])
  return problem.stream(index, batch_size, relabel=jax.numpy.asarray(flags))

