"""Plain PyTorch versions of the benchmarked networks (bench-only; never imported by tmu_jax)."""

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
    side = hw // 2 ** len(channels)
    self.fc = nn.Linear(c * side * side, width)
    self.out = nn.Linear(width, num_classes)

  def forward(self, x):
    for conv in self.convs:
      x = F.max_pool2d(F.relu(conv(x)), 2)
    return self.out(F.relu(self.fc(x.flatten(1))))


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


class ResNet18(nn.Module):
  """CIFAR ResNet-18: 3x3 stem, stride 1, no max-pool (as tmu_jax.models.resnet)."""

  def __init__(self, num_classes=10):
    super().__init__()
    self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
    layers, cin = [], 64
    for cout, stride in [(64, 1), (128, 2), (256, 2), (512, 2)]:
      layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
      cin = cout
    self.layers = nn.Sequential(*layers)
    self.fc = nn.Linear(512, num_classes)

  def forward(self, x):
    x = self.layers(self.stem(x))
    return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
