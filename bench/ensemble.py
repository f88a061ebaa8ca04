"""Ensembles: M members trained as one program (``fit_ensemble``) against M sequential ``fit``s.

    python bench/ensemble.py [--models mlp cnn] [--members 4 16 64] [--steps N]
                             [--batch-size B] [--chunk-steps C] [--seq-members 8]
                             [--repeats 2] [--all-members] [--check | --check-only]

For each model (the MLP 784-512-256-10 and the small CNN, ``tmu_jax.models``) and each member
count M, every member takes the same number of SGD steps (momentum 0.9, weight decay 5e-4,
cross-entropy) on batches of Fashion-MNIST-shaped uint8 28×28×1 images (random values: the
cost does not depend on them; ``--train-size`` images, 60 000 like the real training set, one
stream, each member with its own key, so its own batch order):

- ``seq``: M calls of ``train.fit``, one member after the other (the single-model program);
- ``vmap``: one ``fit_ensemble(how="vmap")`` (members in lockstep, ``vmap`` of the update);
- ``map``: one ``fit_ensemble(how="map")`` (``lax.map`` over members, each the single chunk).

Steps and batch: ``--steps`` / ``--batch-size`` for every model where given; else 20 steps of
batch 128, except on a CPU backend, where ``CPU_DEFAULTS`` applies (the CNN: 2 steps of batch
32 and M ≤ 16 unless ``--all-members``, since a CNN step inside the compiled loop is slow on
XLA:CPU). The chunk (``--chunk-steps``) defaults to half the steps.

Compile time is excluded: each variant runs once first with the same shapes, for one chunk and
one step more (``fit_ensemble`` compiles one program for its first chunk and another for the
later ones, whose carried step counter comes back committed to a device; a new M is a new
program, so the ensembles warm up per M). Fresh states for every run (the update donates its
input), built outside the timing. When M > ``--seq-members`` (0: never), ``seq`` times only
the first ``--seq-members`` members and scales linearly to M (the members' fits are the same
program on the same shapes); such rows are marked ``*``. ``auto`` is what ``resolve_how("auto", spec)`` picks on this backend. Ratios are
ensemble / sequential time: below 1 the ensemble is faster. ``--repeats`` timed runs per cell
(default 2), the variants interleaved within each repeat; the table shows medians.

``--check`` first verifies, for each model, that 3 members of both ensembles equal 3 sequential
fits with the same keys after 4 steps (max |Δparams| ≤ ``--tol``, 1e-5), then runs the timing;
``--check-only`` runs the check alone.
"""

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tmu_jax import train  # noqa: E402
from tmu_jax.models import get_model  # noqa: E402
from tmu_jax.train import ensemble as E  # noqa: E402

SHAPE = (28, 28, 1)
MEAN, STD = (0.2860,), (0.3530,)
# (steps per member, batch size, largest M) by default on a CPU backend, where the small CNN
# costs about 2 s per step of batch 128 inside the compiled loop and 0.6 s at batch 32 (measured
# on the 2-core VM; docs/benchmarks.md, "convolutions inside the compiled loop"): 20 steps x 84
# members x 3 variants would take hours, and M = 64 alone about 5 minutes even at these sizes.
CPU_DEFAULTS = {"mlp": (20, 128, None), "cnn": (2, 32, 16)}


def build_model(name: str):
  if name == "mlp":
    return get_model("mlp", 10, MEAN, STD, hidden=(512, 256))
  return get_model(name, 10, MEAN, STD)


