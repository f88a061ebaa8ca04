"""L2UL paper setting on CIFAR-100: ResNet-50, k = 16, 200 adversarial examples per forget image
(METHODS §3). GPU-size; arguments as configs/l2ul_cifar10.py, whose setting this changes."""

from configs import l2ul_cifar10


def get_config(arg: str | None = None):
  c = l2ul_cifar10.get_config()
  c.data.name = "cifar100"
  c.model.name = "resnet50"
  for name in l2ul_cifar10.CASES:
    c.methods[name].num_adv = 200
    c.methods[name].adv_batch_size = 512
  return l2ul_cifar10.apply_arg(c, arg)
