"""Any ``apply_fn(variables, x, ...)`` as a model the engine can train and query.

The engine calls ``model.apply(variables, x, train=..., mutable=...)`` and expects
``(logits, features)``. :class:`FunctionModel` adapts a user's function that returns logits or
(logits, features): it always runs the function with ``eval_kwargs`` (eval mode), and when the
engine asks for mutable BatchNorm statistics it returns them unchanged. A frozen dataclass:
two adapters of equal functions (a linen ``model.apply`` compares by the module's value) are
equal keys of the compiled update.
"""

from __future__ import annotations

import dataclasses
from typing import Callable


@dataclasses.dataclass(frozen=True)
class FunctionModel:
  """``fn(variables, x, **eval_kwargs)`` -> logits or (logits, features), as an engine model."""
  fn: Callable
  eval_kwargs: tuple = (("train", False),)

  def apply(self, variables, x, train: bool = False, mutable=False):
    del train  # the user's function runs as given by eval_kwargs
    out = self.fn(variables, x, **dict(self.eval_kwargs))
    logits, features = (out[0], out[1]) if isinstance(out, (tuple, list)) else (out, out)
    if mutable:
      return (logits, features), {k: variables[k] for k in mutable if k in variables}
    return logits, features


def as_model(apply_fn: Callable, eval_kwargs: dict | None = None) -> FunctionModel:
  """``apply_fn`` wrapped; ``eval_kwargs`` default ``{"train": False}`` ({} for none)."""
  kw = (("train", False),) if eval_kwargs is None else tuple(sorted(eval_kwargs.items()))
  return FunctionModel(apply_fn, kw)
