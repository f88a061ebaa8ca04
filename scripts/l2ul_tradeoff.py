"""λ/lr trade-off of L2UL (METHODS §3) on the embedded default: one k = 16 request, a grid of
MAS weights λ and learning rates, each point = (Acc_test, Acc_Df, steps) after the loop.

    python scripts/l2ul_tradeoff.py --workdir=runs/l2ul [--lams 0,0.1,0.3,1] [--lrs 3e-4,1e-3,3e-3]

Uses the cached original model of ``configs/l2ul_fashion_mnist.py`` in ``workdir``; writes
``workdir/tradeoff.json`` and ``workdir/plots/l2ul_tradeoff.png``.
"""

import argparse
import json
import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from configs import l2ul_fashion_mnist  # noqa: E402
from tmu_jax import experiment, plots  # noqa: E402
from tmu_jax.methods import l2ul  # noqa: E402


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--workdir", default="runs/l2ul")
  ap.add_argument("--lams", default="0,0.1,0.3,1")  # a rerun adds to workdir/tradeoff.json
  ap.add_argument("--lrs", default="3e-4,1e-3,3e-3")
  ap.add_argument("--k", type=int, default=16)
  ap.add_argument("--max_steps", type=int, default=600)
  a = ap.parse_args()
  c = l2ul_fashion_mnist.get_config()
  c.data.forget_size = a.k
  c.verbose = False
  workdir = os.path.abspath(a.workdir)
  problem = experiment.make_problem(c, experiment.load_data(c), c.data.forget_class, c.seed)
  original, _ = experiment.train_from_scratch(c, workdir, problem, "original",
                                              problem.train_portion)
  x_f, y_f = problem.take(problem.split.forget)
  probe = l2ul.probe_images(problem, 1000)
  path = os.path.join(workdir, "tradeoff.json")
  points = []
  if os.path.exists(path):  # extend an earlier grid: points are keyed by (λ, lr)
    with open(path) as f:
      points = json.load(f)["points"]
  ref = experiment.evaluate_model(c, problem, original)
  for lr in [float(v) for v in a.lrs.split(",")]:
    for lam in [float(v) for v in a.lams.split(",")]:
      s = l2ul.Settings.from_config(c.methods.l2ul, lam=lam, lr=lr, max_steps=a.max_steps)
      state, info = l2ul.unlearn_state(original, x_f, y_f, jax.random.key(1), s,
                                       num_classes=problem.num_classes, probe=probe)
      m = experiment.evaluate_model(c, problem, state)
      points = [p for p in points if (p["lam"], p["lr"]) != (lam, lr)]
      points.append(dict(lam=lam, lr=lr, steps=info["steps"], stopped=info["stopped"],
                         collapsed=info["collapsed"], **m))
      print(json.dumps(points[-1]), flush=True)
  with open(path, "w") as f:
    json.dump(dict(k=a.k, max_steps=a.max_steps, original=ref, points=points), f, indent=1)
  print(plots.tradeoff(points, os.path.join(workdir, "plots", "l2ul_tradeoff.png"),
                       reference=ref["acc_test"]))


if __name__ == "__main__":
  main()
