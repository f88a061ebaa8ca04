"""L2UL on the embedded default data: real Fashion-MNIST, MLP, k = 16 instances (METHODS §3).

M_o is the TMU embedded default's memorizing MLP (no weight decay): it is right on every forget
instance, most with float32 cross-entropy exactly 0, where METHODS §3's −CE has no gradient
(FINDINGS.md, L2UL part). The cases therefore use the documented ``complement`` forget loss
(docs/l2ul.md). Arguments (comma-separated): ``smoke`` (tiny), ``ksweep`` (k ∈ {1, 16, 64, 128,
256}), ``continual`` (5 rounds of k = 16), ``relabel`` (mode relabel, L2UL cases only).
"""

from configs import default

CASES = ("l2ul_naive", "l2ul_adv", "l2ul", "l2ul_oracle")
BASELINES = ("finetune", "neg_grad", "random_label", "bad_teacher", "scrub", "salun")


def get_config(arg: str | None = None):
  c = default.get_config()
  c.data.name = "fashion_mnist"
  c.data.scenario = "instance"
  c.data.forget_size = 16  # k
  c.data.mode = "misclassify"
  c.model.name = "mlp"
  # The TMU embedded default's recipe (configs/fashion_mnist.py), so both share one cached M_o:
  # no weight decay, 50 epochs; M_o is 100% right on D_f with float32 CE exactly 0 on most of it.
  c.train.epochs = 50
  c.train.lr = 0.05
  c.train.weight_decay = 0.0
  c.train.augment = False
  c.train.eval_batch_size = 2048
  c.experiment.methods = CASES + BASELINES
  for name in CASES:
    # Deviation (docs/l2ul.md): the ascent term −log(1 − p_y) instead of −CE, whose gradient is
    # exactly 0 on this saturated M_o (FINDINGS.md); all other pieces as METHODS §3.
    c.methods[name].forget_loss = "complement"
    c.methods[name].lam = 0.3  # the λ/lr trade-off: docs/l2ul.md
  return apply_arg(c, arg)


def apply_arg(c, arg: str | None):
  """``smoke`` / ``ksweep`` / ``continual`` / ``relabel`` handling shared by the L2UL configs."""
  for a in (arg or "").split(","):
    if a == "smoke":
      c.data.train_subset = 3000
      c.data.forget_size = 4
      c.train.epochs = 2
      c.experiment.mia_samples = 64
      for name in CASES:
        c.methods[name].num_adv = 4
        c.methods[name].adv_steps = 10
        c.methods[name].max_steps = 20
        c.methods[name].probe_size = 128
      for name in ("finetune", "random_label", "salun", "bad_teacher"):
        c.methods[name].epochs = 1
      c.methods.scrub.epochs = 1
      c.methods.scrub.msteps = 1
      c.methods.neg_grad.max_steps = 5
    elif a == "ksweep":
      c.experiment.forget_sizes = (1, 16, 64, 128, 256)
    elif a == "continual":
      c.experiment.rounds = 5
      c.experiment.gold = False
      c.experiment.methods = CASES
    elif a == "relabel":
      c.data.mode = "relabel"
      c.experiment.methods = CASES
      # A requested label needs more movement than any wrong label: at λ = 0.3 L2UL stalls at
      # 15/16 requested labels after 1000 steps (docs/l2ul.md).
      c.methods.l2ul.lam = 0.1
    elif a:
      raise ValueError(f"unknown config argument {a!r}; valid: smoke, ksweep, continual, relabel "
                       "(comma-separated)")
  return c
