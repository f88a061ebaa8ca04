"""L2UL paper setting: CIFAR-10, ResNet-18, k = 16 instances, 20 adversarial examples each with
L2 eps 4.0 (METHODS §3). GPU-size; needs CIFAR-10 prepared for TFDS (docs/reproducing.md).

Arguments (comma-separated) as configs/l2ul_fashion_mnist.py: ``smoke``, ``ksweep``,
``continual``, ``relabel``. The cases use METHODS §3's forget loss −CE as written; ResNet-18
trained with weight decay and augmentation is far less saturated than the CPU MLP (set
``--config.methods.l2ul.forget_loss=complement`` etc. if it is not).
"""

from configs import default, l2ul_fashion_mnist

CASES = l2ul_fashion_mnist.CASES
BASELINES = l2ul_fashion_mnist.BASELINES


def get_config(arg: str | None = None):
  c = default.get_config()
  c.data.name = "cifar10"
  c.data.scenario = "instance"
  c.data.forget_size = 16  # k
  c.model.name = "resnet18"
  c.train.epochs = 30
  c.experiment.methods = CASES + BASELINES
  for name in CASES:
    c.methods[name].num_adv = 20
    c.methods[name].eps = 4.0
  return apply_arg(c, arg)


def apply_arg(c, arg: str | None):
  """The L2UL arguments, plus a smoke that shrinks the ResNet like configs/cifar10.py."""
  args = [a for a in (arg or "").split(",") if a]
  c = l2ul_fashion_mnist.apply_arg(c, ",".join(args))
  if "smoke" in args:
    c.data.forget_size = 2
    c.model.kwargs.width = 4
    c.train.epochs = 1
    c.train.batch_size = 16
    c.train.eval_batch_size = 64
    for name in CASES:
      c.methods[name].adv_batch_size = 8
      c.methods[name].retain_batch_size = 8
      c.methods[name].probe_size = 32
  return c
