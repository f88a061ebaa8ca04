"""L2UL on the embedded default data: real Fashion-MNIST, MLP, k = 16 instances (METHODS §3).

M_o is the TMU embedded default's memorizing MLP (no weight decay): it is right on every forget
instance, most with float32 cross-entropy exactly 0, where METHODS §3's −CE has no gradient
(FINDINGS.md, L2UL part). The cases therefore use the documented ``complement`` forget loss
(docs/l2ul.md). Arguments (comma-separated): ``smoke`` (tiny), ``ksweep`` (k ∈ {1, 16, 64, 128,
256}), ``continual`` (5 rounds of k = 16), ``relabel`` (mode relabel, L2UL cases only);
issue 11's study (docs/selection.md, docs/results/l2ul_study.md): ``dev``, ``dev2``,
``baseline_dev`` (development seeds), ``report`` (report seeds) and ``tuned`` (the chosen
settings on any other argument, e.g. ``continual,tuned``); ``release_dev`` / ``release_report``
(MAS released at the step cap, report on fresh seeds 10-19).
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
    elif a in ("dev", "dev2", "baseline_dev", "report"):
      study(c, a)
    elif a in ("relabel_dev", "relabel_report"):
      relabel_study(c, a)
    elif a in ("release_dev", "release_report"):
      release_study(c, a)
    elif a == "tuned":  # the settings chosen on development seeds (e.g. ``continual,tuned``)
      tune(c)
    elif a:
      raise ValueError(f"unknown config argument {a!r}; valid: smoke, ksweep, continual, relabel, "
                       "dev, dev2, baseline_dev, report, tuned, relabel_dev, relabel_report, "
                       "release_dev, release_report (comma-separated)")
  return c


# Issue 11's L2UL protocol (docs/selection.md): settings are chosen on development seeds
# 100-104 (each seed its own M_o and D_f draw), then reported once on seeds 0-9.
DEV_SEEDS = (100, 101, 102, 103, 104)
REPORT_SEEDS = tuple(range(10))
STUDY_SIZES = (1, 16, 64)
# One lever at a time against the current setting (complement, λ 0.3, lr 1e-3, 20 adversarial
# images per forget image, per-tensor MAS, no representation anchor).
LEVERS = dict(base={}, lam1=dict(lam=1.0), lr3e4=dict(lr=3e-4),
              gate=dict(forget_loss="complement_correct"), adv40=dict(num_adv=40),
              mas_global=dict(mas_norm="global"), mas_layer=dict(mas_norm="layer"),
              rep1e3=dict(rep_lam=1e-3), rep1e2=dict(rep_lam=1e-2))
# Round 2 on the same development draws (docs/selection.md): the combination of every lever
# that beat ``base`` in round 1 (the rule), and, added after round 1 was read, the anchor's
# scale beyond round 1's grid and the two best levers together.
LEVERS2 = dict(combo=dict(forget_loss="complement_correct", rep_lam=1e-2, lr=3e-4,
                          mas_norm="global", num_adv=40),
               rep3e2=dict(rep_lam=3e-2), rep1e1=dict(rep_lam=1e-1),
               gate_rep1e2=dict(forget_loss="complement_correct", rep_lam=1e-2))
# The baselines' budget: their lr × {1, 3, 10} at k = 16 (a lower lr only forgets less: every
# baseline keeps Acc_Df ≥ 94% at k = 16 with its own lr, docs/results/l2ul_ksweep.md).
BASELINE_LR = dict(lr1=1.0, lr3=3.0, lr10=10.0)
# Chosen on ``dev`` / ``baseline_dev`` by docs/selection.md's rule (filled in after dev ran).
CHOSEN = dict(rep_lam=1e-2)
# Relabel mode (docs/selection.md, "L2UL relabel mode"): λ × the representation anchor at
# k = 16 on DEV_SEEDS; ``base`` is the setting ``relabel`` had before (λ 0.1, no anchor).
RELABEL_LEVERS = dict(base=dict(lam=0.1), lam3e2=dict(lam=0.03), lam3e1=dict(lam=0.3),
                      rep=dict(lam=0.1, rep_lam=1e-2), lam3e2_rep=dict(lam=0.03, rep_lam=1e-2),
                      lam3e1_rep=dict(lam=0.3, rep_lam=1e-2))
RELABEL_SIZE = 16
# Chosen on ``relabel_dev`` by docs/selection.md's rule (filled in after relabel_dev ran).
RELABEL_CHOSEN: dict = dict(lam=0.1, rep_lam=1e-2)
CHOSEN_BASELINE_LR = dict(finetune=3.0, neg_grad=10.0, random_label=3.0, bad_teacher=3.0,
                          scrub=1.0, salun=3.0)


def study(c, part: str) -> None:
  """``dev`` (``dev2``): every lever of LEVERS (LEVERS2) on case l2ul, k ∈ STUDY_SIZES,
  DEV_SEEDS; ``baseline_dev``: every baseline × BASELINE_LR at k = 16 on DEV_SEEDS;
  ``report``: the four cases with CHOSEN, the baselines with CHOSEN_BASELINE_LR and the two
  controls on REPORT_SEEDS. No gold model (L2UL's goal is against M_o)."""
  c.experiment.gold = False
  if part in ("dev", "dev2"):
    c.experiment.seeds = DEV_SEEDS
    c.experiment.forget_sizes = STUDY_SIZES
    add_levers(c, LEVERS if part == "dev" else LEVERS2)
  elif part == "baseline_dev":
    c.experiment.seeds = DEV_SEEDS
    c.data.forget_size = 16
    c.experiment.methods = ()
    for name in BASELINES:
      for tag, factor in BASELINE_LR.items():
        c.methods[f"{name}_{tag}"] = default.scaled_lr(c, name, factor)
        c.experiment.methods += (f"{name}_{tag}",)
  else:
    c.experiment.seeds = REPORT_SEEDS
    c.experiment.forget_sizes = STUDY_SIZES
    # The control: L2UL with the settings it had before development (is the choice a gain on
    # fresh draws, or a development-draw artefact?).
    c.methods.l2ul_untuned = default.l2ul_case(c.methods.l2ul, "l2ul")
    tune(c)
    # Equal forgetting (issue 11): the chosen L2UL with 4× the step cap, so that the draws
    # where it stops at 1000 steps with D_f images left are run to Acc_Df = 0 as well.
    c.methods.l2ul_long = default.l2ul_case(c.methods.l2ul, "l2ul", max_steps=4000)
    c.experiment.methods = CASES + BASELINES + ("l2ul_untuned", "l2ul_long")


def add_levers(c, levers: dict) -> None:
  """The experiment's methods become one ``l2ul_<tag>`` copy of case l2ul per lever, each with
  that lever's fields."""
  c.experiment.methods = ()
  for tag, fields in levers.items():
    c.methods[f"l2ul_{tag}"] = default.l2ul_case(c.methods.l2ul, "l2ul", **fields)
    c.experiment.methods += (f"l2ul_{tag}",)


def tune(c) -> None:
  """CHOSEN on every L2UL case, CHOSEN_BASELINE_LR on the baselines' lr."""
  for name in CASES:
    for k, v in CHOSEN.items():
      c.methods[name][k] = v
  for name, factor in CHOSEN_BASELINE_LR.items():
    c.methods[name].lr = float(c.methods[name].lr) * factor



# The release (docs/selection.md "L2UL's release"): up to this many more steps with MAS's λ = 0
# when the 1000-step cap ends with forget images left. Its report seeds are fresh (10-19):
# seeds 0-9 showed the stall it answers.
RELEASE_STEPS = 1000
RELEASE_REPORT_SEEDS = tuple(range(10, 20))


def release_study(c, part: str) -> None:
  """``release_dev``: case l2ul with CHOSEN, without and with the release, on DEV_SEEDS, both
  on one random stream (``rng_name``). ``release_report``: the cases l2ul_naive, l2ul_adv and
  l2ul with CHOSEN and l2ul with the release (on l2ul's stream) on RELEASE_REPORT_SEEDS.
  k ∈ STUDY_SIZES; no gold model."""
  c.experiment.gold = False
  c.experiment.forget_sizes = STUDY_SIZES
  if part == "release_dev":
    c.experiment.seeds = DEV_SEEDS
    c.methods.l2ul_chosen = default.l2ul_case(c.methods.l2ul, "l2ul", **CHOSEN)
    c.methods.l2ul_release = default.l2ul_case(c.methods.l2ul, "l2ul", **CHOSEN,
                                               release_steps=RELEASE_STEPS,
                                               rng_name="l2ul_chosen")
    c.experiment.methods = ("l2ul_chosen", "l2ul_release")
  else:
    c.experiment.seeds = RELEASE_REPORT_SEEDS
    tune(c)
    c.methods.l2ul_release = default.l2ul_case(c.methods.l2ul, "l2ul",
                                               release_steps=RELEASE_STEPS, rng_name="l2ul")
    c.experiment.methods = ("l2ul_naive", "l2ul_adv", "l2ul", "l2ul_release")


def relabel_study(c, part: str) -> None:
  """Relabel mode, k = RELABEL_SIZE, no gold model. ``relabel_dev``: every RELABEL_LEVERS
  setting on case l2ul, DEV_SEEDS; ``relabel_report``: the four cases with RELABEL_CHOSEN, the
  pre-development setting as ``l2ul_untuned`` and the chosen one with 4× the step cap as
  ``l2ul_long``, REPORT_SEEDS (k = RELABEL_SIZE; ``--config.data.forget_size`` for others)."""
  c.data.mode = "relabel"
  c.data.forget_size = RELABEL_SIZE
  c.experiment.gold = False
  if part == "relabel_dev":
    c.experiment.seeds = DEV_SEEDS
    add_levers(c, RELABEL_LEVERS)
  else:
    c.experiment.seeds = REPORT_SEEDS
    c.methods.l2ul_untuned = default.l2ul_case(c.methods.l2ul, "l2ul",
                                               **RELABEL_LEVERS["base"])
    for name in CASES:
      for k, v in {**RELABEL_LEVERS["base"], **RELABEL_CHOSEN}.items():
        c.methods[name][k] = v
    # Equal relabelling (issue 11): the chosen L2UL with 4× the step cap, for the draws where
    # it stops at 1000 steps with an image not yet at its requested label.
    c.methods.l2ul_long = default.l2ul_case(c.methods.l2ul, "l2ul", max_steps=4000)
    c.experiment.methods = CASES + ("l2ul_untuned", "l2ul_long")
