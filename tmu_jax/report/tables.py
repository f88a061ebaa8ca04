"""The report's tables, each a pure function of results.json's ``runs`` (and, for TMU's
ablation and Table 4, the methods' settings in ``config["methods"]``).

- which methods a table shows: from the ``group`` / ``paper`` keys the experiment writes beside
  each method's metrics, never from method names;
- per-run and mean ± std tables (every model);
- the TMU paper's tables (METHODS §6): Tables 1–4 and the Fig. 3 data. Values over several seeds
  of one class are averaged; the Avg row averages over every run and shows the standard
  deviation across runs;
- the L2UL tables (METHODS §3, §6): k × case and continual unlearning.

Every table returns a markdown string ('' when the runs hold nothing for it).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Mapping

from tmu_jax.report.markdown import DASH, fmt, mean, mean_std, number, numbers, table

COLUMNS = ("acc_test", "acc_retain", "acc_forget", "gap", "agreement", "act_dist_l2",
           "act_dist_l1", "mia", "zrf", "label_acc", "relabel_acc", "steps", "time_s")
GROUPS = ("baseline", "tmu", "l2ul")
MAIN_GROUPS = ("baseline", "tmu")  # the papers' main tables: baselines beside TMU and TMU+

Settings = Mapping[str, Mapping[str, Any]]  # results["config"]["methods"]: name -> section

# ----------------------------------------------------------------------------- which methods


def method_meta(runs: list[dict]) -> dict[str, tuple[str, bool]]:
  """name -> (group, paper) of every method in ``runs``, in order of first appearance.

  Each key comes from the first entry of that method that has it. Results files written before
  the experiment recorded ``group`` and ``paper`` have neither: their methods count as paper
  baselines (every method then shows in the main tables, and the TMU-only tables stay empty).
  """
  found: dict[str, dict[str, Any]] = {}
  for r in runs:
    for name, m in r.get("methods", {}).items():
      seen = found.setdefault(name, {})
      for key in ("group", "paper"):
        if key in m and key not in seen:
          seen[key] = m[key]
  return {name: (str(k.get("group", "baseline")), bool(k.get("paper", True)))
          for name, k in found.items()}


def select(runs: list[dict], groups=GROUPS, paper: bool | None = None) -> list[str]:
  """Methods of ``runs`` in ``groups`` (and with that ``paper`` flag unless None), in order."""
  return [n for n, (g, p) in method_meta(runs).items()
          if g in groups and (paper is None or p == paper)]


def main_methods(runs: list[dict]) -> list[str]:
  """The methods of the main tables: paper baselines and paper TMU methods (Tables 1–3)."""
  return select(runs, MAIN_GROUPS, paper=True)


def cases_first(runs: list[dict]) -> list[str]:
  """L2UL tables' rows: the L2UL cases (group l2ul), then what ran beside them (baselines)."""
  cases = select(runs, ("l2ul",))
  return cases + [n for n in method_meta(runs) if n not in cases]


def features_of(section: Mapping[str, Any] | None) -> str | None:
  """A TMU section's label-classifier feature subset as "nf+af+cf"; None if it has none."""
  f = (section or {}).get("features")
  if f is None:
    return None
  parts = f.split(",") if isinstance(f, str) else list(f)
  return "+".join(str(p).strip() for p in parts if str(p).strip()) or None


def feature_subsets(runs: list[dict], settings: Settings) -> dict[str, tuple[str, str]]:
  """Table 4's cells: TMU method -> (its feature subset, the paper TMU method it varies).

  A paper TMU method (TMU, TMU+) is its own column. Another TMU method joins the column of the
  paper method whose settings it shares in everything but ``features`` (and ``base``, which
  only names the function that runs the section); any other variant is an ablation.
  """
  def rest(name):
    return {k: v for k, v in (settings.get(name) or {}).items() if k not in ("features", "base")}

  papers = [n for n in select(runs, ("tmu",), paper=True) if features_of(settings.get(n))]
  out = {p: (features_of(settings[p]), p) for p in papers}
  for name in select(runs, ("tmu",), paper=False):
    f = features_of(settings.get(name))
    for p in papers:
      if f is not None and f != out[p][0] and rest(name) == rest(p):
        out[name] = (f, p)
        break
  return out


