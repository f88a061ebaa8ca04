"""The evaluation against the gold ensemble (METHODS §5b): a table per run, one over runs.

They read the optional keys that schema version 3 added (docs/results_schema.md). For a run:
``gold_models``, ``floor`` (the gold-vs-gold noise floor) and ``epsilon_settings``. For each
model: ``members``, ``vs_gold``, ``floors_away``, ``avg_gap``, ``rte`` / ``too_slow`` and
``epsilon``. A run with none of them (older results) gets no table, so its report stays as it was.

Rows: every method, then the gold row (with ε the held-out half of the gold ensemble scored as if it were a method; without, every gold model)
(``run["gold"]``, the "retrain" row) and the untouched original. They are ranked by the
challenge's final score, best first, when ε ran, else by Avg. Gap, smallest first. Rows without
the value come last, in that order.
"""

from __future__ import annotations

from typing import Any, Mapping

from tmu_jax.report.markdown import DASH, fmt, mean_std, number, numbers, table

RETRAIN = "retrain (gold)"  # run["gold"]'s row: the held-out half with ε, else every gold model
RTE_LIMIT = 0.2  # the challenge's efficiency rule: slower than 20% of retraining is rejected
RUN_KEYS = ("gold_models", "floor", "epsilon_settings")
MODEL_KEYS = ("members", "spread", "vs_gold", "floors_away", "avg_gap", "avg_gap_parts", "rte",
              "too_slow", "epsilon")
# (key in vs_gold / floor / floors_away, the model's own single-gold key, digits, column name)
ALIGNMENT = (("agreement", "agreement", 1, "agreement"), ("gap", "gap", 1, "gap"),
             ("act_l2", "act_dist_l2", 3, "act. distance L2"))

# ----------------------------------------------------------------------------- reading


def value(d: Mapping[str, Any] | None, *path: str) -> float | None:
  """The finite number at ``d[path[0]][path[1]]...``, else None (missing, null, NaN, inf)."""
  for key in path:
    if not isinstance(d, Mapping):
      return None
    d = d.get(key)
  return number(d)


def rte_limit(config: Mapping[str, Any] | None) -> float:
  """The efficiency limit behind ``too_slow``: the config's ``evaluation.rte_limit``, else the
  challenge's 0.2 (results written before the config had that section)."""
  v = value(config, "evaluation", "rte_limit")
  return RTE_LIMIT if v is None else float(v)


def slow_mark(limit: float = RTE_LIMIT) -> str:
  """The flag of a row over the efficiency limit, e.g. "⚠ >0.2"."""
  return f"⚠ >{limit:g}"


def models(run: dict) -> dict[str, dict]:
  """A run's rows before ranking: its methods in order, then retrain (gold), then original."""
  return {**run.get("methods", {}), RETRAIN: run.get("gold") or {},
          "original": run.get("original") or {}}


def has_evaluation(run: dict) -> bool:
  """Whether the run holds any §5b key (schema version 3); older runs hold none."""
  return (any(k in run for k in RUN_KEYS)
          or any(k in m for m in models(run).values() for k in MODEL_KEYS))


def named(runs: list[dict], name: str) -> list[dict]:
  """The row ``name`` of every run that has it."""
  return [models(r)[name] for r in runs if name in models(r)]


def uses_score(runs: list[dict]) -> bool:
  """Rank (and plot) by final score: some row of ``runs`` has one (ε ran)."""
  return any(value(m, "epsilon", "final_score") is not None
             for r in runs for m in models(r).values())


def rank_value(model: dict, by_score: bool) -> float | None:
  """What a row is ranked by: its final score (by_score) or its Avg. Gap."""
  return value(model, "epsilon", "final_score") if by_score else value(model, "avg_gap")


