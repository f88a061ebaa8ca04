"""Time to build L2UL's adversarial set (METHODS §3) in JAX vs a plain PyTorch loop, same net.

    python bench/adv_set.py [--k 16] [--num_adv 20] [--steps 100] [--threads 2]

The network is the embedded default's MLP 784-512-256-10 (input normalisation inside), with the
JAX weights copied into PyTorch. Both sides attack k × num_adv copies of k Fashion-MNIST-shaped
images with targeted L2 PGD (eps 4.0, step 0.1, ``steps`` steps, random start; per-sample
normalised gradient step, clip to [0, 1], projection onto the L2 ball): JAX as one jitted
program (``attacks.l2ul_adversarial_set``), PyTorch as the obvious batched loop. Prints the
median of ``--repeats`` timed runs per side (JAX compile time apart) and their ratio.
"""

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from tmu_jax import attacks
from tmu_jax.models import get_model

MEAN, STD = 0.2860, 0.3530


def jax_side(k, num_adv, steps, repeats):
  model = get_model("mlp", 10, (MEAN,), (STD,))
  x = jax.random.uniform(jax.random.key(0), (k, 28, 28, 1))
  y = jax.random.randint(jax.random.key(1), (k,), 0, 10)
  variables = model.init(jax.random.key(2), x)

  @jax.jit
  def build(variables, x, y, key):
    logits_fn = lambda z: model.apply(variables, z)[0]
    return attacks.l2ul_adversarial_set(logits_fn, x, y, key, num_classes=10, num_adv=num_adv,
                                        eps=4.0, step_size=0.1, steps=steps)

  t0 = time.perf_counter()
  jax.block_until_ready(build(variables, x, y, jax.random.key(3)))
  first = time.perf_counter() - t0
  times = []
  for r in range(repeats):
    t0 = time.perf_counter()
    x_adv, y_adv = jax.block_until_ready(build(variables, x, y, jax.random.key(4 + r)))
    times.append(time.perf_counter() - t0)
  logits = model.apply(variables, x_adv)[0]
  hit = float(100 * jnp.mean(jnp.argmax(logits, -1) == y_adv))
  return variables, np.asarray(x), np.asarray(y), statistics.median(times), first, hit


def torch_side(variables, x, y, num_adv, steps, repeats, threads):
  import torch  # bench-only dependency (requirements-bench.txt)
  torch.set_num_threads(threads)
  p = variables["params"]
  layers = []
  for i, name in enumerate(sorted(p, key=lambda n: int(n.split("_")[1]))):
    w, b = np.asarray(p[name]["kernel"]), np.asarray(p[name]["bias"])
    lin = torch.nn.Linear(*w.shape)
    lin.weight.data = torch.from_numpy(w.T.copy())
    lin.bias.data = torch.from_numpy(b.copy())
    layers += [lin] + ([torch.nn.ReLU()] if i < len(p) - 1 else [])
  net = torch.nn.Sequential(*layers).eval()
  for q in net.parameters():
    q.requires_grad_(False)
  forward = lambda z: net(((z - MEAN) / STD).flatten(1))

  def attack(gen):
    xs = torch.from_numpy(np.repeat(x, num_adv, axis=0)).permute(0, 3, 1, 2).contiguous()
    ys = torch.from_numpy(np.repeat(y, num_adv)).long()
    target = (ys + torch.randint(1, 10, ys.shape, generator=gen)) % 10
    d = torch.randn(xs.shape, generator=gen)
    d = d / d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    u = torch.rand(xs.shape[0], 1, 1, 1, generator=gen) ** (1.0 / xs[0].numel())
    x_adv = xs + 4.0 * u * d

    def project(z):
      delta = z.clamp(0, 1) - xs
      norm = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
      return xs + delta * torch.where(norm > 4.0, 4.0 / norm.clamp_min(1e-12), 1.0)

    x_adv = project(x_adv)
    for _ in range(steps):
      x_adv.requires_grad_(True)
      loss = -torch.nn.functional.cross_entropy(forward(x_adv), target, reduction="sum")
      grad, = torch.autograd.grad(loss, x_adv)
      with torch.no_grad():
        g = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x_adv = project(x_adv + 0.1 * g)
    with torch.no_grad():
      hit = float(100 * (forward(x_adv).argmax(1) == target).float().mean())
    return hit

  times, hit = [], 0.0
  for r in range(repeats):
    t0 = time.perf_counter()
    hit = attack(torch.Generator().manual_seed(r))
    times.append(time.perf_counter() - t0)
  return statistics.median(times), hit


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--k", type=int, default=16)
  ap.add_argument("--num_adv", type=int, default=20)
  ap.add_argument("--steps", type=int, default=100)
  ap.add_argument("--repeats", type=int, default=3)
  ap.add_argument("--threads", type=int, default=2)
  a = ap.parse_args()
  variables, x, y, t_jax, first, hit_jax = jax_side(a.k, a.num_adv, a.steps, a.repeats)
  t_torch, hit_torch = torch_side(variables, x, y, a.num_adv, a.steps, a.repeats, a.threads)
  n = a.k * a.num_adv
  print(f"adversarial set: k={a.k} × num_adv={a.num_adv} = {n} examples × {a.steps} PGD steps, "
        f"MLP 784-512-256-10, {jax.devices()[0].platform}")
  print(f"  JAX (one jit program): {t_jax:.3f} s  (first call incl. compile {first:.2f} s), "
        f"targets reached {hit_jax:.0f}%")
  print(f"  PyTorch loop ({a.threads} threads): {t_torch:.3f} s, targets reached {hit_torch:.0f}%")
  print(f"  ratio PyTorch / JAX = {t_torch / t_jax:.2f}")


if __name__ == "__main__":
  main()
