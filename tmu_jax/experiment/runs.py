"""Orchestration (METHODS §1, §5): data and splits, cached M_o and M_g, every method from M_o,
scores against gold, results.json and the report after every run."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

import jax
import numpy as np

from tmu_jax import (checkpoints, concurrent, data as data_lib, methods, protocol, rng, schema,
                     train, validate)
from tmu_jax.experiment import ensembles, evaluate
from tmu_jax.experiment.results import CompileTimer, MethodCache, method_key, public
from tmu_jax.experiment.scoring import Reference, Scorer
from tmu_jax.protocol import Problem


@dataclasses.dataclass
class Models:
  """M_o (and its cache key) of one run, with what scores against gold."""
  original: Any
  original_key: str
  scorer: Scorer
  ref: Reference | None = None
  gold_key: str = ""
  gold: evaluate.GoldSide | None = None  # the scored gold ensemble, its floor, ε reference


def load_data(config) -> data_lib.Dataset:
  """Loads the configured dataset and checks the data-dependent fields."""
  dataset = data_lib.load(config.data)
  validate.check_against_data(config, dataset.num_classes, dataset.train_labels)
  return dataset


def make_problem(config, dataset: data_lib.Dataset, forget_class: int, seed: int) -> Problem:
  """The run's split (METHODS §1) and its problem on device."""
  split = data_lib.make_split(dataset.train_labels, dataset.num_classes,
                              scenario=config.data.scenario, forget_class=forget_class,
                              forget_size=config.data.forget_size,
                              holdout_fraction=config.data.holdout_fraction, seed=seed)
  return protocol.make_problem(dataset, split, forget_class, seed, config.data.mode)


def section_of(config, name: str):
  """The config section ``methods.<name>``, or None when there is none."""
  return config.methods[name] if name in config.methods else None


def settings_of(config, name: str):
  """(registered MethodInfo, parsed settings) of the method section ``name``."""
  section = section_of(config, name)
  info = methods.get(methods.base_of(name, section))
  return info, schema.parse(info.settings, section, f"methods.{name}")


def apply_method(config, problem: Problem, models: Models, start, name: str, key: jax.Array,
                 shared: dict, members: int = 0, member_start: int = 1
                 ) -> tuple[Any, dict[str, Any], methods.Result | None]:
  """Runs method ``name`` from ``start`` (M_o, or the previous round's model); with
  ``members`` = m ≥ 1, its seeds 1 … m as one ensemble (methods.common).

  Returns (state or None if it collapsed to a NaN loss, JSON-able entries: timings, steps, the
  method's report and metadata, the Result).
  """
  info, settings = settings_of(config, name)
  recipe = protocol.recipe_of(config)
  # The content key of the model the method starts from (it keys artefacts in ``shared``):
  # M_o's cache key, or for another start (a continual round's model) a digest of its weights.
  start_key = models.original_key if start is models.original else (
      f"{models.original_key}/{checkpoints.weights_digest(start)[:16]}")
  # An oracle reference (registry needs "gold") alone gets M_g's correctness on D_f.
  gold_easy = models.scorer.gold_easy(models.ref) if "gold" in info.needs else None
  ctx = methods.Context(problem=problem, original=start, model=models.scorer.model,
                        spec=protocol.train_spec(config, models.scorer.model, problem.dataset,
                                                 recipe),
                        recipe=recipe, key=key, original_key=start_key,
                        shared=shared, verbose=config.verbose, members=members,
                        member_start=member_start, how=config.experiment.ensemble,
                        member_mesh=ensembles.ensemble_mesh(config, members) if members
                        else None, gold_easy=gold_easy)
  # A config section named after its registered method is that method; any other section
  # (an ablation variant such as tmu_plus_random) is not a main-table ("paper") method.
  meta = dict(group=info.group, paper=info.paper and name == info.name, base=info.name)
  t0 = time.perf_counter()
  with CompileTimer() as compile_timer:
    try:
      result = info.fn(ctx, settings)
      jax.block_until_ready(result.state.params)
    except train.NonFiniteLoss as e:
      return None, dict(meta, note=f"collapsed: {e}", failed=True), None
  out = dict(meta, time_s=time.perf_counter() - t0 - compile_timer.seconds,
             compile_s=compile_timer.seconds, steps=result.steps,
             stopped_early=bool(result.stopped))
  out.update(result.report)
  return result.state, out, result


