"""On top of the report: ``results.json`` + ``report.md`` + ``plots/`` into a workdir, and the
merge of several results files (``python -m tmu_jax.report a/results.json b/results.json
--out DIR``).

Every file is written atomically (temp file, fsync, ``os.replace``: :mod:`tmu_jax.workdir`), and
results.json is strict JSON: a NaN or inf metric is written as null, which every table and plot
reads like NaN, so report.md can be rebuilt from results.json alone (:func:`render`).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
from typing import Any, Sequence

from tmu_jax import workdir as workdir_lib
from tmu_jax.report import evaluation, plots, tables


def render(results: dict[str, Any]) -> str:
  """report.md for a results dict (as written to, or read back from, results.json)."""
  runs = results["runs"]
  cfg = results["config"]
  parts = [f"# Unlearning report: {cfg['data']['name']}, {cfg['model']['name']}, "
           f"scenario {cfg['data']['scenario']}",
           f"{len(runs)} run(s); total wall time {results['timing']['total_s']:.0f} s. "
           "Accuracies in %; gap = |Acc_Df − gold Acc_Df| in points; agreement = % of D_f "
           "whose correctness matches gold's; act_dist = mean ‖softmax − gold softmax‖ on D_f."]
  instance = [r for r in runs if r.get("scenario") == "instance"]
  if instance:  # L2UL (METHODS §3, §6)
    parts += tables.l2ul_sections(instance)
  paper = tables.paper_sections(runs, cfg.get("methods") or {})
  if paper:
    parts.append(paper)
  if len(runs) > 1:
    parts += ["## Mean ± std over runs", tables.mean_std_table(runs)]
  limit = evaluation.rte_limit(cfg)
  parts += evaluation.sweep_section(runs, limit)  # METHODS §5b; [] for older results
  for r in runs:
    title = f"## class {r['forget_class']}, seed {r['seed']}, |D_f| = {r['forget_size']}"
    if r.get("scenario") == "instance":  # forget_class only picks the instance draw there
      title = f"## draw {r['forget_class']}, seed {r['seed']}, k = {r['forget_size']}" + (
          f", round {r['round']}" if "round" in r else "")
    parts += [title, tables.run_table(r), *evaluation.run_section(r, limit)]
    if r.get("extra_md"):
      parts.append(r["extra_md"])
  if results.get("plots"):
    parts += ["## Plots", "\n".join(f"![{os.path.basename(p)}]({p})" for p in results["plots"])]
  return "\n\n".join(parts) + "\n"


def write(workdir: str, results: dict[str, Any], with_plots: bool = True) -> None:
  """Writes ``plots/*.png``, ``results.json`` (strict JSON) and ``report.md`` into ``workdir``,
  each atomically; sets ``results["plots"]`` to the plots' paths relative to ``workdir``.

  ``with_plots=False`` leaves the plots as they are (the experiment draws them after its last
  run only: redrawing every plot after every run made the 30-run study spend 7% of its time,
  and a 30-run second pass 30%, in matplotlib). ``python -m tmu_jax.report`` redraws them from
  results.json at any time."""
  if with_plots:
    results["plots"] = [os.path.relpath(p, workdir) for p in plots.write_all(workdir, results)]
  else:
    results.setdefault("plots", [])
  workdir_lib.atomic_write_json(os.path.join(workdir, "results.json"), results)
  workdir_lib.atomic_write_text(os.path.join(workdir, "report.md"), render(results))


def read_results(path: str) -> dict[str, Any]:
  """A results.json, or its gzipped copy (``.gz``, as committed under docs/results/data/)."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rt", encoding="utf-8") as f:
    return json.load(f)  # older files may hold bare NaN; json.load accepts it, write() will not


def run_key(run: dict) -> tuple:
  """What identifies one run across results files."""
  return tuple(run.get(k) for k in ("dataset", "arch", "scenario", "forget_class",
                                     "forget_size", "seed", "round"))


def merge(paths: Sequence[str], workdir: str) -> dict[str, Any]:
  """Merges several results.json into one results.json + report.md in ``workdir``.

  Runs of different (dataset, arch, scenario, class, size, seed, round) are concatenated in
  order (e.g. one seed per machine); a run present in several files (e.g. extra methods run
  later on the same cached models) gets the union of their methods, later files winning.
  Timings add up. The config (method settings included) is the first file's.
  """
  merged, index = None, {}
  for p in paths:
    r = read_results(p)
    if merged is None:
      merged = dict(config=r["config"], runs=[], timing=dict(total_s=0.0), sources=[])
    for run in r["runs"]:  # keep pointers to per-run files valid from the new folder
      for m in run.get("methods", {}).values():
        if m.get("features_file"):
          m["features_file"] = os.path.join(os.path.dirname(os.path.abspath(p)),
                                            m["features_file"])
    for run in r["runs"]:
      key = run_key(run)
      if key in index:
        index[key]["methods"].update(run.get("methods", {}))
        index[key].setdefault("timing", {}).update(run.get("timing", {}))
      else:
        index[key] = run
        merged["runs"].append(run)
    merged["timing"]["total_s"] += r["timing"]["total_s"]
    merged["sources"].append(os.path.abspath(p))
  if merged is None:
    raise ValueError("merge: no results.json files given")
  os.makedirs(workdir, exist_ok=True)
  write(workdir, merged)
  return merged


def main(argv: Sequence[str] | None = None) -> None:
  """The merge command line: results.json files and ``--out DIR``."""
  parser = argparse.ArgumentParser(prog="python -m tmu_jax.report",
                                   description="Merge results.json files into one report.")
  parser.add_argument("results", nargs="+", help="results.json files")
  parser.add_argument("--out", required=True, help="folder for the merged results and report")
  args = parser.parse_args(argv)
  out = merge(args.results, args.out)
  print(f"merged {len(out['runs'])} runs into {args.out}/report.md")


if __name__ == "__main__":
  main()
