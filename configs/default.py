"""Every config field with its default. Variant configs import this and override a few fields.

Select a config with ``--config=configs/X.py`` (``:ARG`` passes ARG to ``get_config``) and
override any field from the command line, e.g. ``--config.train.epochs=5``.
"""

import ml_collections

from tmu_jax import methods, protocol, schema
from tmu_jax.evaluation.settings import Evaluation


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The defaults; ``arg`` is accepted for symmetry with the variants and must be empty."""
  if arg:
    raise ValueError(f"configs/default.py takes no argument, got {arg!r}")
  c = ml_collections.ConfigDict()
  c.seed = 0  # model init, batch order, split draw; the same seed gives the same results
  c.cache_dir = ""  # where trained models are cached; "" means <workdir>/cache
  # JAX's persistent compilation cache (tmu_jax/compile_cache.py): a later job loads the
  # programs an earlier one compiled; "" turns it off. Not part of any result or cache key.
  c.compile_cache_dir = "~/.cache/tmu_jax/xla"
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

  # ---- training recipe of M_o, M_g and the curriculum model (TMU paper §5.1): every field,
  # its default and its check live in tmu_jax.protocol.Recipe.
  c.train = ml_collections.ConfigDict(schema.to_dict(protocol.Recipe))

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
  c.experiment.recompute = ()  # methods whose cached result is recomputed ("all" for every one)
  # ---- many models (METHODS §5b): gold ensemble, noise floor, per-example ε (docs/evaluation.md)
  # M_o and M_g train at once on two host threads on a CPU (the same weights bit for bit;
  # 0.72-0.82x the time here; each model's time_s is then its share of the machine, about its
  # wall time / 2, so RTE errs high).
  c.experiment.concurrent_models = True
  c.experiment.gold_models = 1  # G: gold models (seeds); >= 2 gives every metric its floor
  c.experiment.epsilon = 0  # N >= 3: ε score from N retrained (+ N held out) and N unlearned
  c.experiment.ensemble = "auto"  # member axis: vmap, map (lax.map) or auto (docs/scale.md)
  c.experiment.ensemble_devices = 0  # devices of the ensembles' "models" mesh axis (0 = all)
  c.experiment.ensemble_memory_mb = 4096  # state bytes of resident members; more train in groups
  c.evaluation = ml_collections.ConfigDict(schema.to_dict(Evaluation))

  # ---- unlearning methods (METHODS §2–4): one section per registered method, built from its
  # typed settings (fields, defaults and checks are declared once, in tmu_jax/methods/...).
  c.methods = ml_collections.ConfigDict()
  for name in methods.available():
    c.methods[name] = schema.to_dict(methods.get(name).settings)
  # L2UL's ablation cases (METHODS §3) run the one ``l2ul`` method with another ``case``.
  c.methods.l2ul_naive = l2ul_case(c.methods.l2ul, "naive")
  c.methods.l2ul_adv = l2ul_case(c.methods.l2ul, "adv")
  c.methods.l2ul_oracle = l2ul_case(c.methods.l2ul, "oracle")
  return c


def l2ul_case(base, case: str, **overrides) -> ml_collections.ConfigDict:
  """A copy of the L2UL section running another ablation case (METHODS §3)."""
  v = ml_collections.ConfigDict(base.to_dict())
  v.base = "l2ul"
  v.case = case
  for k, val in overrides.items():
    v[k] = val
  return v


def scaled_lr(c, name: str, factor: float) -> ml_collections.ConfigDict:
  """A copy of method ``name``'s section with its lr multiplied by ``factor`` (a tuning grid)."""
  v = ml_collections.ConfigDict(c.methods[name].to_dict())
  v.base = name
  v.lr = float(v.lr) * factor
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
