"""L2UL's unlearning phase at k = 16: the new loop (stop rule inside the compiled scan, one host
sync per chunk of 25 steps) against the old per-step host loop, same model, data, key and probe.

    python bench/l2ul_loop.py [--quick] [--repeats 3] [--workdir /tmp/l2ul_loop_bench]

Setting: configs/l2ul_fashion_mnist.py, case ``l2ul`` (forget_loss "complement", λ 0.3, lr 1e-3,
20 adversarial examples per image, max 1000 steps), its instance split (D_f = 16 images of T drawn
uniformly) and its probe (1000 test images). M_o: by default the config's own (48 000 real
Fashion-MNIST images, MLP 784-512-256-10, 50 epochs, trained once into ``--workdir``'s cache and
reused after); ``--quick``: the tests' tiny M_o (2 500 images, MLP 784-128-10, 30 epochs).

The old code is read from git (the parent of the commit that deleted ``tmu_jax/engine.py``), its
``engine`` and ``methods.l2ul`` modules copied to a temp dir as ``old_engine`` / ``old_l2ul``.
Each side runs once to compile, then ``--repeats`` timed runs (sides interleaved; medians
printed): the whole ``unlearn_state`` (adversarial set, MAS, loop) and each part. Host syncs of
the loop: new, calls of the compiled chunk (each read back once); old, the stop rule's reads
(one per step, plus one per collapse check every 10 steps).
"""

import argparse
import dataclasses
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from configs import l2ul_fashion_mnist  # noqa: E402
from tmu_jax import protocol, schema, train  # noqa: E402
from tmu_jax.experiment import runs  # noqa: E402
from tmu_jax.methods import l2ul  # noqa: E402
from tmu_jax.train import loop as train_loop  # noqa: E402


def git(*args) -> str:
  return subprocess.run(["git", "-C", ROOT, *args], check=True, capture_output=True,
                        text=True).stdout


def load_old_code():
  """(old_engine, old_l2ul, commit) from the last commit that still had tmu_jax/engine.py."""
  deleted = git("log", "--diff-filter=D", "--format=%H", "-1", "--", "tmu_jax/engine.py").strip()
  commit = git("rev-parse", f"{deleted}~1").strip()
  tmp = tempfile.mkdtemp(prefix="old_l2ul_")
  engine = git("show", f"{commit}:tmu_jax/engine.py")
  method = git("show", f"{commit}:tmu_jax/methods/l2ul.py")
  for old, new in [("from tmu_jax import attacks, data as data_lib, engine\n",
                    "from tmu_jax import attacks, data as data_lib\nimport old_engine as engine\n"),
                   ("from tmu_jax.methods import Context, register\n",
                    "Context = object\nregister = lambda name: (lambda fn: fn)\n")]:
    if old not in method:
      raise SystemExit(f"old l2ul.py at {commit[:7]} lacks the line {old.strip()!r}")
    method = method.replace(old, new)
  for name, text in (("old_engine", engine), ("old_l2ul", method)):
    with open(os.path.join(tmp, f"{name}.py"), "w") as f:
      f.write(text)
  sys.path.insert(0, tmp)
  return importlib.import_module("old_engine"), importlib.import_module("old_l2ul"), commit


