"""results.json (DESIGN.md schema) and a readable report.md."""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np

COLUMNS = ("acc_test", "acc_retain", "acc_forget", "gap", "agreement", "act_dist_l2",
           "act_dist_l1", "mia", "zrf", "label_acc", "relabel_acc", "steps", "time_s")


def _fmt(v, digits: int = 2) -> str:
  if v is None or (isinstance(v, float) and math.isnan(v)):
    return "–"
  if isinstance(v, (bool, np.bool_)):
    return str(bool(v))
  if isinstance(v, (int, np.integer)):
    return str(v)
  if isinstance(v, (float, np.floating)):
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
  instance = [r for r in runs if r.get("scenario") == "instance"]
  if instance:  # L2UL (METHODS §3, §6)
    parts += l2ul_sections(instance)
  from tmu_jax import paper_tables  # pylint: disable=import-outside-toplevel  (it uses table)
  paper = paper_tables.markdown(runs)
  if paper:
    parts.append(paper)
  if len(runs) > 1:
    parts += ["## Mean ± std over runs", mean_std_table(runs)]
  for r in runs:
    title = f"## class {r['forget_class']}, seed {r['seed']}, |D_f| = {r['forget_size']}"
    if r.get("scenario") == "instance":  # forget_class only picks the instance draw there
      title = f"## draw {r['forget_class']}, seed {r['seed']}, k = {r['forget_size']}" + (
          f", round {r['round']}" if "round" in r else "")
    parts += [title, run_table(r)]
    if r.get("extra_md"):
      parts.append(r["extra_md"])
  if results.get("plots"):
    parts += ["## Plots", "\n".join(f"![{os.path.basename(p)}]({p})" for p in results["plots"])]
  return "\n\n".join(parts) + "\n"


def instance_table(runs: list[dict]) -> str:
  """L2UL k × case table (METHODS §6): one row per (k, case) with Acc_Df, Acc_Dr, Acc_test
  (relabel mode: % at the requested label), steps, time and how the loop stopped; several runs
  of one k (draws or seeds) give mean ± std and the count of each stop reason."""
  rows = []
  for k in sorted({r.get("k", r["forget_size"]) for r in runs}):
    group = [r for r in runs if r.get("k", r["forget_size"]) == k]
    names = list(dict.fromkeys(n for r in group for n in ["original", *r.get("methods", {})]))
    for name in names:
      ms = [r["original"] if name == "original" else r["methods"].get(name, {}) for r in group]
      cells = []
      for c in ("acc_forget", "acc_retain", "acc_test", "relabel_acc", "steps", "time_s"):
        vals = [m[c] for m in ms if isinstance(m.get(c), (int, float))]
        if len(vals) > 1:
          cells.append(f"{np.mean(vals):.1f} ± {np.std(vals):.1f}")
        else:
          cells.append(_fmt(vals[0]) if vals else "–")
      stops = [str(m["stopped"]) for m in ms if m.get("stopped")]
      stopped = ", ".join(f"{s} ×{stops.count(s)}" if len(ms) > 1 else s
                          for s in dict.fromkeys(stops))
      notes = "; ".join(dict.fromkeys(m["note"] for m in ms if m.get("note")))
      rows.append([str(k), name] + cells + [stopped, notes])
  return table(["k", "case", "Acc_Df", "Acc_Dr", "Acc_test", "relabel", "steps", "time_s",
                "stopped", "note"], rows)


def continual_table(runs: list[dict]) -> str:
  """Continual unlearning: per method and round, accuracy on every forget set so far."""
  rows = []
  names = list(dict.fromkeys(n for r in runs for n in ["original", *r.get("methods", {})]))
  for name in names:
    for r in sorted(runs, key=lambda r: r["round"]):
      m = r["original"] if name == "original" else r["methods"].get(name, {})
      per = " / ".join(_fmt(v, 0) for v in m.get("acc_forget_rounds", []))
      rows.append([name, str(r["round"]), per, _fmt(m.get("acc_forget_all")),
                   _fmt(m.get("acc_retain")), _fmt(m.get("acc_test")), _fmt(m.get("steps")),
                   m.get("note", "")])
  return table(["case", "round", "Acc on D_f of rounds 1…r", "mean", "Acc_Dr", "Acc_test",
                "steps", "note"], rows)


def l2ul_sections(runs: list[dict]) -> list[str]:
  """Markdown sections for instance-scenario runs: the k × case table, the continual table."""
  single = [r for r in runs if "round" not in r]
  rounds = [r for r in runs if "round" in r]
  mode = runs[0].get("mode", "misclassify")
  parts = []
  if single:
    draws = len(single) // len({r["forget_size"] for r in single})
    parts += [f"## L2UL: k × case (mode {mode})",
              "Acc_Df = % of D_f still predicted as its true label; relabel = % of D_f at "
              "its requested label (relabel mode); steps = unlearning steps taken; "
              "time_s excludes compilation." + (f" Mean ± std over {draws} forget-set draws."
                                                if draws > 1 else ""), instance_table(single)]
  if rounds:
    parts += [f"## Continual unlearning: {max(r['round'] for r in rounds)} rounds of k = "
              f"{rounds[0]['k']}", continual_table(rounds)]
  return parts


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


def run_key(run: dict) -> tuple:
  """What identifies one run across results files."""
  return tuple(run.get(k) for k in ("dataset", "arch", "scenario", "forget_class",
                                     "forget_size", "seed", "round"))


def merge(paths: list[str], workdir: str) -> dict[str, Any]:
  """Merges several results.json into one results.json + report.md in ``workdir``.

  Runs of different (dataset, arch, scenario, class, size, seed, round) are concatenated in
  order (e.g. one seed per machine); a run present in several files (e.g. extra methods run
  later on the same cached models) gets the union of their methods, later files winning.
  Timings add up.
  """
  merged, index = None, {}
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
