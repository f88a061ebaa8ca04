"""The ``evaluation`` config section (METHODS §5b), typed: parsed and checked before any work."""

from __future__ import annotations

import dataclasses

from tmu_jax import schema
from tmu_jax.evaluation import epsilon as eps_lib


@dataclasses.dataclass(frozen=True)
class Evaluation:
  """The ``evaluation`` config section: knobs of the ε score and the cost rule (METHODS §5b)."""
  grid_per_unit: float = schema.field(100.0, lo=0.0, lo_open=True,
                                      doc="thresholds per unit of confidence (the scorer's)")
  delta: float = schema.field(1e-5, lo=0.0, hi=1.0, hi_open=True, doc="δ of (ε, δ)")
  bin_width: float = schema.field(0.5, lo=0.0, lo_open=True, doc="width of a scoring bin")
  max_epsilon: float = schema.field(0.0, lo=0.0, doc="end of the last bin; 0 = ln(N−1) "
                                    "rounded up to a bin edge (the PDF: 6.5 for N = 512)")
  cap: float = schema.field(50.0, lo=0.0, lo_open=True, doc="largest ε (the scorer's)")
  point_mass_ratio: float = schema.field(0.01, lo=0.0, hi=1.0,
                                         doc="one side's range under this share → cap")
  rte_limit: float = schema.field(0.2, lo=0.0, lo_open=True,
                                  doc="the challenge's efficiency rule")

  def epsilon_settings(self, n: int) -> eps_lib.EpsilonSettings:
    top = self.max_epsilon or eps_lib.max_epsilon_for(n, self.bin_width, "pdf")
    return eps_lib.EpsilonSettings(grid_per_unit=self.grid_per_unit, delta=self.delta,
                                   bin_width=self.bin_width, max_epsilon=top, cap=self.cap,
                                   point_mass_ratio=self.point_mass_ratio)
