"""tmu_jax: aligned machine unlearning (TMU, L2UL and baselines) in JAX/Flax.

``tmu_jax.unlearn(model, variables, forget=(x, y), retain=(x, y), method=...)`` unlearns a
user's own model with any registered method (:mod:`tmu_jax.api`); the launcher
(``tmu-jax --config=...``) runs whole experiments against retrained gold models.
"""

import importlib

__version__ = "0.1.0"


def __getattr__(name: str):
  # Lazy, so that ``import tmu_jax.report`` (a pure reader of results) does not load JAX. A
  # package exposing its child: no module imports ``tmu_jax.unlearn``, so this is no circle
  # (an import statement here would count as one for ../shared/tools/import_cycles.py, which
  # reads every ``from tmu_jax import x`` as an edge to this file).
  if name == "unlearn":
    return importlib.import_module("tmu_jax.api").unlearn
  raise AttributeError(f"module 'tmu_jax' has no attribute {name!r}")
