"""Images/second of the compiled training loop (``tmu_jax.train.fit``) vs a plain PyTorch step
loop, same net, same batch.

    python bench/train_step.py [--nets cnn,resnet18] [--conv xla,patches] [--batch 128] [--steps 5]

Both sides: SGD momentum 0.9 with coupled weight decay 5e-4, softmax cross-entropy, float32,
one batch of 32x32x3 images (uint8 → [0, 1] and normalisation inside the JAX step; PyTorch gets
the float batch ready-made, which favours it slightly). The JAX side runs its timed steps in one
compiled loop chunk (one host sync) in ``fit``, and one jitted update per call in ``step``;
PyTorch runs one Python step at a time. Each net runs with each ``--conv`` (tmu_jax.models.conv:
the library convolution, or im2col, which the CPU default "auto" picks). Prints the ratios per
net from one run; "compile s" is the first call of the jitted update less one timed step.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from tmu_jax import train
from tmu_jax.models import get_model
from tmu_jax.train.step import apply_update


def _timed(fn, state) -> tuple:
  """(state, seconds) of ``fn(state)`` until its parameters are ready."""
  t0 = time.perf_counter()
  state = fn(state)
  jax.block_until_ready(state.params)
  return state, time.perf_counter() - t0


def jax_images_per_second(name: str, conv: str, x: np.ndarray, y: np.ndarray,
                          steps: int) -> tuple:
  """(fit images/s, single-step images/s, compile seconds of the single step) on one batch.

  ``fit``: the engine as every training uses it. The stream holds exactly one batch, so an
  epoch is one step, and all ``steps`` steps run in one compiled ``lax.scan`` chunk; the first
  fit compiles and runs, the timed second one (from the state it left) reuses the program.
  ``step``: the same update (``train.step.apply_update``) jitted alone, one call per step, as
  the PyTorch loop runs: the difference is the cost of running the update inside the loop.
  """
  model = get_model(name, 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), conv=conv)
  opt = train.Optimizer("sgd", 0.01, momentum=0.9, weight_decay=5e-4, total_steps=3 * steps)
  state = train.new_state(jax.random.key(0), model, x.shape[1:], opt)
  images, labels = jnp.asarray(x), jnp.asarray(y)
  stream = train.Stream(dict(image=images, label=labels), len(y))
  spec = train.StepSpec(model=model, optimizer=opt.family, num_classes=10)
  fit = lambda st: train.fit(st, stream, spec=spec, epochs=steps, key=jax.random.key(1),
                             chunk_steps=steps, verbose=False)[0]
  state, _ = _timed(fit, state)  # compiles the chunk and runs it
  state, fit_s = _timed(fit, state)
  batch = dict(image=images, label=labels, weight=jnp.ones(len(y), jnp.float32))
  update = jax.jit(lambda st, b, key: apply_update(spec, st, b, key, None)[0],
                   donate_argnums=(0,))

  def loop(st):
    for i in range(steps):
      st = update(st, batch, jax.random.key(i))
    return st

  state, compile_s = _timed(lambda st: update(st, batch, jax.random.key(0)), state)  # compiles
  _, step_s = _timed(loop, state)
  return steps * len(y) / fit_s, steps * len(y) / step_s, compile_s - step_s / steps


def torch_images_per_second(name: str, x: np.ndarray, y: np.ndarray, steps: int,
                            device: str) -> float:
  import torch
  import torch_nets
  torch.manual_seed(0)
  net = (torch_nets.ResNet18() if name == "resnet18" else torch_nets.SmallCNN()).to(device)
  opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
  xt = torch.tensor(x.transpose(0, 3, 1, 2) / 255.0, dtype=torch.float32, device=device)
  yt = torch.tensor(y, dtype=torch.long, device=device)
  loss_fn = torch.nn.CrossEntropyLoss()

  def step():
    opt.zero_grad(set_to_none=True)
    loss = loss_fn(net(xt), yt)
    loss.backward()
    opt.step()
    return loss

  step()
  sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
  sync()
  t0 = time.perf_counter()
  for _ in range(steps):
    step()
  sync()
  return steps * len(y) / (time.perf_counter() - t0)


def main():
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("--nets", default="cnn,resnet18")
  p.add_argument("--conv", default="xla,patches")
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--steps", type=int, default=5)
  args = p.parse_args()
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import torch
  device = "cuda" if torch.cuda.is_available() else "cpu"
  rng = np.random.default_rng(0)
  x = rng.integers(0, 256, (args.batch, 32, 32, 3)).astype(np.uint8)
  y = rng.integers(0, 10, args.batch).astype(np.int32)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; torch {torch.__version__} on "
        f"{device}; batch {args.batch}, {args.steps} timed steps after one warm-up")
  print(f"{'net':18s} {'fit img/s':>10s} {'step img/s':>11s} {'torch img/s':>12s} "
        f"{'fit/step':>9s} {'fit/torch':>10s} {'step/torch':>11s} {'compile s':>10s}")
  for name in args.nets.split(","):
    t = torch_images_per_second(name, x, y, args.steps, device)
    for conv in args.conv.split(","):
      fit, step, compile_s = jax_images_per_second(name, conv, x, y, args.steps)
      print(f"{name + '/' + conv:18s} {fit:10.1f} {step:11.1f} {t:12.1f} {fit / step:9.2f} "
            f"{fit / t:10.2f} {step / t:11.2f} {compile_s:10.1f}", flush=True)


if __name__ == "__main__":
  main()
