"""TMU's typed settings (METHODS §2): one section per stage; defaults written here only.

``TMU`` is the faithful variant; ``TMUPlus`` switches on the options FINDINGS.md found to
matter (8 twin draws, class-balanced classifier, twin-rate threshold, runner-up unlearning) and
the cheap disjoint twins chosen on development draws (docs/selection.md).
"""

from __future__ import annotations

import dataclasses

from tmu_jax import schema
from tmu_jax.methods.common import OptimizerSettings

FEATURES = ("nf", "af", "cf", "kf")  # kf: an extension, not the paper's (features.kf_feature)
THRESHOLDS = ("half", "twin_rate", "random")
MECHANISMS = ("random_label", "neg_grad", "runner_up")
STANDARDIZE = ("twin", "own")


@dataclasses.dataclass(frozen=True)
class Twin:
  """§2.1 M_t recipe: M_o fine-tuned on D_r ∪ D_f ∪ D_t (D_t repeated), constant lr."""
  repeat: int = schema.field(10, lo=1, doc="D_t repeats in M_t's data")
  epochs: int = schema.field(5, lo=1)
  lr: float = schema.field(0.005, lo=0.0, lo_open=True)
  batch_size: int = schema.field(128, lo=1)
  ensemble: bool = schema.field(False, doc="train the n_twins M_t as one ensemble (one "
                                "stream, per-twin weights; docs/methods.md)")
  disjoint: bool = schema.field(False, doc="twin draws share no pool image while the pool "
                                "allows it (then augmented copies fill, as §2.1)")
  retain_fraction: float = schema.field(1.0, lo=0.0, hi=1.0, lo_open=True,
                                        doc="share of D_r in M_t's data (a cost lever; "
                                        "1 = all of D_r, as §2.1)")


@dataclasses.dataclass(frozen=True)
class TwinPlus(Twin):
  """TMU+'s cheap twins, chosen on development draws (docs/selection.md): M_t fine-tuned on 10%
  of D_r for 2 epochs, twin draws disjoint while the pool allows. On the embedded default this
  takes TMU+ from 0.88× to 0.09× a retraining (mean of the five development draws)."""
  epochs: int = schema.redefault(Twin, "epochs", 2)
  disjoint: bool = schema.redefault(Twin, "disjoint", True)
  retain_fraction: float = schema.redefault(Twin, "retain_fraction", 0.1)


@dataclasses.dataclass(frozen=True)
class NF:
  """§2.2 NF: mean of the k nearest distances."""
  k: int = schema.field(5, lo=1)
  ref_chunk: int = schema.field(4096, lo=1, doc="reference rows per chunk (memory only)")


@dataclasses.dataclass(frozen=True)
class AF:
  """§2.2 AF: L∞ PGD budget and steps (step eps/4)."""
  eps: float = schema.field(4 / 255, lo=0.0)
  steps: int = schema.field(10, lo=0)


@dataclasses.dataclass(frozen=True)
class CF:
  """§2.2 CF: curriculum model epochs and share of D_r."""
  epochs: int = schema.field(2, lo=1)
  fraction: float = schema.field(0.2, lo=0.0, hi=1.0, lo_open=True)


@dataclasses.dataclass(frozen=True)
class KF:
  """KF (an extension, not §2.2): the label share of the k nearest training images in pixel
  space."""
  k: int = schema.field(10, lo=1)
  ref_chunk: int = schema.field(4096, lo=1, doc="reference rows per chunk (memory only)")


@dataclasses.dataclass(frozen=True)
class Classifier:
  """§2.4 generalization-label classifier, SGD momentum 0.9."""
  epochs: int = schema.field(100, lo=1)
  lr: float = schema.field(0.01, lo=0.0, lo_open=True)
  weight_decay: float = schema.field(5e-4, lo=0.0)
  batch_size: int = schema.field(32, lo=1)
  members: int = schema.field(1, lo=1, doc="classifiers trained (own init and batch order) "
                              "whose p(easy) is averaged: less of one classifier's randomness")
  heldout_auc: bool = schema.field(False, doc="also report the AUC on twin draws the "
                                   "classifier did not train on (one fold per draw; reporting "
                                   "only, its cost counts in the method's time)")


