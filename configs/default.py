"""Every config field with its default. Variant configs import this and override a few fields.

Select a config with ``--config=configs/X.py`` (``:ARG`` passes ARG to ``get_config``) and
override any field from the command line, e.g. ``--config.train.epochs=5``.
"""

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The defaults; ``arg`` is accepted for symmetry with the variants and must be empty."""
  if arg:
    raise ValueError(f"configs/default.py takes no argument, got {arg!r}")
  c = ml_collections.ConfigDict()
  c.seed = 0  # model init, batch order, split draw; the same seed gives the same results
  c.cache_dir = ""  # where trained models are cached; "" means <workdir>/cache
  c.verbose = True  # progress lines on stderr

  # ---- data (METHODS §1)
  c.data = ml_collections.ConfigDict()
  c.data.name = "fashion_mnist"  # fashion_mnist, mnist (IDX folder) or any TFDS image dataset
  c.data.source = ""  # "idx" or "tfds"; "" picks the dataset's usual source
  c.data.dir = "/usr/share/datasets/fashion-mnist"  # IDX folder (Debian dataset-fashion-mnist)
  c.data.tfds_dir = ""  # TFDS data_dir ("" = TFDS default, ~/tensorflow_datasets)
  c.data.manual_dir = ""  # folder holding the genuine archive for an offline TFDS build
  c.data.train_subset = 0  # >0: a class-balanced subset of D_train of this size (CPU runs)
  c.data.subset_seed = 0  # seed of that subset (fixed, so all seeds share one data pool)
  c.data.scenario = "subclass"  # subclass (TMU), instance (L2UL) or class
  c.data.forget_class = 6  # c: the class D_f is drawn from (subclass / class scenarios)
  c.data.forget_size = 100  # |D_f| (subclass), k (instance); ignored for class
  c.data.mode = "misclassify"  # instance scenario (L2UL §3): misclassify (pred ≠ y) or relabel
  c.data.holdout_fraction = 0.2  # share of every class kept out of training (pool P)

  # ---- model (METHODS §1 architectures)
  c.model = ml_collections.ConfigDict()
  c.model.name = "resnet18"  # see tmu_jax.models.available()
  c.model.kwargs = ml_collections.ConfigDict()  # extra constructor arguments (e.g. width)

  # ---- training recipe of M_o, M_g and the curriculum model (TMU paper §5.1)
  c.train = ml_collections.ConfigDict()
  c.train.epochs = 30  # CIFAR: the TMU paper's recipe; lr ÷10 at 50% and 75%
  c.train.batch_size = 128
  c.train.optimizer = "sgd"  # sgd or adam
  c.train.lr = 0.01
  c.train.momentum = 0.9
  c.train.weight_decay = 5e-4  # coupled, PyTorch style (added to the gradient)
  c.train.schedule = "step"  # step (÷10 at 50%, 75%), constant or cosine
  c.train.augment = True  # random crop (pad 4) + horizontal flip, on device in the step
  c.train.flip = True  # horizontal flip as part of augmentation
  c.train.save_every_epochs = 1  # checkpoint period; training resumes from the last one
  c.train.eval_batch_size = 1024

  # ---- multi-device (batch-sharded data parallel over all local devices)
  c.num_devices = 1  # 0 = all local devices; batch_size must divide evenly

  # ---- experiment
  c.experiment = ml_collections.ConfigDict()
  c.experiment.forget_classes = ()  # () = just data.forget_class; else a sweep over classes
  c.experiment.seeds = ()  # () = just seed; else one run per seed (mean ± std in the report)
  c.experiment.methods = ()  # unlearning methods to run beside original and gold
  c.experiment.mia_samples = 2000  # members (D_r) and non-members (D_test) for the MIA attack
  c.experiment.forget_sizes = ()  # () = just data.forget_size; else one run per |D_f| (or k)
  c.experiment.rounds = 1  # >1: continual unlearning, rounds of forget_size new instances (§3)
  c.experiment.gold = True  # False: skip training M_g; gold-referenced metrics then use M_o

  # ---- unlearning methods (METHODS §4); each section is that method's config
  c.methods = ml_collections.ConfigDict()
  c.methods.finetune = dict(epochs=5, lr=0.02, momentum=0.9, weight_decay=5e-4,
                            batch_size=128, retain_fraction=1.0)
  # Gradient ascent stops at chance-level forget loss ln(K) (never looks at gold), or max_steps.
  c.methods.neg_grad = dict(lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=32,
                            max_steps=300, stop_at_chance=True)
  c.methods.neg_grad_plus = dict(lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=128,
                                 forget_batch_size=32, alpha=0.9, max_steps=1000,
                                 stop_at_chance=True)
  c.methods.random_label = dict(epochs=5, lr=0.01, momentum=0.9, weight_decay=5e-4,
                                batch_size=128, retain_fraction=1.0)
  c.methods.bad_teacher = dict(epochs=1, optimizer="adam", lr=1e-4, weight_decay=0.0,
                               batch_size=128, retain_fraction=0.3, temperature=1.0)
  # TMU (METHODS §2). The faithful variant:
  c.methods.tmu = dict(
      features="nf,af,cf",  # feature subset for the label classifier (Table 4 ablation)
      n_twins=1,  # independent twin draws (each its own D_t and M_t)
      balanced=False,  # class-balanced BCE for the label classifier
      threshold="half",  # half: easy iff p > 0.5; twin_rate: hard count = twin hard rate
      twin=dict(repeat=10, epochs=5, lr=0.005, batch_size=128),  # §2.1 M_t recipe
      nf=dict(k=5, ref_chunk=4096),  # §2.2 NF: mean of k nearest distances
      af=dict(eps=4 / 255, steps=10),  # §2.2 AF: L∞ PGD budget and steps (step eps/4)
      cf=dict(epochs=2, fraction=0.2),  # §2.2 CF: curriculum model epochs, share of D_r
      clf=dict(epochs=100, lr=0.01, weight_decay=5e-4, batch_size=32),  # §2.4
      # §2.5: random_label | neg_grad | runner_up (strong: fixed runner-up label, until flipped)
      unlearn=dict(mechanism="random_label", epochs=5, lr=0.01, momentum=0.9,
                   weight_decay=5e-4, batch_size=128, retain_fraction=1.0, hard_repeat=20),
  )
  # TMU+ : the paper's framework with the four changes of FINDINGS.md switched on.
  c.methods.tmu_plus = tmu_variant(c.methods.tmu, n_twins=8, balanced=True,
                                   threshold="twin_rate", mechanism="runner_up", epochs=10)
  # L2UL (METHODS §3): one function, ``case`` picks the ablation; the data mode is data.mode.
  c.methods.l2ul = dict(
      case="l2ul",  # naive (forget loss only) | adv (+adversarial) | l2ul (+adv+MAS) | oracle
      num_adv=20,  # targeted L2 PGD examples per forget image (CIFAR-10: 20, CIFAR-100: 200)
      eps=4.0, adv_step=0.1, adv_steps=100,  # L2 budget, step and steps, pixel space [0, 1]
      adv_chunk=2048,  # adversarial rows attacked at once (memory only)
      lam=1.0,  # λ of the MAS anchor λ·Σ Ω'(θ − θ_o)²/2 (case l2ul only)
      lr=1e-3, momentum=0.9, weight_decay=1e-4,  # SGD of the unlearning loop
      max_steps=1000,  # cap; the loop stops as soon as the request holds (checked every step)
      forget_batch_size=128, adv_batch_size=256,  # B_f (≤ k) and B_a (≤ k·num_adv)
      retain_batch_size=128,  # oracle's D_r batch
      collapse_share=0.9,  # collapsed = one class predicted for ≥ this share of the probe set
      collapse_every=10,  # steps between collapse checks (the stop check runs every step)
      probe_size=1000,  # fixed D_test sample used for the collapse check
      mas_chunk=16,  # forget images per vmapped per-sample-gradient chunk (memory only)
  )
  c.methods.l2ul_naive = l2ul_case(c.methods.l2ul, "naive")
  c.methods.l2ul_adv = l2ul_case(c.methods.l2ul, "adv")
  c.methods.l2ul_oracle = l2ul_case(c.methods.l2ul, "oracle")
  # SCRUB (Kurmanji et al. 2023; METHODS §4): msteps max-KL epochs on D_f, min epochs on D_r.
  c.methods.scrub = dict(
      epochs=3,  # SCRUB epochs; each has a min pass over D_r, the first msteps a max pass on D_f
      msteps=2,  # epochs that start with a max (−KL) pass over D_f
      temperature=4.0,  # T of the distillation KL (teacher = M_o)
      gamma=0.99, alpha=0.001,  # min step: γ·CE + α·KL on D_r
      lr=5e-4, momentum=0.9, weight_decay=5e-4,  # SGD, SCRUB's small-scale defaults
      batch_size=128, forget_batch_size=32,  # D_r and D_f batches
      retain_fraction=1.0,  # share of D_r used per run
  )
  # SalUn (Fan et al. 2024; METHODS §4): random labeling with only salient weights updated.
  c.methods.salun = dict(
      mask_fraction=0.5,  # share of weights kept (global threshold over all parameters)
      epochs=5, lr=0.01, momentum=0.9, weight_decay=5e-4,  # like random_label
      batch_size=128, retain_fraction=1.0,
  )
  return c


def l2ul_case(base, case: str, **overrides) -> ml_collections.ConfigDict:
  """A copy of the L2UL section running another ablation case (METHODS §3)."""
  v = ml_collections.ConfigDict(base.to_dict())
  v.base = "l2ul"
  v.case = case
  for k, val in overrides.items():
    v[k] = val
  return v


def tmu_variant(base, base_method: str = "tmu", mechanism: str | None = None,
                epochs: int | None = None, **overrides) -> ml_collections.ConfigDict:
  """A copy of a TMU section with some options changed (for tmu_plus and ablations)."""
  v = ml_collections.ConfigDict(base.to_dict())
  v.base = base_method  # which registered function runs this section
  for k, val in overrides.items():
    v[k] = val
  if mechanism is not None:
    v.unlearn.mechanism = mechanism
  if epochs is not None:
    v.unlearn.epochs = epochs
  return v
