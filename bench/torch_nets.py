"""Plain PyTorch versions of the benchmarked networks (bench-only; never imported by tmu_jax).

``load_flax`` copies the weights of the tmu_jax model (its linen variables as nested dicts of
arrays: ``{"params": ..., "batch_stats": ...}``) into these modules, so that both frameworks can
be checked to compute the same function (tests/test_models.py). The JAX models normalise their
[0, 1] input per channel inside; these modules expect the normalised input.
"""

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F


class SmallCNN(nn.Module):
  """Same layers as tmu_jax.models.cnn.SmallCNN: two conv3x3+ReLU+maxpool blocks, 128, C."""

  def __init__(self, in_ch=3, hw=32, num_classes=10, channels=(32, 64), width=128):
    super().__init__()
    convs, c = [], in_ch
    for out in channels:
      convs.append(nn.Conv2d(c, out, 3, padding=1))
      c = out
    self.convs = nn.ModuleList(convs)
    self.side = hw // 2 ** len(channels)
    self.fc = nn.Linear(c * self.side * self.side, width)
    self.out = nn.Linear(width, num_classes)

  def forward(self, x):
    for conv in self.convs:
      x = F.max_pool2d(F.relu(conv(x)), 2)
    return self.out(F.relu(self.fc(x.flatten(1))))

  @torch.no_grad()
  def load_flax(self, variables):
    """Copies the params of a tmu_jax ``cnn`` model (Conv_i, Dense_0, Dense_1)."""
    p = variables["params"]
    for i, conv in enumerate(self.convs):
      _conv(conv, p[f"Conv_{i}"])
    # Flax flattens NHWC feature maps as (H, W, C); PyTorch flattens NCHW as (C, H, W).
    kernel = np.asarray(p["Dense_0"]["kernel"])
    c = self.convs[-1].out_channels
    kernel = kernel.reshape(self.side, self.side, c, -1).transpose(2, 0, 1, 3).reshape(
        c * self.side * self.side, -1)
    _linear(self.fc, dict(kernel=kernel, bias=p["Dense_0"]["bias"]))
    _linear(self.out, p["Dense_1"])
    return self


class BasicBlock(nn.Module):
  def __init__(self, cin, cout, stride):
    super().__init__()
    self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.b1 = nn.BatchNorm2d(cout)
    self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.b2 = nn.BatchNorm2d(cout)
    self.short = nn.Sequential()
    if stride != 1 or cin != cout:
      self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

  def forward(self, x):
    out = F.relu(self.b1(self.c1(x)))
    return F.relu(self.b2(self.c2(out)) + self.short(x))

  @torch.no_grad()
  def load_flax(self, params, stats):
    """Conv_0/BatchNorm_0, Conv_1/BatchNorm_1 and the shortcut's Conv_2/BatchNorm_2."""
    _conv(self.c1, params["Conv_0"])
    _bn(self.b1, params["BatchNorm_0"], stats["BatchNorm_0"])
    _conv(self.c2, params["Conv_1"])
    _bn(self.b2, params["BatchNorm_1"], stats["BatchNorm_1"])
    if len(self.short):
      _conv(self.short[0], params["Conv_2"])
      _bn(self.short[1], params["BatchNorm_2"], stats["BatchNorm_2"])


class ResNet18(nn.Module):
  """CIFAR ResNet-18: 3x3 stem, stride 1, no max-pool (as tmu_jax.models.resnet); stage widths
  width, 2·width, 4·width, 8·width."""

  def __init__(self, num_classes=10, width=64, in_ch=3):
    super().__init__()
    self.stem = nn.Sequential(nn.Conv2d(in_ch, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                              nn.ReLU())
    layers, cin = [], width
    for cout, stride in [(width, 1), (2 * width, 2), (4 * width, 2), (8 * width, 2)]:
      layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
      cin = cout
    self.layers = nn.Sequential(*layers)
    self.fc = nn.Linear(8 * width, num_classes)

  def forward(self, x):
    x = self.layers(self.stem(x))
    return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

  @torch.no_grad()
  def load_flax(self, variables):
    """Copies params and BatchNorm running statistics of a tmu_jax ``resnet18`` model."""
    p, s = variables["params"], variables["batch_stats"]
    _conv(self.stem[0], p["Conv_0"])
    _bn(self.stem[1], p["BatchNorm_0"], s["BatchNorm_0"])
    for i, block in enumerate(self.layers):
      block.load_flax(p[f"BasicBlock_{i}"], s[f"BasicBlock_{i}"])
    _linear(self.fc, p["Dense_0"])
    return self


def _tensor(a, like):
  t = torch.as_tensor(np.array(a, dtype=np.float32))
  if t.shape != like.shape:
    raise ValueError(f"flax array of shape {tuple(t.shape)} for a tensor of {tuple(like.shape)}")
  return t


def _conv(conv, p):
  """Flax kernel [kh, kw, in, out] → PyTorch weight [out, in, kh, kw] (and the bias)."""
  conv.weight.copy_(_tensor(np.asarray(p["kernel"]).transpose(3, 2, 0, 1), conv.weight))
  if conv.bias is not None:
    conv.bias.copy_(_tensor(p["bias"], conv.bias))


def _linear(linear, p):
  """Flax kernel [in, out] → PyTorch weight [out, in]."""
  linear.weight.copy_(_tensor(np.asarray(p["kernel"]).T, linear.weight))
  linear.bias.copy_(_tensor(p["bias"], linear.bias))


def _bn(bn, p, s):
  """scale/bias → weight/bias; batch_stats mean/var → running_mean/running_var."""
  bn.weight.copy_(_tensor(p["scale"], bn.weight))
  bn.bias.copy_(_tensor(p["bias"], bn.bias))
  bn.running_mean.copy_(_tensor(s["mean"], bn.running_mean))
  bn.running_var.copy_(_tensor(s["var"], bn.running_var))
