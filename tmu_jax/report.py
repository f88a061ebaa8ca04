"""results.json (DESIGN.md schema) and a readable report.md."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

COLUMNS = ("acc_test", "acc_retain", "acc_forget", "gap", "agreement", "act_dist_l2",
           "act_dist_l1", "mia", "zrf", "label_acc", "steps", "time_s")


def _fmt(v, digits: int = 2) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "–"
  if isinstance(v, (int, float, np.floating)):
    return f"{v:.{3 if abs(v) < 1 and v != 0 else digits}f}"
  return str(v)


def models_of(run: dict) -> dict[str, dict]:
  """gold, original, then every method of a run, in that order."""
  return {"gold": run["gold"], "original": run["original"], **run.get("methods", {})}


def table(header: list[str], rows: list[list[str]]) -> str:
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  return "\n".join(lines)


def run_table(run: dict) -> str:
  """One row per model of one run, over the metric columns that any model has."""
  models = models_of(run)
  cols = [c for c in COLUMNS if any(c in m for m in models.values())]
  rows = [[name] + [_fmt(m.get(c)) for c in cols] + [m.get("note", "")]
          for name, m in models.items()]
  return table(["model"] + list(cols) + ["note"], rows)


def mean_std_table(runs: list[dict]) -> str:
  """Mean ± std over runs of every model's metrics."""
  names: list[str] = []
  for r in runs:
    names += [n for n in models_of(r) if n not in names]
  cols = [c for c in COLUMNS if any(c in m for r in runs for m in models_of(r).values())
          and c != "time_s"]
  rows = []
  for name in names:
    row = [name]
    for c in cols:
      vals = [models_of(r)[name].get(c) for r in runs if name in models_of(r)]
      vals = [v for v in vals if isinstance(v, (int, float)) and not math.isnan(v)]
      row.append(f"{np.mean(vals):.2f} ± {np.std(vals):.2f}" if vals else "–")
    rows.append(row)
  return table(["model"] + cols, rows)


def markdown(results: dict) -> str:
  runs = results["runs"]
  cfg = results["config"]
  parts = [f"# Unlearning report: {cfg['data']['name']}, {cfg['model']['name']}, "
           f"scenario {cfg['data']['scenario']}",
           f"{len(runs)} run(s); total wall time {results['timing']['total_s']:.0f} s. "
           "Accuracies in %; gap = |Acc_Df − gold Acc_Df| in points; agreement = % of D_f "
           "whose correctness matches gold's; act_dist = mean ‖softmax − gold softmax‖ on D_f."]
  if len(runs) > 1:
    parts += ["## Mean ± std over runs", mean_std_table(runs)]
  for r in runs:
    parts += [f"## class {r['forget_class']}, seed {r['seed']}, |D_f| = {r['forget_size']}",
              run_table(r)]
    if r.get("extra_md"):
      parts.append(r["extra_md"])
  if results.get("plots"):
    parts += ["## Plots", "\n".join(f"![{os.path.basename(p)}]({p})" for p in results["plots"])]
  return "\n\n".join(parts) + "\n"


def write(workdir: str, results: dict[str, Any]) -> None:
  """Writes ``results.json`` and ``report.md`` atomically into ``workdir``."""
  from tmu_jax import plots  # pylint: disable=import-outside-toplevel
  results["plots"] = [os.path.relpath(p, workdir) for p in plots.write_all(workdir, results)]
  _atomic(os.path.join(workdir, "results.json"), json.dumps(results, indent=1, default=float))
  _atomic(os.path.join(workdir, "report.md"), markdown(results))


def _atomic(path: str, text: str) -> None:
  tmp = path + ".tmp"
  with open(tmp, "w") as f:
    f.write(text)
  os.replace(tmp, path)


def merge(paths: list[str], workdir: str) -> dict[str, Any]:
  """Merges several results.json (e.g. one per seed, run on different machines) into one
  results.json + report.md in ``workdir``; runs keep their order, timings add up."""
  merged = None
  for p in paths:
    with open(p) as f:
      r = json.load(f)
    if merged is None:
      merged = dict(config=r["config"], runs=[], timing=dict(total_s=0.0), sources=[])
    for run in r["runs"]:  # keep pointers to per-run files valid from the new folder
      for m in run.get("methods", {}).values():
        if m.get("features_file"):
          m["features_file"] = os.path.join(os.path.dirname(os.path.abspath(p)),
                                            m["features_file"])
    merged["runs"] += r["runs"]
    merged["timing"]["total_s"] += r["timing"]["total_s"]
    merged["sources"].append(os.path.abspath(p))
  os.makedirs(workdir, exist_ok=True)
  write(workdir, merged)
  return merged


if __name__ == "__main__":
  import argparse
  parser = argparse.ArgumentParser(description="Merge results.json files into one report.")
  parser.add_argument("results", nargs="+", help="results.json files")
  parser.add_argument("--out", required=True, help="folder for the merged results and report")
  args = parser.parse_args()
  out = merge(args.results, args.out)
  print(f"merged {len(out['runs'])} runs into {args.out}/report.md")
