"""The TMU paper's tables from results.json runs (METHODS §6): Tables 1–4 and the Fig. 3 data.

Every function takes the ``runs`` list of results.json and returns a markdown string (empty
when the runs hold nothing for it). Values over several seeds of one class are averaged; the
Avg row averages over every run and shows the standard deviation across runs.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

from tmu_jax.report import table

# The paper's method columns (Tables 1–3), then ours; ablation variants go to their own table.
MAIN = ("finetune", "neg_grad", "neg_grad_plus", "random_label", "bad_teacher", "scrub", "salun",
        "tmu", "tmu_plus")
ABLATION = ("tmu", "tmu_twins", "tmu_balanced", "tmu_rate", "tmu_strong", "tmu_plus",
            "tmu_plus_random")
FEATURE_SETS = (("nf+af+cf", "tmu", "tmu_plus"), ("nf", "tmu_nf", "tmu_plus_nf"),
                ("af", "tmu_af", "tmu_plus_af"), ("cf", "tmu_cf", "tmu_plus_cf"))


def _values(runs: list[dict], method: str, key: str) -> list[float]:
  out = []
  for r in runs:
    m = r["gold"] if method == "gold" else r.get("methods", {}).get(method)
    v = None if m is None else m.get(key)
    if isinstance(v, (int, float)) and not math.isnan(v):
      out.append(float(v))
  return out


def _mean(vals: list[float], digits: int = 1) -> str:
  return f"{np.mean(vals):.{digits}f}" if vals else "–"


def _mean_std(vals: list[float], digits: int = 1) -> str:
  if not vals:
    return "–"
  return f"{np.mean(vals):.{digits}f} ± {np.std(vals):.{digits}f}"


def _by_class(runs: list[dict]) -> dict[int, list[dict]]:
  groups = defaultdict(list)
  for r in runs:
    groups[r["forget_class"]].append(r)
  return dict(sorted(groups.items()))


def _present(runs: list[dict], names) -> list[str]:
  return [n for n in names if any(n in r.get("methods", {}) for r in runs)]


def accuracy_table(runs: list[dict]) -> str:
  """Tables 1–2: per class, gold "Acc_test | Acc_Df", then per method "Acc_test | Acc_Df; Δ"."""
  methods = _present(runs, MAIN)
  if not runs or not methods:
    return ""
  header = ["class", "gold"] + methods
  rows = []

  def cell(group, m):
    t, f = _values(group, m, "acc_test"), _values(group, m, "acc_forget")
    base = f"{_mean(t)} \\| {_mean(f)}"
    return base if m == "gold" else f"{base}; {_mean(_values(group, m, 'gap'))}"

  for cls, group in _by_class(runs).items():
    rows.append([str(cls)] + [cell(group, m) for m in ["gold"] + methods])
  rows.append(["**Avg**"] + [f"**{cell(runs, m)}**" for m in ["gold"] + methods])
  spread = ["Δ std across runs", ""] + [_mean_std(_values(runs, m, "gap")).split(" ± ")[-1]
                                        if _values(runs, m, "gap") else "–" for m in methods]
  rows.append(spread)
  return table(header, rows)


def metric_table(runs: list[dict], key: str, digits: int = 3, with_gold: bool = False) -> str:
  """Table 3 style: one metric (e.g. act_dist_l2) per class × method, and the Avg ± std;
  ``with_gold`` adds the gold model's own value as the first column (e.g. for MIA)."""
  methods = (["gold"] if with_gold else []) + _present(runs, MAIN)
  if not runs or not methods or not any(_values(runs, m, key) for m in methods):
    return ""
  rows = [[str(c)] + [_mean(_values(g, m, key), digits) for m in methods]
          for c, g in _by_class(runs).items()]
  rows.append(["**Avg**"] + [_mean_std(_values(runs, m, key), digits) for m in methods])
  return table(["class"] + methods, rows)


def summary_table(runs: list[dict], names) -> str:
  """Mean ± std over runs of the alignment metrics, one row per method."""
  names = _present(runs, names)
  if not names:
    return ""
  keys = ("gap", "agreement", "act_dist_l2", "acc_test", "acc_forget", "label_acc", "pred_hard")
  rows = []
  for n in names:
    rows.append([n] + [_mean_std(_values(runs, n, k), 3 if k == "act_dist_l2" else 1)
                       for k in keys])
  return table(["method", "gap Δ", "agreement", "act_dist_l2", "Acc_test", "Acc_Df",
                 "label acc", "pred. hard"], rows)