def ablation_methods(runs: list[dict], settings: Settings) -> list[str]:
  """The TMU ablation table's rows: TMU methods, less the feature-subset variants of Table 4."""
  subsets = feature_subsets(runs, settings)
  return [n for n in select(runs, ("tmu",)) if subsets.get(n, (None, n))[1] == n]


# ----------------------------------------------------------------------------- every model


def models_of(run: dict) -> dict[str, dict]:
  """gold, original, then every method of a run, in that order."""
  return {"gold": run["gold"], "original": run["original"], **run.get("methods", {})}


def run_table(run: dict) -> str:
  """One row per model of one run, over the metric columns that any model has."""
  models = models_of(run)
  cols = [c for c in COLUMNS if any(c in m for m in models.values())]
  rows = [[name] + [fmt(m.get(c)) for c in cols] + [m.get("note", "")]
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
      vals = numbers(models_of(r)[name].get(c) for r in runs if name in models_of(r))
      row.append(mean_std(vals, 2))
    rows.append(row)
  return table(["model"] + cols, rows)


# ----------------------------------------------------------------------------- TMU paper (§6)


def _values(runs: list[dict], method: str, key: str) -> list[float]:
  """Finite values of ``key`` for ``method`` ("gold" for M_g) over ``runs``."""
  models = [r["gold"] if method == "gold" else r.get("methods", {}).get(method) for r in runs]
  return numbers(m.get(key) for m in models if m is not None)


def _by_class(runs: list[dict]) -> dict[int, list[dict]]:
  groups = defaultdict(list)
  for r in runs:
    groups[r["forget_class"]].append(r)
  return dict(sorted(groups.items()))


def accuracy_table(runs: list[dict]) -> str:
  """Tables 1–2: per class, gold "Acc_test | Acc_Df", then per method "Acc_test | Acc_Df; Δ"."""
  methods = main_methods(runs)
  if not runs or not methods:
    return ""

  def cell(group, m):
    t, f = _values(group, m, "acc_test"), _values(group, m, "acc_forget")
    base = f"{mean(t)} \\| {mean(f)}"
    return base if m == "gold" else f"{base}; {mean(_values(group, m, 'gap'))}"

  rows = [[str(cls)] + [cell(group, m) for m in ["gold"] + methods]
          for cls, group in _by_class(runs).items()]
  rows.append(["**Avg**"] + [f"**{cell(runs, m)}**" for m in ["gold"] + methods])
  rows.append(["Δ std across runs", ""] + [mean_std(_values(runs, m, "gap")).split(" ± ")[-1]
                                           for m in methods])
  return table(["class", "gold"] + methods, rows)


def metric_table(runs: list[dict], key: str, digits: int = 3, with_gold: bool = False) -> str:
  """Table 3 style: one metric (e.g. act_dist_l2) per class × method, and the Avg ± std;
  ``with_gold`` adds the gold model's own value as the first column (e.g. for MIA)."""
  methods = (["gold"] if with_gold else []) + main_methods(runs)
  if not runs or not methods or not any(_values(runs, m, key) for m in methods):
    return ""
  rows = [[str(c)] + [mean(_values(g, m, key), digits) for m in methods]
          for c, g in _by_class(runs).items()]
  rows.append(["**Avg**"] + [mean_std(_values(runs, m, key), digits) for m in methods])
  return table(["class"] + methods, rows)


def summary_table(runs: list[dict], names: list[str]) -> str:
  """Mean ± std over runs of the alignment metrics, one row per method of ``names``."""
  if not names:
    return ""
  keys = ("gap", "agreement", "act_dist_l2", "acc_test", "acc_forget", "label_acc", "pred_hard")
  rows = [[n] + [mean_std(_values(runs, n, k), 3 if k == "act_dist_l2" else 1) for k in keys]
          for n in names]
  return table(["method", "gap Δ", "agreement", "act_dist_l2", "Acc_test", "Acc_Df",
                "label acc", "pred. hard"], rows)


def twin_table(runs: list[dict]) -> str:
  """The twin problem beside the original one (§2.1 check): M_t must memorize D_t as M_o
  memorizes D_f; the twin hard rate is what gold-free TMU+ aims its hard count at."""
  rows = []
  for n in select(runs, ("tmu",), paper=True):
    rows.append([n, mean_std(_values(runs, n, "twin_acc_mt")),
                 mean_std(_values(runs, n, "orig_acc_mo_df")),
                 mean_std(_values(runs, "gold", "acc_forget")),
                 mean_std(_values(runs, n, "twin_hard_rate")),
                 mean_std([100.0 - v for v in _values(runs, "gold", "acc_forget")]),
                 mean_std(_values(runs, n, "pred_hard")),
                 mean_std(_values(runs, n, "twin_auc"), 2)])
  if not rows:
    return ""
  return table(["method", "M_t acc on D_t", "M_o acc on D_f", "gold acc on D_f",
                "twin hard rate %", "gold hard rate %", "predicted hard (count)",
                "twin AUC"], rows)


def feature_table(runs: list[dict], settings: Settings) -> str:
  """Table 4: generalization-label accuracy (and gap) per feature subset (config ``features``),
  one column pair per paper TMU method (TMU, TMU+) holding it or its feature-subset variant."""
  subsets = feature_subsets(runs, settings)
  columns = list(dict.fromkeys(p for _, p in subsets.values()))
  cells = {}
  for name, key in subsets.items():
    cells.setdefault(key, name)
  rows = []
  for label in dict.fromkeys(f for f, _ in subsets.values()):
    row = []
    for p in columns:
      name = cells.get((label, p))
      row += ([mean_std(_values(runs, name, "label_acc")), mean_std(_values(runs, name, "gap"))]
              if name else [DASH, DASH])
    if any(c != DASH for c in row):
      rows.append([label] + row)
  if not rows:
    return ""
  return table(["features"] + [f"{p} {what}" for p in columns for what in ("label acc", "Δ")],
               rows)


def forget_size_table(runs: list[dict]) -> str:
  """Fig. 3 data: per |D_f|, each method's gap and TMU's label accuracy (mean over runs)."""
  sizes = sorted({r["forget_size"] for r in runs})
  if len(sizes) < 2:
    return ""
  methods = main_methods(runs)
  rows = []
  for s in sizes:
    group = [r for r in runs if r["forget_size"] == s]
    row = [str(s), mean(_values(group, "gold", "acc_forget"))]
    for m in methods:
      cell = mean(_values(group, m, "gap"))
      if _values(group, m, "label_acc"):
        cell += f" (label acc {mean(_values(group, m, 'label_acc'))})"
      row.append(cell)
    rows.append(row)
  return table(["|D_f|", "gold Acc_Df"] + [f"{m} Δ" for m in methods], rows)


def paper_sections(runs: list[dict], settings: Settings) -> str:
  """Every TMU paper table the class-scenario runs support, with headings; '' if none."""
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
       summary_table(main, ablation_methods(main, settings))),
      ("Table 4 layout: generalization-label accuracy by feature subset",
       feature_table(main, settings)),
      ("Fig. 3 data: gap against |D_f|", forget_size_table(subclass))):
    if text:
      parts += [f"## {title}", text]
  return "\n\n".join(parts)


