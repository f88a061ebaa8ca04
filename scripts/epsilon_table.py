"""Recomputes the ε table of docs/results/fashion_mnist_epsilon.md from a results.json (.gz).

For every row: F (forgetting quality) with its standard error over the forget examples, the
final score, Avg. Gap, agreement and its floors, RTE; and, paired over the forget examples, each
row's points minus a reference row's (default tmu_plus): mean difference ± s.e. and a two-sided
sign test. With several runs (``epsilon3``: one per class) it ends with the pooled table: F per
run and its mean, and the points paired over every forget example of every run, with the number
of runs each row beats the reference in. Several files (runs of one config made in separate
workdirs, e.g. one class each) are read as one list of runs; the pooled table keeps the rows that
every run has. Usage::

    python scripts/epsilon_table.py docs/results/data/fashion_mnist_epsilon.results.json.gz
    python scripts/epsilon_table.py docs/results/data/fashion_mnist_epsilon3.results.json.gz
    python scripts/epsilon_table.py \
        docs/results/data/fashion_mnist_epsilon_full_c6.results.json.gz \
        docs/results/data/fashion_mnist_epsilon_full_c4.results.json.gz
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from tmu_jax.evaluation import epsilon as eps_lib
from tmu_jax.evaluation.paired import sign_test
from tmu_jax.report.write import read_results


def rows(run: dict) -> dict[str, dict]:
  out = {"retrain (gold, held-out half)": run["gold"], "original": run["original"]}
  out.update(run["methods"])
  return {k: v for k, v in out.items() if "epsilon" in v}


def main() -> None:
  ap = argparse.ArgumentParser()
  ap.add_argument("results", nargs="+", help="results.json (.gz) files; their runs in order")
  ap.add_argument("--reference", default="tmu_plus")
  args = ap.parse_args()
  runs = [run for path in args.results for run in read_results(path)["runs"]]
  pooled: dict[str, list[np.ndarray]] = {}
  for run in runs:
    s = run["epsilon_settings"]
    settings = eps_lib.EpsilonSettings(grid_per_unit=s["grid_per_unit"], delta=s["delta"],
                                       bin_width=s["bin_width"], max_epsilon=s["max_epsilon"],
                                       cap=s["cap"], point_mass_ratio=s["point_mass_ratio"])
    table = rows(run)
    points = {k: eps_lib.epsilon_points(np.asarray(v["epsilon"]["eps"]), settings)
              for k, v in table.items()}
    ref = points.get(args.reference)
    for k, p in points.items():
      pooled.setdefault(k, []).append(p)
    print(f"class {run['forget_class']}, seed {run['seed']}: N = {s['n']} models a side, "
          f"G = {run['gold_models']} gold, |D_f| = {run['forget_size']}")
    print(f"| row | F ± s.e. | final score | Avg. Gap | agreement (floors) | RTE | "
          f"points − {args.reference} (paired, ± s.e.) | sign test p |")
    print("|---|---|---|---|---|---|---|---|")
    order = sorted(table, key=lambda k: -table[k]["epsilon"]["final_score"])
    for k in order:
      v, p = table[k], points[k]
      se = p.std(ddof=1) / math.sqrt(p.size)
      agree = v.get("vs_gold", {}).get("agreement", {})
      floors = v.get("floors_away", {}).get("agreement")
      rte = v.get("rte")
      paired, pval = (paired_cells(p - ref) if ref is not None and k != args.reference
                      else ("–", "–"))
      print(f"| {k} | {p.mean():.3f} ± {se:.3f} | {v['epsilon']['final_score']:.3f} | "
            f"{v.get('avg_gap', float('nan')):.2f} | "
            f"{agree.get('mean', float('nan')):.1f} ({'–' if floors is None else f'{floors:.1f}'})"
            f" | {'–' if rte is None else f'{rte:.3f}'} | {paired} | {pval} |")
    print()
  if len(runs) > 1:
    print_pooled(pooled, [f"c{r['forget_class']}/s{r['seed']}" for r in runs], args.reference)


def paired_cells(d: np.ndarray) -> tuple[str, str]:
  """("mean ± s.e.", "sign-test p") of paired per-example point differences ``d``."""
  return f"{d.mean():+.3f} ± {d.std(ddof=1) / math.sqrt(d.size):.3f}", f"{sign_test(d):.2g}"


def print_pooled(pooled: dict[str, list[np.ndarray]], names: list[str], reference: str) -> None:
  """F per run, its mean over runs, and the points − reference paired over all examples."""
  rows_ = {k: v for k, v in pooled.items() if len(v) == len(names)}
  ref = rows_.get(reference)
  print(f"Pooled over {len(names)} runs ({', '.join(names)}): F per run, mean F, and points − "
        f"{reference} paired over every forget example of every run")
  print(f"| row | {' | '.join('F ' + n for n in names)} | mean F | points − {reference} "
        f"(± s.e.) | runs above {reference} | sign test p |")
  print("|---|" + "---|" * (len(names) + 4))
  order = sorted(rows_, key=lambda k: -np.mean([p.mean() for p in rows_[k]]))
  for k in order:
    fs = [p.mean() for p in rows_[k]]
    cells = " | ".join(f"{f:.3f}" for f in fs)
    paired, above, pval = "–", "–", "–"
    if ref is not None and k != reference:
      paired, pval = paired_cells(np.concatenate([p - r for p, r in zip(rows_[k], ref)]))
      above = f"{sum(p.mean() > r.mean() for p, r in zip(rows_[k], ref))} / {len(names)}"
    print(f"| {k} | {cells} | {np.mean(fs):.3f} | {paired} | {above} | {pval} |")


if __name__ == "__main__":
  main()
