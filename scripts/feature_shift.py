"""TMU's feature asymmetry (issue 11): NF, AF and CF on the twin side (D_t, scored with M_t)
against the real side (D_f, scored with M_o), pooled over a workdir's runs of one method.

§2.3 standardises both sides with the twin statistics, so a shift between the sides moves D_f
along the classifier's input. The script prints each feature's mean and std per side, the shift
in twin standard deviations, and draws the two distributions side by side (one panel per
feature). Usage::

    python scripts/feature_shift.py WORKDIR/features --method tmu_plus \
        --out docs/results/fashion_mnist/feature_shift.png
    python scripts/feature_shift.py docs/results/data/fashion_mnist_study.features_tmu_plus.npz

A directory is read as the experiment writes it (``<method>-c<class>-n<k>-s<seed>.npz``); an
``.npz`` as this script's ``--pack`` writes it (every run's arrays under ``<run>/<array>``).
"""

from __future__ import annotations

import argparse
import glob
import os

import numpy as np

FEATURES = ("NF", "AF", "CF")


def load(source: str, method: str) -> dict[str, dict[str, np.ndarray]]:
  """{run tag: {twin, twin_easy, forget, p_easy}} of ``method``."""
  if os.path.isdir(source):
    out = {}
    for path in sorted(glob.glob(os.path.join(source, f"{method}-c*.npz"))):
      with np.load(path) as d:
        out[os.path.basename(path)[len(method) + 1:-4]] = {k: d[k] for k in d.files}
    return out
  with np.load(source) as d:
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in d.files:
      run, name = key.rsplit("/", 1)
      out.setdefault(run, {})[name] = d[key]
    return out


def shift_table(runs: dict[str, dict[str, np.ndarray]]) -> list[str]:
  twin = np.concatenate([r["twin"] for r in runs.values()])
  forget = np.concatenate([r["forget"] for r in runs.values()])
  # per run, in that run's twin standard deviations (what §2.3's standardisation sees)
  per_run = np.stack([(r["forget"].mean(0) - r["twin"].mean(0)) / r["twin"].std(0)
                      for r in runs.values()])
  lines = [f"{len(runs)} runs; {len(twin)} twin rows, {len(forget)} forget rows", "",
           "| feature | twin side mean ± std | D_f side mean ± std | shift (D_f − twin) in twin "
           "std, mean ± std over runs |", "|---|---|---|---|"]
  for j, name in enumerate(FEATURES):
    lines.append(f"| {name} | {twin[:, j].mean():.3f} ± {twin[:, j].std():.3f} | "
                 f"{forget[:, j].mean():.3f} ± {forget[:, j].std():.3f} | "
                 f"{per_run[:, j].mean():+.2f} ± {per_run[:, j].std():.2f} |")
  return lines


def plot(runs: dict[str, dict[str, np.ndarray]], out: str, title: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  twin = np.concatenate([r["twin"] for r in runs.values()])
  forget = np.concatenate([r["forget"] for r in runs.values()])
  easy = np.concatenate([r["twin_easy"] for r in runs.values()]).astype(bool)
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
  for j, (ax, name) in enumerate(zip(axes, FEATURES)):
    lo, hi = np.percentile(np.concatenate([twin[:, j], forget[:, j]]), [0.5, 99.5])
    bins = np.linspace(lo, hi, 40)
    ax.hist(twin[easy, j], bins, alpha=0.5, density=True, label="twin, easy (M_t right)")
    ax.hist(twin[~easy, j], bins, alpha=0.5, density=True, label="twin, hard")
    ax.hist(forget[:, j], bins, density=True, histtype="step", lw=2, color="k",
            label="D_f (M_o)")
    ax.set_title(name)
  axes[0].legend(fontsize=7)
  fig.suptitle(title, fontsize=9)
  fig.tight_layout()
  os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
  fig.savefig(out, dpi=110)


def main() -> None:
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("source", help="a workdir's features/ folder, or a --pack .npz")
  ap.add_argument("--method", default="tmu_plus")
  ap.add_argument("--out", help="the plot's path (PNG)")
  ap.add_argument("--pack", help="also write every run's arrays to this .npz")
  args = ap.parse_args()
  runs = load(args.source, args.method)
  if not runs:
    raise SystemExit(f"error: no {args.method} features in {args.source}")
  print("\n".join(shift_table(runs)))
  if args.out:
    plot(runs, args.out, f"{args.method}: twin features (D_t under M_t) against D_f under M_o, "
         f"{len(runs)} runs pooled")
  if args.pack:
    np.savez_compressed(args.pack, **{f"{run}/{k}": v for run, arrays in runs.items()
                                      for k, v in arrays.items()})


if __name__ == "__main__":
  main()
