"""The one training engine (arrays-only state, one compiled update, in-graph loops).

- :mod:`~tmu_jax.train.state`: :class:`TrainState` (arrays only) and its constructors;
- :mod:`~tmu_jax.train.optim`: optax optimizers with their scalars as data;
- :mod:`~tmu_jax.train.step`: streams, the :class:`StepSpec` and the one update;
- :mod:`~tmu_jax.train.loop`: :func:`fit` over compiled ``lax.while_loop`` chunks with in-graph stop rules;
- :mod:`~tmu_jax.train.ensemble`: :func:`fit_ensemble`, M members with a leading model axis as one program;
- :mod:`~tmu_jax.train.predict`: eval-mode inference;
- :mod:`~tmu_jax.train.mesh`: device meshes.
"""

from tmu_jax.train import ensemble, optim
from tmu_jax.train.ensemble import fit_ensemble, member_keys
from tmu_jax.train.loop import Cancelled, NonFiniteLoss, StopRule, fit
from tmu_jax.train.mesh import make_mesh
from tmu_jax.train.optim import Optimizer
from tmu_jax.train.predict import accuracy, logits, predict
from tmu_jax.train.state import (TrainState, from_variables, init_variables, new_state,
                                 start_from)
from tmu_jax.train.step import (Stream, StepSpec, binary_cross_entropy, cross_entropy,
                                steps_per_epoch)

__all__ = ["Cancelled", "NonFiniteLoss", "Optimizer", "StepSpec", "StopRule", "Stream", "TrainState",
           "accuracy", "binary_cross_entropy", "cross_entropy", "ensemble", "fit", "fit_ensemble", "member_keys",
           "from_variables", "init_variables", "logits", "make_mesh", "new_state", "optim",
           "predict", "start_from", "steps_per_epoch"]
