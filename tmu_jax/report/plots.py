"""Plots a person would rather look at than read: per-class gaps, the |D_f| curve, TMU features,
the L2UL k and continual curves, the λ/lr trade-off, and the evaluation against the gold ensemble
(METHODS §5b: per-example ε, the noise-floor band, cost against quality).

Each function draws from results.json data, saves the figure atomically to ``path`` (a reader
sees the old PNG or the new one, never half of one) and returns ``path``, or None when the data
hold nothing to draw.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tmu_jax import workdir as workdir_lib  # noqa: E402
from tmu_jax.report import evaluation  # noqa: E402
from tmu_jax.report.markdown import number, numbers  # noqa: E402
from tmu_jax.report.tables import main_methods  # noqa: E402

FEATURE_NAMES = ("NF", "AF", "CF")


def _nan(v) -> float:
  """A plotted value: None (null in results.json), NaN and inf all become NaN (a gap)."""
  return np.nan if number(v) is None else float(v)


def gap_by_class(runs: list[dict], path: str) -> str | None:
  """Grouped bars: mean gap Δ (over seeds) per forget class, one bar per method (the paper's
  methods and ours; ablation variants stay in the report's tables)."""
  methods = list(dict.fromkeys(n for r in runs for n in ["original", *r["methods"]]))
  main = ["original", *main_methods(runs)]
  methods = main if len(main) > 1 else methods
  classes = sorted({r["forget_class"] for r in runs})
  if not classes or not methods:
    return None
  gaps = defaultdict(list)
  for r in runs:
    for m in methods:
      model = r["original"] if m == "original" else r["methods"].get(m, {})
      gaps[(m, r["forget_class"])] += numbers([model.get("gap")])
  width = 0.8 / len(methods)
  fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(classes) + 2), 4))
  for i, m in enumerate(methods):
    means = [np.mean(gaps[(m, c)]) if gaps[(m, c)] else np.nan for c in classes]
    stds = [np.std(gaps[(m, c)]) if gaps[(m, c)] else 0 for c in classes]
    ax.bar(np.arange(len(classes)) + i * width, means, width, yerr=stds, label=m, capsize=2)
  ax.set_xticks(np.arange(len(classes)) + 0.4 - width / 2)
  ax.set_xticklabels([str(c) for c in classes])
  ax.set_xlabel("forget class")
  ax.set_ylabel("gap Δ = |Acc_Df − gold Acc_Df| (points)")
  ax.legend(fontsize=7, ncol=2)
  ax.set_title("Alignment gap to the retrained (gold) model, lower is better")
  return _save(fig, path)


def forget_size_curve(runs: list[dict], path: str) -> str | None:
  """Fig. 3: gap (and TMU label accuracy) against |D_f|."""
  sizes = sorted({r["forget_size"] for r in runs})
  if len(sizes) < 2:
    return None
  methods = list(dict.fromkeys(n for r in runs for n in r["methods"]))
  fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
  for m in methods:
    for ax, key in ((ax1, "gap"), (ax2, "label_acc")):
      ys = [np.mean(numbers(r["methods"].get(m, {}).get(key) for r in runs
                            if r["forget_size"] == s) or [np.nan]) for s in sizes]
      if not all(np.isnan(ys)):
        ax.plot(sizes, ys, marker="o", label=m)
  ax1.set(xlabel="|D_f|", ylabel="gap Δ (points)", title="gap to gold vs forget-set size")
  ax2.set(xlabel="|D_f|", ylabel="label accuracy (%)",
          title="generalization-label accuracy vs |D_f|")
  for ax in (ax1, ax2):
    ax.set_xscale("log")
    ax.legend(fontsize=7)
  return _save(fig, path)


def standardise(x: np.ndarray) -> np.ndarray:
  """(x − mean) / max(std, 1e-8) per column, statistics of ``x`` itself (the twin set, §2.3):
  the label classifier's own standardisation, float64 (n, d) -> float32 (n, d)."""
  x = np.asarray(x, np.float64)
  return ((x - x.mean(0)) / np.maximum(x.std(0), 1e-8)).astype(np.float32)