def order(runs: list[dict]) -> list[str]:
  """Row names over ``runs``, ranked by the mean over runs of :func:`rank_value` (final score
  descending, else Avg. Gap ascending); rows without a value last, in first-seen order."""
  names = list(dict.fromkeys(n for r in runs for n in models(r)))
  by_score = uses_score(runs)
  means = {}
  for n in names:
    vals = numbers(rank_value(m, by_score) for m in named(runs, n))
    if vals:
      means[n] = sum(vals) / len(vals)
  ranked = sorted(means, key=lambda n: -means[n] if by_score else means[n])  # stable on ties
  return ranked + [n for n in names if n not in means]


def aligned(model: dict, key: str, plain: str) -> tuple[float | None, float | None]:
  """(mean, std) of one alignment metric: over the row's models against every reference gold
  member (``vs_gold``), else the row's single-gold value (std None)."""
  if isinstance(model.get("vs_gold"), Mapping) and key in model["vs_gold"]:
    return value(model, "vs_gold", key, "mean"), value(model, "vs_gold", key, "std")
  return value(model, plain), None


# ----------------------------------------------------------------------------- cells


def pm(mean: float | None, std: float | None, digits: int) -> str:
  """"mean ± std", or "mean" without a std, or "–" without a mean."""
  if mean is None:
    return DASH
  return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def against_floor(model: dict, floor: dict, key: str, plain: str, digits: int) -> str:
  """e.g. "87.2 ± 1.3 (floor 91.0 ± 0.8, 2.9 floors)"; the parenthesis only with a floor, its
  floors only when finite (inf / NaN are null in results.json); "–" without the row's value."""
  mean, std = aligned(model, key, plain)
  if mean is None:
    return DASH
  cell = pm(mean, std, digits)
  f_mean = value(floor, key, "mean")
  if f_mean is None:
    return cell
  parts = [f"floor {pm(f_mean, value(floor, key, 'std'), digits)}"]
  k = value(model, "floors_away", key)
  if k is not None:
    parts.append(f"{k:.1f} floors")
  return f"{cell} ({', '.join(parts)})"


def rte_cell(model: dict, limit: float = RTE_LIMIT) -> str:
  """RTE, flagged when the row's ``too_slow`` is true, e.g. "0.350 ⚠ >0.2"; "–" without one."""
  rte = value(model, "rte")
  if rte is None:
    return DASH
  return fmt(rte) + (f" {slow_mark(limit)}" if model.get("too_slow") is True else "")


def _g(v: Any) -> str:
  return DASH if number(v) is None else f"{v:g}"


# ----------------------------------------------------------------------------- tables


def caption(run: dict, by_score: bool, limit: float = RTE_LIMIT) -> str:
  """The paragraph above a run's table: the ensemble sizes, the ε settings, what cells mean."""
  bits = []
  if number(run.get("gold_models")) is not None:
    bits.append(f"G = {run['gold_models']} gold models")
  eps = run.get("epsilon_settings")
  if isinstance(eps, Mapping):
    bits.append(f"ε from N = {_g(eps.get('n'))} models a side (bins of {_g(eps.get('bin_width'))}"
                f" up to max ε {_g(eps.get('max_epsilon'))}, cap {_g(eps.get('cap'))})")
  head = f"{'; '.join(bits)}. " if bits else ""
  return (head + "F = forgetting quality in [0, 1]; final score = F · RA/RA_retrain · "
          "TA/TA_retrain; Avg. Gap = mean |Δ| to retrain of UA, RA, TA and MIA (points); "
          "agreement, gap and act. distance: the row's models against every reference gold "
          "member (mean ± std; the single-gold value where that is missing), beside the "
          "gold-vs-gold floor and how many floor stds away (> 0 worse); "
          f"RTE = time / one gold training ({slow_mark(limit)}: rejected by the challenge's "
          "rule). " + ("Ranked by final score, best first." if by_score else
                       "Ranked by Avg. Gap, smallest first."))


