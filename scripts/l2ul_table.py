"""Recomputes the L2UL study tables (docs/results/l2ul_study.md, docs/selection.md) from committed
results.json(.gz) files of ``configs/l2ul_fashion_mnist.py:{dev,baseline_dev,report}``.

A *draw* is one (seed, k): its own M_o and D_f. Its goal (issue 11): Acc_Df = 0 and
Acc_test ≥ Acc_test(M_o) − 5. Printed, per method and k: the goal count over draws, mean and
worst Δ = Acc_test − Acc_test(M_o), mean Acc_Df, how many draws stopped at the step cap; and,
with ``--against``, paired over draws of each k, the reference method's Δ against every other
method's (mean difference, wins/ties/losses, two-sided sign test; a comparison where either side
kept forget images is flagged, since it is not at equal forgetting). With ``--relabel`` (relabel
mode), "Acc_Df" reads as the % of D_f *not* at its requested label (100 − relabel accuracy), so
the goal is every image relabelled and Acc_test ≥ Acc_test(M_o) − 5.

Usage::

    python scripts/l2ul_table.py docs/results/data/l2ul_dev.results.json.gz --select levers
    python scripts/l2ul_table.py docs/results/data/l2ul_baseline_dev.results.json.gz \
        --select baselines
    python scripts/l2ul_table.py docs/results/data/l2ul_report.results.json.gz --against l2ul
    python scripts/l2ul_table.py docs/results/data/l2ul_relabel_dev.results.json.gz --relabel \
        --select levers
    python scripts/l2ul_table.py --continual \
        tuned=docs/results/data/l2ul_continual_tuned.results.json.gz \
        untuned=docs/results/data/l2ul_continual_untuned.results.json.gz
"""

from __future__ import annotations

import argparse
import collections

import numpy as np

from tmu_jax.evaluation.paired import sign_test
from tmu_jax.report.write import read_results

GOAL_POINTS = 5.0


def draws(results: dict, relabel: bool = False) -> dict:
  """{(method, k): {seed: (Δ test, left, stopped)}} over every run of ``results``; left is
  Acc_Df, or with ``relabel`` the % of D_f not at its requested label."""
  out = collections.defaultdict(dict)
  for run in results["runs"]:
    k = run.get("forget_size")
    base = run["original"]["acc_test"]
    for name, row in run["methods"].items():
      if "acc_test" not in row:
        continue
      if relabel and "relabel_acc" not in row:
        raise ValueError(f"{name} has no relabel_acc: not a relabel-mode run (drop --relabel)")
      left = 100.0 - row["relabel_acc"] if relabel else row["acc_forget"]
      out[(name, k)][run["seed"]] = (row["acc_test"] - base, left, row.get("stopped", ""))
  return out


def meets(delta: float, forget: float) -> bool:
  return forget == 0.0 and delta >= -GOAL_POINTS


def table(d: dict, left: str = "mean Acc_Df") -> list[str]:
  """Per (method, k); ``left`` names the column of what is left (Acc_Df, or not relabelled)."""
  lines = [f"| k | method | draws | goal met | mean Δ test | worst Δ | {left} | at step cap |",
           "|---|---|---|---|---|---|---|---|"]
  for (name, k) in sorted(d, key=lambda t: (t[1], t[0])):
    v = list(d[(name, k)].values())
    delta = np.array([x[0] for x in v])
    forget = np.array([x[1] for x in v])
    met = sum(meets(a, b) for a, b in zip(delta, forget))
    cap = sum(x[2] == "max_steps" for x in v)
    lines.append(f"| {k} | {name} | {len(v)} | {met}/{len(v)} | {delta.mean():+.1f} | "
                 f"{delta.min():+.1f} | {forget.mean():.1f} | {cap} |")
  return lines


