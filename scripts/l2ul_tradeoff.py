"""λ/lr trade-off of L2UL (METHODS §3) on the embedded default: one k = 16 request, a grid of
MAS weights λ and learning rates, each point = (Acc_test, Acc_Df, steps) after the loop.

    python scripts/l2ul_tradeoff.py --workdir=runs/l2ul [--lams 0,0.1,0.3,1] [--lrs 3e-4,1e-3,3e-3]

Uses the cached original model of ``configs/l2ul_fashion_mnist.py`` (``--config`` picks another,
e.g. ``configs/l2ul_fashion_mnist.py:smoke`` for a quick check) in ``workdir``; writes
``workdir/tradeoff.json`` and ``workdir/plots/l2ul_tradeoff.png``. Each point runs the config's
``methods.l2ul`` section with λ, lr and ``max_steps`` replaced.
"""

import argparse
import json
import os

import jax

from tmu_jax import cli, protocol, schema, validate
from tmu_jax.experiment import runs
from tmu_jax.experiment.scoring import Scorer
from tmu_jax.methods import l2ul
from tmu_jax.report import plots

CONFIG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs",
                      "l2ul_fashion_mnist.py")


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--workdir", default="runs/l2ul")
  ap.add_argument("--config", default=CONFIG, help="config file[:arg] (an instance scenario)")
  ap.add_argument("--lams", default="0,0.1,0.3,1")  # a rerun adds to workdir/tradeoff.json
  ap.add_argument("--lrs", default="3e-4,1e-3,3e-3")
  ap.add_argument("--k", type=int, default=16)
  ap.add_argument("--max_steps", type=int, default=600)
  a = ap.parse_args()
  c = cli.load_config(a.config)
  c.data.forget_size = a.k
  c.verbose = False
  workdir = validate.check_workdir(a.workdir)
  validate.check_config(c)
  base = schema.parse(l2ul.L2UL, c.methods.l2ul, "methods.l2ul")
  problem = runs.make_problem(c, runs.load_data(c), c.data.forget_class, c.seed)
  original, _ = protocol.train_from_scratch(c, workdir, problem, "original",
                                            problem.train_portion)
  model = protocol.build_model(c, problem.dataset)
  recipe = protocol.recipe_of(c)
  scorer = Scorer(model, problem, recipe)
  x_f, y_f = problem.take(problem.split.forget)
  new_labels = (l2ul.requested_labels(problem, problem.split.forget)
                if problem.mode == "relabel" else None)
  retain = problem.take(problem.split.retain) if base.case == "oracle" else None
  probe = l2ul.probe_images(problem, base.probe_size)
  path = os.path.join(workdir, "tradeoff.json")
  points = []
  if os.path.exists(path):  # extend an earlier grid: points are keyed by (λ, lr)
    with open(path) as f:
      points = json.load(f)["points"]
  ref = scorer.accuracies(original)
  for lr in [float(v) for v in a.lrs.split(",")]:
    for lam in [float(v) for v in a.lams.split(",")]:
      s = schema.replace(base, lam=lam, lr=lr, max_steps=a.max_steps)
      state, info = l2ul.unlearn_state(model, original, x_f, y_f, jax.random.key(1), s,
                                       num_classes=problem.num_classes, mode=problem.mode,
                                       new_labels=new_labels, retain=retain, probe=probe,
                                       eval_batch_size=recipe.eval_batch_size)
      m = scorer.accuracies(state)
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
