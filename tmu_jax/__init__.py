"""tmu_jax: aligned machine unlearning (TMU, L2UL and baselines) in JAX/Flax."""

__version__ = "0.1.0"