def settings(name: str, args) -> tuple[int, int, int]:
  """(steps per member, batch size, chunk steps) of model ``name``: the flags where given, else
  the backend's defaults (CPU_DEFAULTS on a CPU, 20 steps of batch 128 elsewhere); the chunk is
  half the steps, so that the warm-up (one chunk and one step) costs about half a timed run."""
  steps, batch, _ = CPU_DEFAULTS.get(name, (20, 128, None)) if jax.default_backend() == "cpu" \
      else (20, 128, None)
  steps = args.steps or steps
  batch = args.batch_size or batch
  chunk = min(args.chunk_steps or max(1, steps // 2), steps)
  return steps, batch, chunk


class Bench:
  """One model's problem: its spec, optimizer, stream and the three ways to train M members."""

  def __init__(self, name: str, args):
    self.name, self.args = name, args
    self.steps, self.batch_size, self.chunk = settings(name, args)
    # Two chunks (the second of one step): fit_ensemble's first and later chunks are two
    # compiled programs (its step counter t is not committed before the first call).
    self.warm = min(self.chunk + 1, self.steps)
    self.model = build_model(name)
    self.opt = train.Optimizer("sgd", 0.01, momentum=0.9, weight_decay=5e-4,
                               total_steps=self.steps)
    self.spec = train.StepSpec(model=self.model, optimizer=self.opt.family, num_classes=10)
    rng = np.random.default_rng(0)
    n = args.train_size
    self.stream = train.Stream(
        dict(image=jnp.asarray(rng.integers(0, 256, (n,) + SHAPE, dtype=np.uint8)),
             label=jnp.asarray(rng.integers(0, 10, n).astype(np.int32))), self.batch_size)

    self._host = None  # the initial states of the most members built so far, as numpy

  def keys(self, m: int):
    return E.member_keys(jax.random.key(1), m)

  def _initial(self, m: int):
    """Host copies of members 0 … m−1's initial states (member i's does not depend on M)."""
    if self._host is None or E.size(self._host) < m:
      self._host = jax.device_get(
          E.new_ensemble(E.member_keys(jax.random.key(0), m), self.model, SHAPE, self.opt))
    return self._host

  def states(self, m: int):
    """A fresh ensemble of m members (new device buffers: the update donates its input)."""
    states = jax.tree.map(lambda x: jnp.asarray(x[:m]), self._initial(m))
    jax.block_until_ready(states)
    return states

  def singles(self, m: int):
    """The same members as fresh single-model states."""
    host = self._initial(m)
    out = [jax.tree.map(lambda x, i=i: jnp.asarray(x[i]), host) for i in range(m)]
    jax.block_until_ready(out)
    return out

  def sequential(self, singles, keys, steps: int):
    """Each member through ``train.fit``; returns the list of final single-model states."""
    out = []
    for state, key in zip(singles, keys):
      st, _ = train.fit(state, self.stream, spec=self.spec, epochs=1,
                        max_steps=steps, key=key, chunk_steps=self.chunk, verbose=False)
      jax.block_until_ready(st.params)
      out.append(st)
    return out

  def ensemble(self, states, keys, steps: int, how: str):
    out, info = E.fit_ensemble(states, self.stream, spec=self.spec, epochs=1, keys=keys,
                               max_steps=steps, chunk_steps=self.chunk, verbose=False, how=how)
    jax.block_until_ready(out.params)
    assert info["how"] == how and info["steps"] == [steps] * E.size(out), info
    return out

  def timed(self, fn, m: int, *a) -> float:
    keys = self.keys(m)  # all of it outside the timing
    if fn == self.sequential:
      states, keys = self.singles(m), list(keys)
    else:
      states = self.states(m)
    t0 = time.perf_counter()
    fn(states, keys, *a)
    return time.perf_counter() - t0


def check(bench: Bench, m: int = 3, steps: int = 4, tol: float = 1e-5) -> None:
  """Members of both ensembles = sequential fits with the same keys and initialisations."""
  keys = bench.keys(m)
  seq = bench.sequential(bench.singles(m), list(keys), steps)
  for how in ("vmap", "map"):
    out = bench.ensemble(bench.states(m), keys, steps, how)
    diff = max(float(jnp.max(jnp.abs(a - b)))
               for i, st in enumerate(seq)
               for a, b in zip(jax.tree.leaves(E.member(out, i).params),
                               jax.tree.leaves(st.params)))
    print(f"check {bench.name} {how}: {m} members x {steps} steps, max |dparams| vs "
          f"sequential = {diff:.2e}", flush=True)
    assert diff <= tol, f"{bench.name} {how}: max |dparams| {diff:.2e} > {tol:.0e}"


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--models", nargs="+", default=["mlp", "cnn"])
  p.add_argument("--members", nargs="+", type=int, default=[4, 16, 64])
  p.add_argument("--steps", type=int, default=None,
                 help="steps per member, every model (default: 20; on a CPU see CPU_DEFAULTS)")
  p.add_argument("--batch-size", type=int, default=None,
                 help="batch size, every model (default: 128; on a CPU see CPU_DEFAULTS)")
  p.add_argument("--chunk-steps", type=int, default=None,
                 help="steps per compiled chunk (default: half the steps); the warm-up runs "
                      "one chunk and one step")
  p.add_argument("--train-size", type=int, default=60000)
  p.add_argument("--seq-members", type=int, default=8,
                 help="time at most this many sequential fits and scale to M (0: all)")
  p.add_argument("--hows", nargs="+", default=["vmap", "map"], choices=["vmap", "map"])
  p.add_argument("--repeats", type=int, default=2,
                 help="timed runs of each variant, interleaved; the table shows medians")
  p.add_argument("--all-members", action="store_true",
                 help="on a CPU, also the member counts CPU_DEFAULTS leaves out (CNN M > 16)")
  p.add_argument("--check", action="store_true", help="assert members = sequential first")
  p.add_argument("--check-only", action="store_true", help="the check alone, no timing")
  p.add_argument("--tol", type=float, default=1e-5, help="the check's max |dparams|")
  args = p.parse_args()
  dev = jax.devices()[0]
  print(f"jax {jax.__version__} on {len(jax.devices())} x {dev.platform} ({dev.device_kind}); "
        f"{args.train_size} images 28x28x1 uint8; "
        + "; ".join("{}: {} steps/member, batch {}, chunks of {}".format(n, *settings(n, args))
                    for n in args.models), flush=True)
  rows, skipped = [], []
  for name in args.models:
    bench = Bench(name, args)
    if args.check or args.check_only:
      check(bench, tol=args.tol)
    if args.check_only:
      continue
    auto = E.resolve_how("auto", bench.spec)
    t0 = time.perf_counter()
    bench.timed(bench.sequential, 1, bench.warm)  # compiles the single-model chunk
    print(f"[{name}] single-model warm-up {time.perf_counter() - t0:.1f} s", flush=True)
    cap = CPU_DEFAULTS.get(name, (0, 0, None))[2] if jax.default_backend() == "cpu" else None
    for m in args.members:
      if cap is not None and m > cap and not args.all_members:
        skipped.append(f"{name} M={m}")
        continue
      n_seq = m if args.seq_members <= 0 else min(m, args.seq_members)
      for how in args.hows:
        t0 = time.perf_counter()
        bench.timed(bench.ensemble, m, bench.warm, how)  # compiles this M's programs
        print(f"[{name}] M={m} {how}: warm-up {time.perf_counter() - t0:.1f} s", flush=True)
      runs = {k: [] for k in ["seq", *args.hows]}
      for _ in range(args.repeats):  # the variants interleaved, so that load drifts hit all
        runs["seq"].append(bench.timed(bench.sequential, n_seq, bench.steps) * m / n_seq)
        for how in args.hows:
          runs[how].append(bench.timed(bench.ensemble, m, bench.steps, how))
        print(f"[{name}] M={m} timed: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in runs.items())
              + (f" (seq scaled from {n_seq} members)" if n_seq < m else ""), flush=True)
      times = {k: statistics.median(v) for k, v in runs.items()}
      rows.append((name, m, bench.steps, bench.batch_size, times.pop("seq"), n_seq < m, times,
                   auto))
  if args.check_only:
    return
  fmt = lambda t: f"{t:8.2f}" if t is not None else f"{'-':>8}"
  ratio = lambda t, s: f"{t / s:8.2f}" if t is not None else f"{'-':>8}"
  print()
  print(f"{'model':5} {'M':>4} {'steps':>5} {'batch':>5} {'seq s':>9} {'vmap s':>8} "
        f"{'map s':>8} {'vmap/seq':>8} {'map/seq':>8} {'auto':>5}")
  for name, m, steps, batch, seq, scaled, times, auto in rows:
    v, mp = times.get("vmap"), times.get("map")
    print(f"{name:5} {m:4d} {steps:5d} {batch:5d} {seq:8.2f}{'*' if scaled else ' '} {fmt(v)} "
          f"{fmt(mp)} {ratio(v, seq)} {ratio(mp, seq)} {auto:>5}")
  if any(r[5] for r in rows):
    print(f"* sequential timed on the first {args.seq_members} members, scaled linearly to M")
  if skipped:
    print(f"left out on this CPU (--all-members runs them): {', '.join(skipped)}")


if __name__ == "__main__":
  main()
