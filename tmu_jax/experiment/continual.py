"""Continual unlearning (METHODS §3): ``experiment.rounds`` requests of k new instances each,
applied in sequence to the same model per method.

Rounds are sequential by nature (each starts from the previous round's model), so this is a host
loop; its method results are not cached (a later round needs the unlearned model itself).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from tmu_jax import data as data_lib, methods, metrics, protocol, rng
from tmu_jax.errors import ConfigError
from tmu_jax.experiment.results import public
from tmu_jax.experiment.runs import Models, apply_method, make_problem, section_of
from tmu_jax.experiment.scoring import Scorer
from tmu_jax.protocol import Problem


def continual_forget_sets(problem: Problem, k: int, rounds: int, seed: int) -> list[np.ndarray]:
  """``rounds`` disjoint sorted sets of k instances drawn uniformly from T (METHODS §3)."""
  portion = problem.train_portion
  if rounds * k > len(portion):
    raise ConfigError(f"config field experiment.rounds = {rounds} is not valid: "
                      f"{rounds} × k = {rounds * k} exceeds |T| = {len(portion)}")
  order = rng.numpy_rng(seed, "continual/forget_sets", k, rounds).permutation(portion)
  return [np.sort(order[r * k:(r + 1) * k]).astype(np.int64) for r in range(rounds)]


def run_continual(config, workdir: str, dataset: data_lib.Dataset, forget_class: int,
                  seed: int) -> list[dict[str, Any]]:
  """One run dict per round (``round`` 1…R) with accuracy on every forget set so far
  (``acc_forget_rounds``), on D_r and on D_test, for every method."""
  problem = make_problem(config, dataset, forget_class, seed)
  k, rounds = config.data.forget_size, config.experiment.rounds
  original, info_o = protocol.train_from_scratch(config, workdir, problem, "original",
                                                 problem.train_portion)
  model = protocol.build_model(config, dataset)
  sets = continual_forget_sets(problem, k, rounds, seed)
  current = {name: original for name in config.experiment.methods}
  failed: dict[str, str] = {}
  shared: dict = {}
  runs = []
  for r in range(rounds):
    gone = np.concatenate(sets[:r + 1])
    split = data_lib.Split(holdout=problem.split.holdout, forget=sets[r],
                           retain=np.setdiff1d(problem.train_portion, gone))
    pr = dataclasses.replace(problem, split=split)
    scorer = Scorer(model, pr, protocol.recipe_of(config))
    models = Models(original, info_o["key"], scorer)
    seen = [problem.take(s) for s in sets[:r + 1]]

    def scores(state):
      m = scorer.accuracies(state)
      m["acc_forget_rounds"] = [metrics.accuracy(scorer.logits(state, x), y) for x, y in seen]
      m["acc_forget_all"] = float(np.mean(m["acc_forget_rounds"]))
      return m

    orig = scores(original)
    orig.update(time_s=info_o["time_s"], cached=info_o["cached"])
    run = dict(dataset=dataset.name, arch=config.model.name, scenario=config.data.scenario,
               mode=config.data.mode, k=k, round=r + 1, forget_class=forget_class,
               forget_size=k, seed=seed, gold=dict(note="continual: no gold model per round"),
               original=public(orig), methods={}, timing={})
    for name in config.experiment.methods:
      if name in failed:
        run["methods"][name] = dict(failed=True, note=f"stopped after an earlier round: "
                                    f"{failed[name]}")
        continue
      stream = methods.rng_name_of(name, section_of(config, name))
      key = jax.random.fold_in(rng.named(rng.seed_key(seed), f"method/{stream}"), r)
      state, out, _ = apply_method(config, pr, models, current[name], name, key, shared)
      if state is None:
        failed[name] = out["note"]
      else:
        current[name] = state
        out.update(scores(state))
      run["methods"][name] = public(out)
      run["timing"][f"{name}_s"] = out.get("time_s", 0.0)
    runs.append(run)
  return runs