# ----------------------------------------------------------------------------- L2UL (§3, §6)


def _model(run: dict, name: str) -> dict:
  return run["original"] if name == "original" else run.get("methods", {}).get(name, {})


def instance_table(runs: list[dict]) -> str:
  """L2UL k × case table (METHODS §6): one row per (k, case) with Acc_Df, Acc_Dr, Acc_test
  (relabel mode: % at the requested label), steps, time and how the loop stopped; several runs
  of one k (draws or seeds) give mean ± std and the count of each stop reason."""
  rows = []
  for k in sorted({r.get("k", r["forget_size"]) for r in runs}):
    group = [r for r in runs if r.get("k", r["forget_size"]) == k]
    for name in ["original", *cases_first(group)]:
      ms = [_model(r, name) for r in group]
      cells = []
      for c in ("acc_forget", "acc_retain", "acc_test", "relabel_acc", "steps", "time_s"):
        vals = [m[c] for m in ms if number(m.get(c)) is not None]
        cells.append(mean_std(vals, 1) if len(vals) > 1 else fmt(vals[0]) if vals else DASH)
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
  for name in ["original", *cases_first(runs)]:
    for r in sorted(runs, key=lambda r: r["round"]):
      m = _model(r, name)
      per = " / ".join(fmt(v, 0) for v in m.get("acc_forget_rounds", []))
      rows.append([name, str(r["round"]), per, fmt(m.get("acc_forget_all")),
                   fmt(m.get("acc_retain")), fmt(m.get("acc_test")), fmt(m.get("steps")),
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
