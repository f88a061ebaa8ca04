"""Unlearning methods, registered by name (:mod:`.registry`) with typed settings.

A method is ``fn(ctx: Context, settings) -> Result`` (:mod:`.common`). Importing this package
imports every method module, which registers them; the registry itself imports none of them.
"""

from tmu_jax.methods.common import Context, Result
from tmu_jax.methods.registry import MethodInfo, available, base_of, get, register, rng_name_of
from tmu_jax.methods import baselines, l2ul, salun, scrub, tmu  # noqa: F401  (registers)

__all__ = ["Context", "MethodInfo", "Result", "available", "base_of", "get", "register",
           "rng_name_of"]