def run_method(config, workdir: str, problem: Problem, models: Models, name: str,
               shared: dict) -> dict[str, Any]:
  """One registered method from M_o, scored against gold (or taken from the method cache)."""
  info, settings = settings_of(config, name)
  cache = MethodCache(protocol.cache_dir(config, workdir))
  rng_name = methods.rng_name_of(name, section_of(config, name))
  # (rng_name joins the cache key only when set, so every other method keeps its key.)
  key = method_key(**({} if rng_name == name else dict(rng_name=rng_name)),
                   original=models.original_key, gold=models.gold_key, split=problem.split_key,
                   method=info.name, settings=dataclasses.asdict(settings), mode=problem.mode,
                   mia_samples=config.experiment.mia_samples, name=name,
                   gold_models=(len(models.gold.scored.scores) if models.gold else 0),
                   epsilon=int(config.experiment.epsilon),
                   evaluation=dataclasses.asdict(evaluation_of(config)))
  recompute = tuple(config.experiment.recompute)
  if "all" not in recompute and name not in recompute:
    cached = cache.get(name, key)
    if cached is not None:
      return dict(cached, cached=True)
  rkey = rng.named(rng.seed_key(problem.seed), f"method/{rng_name}")
  state, out, result = apply_method(config, problem, models, models.original, name, rkey,
                                    shared)
  if state is not None:
    row, logits_f = models.scorer.score_and_logits(state, models.ref)
    out.update(row)
    if result.pred_easy is not None:
      out["label_acc"] = models.scorer.label_accuracy(result.pred_easy, models.ref)
    if "p_easy" in result.arrays:  # TMU: its scores ranked against gold's labels (reporting)
      out["label_auc"] = models.scorer.label_auc(np.asarray(result.arrays["p_easy"]), models.ref)
    if result.arrays:  # e.g. TMU's feature values, for the histograms and later analysis
      rel = os.path.join("features", f"{name}-{_run_tag(problem)}.npz")
      os.makedirs(os.path.join(workdir, "features"), exist_ok=True)
      np.savez_compressed(os.path.join(workdir, rel),
                          **{k: np.asarray(v) for k, v in result.arrays.items()})
      out["features_file"] = rel
    scored = evaluate.Scored([row], np.asarray(logits_f)[None])
    n = int(config.experiment.epsilon)
    if n >= 2 and models.gold is not None:
      extra, seeds = method_seeds(config, problem, models, name, rkey, shared, n - 1)
      if extra is None:
        out["note"] = f"seeds: {seeds}"
      else:
        scored = evaluate.Scored(scored.scores + extra.scores,
                                 np.concatenate([scored.logits_forget, extra.logits_forget]))
        out.update(seeds_time_s=seeds["time_s"], seeds_how=seeds["how"])
        out["confidences_file"] = save_confidences(workdir, name, problem, scored,
                                                   models.gold.labels)
    if models.gold is not None:
      out = evaluate.summarize(out, scored, models.gold, time_s=out["time_s"],
                               epsilon_from=scored if len(scored.scores) == n else None,
                               rte_limit=evaluation_of(config).rte_limit)
  out = public(out)
  cache.put(name, key, out)
  return dict(out, cached=False)


def evaluation_of(config) -> evaluate.Evaluation:
  """The typed ``evaluation`` section."""
  return schema.parse(evaluate.Evaluation, config.evaluation, "evaluation")


def method_seeds(config, problem: Problem, models: Models, name: str, key: jax.Array,
                 shared: dict, m: int) -> tuple[evaluate.Scored | None, dict]:
  """Seeds 1 … m of method ``name`` (METHODS §5b's N unlearned models, with the single run as
  seed 0), scored: one ensemble when the method allows it, else one seed after the other."""
  info, _ = settings_of(config, name)
  t0 = time.perf_counter()
  if info.ensemble:  # groups of seeds whose states fit experiment.ensemble_memory_mb
    budget = int(config.experiment.ensemble_memory_mb) * ensembles.MB
    one = train.ensemble.state_bytes(models.original)
    members = []
    for a, b in train.ensemble.member_chunks(m, one, budget):
      states, _, _ = apply_method(config, problem, models, models.original, name, key, shared,
                                  members=b - a, member_start=1 + a)
      if states is None:
        return None, "a seed's loss became NaN/inf"
      members += [train.ensemble.member(states, i) for i in range(b - a)]
    how = train.ensemble.resolve_how(config.experiment.ensemble,
                                     protocol.train_spec(config, models.scorer.model,
                                                         problem.dataset))
  else:  # one seed after the other (the method reads each model on the host)
    members = []
    for i in train.member_keys(key, m, start=1):
      state, _, _ = apply_method(config, problem, models, models.original, name, i, shared)
      if state is None:
        return None, "a seed's loss became NaN/inf"
      members.append(state)
    how = "sequential"
  seconds = time.perf_counter() - t0
  scores, logits = [], []
  for st in members:
    row, lf = models.scorer.score_and_logits(st, models.ref)
    scores.append(row)
    logits.append(np.asarray(lf))
  return evaluate.Scored(scores, np.stack(logits)), dict(time_s=seconds, how=how)