def twin_table(runs: list[dict]) -> str:
  """The twin problem beside the original one (§2.1 check): M_t must memorize D_t as M_o
  memorizes D_f; the twin hard rate is what gold-free TMU+ aims its hard count at."""
  names = _present(runs, ("tmu", "tmu_plus"))
  rows = []
  for n in names:
    rows.append([n, _mean_std(_values(runs, n, "twin_acc_mt")),
                 _mean_std(_values(runs, n, "orig_acc_mo_df")),
                 _mean_std(_values(runs, "gold", "acc_forget")),
                 _mean_std(_values(runs, n, "twin_hard_rate")),
                 _mean_std([100.0 - v for v in _values(runs, "gold", "acc_forget")]),
                 _mean_std(_values(runs, n, "pred_hard")),
                 _mean_std(_values(runs, n, "twin_auc"), 2)])
  if not rows:
    return ""
  return table(["method", "M_t acc on D_t", "M_o acc on D_f", "gold acc on D_f",
                 "twin hard rate %", "gold hard rate %", "predicted hard (count)",
                 "twin AUC"], rows)


def feature_table(runs: list[dict]) -> str:
  """Table 4: generalization-label accuracy (and gap) per feature subset, TMU and TMU+."""
  rows = []
  for label, faithful, plus in FEATURE_SETS:
    cells = []
    for name in (faithful, plus):
      cells += [_mean_std(_values(runs, name, "label_acc")), _mean_std(_values(runs, name, "gap"))]
    if any(c != "–" for c in cells):
      rows.append([label] + cells)
  if not rows:
    return ""
  return table(["features", "tmu label acc", "tmu Δ", "tmu_plus label acc", "tmu_plus Δ"], rows)


def forget_size_table(runs: list[dict]) -> str:
  """Fig. 3 data: per |D_f|, each method's gap and TMU's label accuracy (mean over runs)."""
  sizes = sorted({r["forget_size"] for r in runs})
  if len(sizes) < 2:
    return ""
  methods = _present(runs, MAIN)
  rows = []
  for s in sizes:
    group = [r for r in runs if r["forget_size"] == s]
    row = [str(s), _mean(_values(group, "gold", "acc_forget"))]
    for m in methods:
      cell = _mean(_values(group, m, "gap"))
      if _values(group, m, "label_acc"):
        cell += f" (label acc {_mean(_values(group, m, 'label_acc'))})"
      row.append(cell)
    rows.append(row)
  return table(["|D_f|", "gold Acc_Df"] + [f"{m} Δ" for m in methods], rows)


def markdown(runs: list[dict]) -> str:
  """Every table the runs support, with headings; '' if none."""
  subclass = [r for r in runs if r.get("scenario", "subclass") != "instance"]
  if not subclass:
    return ""
  base = min(r["forget_size"] for r in subclass)
  main = [r for r in subclass if r["forget_size"] == base]
  parts = []
  for title, text in (
      (f"Tables 1–2 layout: Acc_test \\| Acc_Df; Δ (|D_f| = {base})", accuracy_table(main)),
      ("Table 3 layout: activation distance ‖softmax(M_u) − softmax(M_g)‖₂ on D_f",
       metric_table(main, "act_dist_l2")),
      ("Per-sample agreement with gold on D_f (%)", metric_table(main, "agreement", 1)),
      ("MIA: % of D_f predicted member (gold's own value first)",
       metric_table(main, "mia", 1, with_gold=True)),
      ("TMU twin problem beside the original problem", twin_table(main)),
      ("TMU ablation: which change buys what (mean ± std over runs)",
       summary_table(main, ABLATION)),
      ("Table 4 layout: generalization-label accuracy by feature subset",
       feature_table(main)),
      ("Fig. 3 data: gap against |D_f|", forget_size_table(subclass))):
    if text:
      parts += [f"## {title}", text]
  return "\n\n".join(parts)
