"""tmu_jax: aligned machine unlearning (TMU, L2UL and baselines) in JAX/Flax.

``tmu_jax.unlearn(model, variables, forget=(x, y), retain=(x, y), method=...)`` unlearns a
user's own model with any registered method (:mod:`tmu_jax.api`); the launcher
(``tmu-jax --config=...``) runs whole experiments against retrained gold models.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
  # Lazy, so that ``import tmu_jax.report`` (a pure reader of results) does not load JAX.
  if name == "unlearn":
    from tmu_jax.api import unlearn  # pylint: disable=import-outside-toplevel
    return unlearn
  raise AttributeError(f"module 'tmu_jax' has no attribute {name!r}")