def feature_histograms(npz_path: str, path: str) -> str | None:
  """Histogram of each standardised twin feature for easy vs hard twin samples."""
  with np.load(npz_path) as f:
    twin, easy = f["twin"], f["twin_easy"].astype(bool)
  z = standardise(twin)
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
  for i, ax in enumerate(axes):
    bins = np.linspace(z[:, i].min(), z[:, i].max() + 1e-6, 30)
    for mask, name in ((easy, "easy"), (~easy, "hard")):
      if mask.any():
        ax.hist(z[mask, i], bins=bins, alpha=0.6, density=True, label=f"{name} (n={mask.sum()})")
    ax.set_title(f"{FEATURE_NAMES[i]} (standardised, twin set)")
    ax.legend(fontsize=7)
  return _save(fig, path)


def k_curve(runs: list[dict], path: str) -> str | None:
  """L2UL: Acc_Df, Acc_Dr and Acc_test against k, one line per case."""
  ks = sorted({r["forget_size"] for r in runs})
  if len(ks) < 2:
    return None
  names = list(dict.fromkeys(n for r in runs for n in ["original", *r["methods"]]))
  fig, axes = plt.subplots(1, 3, figsize=(14, 4))
  for ax, key, title in zip(axes, ("acc_forget", "acc_retain", "acc_test"),
                            ("Acc_Df (lower = forgotten)", "Acc_Dr", "Acc_test")):
    for n in names:
      ys = [np.mean([_nan((r["original"] if n == "original" else r["methods"].get(n, {})).get(
          key)) for r in runs if r["forget_size"] == k]) for k in ks]
      ax.plot(ks, ys, marker="o", label=n, ls="--" if n == "original" else "-")
    ax.set(xlabel="k (instances to forget)", ylabel="%", title=title, xscale="log")
  axes[0].legend(fontsize=7, ncol=2)
  return _save(fig, path)


def continual_curve(runs: list[dict], path: str) -> str | None:
  """Continual unlearning: accuracy on all forget sets so far, D_r and D_test per round."""
  if not runs:
    return None
  rounds = sorted({r["round"] for r in runs})
  by_round = {r["round"]: r for r in runs}
  names = list(dict.fromkeys(n for r in runs for n in ["original", *r["methods"]]))
  fig, axes = plt.subplots(1, 3, figsize=(14, 4))
  for ax, key, title in zip(axes, ("acc_forget_all", "acc_retain", "acc_test"),
                            ("Acc on D_f of all rounds so far", "Acc_Dr", "Acc_test")):
    for n in names:
      ys = [_nan((by_round[t]["original"] if n == "original" else
                  by_round[t]["methods"].get(n, {})).get(key)) for t in rounds]
      ax.plot(rounds, ys, marker="o", label=n, ls="--" if n == "original" else "-")
    ax.set(xlabel="round", ylabel="%", title=title, xticks=rounds)
  axes[0].legend(fontsize=7)
  return _save(fig, path)