@dataclasses.dataclass(frozen=True)
class Unlearn(OptimizerSettings):
  """§2.5 aligned unlearning from M_o."""
  mechanism: str = schema.field("random_label", choices=MECHANISMS,
                                doc="runner_up: M_o's runner-up label until flipped (strong)")
  epochs: int = schema.field(5, lo=1)
  retain_fraction: float = schema.field(1.0, lo=0.0, hi=1.0, lo_open=True)
  hard_repeat: int = schema.field(20, lo=1, doc="runner_up: copies of each hard sample")
  keep_easy: bool = schema.field(True, doc="§2.5: predicted-easy D_f trains with its true "
                                 "labels; False leaves it out (it drifts as under fine-tuning "
                                 "on D_r)")
  stop_when_flipped: bool = schema.field(True, doc="runner_up: stop once every predicted-hard "
                                         "sample is misclassified; False runs every epoch")


@dataclasses.dataclass(frozen=True)
class UnlearnPlus(Unlearn):
  """TMU+'s strong unlearning."""
  mechanism: str = schema.redefault(Unlearn, "mechanism", "runner_up")
  epochs: int = schema.redefault(Unlearn, "epochs", 10)


@dataclasses.dataclass(frozen=True)
class TMU:
  """Faithful TMU (METHODS §2)."""
  features: str = schema.field("nf,af,cf", kind="list", choices=FEATURES,
                               doc="feature subset of the label classifier (Table 4; kf is "
                               "an extension)")
  n_twins: int = schema.field(1, lo=1, doc="independent twin draws (each its own D_t, M_t)")
  balanced: bool = schema.field(False, doc="class-balanced BCE for the label classifier")
  threshold: str = schema.field("half", choices=THRESHOLDS,
                                doc="half: easy iff p > 0.5; twin_rate: hard count = twin rate")
  standardize: str = schema.field("twin", choices=STANDARDIZE,
                                  doc="D_f's feature statistics: twin = §2.3 (the twin set's), "
                                  "own = D_f's own (a per-problem normalisation)")
  rate_from: str = schema.field("all", choices=("all", "originals"),
                                doc="twin rows the twin hard rate counts: all, or pool images "
                                "only (not augmented fill copies of a short pool)")
  twin: Twin = schema.nested(Twin)
  nf: NF = schema.nested(NF)
  af: AF = schema.nested(AF)
  cf: CF = schema.nested(CF)
  kf: KF = schema.nested(KF)
  clf: Classifier = schema.nested(Classifier)
  unlearn: Unlearn = schema.nested(Unlearn)

  @property
  def feature_columns(self) -> list[int]:
    return [FEATURES.index(f) for f in self.features.split(",")]

  @property
  def twin_key(self) -> tuple:
    """The settings that shape the twin artefacts (variants sharing them share the twins), by
    value: TMU's Twin and TMU+'s TwinPlus with equal fields are the same twins."""
    return (self.n_twins,) + tuple(tuple(sorted(dataclasses.asdict(x).items()))
                                   for x in (self.twin, self.nf, self.af, self.cf))


@dataclasses.dataclass(frozen=True)
class TMUPlus(TMU):
  """TMU with the FINDINGS.md options switched on."""
  n_twins: int = schema.redefault(TMU, "n_twins", 8)
  balanced: bool = schema.redefault(TMU, "balanced", True)
  threshold: str = schema.redefault(TMU, "threshold", "twin_rate")
  twin: Twin = schema.nested(TwinPlus)
  unlearn: Unlearn = schema.nested(UnlearnPlus)
