"""Plots a person would rather look at than read: per-class gaps, the |D_f| curve, features."""

from __future__ import annotations

import os
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from tmu_jax import features as features_lib  # noqa: E402

FEATURE_NAMES = ("NF", "AF", "CF")


def gap_by_class(runs: list[dict], path: str) -> str | None:
  """Grouped bars: mean gap Δ (over seeds) per forget class, one bar per method."""
  methods = [m for m in dict.fromkeys(n for r in runs for n in ["original", *r["methods"]])]
  classes = sorted({r["forget_class"] for r in runs})
  if not classes or not methods:
    return None
  gaps = defaultdict(list)
  for r in runs:
    for m in methods:
      model = r["original"] if m == "original" else r["methods"].get(m, {})
      if "gap" in model:
        gaps[(m, r["forget_class"])].append(model["gap"])
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
      ys = [np.mean([r["methods"][m][key] for r in runs if r["forget_size"] == s
                     and key in r["methods"].get(m, {})] or [np.nan]) for s in sizes]
      if not all(np.isnan(ys)):
        ax.plot(sizes, ys, marker="o", label=m)
  ax1.set(xlabel="|D_f|", ylabel="gap Δ (points)", title="gap to gold vs forget-set size")
  ax2.set(xlabel="|D_f|", ylabel="label accuracy (%)",
          title="generalization-label accuracy vs |D_f|")
  for ax in (ax1, ax2):
    ax.set_xscale("log")
    ax.legend(fontsize=7)
  return _save(fig, path)


def feature_histograms(npz_path: str, path: str) -> str | None:
  """Histogram of each standardised twin feature for easy vs hard twin samples."""
  f = np.load(npz_path)
  twin, easy = f["twin"], f["twin_easy"].astype(bool)
  z = features_lib.Standardizer.fit(twin)(twin)
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
  for i, ax in enumerate(axes):
    bins = np.linspace(z[:, i].min(), z[:, i].max() + 1e-6, 30)
    for mask, name in ((easy, "easy"), (~easy, "hard")):
      if mask.any():
        ax.hist(z[mask, i], bins=bins, alpha=0.6, density=True, label=f"{name} (n={mask.sum()})")
    ax.set_title(f"{FEATURE_NAMES[i]} (standardised, twin set)")
    ax.legend(fontsize=7)
  return _save(fig, path)


def _save(fig, path: str) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
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
  for r in runs:
    for name, m in r.get("methods", {}).items():
      if m.get("features_file") and os.path.exists(os.path.join(workdir, m["features_file"])):
        out.append(feature_histograms(os.path.join(workdir, m["features_file"]),
                                      os.path.join(plots, f"features_{name}.png")))
        break
    else:
      continue
    break
  return [p for p in out if p]
