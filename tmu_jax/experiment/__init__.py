"""The experiment: orchestration of runs (:mod:`.runs`), continual rounds (:mod:`.continual`),
scoring against gold (:mod:`.scoring`), and method results with their cache (:mod:`.results`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Any

from tmu_jax import compile_cache, protocol, report, validate
from tmu_jax.experiment.continual import run_continual
from tmu_jax.experiment.runs import load_data, run_one, with_forget_size
from tmu_jax.workdir import WorkdirLock

__all__ = ["run"]


def config_digest(config) -> str:
  """A short digest of the config (names the results of another config in a workdir); fields
  that do not change results (``verbose``, ``compile_cache_dir``, ``experiment.recompute``) are
  left out."""
  c = json.loads(config.to_json_best_effort())
  c.pop("verbose", None)
  c.pop("compile_cache_dir", None)
  c.get("experiment", {}).pop("recompute", None)
  return hashlib.sha256(json.dumps(c, sort_keys=True).encode()).hexdigest()[:12]


def keep_other_results(workdir: str, digest: str) -> None:
  """If ``workdir`` holds results of another config, keep them as results-<digest>.json."""
  path = os.path.join(workdir, "results.json")
  try:
    with open(path, encoding="utf-8") as f:
      old = json.load(f)
  except (OSError, ValueError):
    return
  old_digest = old.get("config_digest") if isinstance(old, dict) else None
  if old_digest and old_digest != digest:
    kept = os.path.join(workdir, f"results-{old_digest}.json")
    os.replace(path, kept)
    protocol.log(f"[experiment] {path} held another config's results: kept as {kept}")


def run(config, workdir: str) -> dict[str, Any]:
  """The whole experiment of ``config``: every (class, seed) run, then results and report."""
  workdir = validate.check_workdir(workdir)
  validate.check_config(config)
  validate.check_writable_dirs(config, workdir)
  compile_cache.enable(config.compile_cache_dir)
  with WorkdirLock(workdir):
    t0 = time.perf_counter()
    digest = config_digest(config)
    keep_other_results(workdir, digest)
    dataset = load_data(config)
    data_s = time.perf_counter() - t0
    classes = list(config.experiment.forget_classes) or [config.data.forget_class]
    seeds = list(config.experiment.seeds) or [config.seed]
    sizes = list(config.experiment.forget_sizes) or [config.data.forget_size]
    runs, report_s = [], 0.0
    todo = len(seeds) * len(classes) * len(sizes)
    for seed in seeds:
      for cls, size in [(c, n) for c in classes for n in sizes]:
        todo -= 1
        sized = with_forget_size(config, size)
        if config.experiment.rounds > 1:
          runs.extend(run_continual(sized, workdir, dataset, cls, seed))
        else:
          runs.append(run_one(sized, workdir, dataset, cls, seed))
        t_report = time.perf_counter()
        results = dict(config=json.loads(config.to_json_best_effort()), config_digest=digest,
                       runs=runs, timing=dict(total_s=t_report - t0, data_s=data_s,
                                                 report_s=report_s))
        # after every run: nothing is lost on interruption; plots after the last one
        report.write(workdir, results, with_plots=todo == 0)
        report_s += time.perf_counter() - t_report
    results["timing"].update(total_s=time.perf_counter() - t0, report_s=report_s)
    for line in phase_lines(results):
      protocol.log(line, config.verbose)
  return results


def phase_lines(results: dict[str, Any]) -> list[str]:
  """The whole command's wall time by phase, summed over runs: loading the data, training M_o,
  M_g and the other gold members, scoring them (the rest of the models phase), each method
  (run, compile and scoring), writing reports, and what is left (set-up, splits)."""
  timing = results["timing"]
  sums: dict[str, float] = {}
  for run in results["runs"]:
    for k, v in run.get("timing", {}).items():
      sums[k] = sums.get(k, 0.0) + float(v)
  trained = sum(sums.get(k, 0.0) for k in ("original_train_s", "gold_train_s",
                                            "gold_ensemble_train_s"))
  rows = [("data", timing.get("data_s", 0.0)),
          ("train M_o", sums.get("original_train_s", 0.0)),
          ("train M_g", sums.get("gold_train_s", 0.0)),
          ("train other gold members", sums.get("gold_ensemble_train_s", 0.0)),
          ("score M_o and gold", max(0.0, sums.get("models_s", 0.0) - trained))]
  fixed = {"original_train_s", "gold_train_s", "gold_ensemble_train_s", "models_s"}
  rows += [(k[:-2], v) for k, v in sums.items() if k not in fixed]
  rows.append(("reports", timing.get("report_s", 0.0)))
  total = float(timing["total_s"])
  rows.append(("other", max(0.0, total - sum(v for _, v in rows))))
  width = max(len(name) for name, _ in rows)
  lines = [f"[timing] wall time by phase ({len(results['runs'])} run(s), total {total:.1f} s)"]
  lines += [f"[timing]   {name:<{width}}  {v:7.1f} s  {100 * v / max(total, 1e-9):5.1f}%"
            for name, v in rows]
  return lines
