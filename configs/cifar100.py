"""TMU paper setting on CIFAR-100 (ResNet-18); the class list of METHODS §6 for ``sweep``."""

from configs import cifar10, default

# road, turtle, chimpanzee, orchid, rabbit, forest, possum, fox, house, mushroom
PAPER_CLASSES = (68, 93, 21, 54, 65, 33, 64, 34, 37, 51)


def get_config(arg: str | None = None):
  c = default.get_config()
  c.data.name = "cifar100"
  c.data.forget_class = PAPER_CLASSES[0]
  c.model.name = "resnet18"
  c.train.epochs = 30
  c.experiment.methods = cifar10.ALL_METHODS
  return cifar10.apply_arg(c, arg, classes=PAPER_CLASSES)
