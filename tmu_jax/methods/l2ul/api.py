"""L2UL on a user's own model: no training set, only the instances to forget."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from tmu_jax import schema, train
from tmu_jax.methods.l2ul.loop import unlearn_state
from tmu_jax.methods.l2ul.settings import L2UL
from tmu_jax.models.function import as_model


def unlearn_instances(apply_fn: Callable, variables: dict, x_forget, y_forget, *,
                      num_classes: int, key: jax.Array, mode: str = "misclassify",
                      new_labels=None, x_probe=None, x_retain=None, y_retain=None,
                      eval_kwargs: dict | None = None, verbose: bool = False,
                      **settings) -> tuple[dict, dict]:
  """L2UL on any linen classifier: x_forget uint8/f32[k, H, W, C], y_forget int[k] ->
  (variables, info). No training set needed (except ``x_retain``/``y_retain`` for case
  ``oracle``).

  ``apply_fn(variables, x, **eval_kwargs)`` returns logits or (logits, features) (default
  ``eval_kwargs={"train": False}``). ``new_labels`` int[k] for ``mode="relabel"``; ``x_probe``
  (e.g. a few hundred test images) for collapse detection (default: the adversarial set);
  :class:`~tmu_jax.methods.l2ul.settings.L2UL` fields as keywords (``case``, ``num_adv``,
  ``lam``, ``lr``, ``max_steps``, ...), checked like a config section. ``info``: steps,
  stopped, forget_acc / relabel_acc, collapsed, note, timings.
  """
  s = schema.parse(L2UL, settings, "unlearn_instances")
  if set(variables) - {"params", "batch_stats"}:
    raise ValueError(f"unlearn_instances: only params and batch_stats are supported, got "
                     f"{sorted(variables)}")
  state = train.from_variables(variables)
  retain = None if x_retain is None else (jnp.asarray(x_retain), jnp.asarray(y_retain))
  out, info = unlearn_state(as_model(apply_fn, eval_kwargs), state, jnp.asarray(x_forget),
                            jnp.asarray(y_forget), key, s, num_classes=num_classes, mode=mode,
                            new_labels=new_labels, retain=retain,
                            probe=None if x_probe is None else jnp.asarray(x_probe),
                            verbose=verbose)
  return out.variables, info