def make_problem(quick: bool, workdir: str):
  """(config, problem, model, M_o) of the benchmark."""
  config = l2ul_fashion_mnist.get_config()
  config.verbose = False
  if quick:
    config.data.train_subset = 2500
    config.model.kwargs.hidden = (128,)
    config.train.epochs = 30
  dataset = runs.load_data(config)
  problem = runs.make_problem(config, dataset, config.data.forget_class, config.seed)
  model = protocol.build_model(config, dataset)
  t0 = time.perf_counter()
  original, info = protocol.train_from_scratch(config, workdir, problem, "original",
                                               problem.train_portion)
  how = "cached" if info["cached"] else f"trained in {time.perf_counter() - t0:.0f} s"
  acc = train.accuracy(model, original.variables, problem.x_test, problem.y_test)
  print(f"M_o: {len(problem.train_portion)} images, MLP {tuple(model.hidden)}, "
        f"{config.train.epochs} epochs ({how}), test accuracy {acc:.2f}%", flush=True)
  return config, problem, model, original


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="the tests' tiny M_o")
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--workdir", default="/tmp/l2ul_loop_bench")
  args = parser.parse_args()
  old_engine, old_l2ul, commit = load_old_code()
  config, problem, model, original = make_problem(args.quick, args.workdir)
  s = schema.parse(l2ul.L2UL, config.methods.l2ul, "methods.l2ul")
  x_f, y_f = problem.take(problem.split.forget)
  probe = l2ul.probe_images(problem, s.probe_size)
  key = jax.random.key(0)
  print(f"k = {x_f.shape[0]}, case {s.case}, forget_loss {s.forget_loss}, lam {s.lam}, lr {s.lr}, "
        f"num_adv {s.num_adv}; old code from {commit[:7]}; {jax.devices()[0].platform}",
        flush=True)

  chunk_jit, chunks = train_loop._chunk_jit, []

  def counting_chunk(*a, **kw):
    chunks.append(1)
    return chunk_jit(*a, **kw)

  train_loop._chunk_jit = counting_chunk

  def new():
    chunks.clear()
    t0 = time.perf_counter()
    out, info = l2ul.unlearn_state(model, original, x_f, y_f, key, s, num_classes=10,
                                   probe=probe, eval_batch_size=config.train.eval_batch_size)
    jax.block_until_ready(out.params)
    return time.perf_counter() - t0, info, len(chunks)

  old_settings = old_l2ul.Settings.from_config(config.methods.l2ul, mode="misclassify")
  assert all(getattr(old_settings, f.name) == getattr(s, f.name)
             for f in dataclasses.fields(old_settings) if hasattr(s, f.name)), old_settings
  old_state = old_engine.TrainState(step=jnp.zeros((), jnp.int32), params=original.params,
                                    batch_stats={}, opt_state=None, apply_fn=model.apply,
                                    tx=None)
  reads, in_fit = [], []
  for name in ("_remaining", "_top_share"):
    fn = getattr(old_l2ul, name)
    setattr(old_l2ul, name,
            lambda *a, _fn=fn, **kw: (reads.append(bool(in_fit)), _fn(*a, **kw))[1])
  old_fit = old_engine.fit

  def fit(*a, **kw):
    in_fit.append(1)
    try:
      return old_fit(*a, **kw)
    finally:
      in_fit.clear()

  old_engine.fit = fit

  def old():
    reads.clear()
    t0 = time.perf_counter()
    out, info = old_l2ul.unlearn_state(old_state, x_f, y_f, key, old_settings, num_classes=10,
                                       probe=probe)
    jax.block_until_ready(out.params)
    return time.perf_counter() - t0, info, sum(reads)

  sides = dict(new=new, old=old)
  for run in sides.values():
    run()  # compile
  timed = {name: [] for name in sides}
  for _ in range(args.repeats):
    for name, run in sides.items():
      timed[name].append(run())
  rows = {}
  for name, results in timed.items():
    assert len({(r[1]["steps"], r[2]) for r in results}) == 1, name  # deterministic
    total = statistics.median(r[0] for r in results)
    med = {k: statistics.median(r[1][k] for r in results)
           for k in ("adv_time_s", "mas_time_s", "unlearn_time_s")}
    rows[name] = (total, dict(results[0][1], **med), results[0][2])
  print(f"{'loop':<5} {'steps':>5} {'stopped':>10} {'total s':>8} {'adv s':>6} {'mas s':>6} "
        f"{'loop s':>7} {'ms/step':>7} {'host syncs':>10}")
  for name, (seconds, info, syncs) in rows.items():
    print(f"{name:<5} {info['steps']:>5} {info['stopped']:>10} {seconds:>8.3f} "
          f"{info['adv_time_s']:>6.3f} {info['mas_time_s']:>6.3f} {info['unlearn_time_s']:>7.3f} "
          f"{1e3 * info['unlearn_time_s'] / info['steps']:>7.2f} {syncs:>10}")
  (tn, new_info, _), (to, old_info, _) = rows["new"], rows["old"]
  print(f"old / new: {to / tn:.2f}x total, "
        f"{old_info['unlearn_time_s'] / new_info['unlearn_time_s']:.2f}x loop")


if __name__ == "__main__":
  main()
