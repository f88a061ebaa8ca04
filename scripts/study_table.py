"""Recomputes the study tables of docs/results/fashion_mnist.md from a committed results.json(.gz).

Every number is read against the gold ensemble of its own run (``vs_gold``: the mean over the G
gold models) and its gold-vs-gold floor (``floor``: over the G(G−1)/2 gold pairs). Printed:

1. one row per method (and ``original``): mean ± s.e. over runs of gap Δ, agreement, activation
   distance, MIA, Avg. Gap and RTE, with the floor row on top;
2. paired over runs, the reference (default ``tmu_plus``) against every other row: the mean
   difference ± s.e., wins/ties/losses, the two-sided sign test and the paired t statistic, and
   whether the mean difference is larger than the floor's spread (the mean over runs of the
   gold-vs-gold std), which is issue 11's bar.

Usage::

    python scripts/study_table.py docs/results/data/fashion_mnist_study.results.json.gz
    python scripts/study_table.py FILE --rte-skip 8:0     # RTE without class 8, seed 0
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from tmu_jax.evaluation.paired import sign_test
from tmu_jax.report.write import read_results, run_key

# metric name -> (how to read it from a row, floor key, True if higher is better)
METRICS = {
    "gap": (lambda r: r["vs_gold"]["gap"]["mean"], "gap", False),
    "agreement": (lambda r: r["vs_gold"]["agreement"]["mean"], "agreement", True),
    "act_dist_l2": (lambda r: r["vs_gold"]["act_l2"]["mean"], "act_l2", False),
}


def rows_of(run: dict) -> dict[str, dict]:
  """The run's compared rows: original and every method that finished with a gold comparison."""
  out = {"original": run["original"]}
  out.update({k: v for k, v in run["methods"].items() if "vs_gold" in v})
  return out


def mean_se(values: list[float]) -> str:
  a = np.asarray([v for v in values if v is not None and np.isfinite(v)], float)
  if a.size == 0:
    return "–"
  digits = 3 if abs(a.mean()) < 1 else 1
  if a.size == 1:
    return f"{a.mean():.{digits}f}"
  return f"{a.mean():.{digits}f} ± {a.std(ddof=1) / math.sqrt(a.size):.{digits}f}"


def summary(runs: list[dict], rte_skip: frozenset = frozenset()) -> list[str]:
  """The per-row table; ``rte_skip``: (class, seed) pairs whose RTE is left out of its column
  (a run whose gold training time was not measured whole)."""
  names = list(rows_of(runs[0]))
  out = [f"{len(runs)} runs; mean ± s.e. over runs; every metric against the run's own gold "
         "ensemble (mean over its G models)", "",
         "| row | gap Δ | agreement | act. dist. L2 | MIA | Avg. Gap | RTE | agreement floors away |",
         "|---|---|---|---|---|---|---|---|"]
  floor = lambda k: [r["floor"][k]["mean"] for r in runs]
  spread = lambda k: [r["floor"][k]["std"] for r in runs]
  out.append(f"| gold vs gold (floor mean; its spread) | {mean_se(floor('gap'))} "
             f"({np.mean(spread('gap')):.1f}) | {mean_se(floor('agreement'))} "
             f"({np.mean(spread('agreement')):.1f}) | {mean_se(floor('act_l2'))} "
             f"({np.mean(spread('act_l2')):.3f}) | {mean_se([r['gold']['mia'] for r in runs])} "
             "| – | 1 (M_g) | – |")
  for name in names:
    kept = [r for r in runs if rows_of(r).get(name) is not None]
    got = [rows_of(r)[name] for r in kept]
    cells = [mean_se([m[0](g) for g in got]) for m in METRICS.values()]
    cells += [mean_se([g.get("mia") for g in got]), mean_se([g.get("avg_gap") for g in got]),
              mean_se([g.get("rte") for g, r in zip(got, kept)
                       if (r["forget_class"], r["seed"]) not in rte_skip]),
              mean_se([g.get("floors_away", {}).get("agreement") for g in got])]
    missing = f" ({len(runs) - len(got)} runs failed)" if len(got) < len(runs) else ""
    out.append(f"| {name}{missing} | " + " | ".join(cells) + " |")
  return out


