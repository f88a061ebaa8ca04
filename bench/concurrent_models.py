"""M_o and M_g at once on two host threads against one after the other (experiment.concurrent_models).

    python bench/concurrent_models.py [--epochs 10] [--repeats 2] [--config configs/fashion_mnist.py]

The embedded default's problem (real Fashion-MNIST, forget class 6, seed 0: M_o on the 48 000
training images, M_g on D_r) with its recipe, ``--epochs`` epochs each (default 10; the job
trains 50, and the cost is linear in them). Each repeat trains the pair both ways into fresh
cache folders, the two ways interleaved (``seq`` first in odd repeats, ``together`` first in
even ones), after one untimed warm-up pair of each way (compilation). Prints both wall times,
the ratio together / seq per repeat and their median, and whether the weights were the same
bit for bit.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import logging  # noqa: E402

from tmu_jax import checkpoints  # noqa: E402
from tmu_jax.experiment import runs  # noqa: E402


def _config(path: str, epochs: int, together: bool):
  import importlib.util  # pylint: disable=import-outside-toplevel
  spec = importlib.util.spec_from_file_location("cfg", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  c = mod.get_config()
  c.train.epochs = epochs
  c.verbose = False
  c.experiment.concurrent_models = together
  return c


def pair(config, problem) -> tuple[float, list[str]]:
  """Wall seconds to train M_o and M_g from scratch, and their weight digests."""
  roles = [("original", problem.train_portion), ("gold", problem.split.retain)]
  with tempfile.TemporaryDirectory() as workdir:
    t0 = time.perf_counter()
    out = runs.train_from_scratch_together(config, workdir, problem, roles)
    seconds = time.perf_counter() - t0
  return seconds, [checkpoints.weights_digest(s) for s, _ in out]


def main() -> None:
  p = argparse.ArgumentParser()
  p.add_argument("--config", default="configs/fashion_mnist.py")
  p.add_argument("--epochs", type=int, default=10)
  p.add_argument("--repeats", type=int, default=2)
  a = p.parse_args()
  logging.set_verbosity(logging.ERROR)
  configs = {way: _config(a.config, a.epochs, way == "together") for way in ("seq", "together")}
  assert runs.concurrent_here(configs["together"]), "concurrent_models applies on a CPU only"
  dataset = runs.load_data(configs["seq"])
  problem = runs.make_problem(configs["seq"], dataset, configs["seq"].data.forget_class, 0)
  digests = {}
  for way in ("seq", "together"):  # warm-up: compilation
    _, digests[way] = pair(configs[way], problem)
  times = {"seq": [], "together": []}
  for r in range(a.repeats):
    for way in (("seq", "together") if r % 2 == 0 else ("together", "seq")):
      s, d = pair(configs[way], problem)
      times[way].append(s)
      assert d == digests[way]
  ratios = [t / s for t, s in zip(times["together"], times["seq"])]
  print(f"M_o + M_g, {a.epochs} epochs each, cpu count {os.cpu_count()}, "
        f"load average {os.getloadavg()[0]:.2f}")
  for r in range(a.repeats):
    print(f"repeat {r}: seq {times['seq'][r]:.1f} s  together {times['together'][r]:.1f} s  "
          f"together / seq {ratios[r]:.3f}")
  print(f"median together / seq: {statistics.median(ratios):.3f}")
  print(f"same weights bit for bit: {digests['seq'] == digests['together']}")


if __name__ == "__main__":
  main()