def save_confidences(workdir: str, name: str, problem: Problem, scored: evaluate.Scored,
                     labels: np.ndarray) -> str:
  """Writes a row's per-member D_f confidences f32[M, S] (what ε reads) beside the results."""
  rel = os.path.join("confidences", f"{name}-{_run_tag(problem)}.npz")
  os.makedirs(os.path.join(workdir, "confidences"), exist_ok=True)
  np.savez_compressed(os.path.join(workdir, rel),
                      confidences=evaluate.confidences(scored, labels),
                      acc_retain=scored.values("acc_retain"), acc_test=scored.values("acc_test"))
  return rel


def _run_tag(problem: Problem) -> str:
  return f"c{problem.forget_class}-n{len(problem.split.forget)}-s{problem.seed}"


def concurrent_here(config) -> bool:
  """Whether models that train from scratch run at once (experiment.concurrent_models, and the
  backend is a CPU: on an accelerator the two would queue on one device)."""
  return bool(config.experiment.concurrent_models) and jax.default_backend() == "cpu"


def train_from_scratch_together(config, workdir: str, problem: Problem,
                                roles: list[tuple[str, np.ndarray]]) -> list[tuple[Any, dict]]:
  """:func:`protocol.train_from_scratch` of each (role, rows): at once on host threads when
  :func:`concurrent_here` (the results are the same bit for bit; each model's ``time_s`` is
  then its share of the machine: :class:`tmu_jax.concurrent.Sharing`), else one after the
  other."""
  if not concurrent_here(config) or len(roles) < 2:
    return [protocol.train_from_scratch(config, workdir, problem, r, i) for r, i in roles]
  sharing = concurrent.Sharing()  # charges each model its share while the others train

  def job(role: str, rows: np.ndarray):
    return lambda cancel: protocol.train_from_scratch(config, workdir, problem, role, rows,
                                                      cancel=cancel, sharing=sharing)

  with checkpoints.one_save_at_a_time():  # Orbax's saves are not safe on two threads at once
    return concurrent.run_together([job(r, i) for r, i in roles])


def _shared_time(info: dict) -> dict:
  """``wall_s`` and ``share`` of a model trained beside others (train_from_scratch)."""
  return {k: info[k] for k in ("wall_s", "share") if k in info}