def paired(runs: list[dict], reference: str) -> list[str]:
  out = [f"Paired over runs: {reference} minus each row (positive = {reference} better, "
         "i.e. signs flipped for gap and activation distance). 'beyond floor' = the mean "
         "difference exceeds the mean gold-vs-gold spread of that metric.", "",
         "| row | metric | mean diff ± s.e. | wins / ties / losses | sign test p | paired t | "
         "beyond floor | goal: beyond floor and p < 0.05 |", "|---|---|---|---|---|---|---|---|"]
  verdicts: dict[str, list[str]] = {}
  for name in rows_of(runs[0]):
    if name == reference:
      continue
    for metric, (read, floor_key, higher) in METRICS.items():
      d, spreads = [], []
      for r in runs:
        rows = rows_of(r)
        if reference in rows and name in rows:
          diff = read(rows[reference]) - read(rows[name])
          d.append(diff if higher else -diff)
          spreads.append(r["floor"][floor_key]["std"])
      d = np.asarray(d)
      if d.size < 2:
        continue
      se = d.std(ddof=1) / math.sqrt(d.size)
      t = d.mean() / se if se > 0 else float("inf") * np.sign(d.mean())
      fmt = ".3f" if metric == "act_dist_l2" else ".1f"
      beyond = d.mean() > np.mean(spreads)
      met = beyond and sign_test(d) < 0.05
      if not is_oracle(name):
        verdicts.setdefault(metric, []).append(f"{name} {'met' if met else 'NOT met'}")
      out.append(f"| {name} | {metric} | {d.mean():+{fmt}} ± {se:{fmt}} | {(d > 0).sum()} / "
                 f"{(d == 0).sum()} / {(d < 0).sum()} | {sign_test(d):.2g} | {t:+.1f} | "
                 f"{'yes' if beyond else 'no'} | {'met' if met else 'not met'} |")
  out += ["", f"Goal per metric ({reference} against every non-oracle row):"]
  out += [f"- {metric}: " + ", ".join(v) for metric, v in verdicts.items()]
  return out


def is_oracle(name: str) -> bool:
  """A reference row that reads gold (tmu_plus_oracle), never a competitor."""
  return "oracle" in name


def merged(files: list[list[dict]]) -> list[dict]:
  """The runs of several results files, joined by ``report.write.run_key`` (dataset, network,
  class, |D_f|, seed, ...): a later file's methods are added to the same run (a second pass
  over the same cached models, e.g. an oracle)."""
  index: dict[tuple, dict] = {}
  for runs in files:
    for run in runs:
      key = run_key(run)
      if key in index:
        index[key]["methods"].update(run["methods"])
      else:
        index[key] = dict(run, methods=dict(run["methods"]))
  return list(index.values())


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("results", nargs="+", help="results.json(.gz) files; the same run "
                  "(class, |D_f|, seed, ...) in several is joined")
  ap.add_argument("--reference", default="tmu_plus")
  ap.add_argument("--rte-skip", action="append", default=[], metavar="CLASS:SEED",
                  help="leave this run's RTE out of the RTE column (repeatable), e.g. a run "
                       "whose gold model's training time was not measured whole")
  args = ap.parse_args()
  try:
    skip = frozenset(tuple(int(v) for v in spec.split(":")) for spec in args.rte_skip)
  except ValueError:
    skip = frozenset({()})
  if any(len(pair) != 2 for pair in skip):
    ap.error(f"--rte-skip takes CLASS:SEED (two integers), got {args.rte_skip}")
  runs = merged([read_results(path)["runs"] for path in args.results])
  runs = [r for r in runs if "floor" in r]
  if not runs:
    raise SystemExit("error: no run with a gold-ensemble floor (experiment.gold_models >= 2)")
  head = [f"RTE leaves out run(s) class:seed {', '.join(args.rte_skip)}", ""] if skip else []
  print("\n".join(head + summary(runs, skip) + [""] + paired(runs, args.reference)))


if __name__ == "__main__":
  main()