def tradeoff(points: list[dict], path: str, x: str = "acc_test", y: str = "acc_forget",
             reference: float | None = None) -> str | None:
  """λ/lr trade-off: one line per lr through its λ values, ``x`` against ``y``; ``reference``
  (M_o's ``x``) drawn as a dashed line with the 5-point band of the L2UL goal."""
  if not points:
    return None
  fig, ax = plt.subplots(figsize=(7, 5))
  if reference is not None:
    ax.axvline(reference, ls="--", c="k", lw=1, label=f"original {x} {reference:.1f}")
    ax.axvspan(reference - 5, reference, color="0.9", label="within 5 points")
  for lr in sorted({p["lr"] for p in points}):
    sel = sorted([p for p in points if p["lr"] == lr], key=lambda p: p["lam"])
    ax.plot([_nan(p[x]) for p in sel], [_nan(p[y]) for p in sel], marker="o", label=f"lr={lr:g}")
    for p in sel:
      if number(p[x]) is not None and number(p[y]) is not None:
        ax.annotate(f"λ={p['lam']:g}", (p[x], p[y]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
  ax.set(xlabel=x, ylabel=y, title="L2UL trade-off over λ and lr")
  ax.legend(fontsize=8)
  return _save(fig, path)


# ----------------------------------------------------------------------------- METHODS §5b


def _epsilons(runs: list[dict]) -> dict[str, list[float]]:
  """Row name -> its per-example ε (``epsilon.eps``) pooled over ``runs``, ranked rows first."""
  out = {}
  for name in evaluation.order(runs):
    eps = [v for m in evaluation.named(runs, name)
           for v in numbers((m.get("epsilon") or {}).get("eps") or [])]
    if eps:
      out[name] = eps
  return out


def epsilon_histograms(runs: list[dict], path: str) -> str | None:
  """Small multiples, one panel per row (methods, retrain, original): the share of D_f per
  scoring bin of per-example ε, pooled over runs; dashed at max ε (beyond it a sample scores 0),
  values past the axis counted in its last bin."""
  eps = _epsilons(runs)
  if not eps:
    return None
  settings = [r.get("epsilon_settings") or {} for r in runs]
  tops = sorted(set(numbers(s.get("max_epsilon") for s in settings)))
  width = (numbers(s.get("bin_width") for s in settings) or [0.5])[0]
  top = tops[-1] if tops else max(max(v) for v in eps.values())
  edges = np.arange(0.0, top + 2 * width + width / 2, width)
  cols = min(4, len(eps))
  fig, axes = plt.subplots(math.ceil(len(eps) / cols), cols, squeeze=False, sharey=True,
                           figsize=(3.2 * cols, 2.8 * math.ceil(len(eps) / cols)))
  for ax, (name, v) in zip(axes.flat, eps.items()):
    x = np.clip(np.asarray(v), 0.0, edges[-1] - width / 2)
    ax.hist(x, bins=edges, weights=np.full(x.size, 100.0 / x.size))
    for t in tops:
      ax.axvline(t, c="k", ls="--", lw=1)
    f = numbers(evaluation.value(m, "epsilon", "forget_quality")
                for m in evaluation.named(runs, name))
    ax.text(0.97, 0.95, f"mean ε {np.mean(v):.2f}" + (f"\nF {np.mean(f):.3f}" if f else ""),
            transform=ax.transAxes, ha="right", va="top", fontsize=7)
    ax.set(title=name, xlabel=f"per-example ε (last bin: ≥ {edges[-2]:g})")
    ax.title.set_fontsize(9)
  axes[0, 0].set_ylim(0, 125)  # room for the text above a full bin (y is shared)
  for ax in axes.flat[len(eps):]:
    ax.axis("off")
  for ax in axes[:, 0]:
    ax.set_ylabel("% of D_f")
  fig.suptitle(f"Per-example ε on D_f ({len(runs)} run(s); dashed: max ε)")
  return _save(fig, path)


def _band(ax, floor: dict, key: str) -> None:
  """The floor's mean ± std as a shaded horizontal band (a line alone when the std is null)."""
  mean, std = evaluation.value(floor, key, "mean"), evaluation.value(floor, key, "std")
  if mean is None:
    return
  ax.axhspan(mean - (std or 0.0), mean + (std or 0.0), color="0.85",
             label="gold-vs-gold floor (mean ± std)")
  ax.axhline(mean, c="0.5", lw=1)


def floor_bands(runs: list[dict], path: str) -> str | None:
  """Gap and agreement of every row against every gold member (mean ± std error bar) beside
  the gold-vs-gold floor band, one row of two panels per run that has a ``floor``."""
  runs = [r for r in runs if isinstance(r.get("floor"), dict)]
  if not runs:
    return None
  n = max(len(evaluation.models(r)) for r in runs)
  fig, axes = plt.subplots(len(runs), 2, squeeze=False, figsize=(max(9, 1.4 * n), 3.2 * len(runs)))
  for row, r in zip(axes, runs):
    names = evaluation.order([r])
    for ax, key, unit in ((row[0], "gap", "points"), (row[1], "agreement", "%")):
      _band(ax, r["floor"], key)
      ms = [evaluation.aligned(evaluation.models(r)[name], key, key) for name in names]
      ax.errorbar(range(len(names)), [_nan(m) for m, _ in ms], yerr=[s or 0.0 for _, s in ms],
                  fmt="o", capsize=3, label="model vs gold members")
      ax.set_xticks(range(len(names)))
      ax.set_xticklabels(names, rotation=30, ha="right", fontsize=7)
      ax.set(ylabel=f"{key} ({unit})", title=f"{evaluation.run_label(r)}: {key} vs gold")
  axes[0, 0].legend(fontsize=7)
  return _save(fig, path)


def cost_quality(runs: list[dict], path: str,
                 limit: float = evaluation.RTE_LIMIT) -> str | None:
  """One point per row with an RTE: x = RTE (log), y = final score when ε ran, else Avg. Gap
  (mean over runs, std error bar); dashed at the efficiency limit (the challenge's 0.2)."""
  by_score = evaluation.uses_score(runs)
  key = ("epsilon", "final_score") if by_score else ("avg_gap",)
  points = []
  for name in evaluation.order(runs):
    ms = evaluation.named(runs, name)
    xs = [x for x in numbers(evaluation.value(m, "rte") for m in ms) if x > 0]
    ys = numbers(evaluation.value(m, *key) for m in ms)
    if xs and ys:
      points.append((name, np.mean(xs), np.mean(ys), np.std(ys)))
  if not points:
    return None
  fig, ax = plt.subplots(figsize=(7, 5))
  for name, x, y, err in points:
    ax.errorbar(x, y, yerr=err, fmt="o", capsize=3)
    ax.annotate(name, (x, y), fontsize=7, xytext=(4, 4), textcoords="offset points")
  ax.axvline(limit, c="r", ls="--", lw=1, label=f"efficiency limit: RTE {limit:g}")
  ax.set_xscale("log")
  ax.set(xlabel="RTE = time / one gold training",
         ylabel="final score (higher is better)" if by_score else "Avg. Gap (lower is better)",
         title="Cost against quality")
  ax.legend(fontsize=8)
  return _save(fig, path)


def _save(fig, path: str) -> str:
  try:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fig.tight_layout()
    workdir_lib.atomic_savefig(fig, path, dpi=110)
  finally:
    plt.close(fig)
  return path


def write_all(workdir: str, results: dict) -> list[str]:
  """Every plot that the results support, under ``workdir/plots``; returns their paths."""
  out = []
  runs = results["runs"]
  plots = os.path.join(workdir, "plots")
  subclass = [r for r in runs if r.get("scenario") != "instance"]
  if subclass:
    base_size = min(r["forget_size"] for r in subclass)
    out.append(gap_by_class([r for r in subclass if r["forget_size"] == base_size],
                            os.path.join(plots, "gap_by_class.png")))
    out.append(forget_size_curve(subclass, os.path.join(plots, "forget_size.png")))
  instance = [r for r in runs if r.get("scenario") == "instance"]
  if instance:  # L2UL (METHODS §3, §6)
    out.append(k_curve([r for r in instance if "round" not in r],
                       os.path.join(plots, "l2ul_k.png")))
    out.append(continual_curve([r for r in instance if "round" in r],
                               os.path.join(plots, "l2ul_continual.png")))
  features = [(name, m["features_file"]) for r in runs for name, m in r.get("methods", {}).items()
              if m.get("features_file")
              and os.path.exists(os.path.join(workdir, m["features_file"]))]
  if features:  # the first TMU method that saved its features
    name, rel = features[0]
    out.append(feature_histograms(os.path.join(workdir, rel),
                                  os.path.join(plots, f"features_{name}.png")))
  evaluated = [r for r in runs if evaluation.has_evaluation(r)]
  if evaluated:  # METHODS §5b; older results have none of its keys
    out.append(epsilon_histograms(evaluated, os.path.join(plots, "epsilon_hist.png")))
    out.append(floor_bands(evaluated, os.path.join(plots, "floor_band.png")))
    out.append(cost_quality(evaluated, os.path.join(plots, "cost_quality.png"),
                            evaluation.rte_limit(results.get("config"))))
  return [p for p in out if p]
