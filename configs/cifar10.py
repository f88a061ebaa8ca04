"""TMU paper setting: CIFAR-10, ResNet-18, |D_f| = 100 per class (METHODS §1, §6). GPU-size.

Needs CIFAR-10 prepared for TFDS (see docs/reproducing.md for the offline recipe).
Arguments: ``smoke`` (tiny, for CI under tfds.testing.mock_data), ``sweep`` (all 10 classes
× 3 seeds, the paper's Tables 1–2 with mean ± std), ``epsilon`` (the GPU setting of METHODS §5b:
N = 128 unlearned ResNet-18s per method against 128 retrained, 128 more held out).
"""

from configs import default

ALL_METHODS = ("finetune", "neg_grad", "neg_grad_plus", "random_label", "bad_teacher", "tmu",
               "tmu_plus")


def get_config(arg: str | None = None):
  c = default.get_config()
  c.data.name = "cifar10"
  c.data.forget_class = 3
  c.model.name = "resnet18"
  c.train.epochs = 30
  c.experiment.methods = ALL_METHODS
  if arg == "epsilon":
    c.experiment.epsilon = 128
    c.experiment.gold_models = 256
    c.experiment.methods = ALL_METHODS + ("scrub", "salun")
    c.experiment.ensemble = "vmap"
    return c
  return apply_arg(c, arg, classes=tuple(range(10)))


def apply_arg(c, arg, classes):
  """Shared ``smoke`` / ``sweep`` handling for the TFDS configs."""
  if arg == "smoke":
    c.data.forget_class = 0
    c.data.forget_size = 4
    c.model.kwargs.width = 4
    c.train.epochs = 1
    c.train.batch_size = 16
    c.train.eval_batch_size = 64
    c.experiment.mia_samples = 16
    for name in ("tmu", "tmu_plus"):
      c.methods[name].n_twins = 1
      c.methods[name].twin.epochs = 1
      c.methods[name].clf.epochs = 2
      c.methods[name].cf.epochs = 1
      c.methods[name].unlearn.epochs = 1
    c.methods.finetune.epochs = 1
    c.methods.random_label.epochs = 1
    c.methods.neg_grad.max_steps = 2
    c.methods.neg_grad_plus.max_steps = 2
  elif arg == "sweep":
    c.experiment.forget_classes = classes
    c.experiment.seeds = (0, 1, 2)
  elif arg:
    raise ValueError(f"unknown config argument {arg!r}; valid: smoke, sweep")
  return c
