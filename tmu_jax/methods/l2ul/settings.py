"""L2UL's typed settings (METHODS §3); the defaults are written here only."""

from __future__ import annotations

import dataclasses

from tmu_jax import schema
from tmu_jax.methods.l2ul.losses import FORGET_LOSSES
from tmu_jax.methods.l2ul.mas import NORMS

CASES = ("naive", "adv", "l2ul", "oracle")
MODES = ("misclassify", "relabel")


@dataclasses.dataclass(frozen=True)
class L2UL:
  """One L2UL run; ``case`` picks the METHODS §3 ablation case."""
  case: str = schema.field("l2ul", choices=CASES,
                           doc="naive (forget loss) | adv (+adversarial) | l2ul (+MAS) | oracle")
  num_adv: int = schema.field(20, lo=1, doc="targeted L2 PGD examples per forget image")
  eps: float = schema.field(4.0, lo=0.0, doc="L2 budget in pixel space [0, 1]")
  adv_step: float = schema.field(0.1, lo=0.0)
  adv_steps: int = schema.field(100, lo=0)
  adv_chunk: int = schema.field(2048, lo=1, doc="adversarial rows attacked at once (memory)")
  lam: float = schema.field(1.0, lo=0.0, doc="λ of the MAS anchor (case l2ul)")
  lr: float = schema.field(1e-3, lo=0.0, lo_open=True)
  momentum: float = schema.field(0.9, lo=0.0, hi=1.0, hi_open=True)
  weight_decay: float = schema.field(1e-4, lo=0.0)
  max_steps: int = schema.field(1000, lo=1, doc="cap; stops as soon as the request holds")
  forget_batch_size: int = schema.field(128, lo=1, doc="B_f (at most k)")
  adv_batch_size: int = schema.field(256, lo=1, doc="B_a (at most k·num_adv)")
  retain_batch_size: int = schema.field(128, lo=1, doc="oracle's D_r batch")
  collapse_share: float = schema.field(0.9, lo=0.0, hi=1.0, lo_open=True,
                                       doc="collapsed: one class on ≥ this share of the probe")
  collapse_every: int = schema.field(10, lo=1, doc="steps between collapse checks")
  probe_size: int = schema.field(1000, lo=1, doc="fixed D_test sample for the collapse check")
  mas_chunk: int = schema.field(16, lo=1, doc="forget images per per-sample-gradient chunk")
  forget_loss: str = schema.field("ce", choices=FORGET_LOSSES,
                                  doc="ce (METHODS §3) | ce_correct | complement | "
                                      "complement_correct (deviations)")
  # Issue 11's levers (docs/l2ul.md), each off by default: the faithful L2UL is unchanged.
  mas_norm: str = schema.field("tensor", choices=NORMS,
                               doc="group Ω is min-max inverted over (case l2ul)")
  rep_lam: float = schema.field(0.0, lo=0.0,
                                doc="representation anchor on adversarial images (adv, l2ul)")
  rep_size: int = schema.field(256, lo=1, doc="adversarial images the representation anchor "
                                              "holds (a fixed sample)")
  release_steps: int = schema.field(0, lo=0, doc="case l2ul: when max_steps ends with forget "
                                    "rows left, up to this many more steps with the MAS "
                                    "anchor's λ = 0 (0 = off)")
