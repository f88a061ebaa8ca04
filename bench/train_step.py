"""Images/second of the jitted train step vs a plain PyTorch step, same net, same batch.

    python bench/train_step.py [--nets cnn,resnet18] [--batch 128] [--steps 5]

Both sides: SGD momentum 0.9 with coupled weight decay 5e-4, softmax cross-entropy, float32,
one batch of 32x32x3 images (uint8 → [0, 1] and normalisation inside the JAX step; PyTorch gets
the float batch ready-made, which favours it slightly). Prints one ratio per net from one run.
"""

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tmu_jax import engine  # noqa: E402
from tmu_jax.models import get_model  # noqa: E402


def jax_images_per_second(name: str, x: np.ndarray, y: np.ndarray, steps: int) -> tuple:
  model = get_model(name, 10, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
  tx = engine.make_optimizer("sgd", 0.01, momentum=0.9, weight_decay=5e-4)
  state = engine.create_train_state(jax.random.key(0), model, x.shape[1:], tx)
  data = (dict(image=jnp.asarray(x), label=jnp.asarray(y)),)
  idx = (jnp.arange(len(y))[None],)
  valid = jnp.ones((1, len(y)))
  spec = engine.StepSpec(num_classes=10)
  key = jax.random.key(0)
  args = lambda: (data, idx, valid, jnp.int32(0), jnp.int32(0), key, None)
  t0 = time.perf_counter()
  state, m = engine.train_step(state, *args(), spec=spec)
  jax.block_until_ready(m)
  compile_s = time.perf_counter() - t0
  t0 = time.perf_counter()
  for _ in range(steps):
    state, m = engine.train_step(state, *args(), spec=spec)
  jax.block_until_ready((state.params, m))
  return steps * len(y) / (time.perf_counter() - t0), compile_s


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
  print(f"{'net':10s} {'jax img/s':>10s} {'torch img/s':>12s} {'jax/torch':>10s} {'compile s':>10s}")
  for name in args.nets.split(","):
    j, compile_s = jax_images_per_second(name, x, y, args.steps)
    t = torch_images_per_second(name, x, y, args.steps, device)
    print(f"{name:10s} {j:10.1f} {t:12.1f} {j / t:10.2f} {compile_s:10.1f}", flush=True)


if __name__ == "__main__":
  main()
