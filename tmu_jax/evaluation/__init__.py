"""Evaluation against many retrained models (METHODS §5b), as pure functions over arrays.

- :mod:`~tmu_jax.evaluation.epsilon`: the NeurIPS 2023 challenge's per-example ε, forgetting
  quality F and final score.
- :mod:`~tmu_jax.evaluation.floor`: the gold-vs-gold noise floor of the §5 metrics and a
  method read against it.
- :mod:`~tmu_jax.evaluation.summary`: Avg. Gap (SalUn protocol) and runtime ratio RTE.
- :mod:`~tmu_jax.evaluation.paired`: the exact sign test of paired differences.

docs/evaluation.md gives the formulas, the defaults and their sources.
"""

from tmu_jax.evaluation import epsilon, floor, paired, summary
from tmu_jax.evaluation.epsilon import (EpsilonSettings, epsilon_per_example, final_score,
                                        forgetting_quality, logit_confidence)
from tmu_jax.evaluation.floor import floors_away, method_vs_gold, noise_floor
from tmu_jax.evaluation.summary import avg_gap, rte, too_slow

__all__ = [
    "epsilon", "floor", "paired", "summary", "EpsilonSettings", "epsilon_per_example", "final_score",
    "forgetting_quality", "logit_confidence", "floors_away", "method_vs_gold", "noise_floor",
    "avg_gap", "rte", "too_slow"
]