def train_models(config, workdir: str, problem: Problem) -> tuple[Models, dict, dict]:
  """M_o and (unless experiment.gold is False) M_g, scored; (models, original, gold) entries."""
  model = protocol.build_model(config, problem.dataset)
  scorer = Scorer(model, problem, protocol.recipe_of(config))
  roles = [("original", problem.train_portion)]
  if config.experiment.gold:
    roles.append(("gold", problem.split.retain))
  (original, info_o), *gold_trained = train_from_scratch_together(config, workdir, problem, roles)
  models = Models(original, info_o["key"], scorer)
  if gold_trained:
    gold_state, info_g = gold_trained[0]
    models.gold_key = info_g["key"]
  else:  # experiment.gold = False: no M_g; gold-referenced metrics are then relative to M_o
    gold_state, info_g = original, None
  models.ref = scorer.reference(gold_state, config.experiment.mia_samples)
  orig, orig_logits = scorer.score_and_logits(original, models.ref)
  orig.update(time_s=info_o["time_s"], cached=info_o["cached"], **_shared_time(info_o))
  if info_g is None:
    gold = dict(note="not trained (experiment.gold = False); gap etc. are relative to M_o")
    return models, orig, gold
  gold, gold_logits = scorer.score_and_logits(gold_state, models.ref)
  gold.update(time_s=info_g["time_s"], cached=info_g["cached"], **_shared_time(info_g))
  n = int(config.experiment.epsilon)
  size = max(int(config.experiment.gold_models), 2 * n, 1)
  gold_scored = evaluate.Scored([gold], np.asarray(gold_logits)[None])
  if size > 1:
    ens, info_e = ensembles.gold_ensemble(config, workdir, problem, gold_state, info_g["key"],
                                          size)
    scores, logits = [gold], [np.asarray(gold_logits)]
    for i in range(1, size):
      row, lf = scorer.score_and_logits(train.ensemble.member(ens, i), models.ref)
      scores.append(row)
      logits.append(np.asarray(lf))
    gold_scored = evaluate.Scored(scores, np.stack(logits))
    gold.update(ensemble_trained=info_e["trained"], ensemble_cached=info_e["cached"],
                ensemble_time_s=info_e["time_s"])
  labels = np.asarray(problem.take(problem.split.forget)[1])
  evaluation = evaluation_of(config)
  models.gold = evaluate.gold_side(gold_scored, labels, n, evaluation, float(info_g["time_s"]))
  heldout = None
  if n:
    heldout = evaluate.Scored(gold_scored.scores[models.gold.heldout],
                              gold_scored.logits_forget[models.gold.heldout])
  gold_row = dict(gold)  # the single M_g's timing and cache flags; numbers over the ensemble
  if heldout is not None:  # "retrain" read like a method: the held-out half vs the reference
    gold = evaluate.summarize(gold_row, heldout, models.gold, epsilon_from=heldout)
  else:  # every member, against itself: only the means, spreads and the floor mean
    gold = evaluate.summarize(gold_row, gold_scored, models.gold, compare=False)
  orig_scored = evaluate.Scored([orig], np.asarray(orig_logits)[None])
  orig = evaluate.summarize(orig, orig_scored, models.gold,
                            epsilon_from=orig_scored.repeat(n) if n else None)
  return models, orig, gold


def run_one(config, workdir: str, dataset: data_lib.Dataset, forget_class: int, seed: int
            ) -> dict[str, Any]:
  """One (forget class, seed) run: M_o, M_g, every method; the run dict of results.json."""
  t0 = time.perf_counter()
  problem = make_problem(config, dataset, forget_class, seed)
  models, orig, gold = train_models(config, workdir, problem)
  timing = dict(original_train_s=0.0 if orig["cached"] else orig["time_s"],
                gold_train_s=0.0 if gold.get("cached", True) else gold["time_s"],
                gold_ensemble_train_s=float(gold.get("ensemble_time_s", 0.0)),
                models_s=time.perf_counter() - t0)
  run = dict(dataset=dataset.name, arch=config.model.name, scenario=config.data.scenario,
             forget_class=forget_class, forget_size=int(len(problem.split.forget)), seed=seed,
             gold=public(gold), original=public(orig), methods={}, timing=timing,
             split_file=save_split(workdir, problem))
  if models.gold is not None:
    run["gold_models"] = len(models.gold.scored.scores)
    for k, v in (("floor", evaluate.floor_entry(models.gold)),
                 ("epsilon_settings", evaluate.settings_entry(models.gold))):
      if v is not None:
        run[k] = v
  if config.data.scenario == "instance":  # L2UL (METHODS §3)
    run.update(mode=config.data.mode, k=run["forget_size"])
  shared: dict = {}  # this run's content-keyed artefacts (TMU twins), dropped with the run
  for name in config.experiment.methods:
    t0 = time.perf_counter()
    run["methods"][name] = run_method(config, workdir, problem, models, name, shared)
    timing[f"{name}_s"] = time.perf_counter() - t0
  return run


def save_split(workdir: str, problem: Problem) -> str:
  """Writes the split's index arrays beside the results; returns the relative path."""
  rel = os.path.join("splits", f"{problem.dataset.name}-c{problem.forget_class}"
                     f"-n{len(problem.split.forget)}-s{problem.seed}.npz")
  os.makedirs(os.path.join(workdir, "splits"), exist_ok=True)
  np.savez_compressed(os.path.join(workdir, rel), **problem.split._asdict())
  return rel


def with_forget_size(config, size: int):
  """A copy of ``config`` with data.forget_size = size (one point of experiment.forget_sizes)."""
  c = config.copy_and_resolve_references()
  c.data.forget_size = int(size)
  return c
