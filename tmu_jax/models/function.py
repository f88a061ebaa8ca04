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
import inspect
from typing import Any, Callable

from tmu_jax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class FunctionModel:
  """``fn(variables, x, **eval_kwargs)`` -> logits or (logits, features), as an engine model."""
  fn: Callable
  eval_kwargs: tuple = (("train", False),)
  module: Any = None  # the linen Module behind ``fn``, when known: then fresh copies can be made

  def init(self, key, x):
    """Fresh variables (methods that train a new network: Bad Teacher, TMU's curriculum)."""
    if self.module is None:
      raise ConfigError("this method initialises a fresh network of the same architecture: "
                        "pass the linen Module itself, not only its apply function")
    return self.module.init(key, x)

  def apply(self, variables, x, train: bool = False, mutable=False):
    del train  # the user's function runs as given by eval_kwargs
    out = self.fn(variables, x, **dict(self.eval_kwargs))
    logits, features = (out[0], out[1]) if isinstance(out, (tuple, list)) else (out, out)
    if mutable:
      return (logits, features), {k: variables[k] for k in mutable if k in variables}
    return logits, features


def _takes_train(fn: Callable) -> bool:
  """Whether ``fn`` accepts a ``train`` keyword (named, or through **kwargs)."""
  try:
    params = inspect.signature(fn).parameters.values()
  except (TypeError, ValueError):
    return False
  return any(p.name == "train" or p.kind is p.VAR_KEYWORD for p in params)


def as_model(model_or_fn, eval_kwargs: dict | None = None) -> FunctionModel:
  """A linen Module or an ``apply_fn``, wrapped. ``eval_kwargs`` default: ``{"train": False}``
  when the module's ``__call__`` (or the function) takes ``train``, else ``{}``."""
  is_module = hasattr(model_or_fn, "apply") and hasattr(model_or_fn, "init")
  if eval_kwargs is None:
    call = type(model_or_fn).__call__ if is_module else model_or_fn
    eval_kwargs = {"train": False} if _takes_train(call) else {}
  kw = tuple(sorted(eval_kwargs.items()))
  if is_module:
    return FunctionModel(model_or_fn.apply, kw, model_or_fn)
  return FunctionModel(model_or_fn, kw)