def selection(d: dict, forget_first: bool, left: str = "mean Acc_Df") -> list[str]:
  """docs/selection.md's rules: the most draws meeting the goal over every k, then the higher
  mean Δ test (L2UL levers); with ``forget_first`` (baselines), ties go to the lower mean Acc_Df
  before the mean Δ."""
  per = collections.defaultdict(list)
  for (name, _), v in d.items():
    per[name].extend(v.values())
  score = {n: (sum(meets(a, b) for a, b, _ in v), -np.mean([b for _, b, _ in v]),
               np.mean([a for a, _, _ in v]), len(v)) for n, v in per.items()}
  lines = [f"| rank | method | goal met | {left} | mean Δ test |", "|---|---|---|---|---|"]
  for i, (n, (met, neg_forget, delta, count)) in enumerate(
      sorted(score.items(), key=lambda t: (-t[1][0], -t[1][1] if forget_first else 0,
                                           -t[1][2]))):
    lines.append(f"| {i + 1} | {n} | {met}/{count} | {-neg_forget:.1f} | {delta:+.2f} |")
  return lines


def paired(d: dict, ref: str) -> list[str]:
  lines = ["| k | reference − other | mean Δ difference | wins/ties/losses | sign test p | "
           "equal forgetting | on draws both forgot all: n, mean, w/t/l, p |",
           "|---|---|---|---|---|---|---|"]
  for (name, k) in sorted(d, key=lambda t: (t[1], t[0])):
    if name == ref or (ref, k) not in d:
      continue
    a, b = d[(ref, k)], d[(name, k)]
    seeds = sorted(set(a) & set(b))
    diff = np.array([a[s][0] - b[s][0] for s in seeds])
    equal = all(a[s][1] == 0 and b[s][1] == 0 for s in seeds)
    w, t, l = int((diff > 0).sum()), int((diff == 0).sum()), int((diff < 0).sum())
    both = np.array([a[s][1] == 0 and b[s][1] == 0 for s in seeds])
    sub = diff[both]
    restricted = (f"{sub.size}, {sub.mean():+.1f}, {int((sub > 0).sum())}/{int((sub == 0).sum())}"
                  f"/{int((sub < 0).sum())}, {sign_test(sub):.3g}" if sub.size else "0")
    lines.append(f"| {k} | {ref} − {name} | {diff.mean():+.1f} | {w}/{t}/{l} | "
                 f"{sign_test(diff):.3g} | {'yes' if equal else 'no: one side kept D_f images'} | "
                 f"{restricted} |")
  return lines


def continual(results: dict, label: str) -> list[str]:
  """Continual rounds: per case and round, mean over seeds of Acc_test and (in brackets) of the
  accuracy on every forget set so far (``acc_forget_all``: relapse of earlier rounds)."""
  d = collections.defaultdict(lambda: collections.defaultdict(list))
  for run in results["runs"]:
    for name, row in run["methods"].items():
      d[name][run["round"]].append((row["acc_test"], row.get("acc_forget_all", row["acc_forget"])))
  out = []
  for name in sorted(d):
    cells = [f"{np.mean([a for a, _ in d[name][r]]):.1f} ({np.mean([b for _, b in d[name][r]]):.0f})"
             for r in sorted(d[name])]
    out.append(f"| {name} | {label} | " + " | ".join(cells) + " |")
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("results", nargs="+")
  parser.add_argument("--against", default="", help="reference method for the paired table")
  parser.add_argument("--select", choices=("", "levers", "baselines"), default="",
                      help="rank methods by docs/selection.md's rule for L2UL levers or baselines")
  parser.add_argument("--relabel", action="store_true",
                      help="relabel mode: the goal counts D_f images not at the requested label")
  parser.add_argument("--continual", action="store_true",
                      help="continual rounds; each path may be LABEL=PATH")
  args = parser.parse_args()
  if args.continual:
    rows = []
    for spec in args.results:
      label, _, path = spec.rpartition("=")
      rows += continual(read_results(path), label or path)
    rounds = max(len(r.split("|")) for r in rows) - 4
    print("| case | run | " + " | ".join(f"round {i + 1}" for i in range(rounds)) + " |")
    print("|---|---|" + "---|" * rounds)
    print("\n".join(rows))
    return
  d = {}
  for path in args.results:
    try:
      d.update(draws(read_results(path), relabel=args.relabel))
    except ValueError as e:
      parser.error(f"{path}: {e}")
  left = "mean % not relabelled" if args.relabel else "mean Acc_Df"
  print("\n".join(table(d, left)))
  if args.select:
    print()
    print("\n".join(selection(d, forget_first=args.select == "baselines", left=left)))
  if args.against:
    print()
    print("\n".join(paired(d, args.against)))


if __name__ == "__main__":
  main()
