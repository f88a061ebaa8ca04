"""Throughput of TMU's three features (NF, AF, CF) at two sizes, from one run.

    python bench/features.py [--model mlp] [--scale 4] [--repeats 3]

The small size is the embedded default's (|D_f| = 100 forget samples, the ~4 800 class-c
remaining samples, a curriculum set of 0.2·|D_r| + |D_f| + |D_t| ≈ 9 800 images); the large one
multiplies every size by ``--scale``. Expected growth (METHODS §2.2):

- NF: embedding both sets (∝ |queries| + |remaining|, ×scale) plus the chunked matmul + top_k
  search (flops ∝ |queries|·|remaining|, ×scale²); ``nf_search`` times the search alone on
  256-d features, whose expected ratio counts the zero-padded chunks it really computes.
  At these sizes the embedding dominates NF, so NF grows ~×scale;
- AF: 10-step PGD on each sample, ∝ |queries|, so ×scale;
- CF: the curriculum model's 2 training epochs dominate, ∝ its training-set size, so ×scale.

Each line prints images per second (queries for NF/AF, training images for CF) and the
time ratio large/small next to the expected one. Times are medians of ``--repeats`` runs after
a warm-up run that compiles.
"""

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from tmu_jax import train
from tmu_jax.methods.tmu import features
from tmu_jax.models import get_model


def _median_time(fn, repeats: int) -> float:
  jax.block_until_ready(fn())  # compile and warm up
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t0)
  return statistics.median(times)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--model", default="mlp", help="a registered model (mlp, cnn, resnet18...)")
  p.add_argument("--scale", type=int, default=4)
  p.add_argument("--repeats", type=int, default=3)
  args = p.parse_args()
  rng = np.random.default_rng(0)
  shape = (28, 28, 1)
  model = get_model(args.model, 10, (0.286,), (0.353,))
  opt = train.Optimizer("sgd", 0.01, momentum=0.9)
  state = train.new_state(jax.random.key(0), model, shape, opt)
  spec = train.StepSpec(model=model, optimizer=opt.family, num_classes=10)
  images = lambda n: jnp.asarray(rng.integers(0, 256, (n,) + shape, np.uint8))
  labels = lambda n: jnp.asarray(rng.integers(0, 10, n), jnp.int32)

  sizes = dict(forget=100, remaining=4800, curriculum=9800)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform} "
        f"({os.cpu_count()} cores); model {args.model}; median of {args.repeats}")
  print(f"{'feature':8s} {'size':>14s} {'seconds':>9s} {'img/s':>10s} {'ratio':>7s} "
        f"{'expected':>9s}")
  results = {}
  for tag, s in (("small", 1), ("large", args.scale)):
    n_q, n_r, n_c = (sizes["forget"] * s, sizes["remaining"] * s, sizes["curriculum"] * s)
    x_q, y_q, x_r = images(n_q), labels(n_q), images(n_r)
    nf = lambda: features.nf_feature(model, state.variables, x_q, x_r, k=5)
    phi_q = jnp.asarray(rng.normal(size=(n_q, 256)), jnp.float32)
    phi_r = jnp.asarray(rng.normal(size=(n_r, 256)), jnp.float32)
    search = lambda: features.nearest_distance(phi_q, phi_r, k=5)
    af = lambda: features.af_feature(model, state.variables, x_q, y_q, jax.random.key(1),
                                     eps=4 / 255, steps=10)
    stream = train.Stream(dict(image=images(n_c), label=labels(n_c)), 128)

    def cf():  # M_c: 2 epochs from scratch, then the per-sample loss of the queries
      fresh = train.new_state(jax.random.key(2), model, shape, opt)
      m_c, _ = train.fit(fresh, stream, spec=spec, epochs=2, key=jax.random.key(3),
                         verbose=False)
      return features.per_sample_loss(model, m_c.variables, x_q, y_q)

    results[tag] = dict(
        nf=(_median_time(nf, args.repeats), n_q, f"{n_q}x{n_r}"),
        nf_search=(_median_time(search, args.repeats), n_q, f"{n_q}x{n_r}"),
        af=(_median_time(af, args.repeats), n_q, f"{n_q}"),
        cf=(_median_time(cf, args.repeats), 2 * n_c, f"{n_c}x2ep"))
  # The search runs on whole chunks (512 queries × 4096 references, zero-padded), so its work
  # grows with the padded sizes: ∝ |D_f|·|D_r| once both exceed a chunk.
  padded = lambda n, c: -(-n // c) * c
  work = lambda s: (padded(sizes["forget"] * s, 512) * padded(sizes["remaining"] * s, 4096))
  expected = dict(nf=args.scale, nf_search=work(args.scale) / work(1), af=args.scale,
                  cf=args.scale)
  for name in ("nf", "nf_search", "af", "cf"):
    base = results["small"][name][0]
    for tag in ("small", "large"):
      sec, n, label = results[tag][name]
      ratio = f"{sec / base:7.2f}" if tag == "large" else f"{'':7s}"
      exp = f"{expected[name]:9.1f}" if tag == "large" else f"{'':9s}"
      print(f"{name:8s} {label:>14s} {sec:9.3f} {n / sec:10.0f} {ratio} {exp}", flush=True)


if __name__ == "__main__":
  main()