def run_table(run: dict, limit: float = RTE_LIMIT) -> str:
  """One row per model of one run (ranked): models behind it, F, final score, Avg. Gap, the
  alignment metrics against the floor, RTE; '' for a run without §5b keys."""
  if not has_evaluation(run):
    return ""
  rows_of, floor = models(run), run.get("floor") or {}
  rows = []
  for name in order([run]):
    m = rows_of[name]
    rows.append([name, fmt(value(m, "members"))]
                + [pm(value(m, "epsilon", k), None, 3) for k in ("forget_quality", "final_score")]
                + [pm(value(m, "avg_gap"), None, 2)]
                + [against_floor(m, floor, k, p, d) for k, p, d, _ in ALIGNMENT]
                + [rte_cell(m, limit)])
  return table(["model", "models", "F", "final score", "Avg. Gap"]
               + [f"{c} (vs floor)" for *_, c in ALIGNMENT] + ["RTE"], rows)


def run_section(run: dict, limit: float = RTE_LIMIT) -> list[str]:
  """The heading, caption and table of a run's evaluation; [] for a run without §5b keys."""
  if not has_evaluation(run):
    return []
  return ["### Evaluation against the gold ensemble (METHODS §5b)",
          caption(run, uses_score([run]), limit), run_table(run, limit)]


def _over_runs(ms: list[dict], key: str, plain: str, digits: int) -> str:
  """Mean ± std over runs of an alignment metric, with its floors away when any are finite."""
  cell = mean_std(numbers(aligned(m, key, plain)[0] for m in ms), digits)
  away = numbers(value(m, "floors_away", key) for m in ms)
  return f"{cell} ({mean_std(away)} floors)" if away and cell != DASH else cell


def _slow_count(ms: list[dict]) -> str:
  flags = [m["too_slow"] for m in ms if isinstance(m.get("too_slow"), bool)]
  return f"{sum(flags)}/{len(flags)}" if flags else DASH


def sweep_table(runs: list[dict]) -> str:
  """Mean ± std over the runs with §5b keys (two or more) of each row's F, final score,
  Avg. Gap, alignment (and floors away), RTE, and how many runs were too slow; the last row is
  the gold-vs-gold floor itself. '' for fewer than two such runs."""
  runs = [r for r in runs if has_evaluation(r)]
  if len(runs) < 2:
    return ""
  rows = []
  for name in order(runs):
    ms = named(runs, name)
    rows.append([name, str(len(ms))]
                + [mean_std(numbers(value(m, "epsilon", k) for m in ms), 3)
                   for k in ("forget_quality", "final_score")]
                + [mean_std(numbers(value(m, "avg_gap") for m in ms), 2)]
                + [_over_runs(ms, k, p, d) for k, p, d, _ in ALIGNMENT]
                + [mean_std(numbers(value(m, "rte") for m in ms), 3), _slow_count(ms)])
  floors = [r["floor"] for r in runs if isinstance(r.get("floor"), Mapping)]
  if floors:
    rows.append(["gold-vs-gold floor", str(len(floors)), DASH, DASH, DASH]
                + [mean_std(numbers(value(f, k, "mean") for f in floors), d)
                   for k, _, d, _ in ALIGNMENT] + [DASH, DASH])
  return table(["model", "runs", "F", "final score", "Avg. Gap"]
               + [c for *_, c in ALIGNMENT] + ["RTE", "too slow"], rows)


def sweep_section(runs: list[dict], limit: float = RTE_LIMIT) -> list[str]:
  """The heading, caption and table over runs; [] for fewer than two runs with §5b keys."""
  text = sweep_table(runs)
  if not text:
    return []
  by = "final score, best first" if uses_score(runs) else "Avg. Gap, smallest first"
  return ["## Evaluation against the gold ensemble: mean ± std over runs",
          "Per run as in each run's evaluation table; alignment metrics are the mean over the "
          "row's models against the gold members, with the mean ± std of their floors away "
          f"(> 0 worse); too slow = runs over RTE {limit:g}. Ranked by mean {by}.", text]


def run_label(run: dict) -> str:
  """A short name of a run for plot titles, e.g. "class 6, seed 0, |D_f| 100"."""
  what = "draw" if run.get("scenario") == "instance" else "class"
  label = (f"{what} {run.get('forget_class')}, seed {run.get('seed')}, "
           f"|D_f| {run.get('forget_size')}")
  return label + (f", round {run['round']}" if "round" in run else "")
