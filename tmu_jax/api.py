"""One call to unlearn a user's own model with any registered method.

``unlearn(model, variables, forget=(x, y), retain=(x, y), method="finetune")`` builds the
request as a :class:`~tmu_jax.protocol.Problem` from the user's arrays (no dataset, no config
file), runs the method through the same engine as the launcher and returns the new variables
with the method's report. The gold model is not needed: scoring is the user's business (or the
launcher's, on a dataset).

What a method needs beyond D_f is declared at registration (``MethodInfo.needs``): ``retain``
(D_r: finetune, random_label, ...) and ``pool`` (a holdout pool of the forget class, never
trained on: TMU's twin data). A missing one is one clear error before any work.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tmu_jax import data as data_lib, methods, protocol, schema, train
from tmu_jax.errors import ConfigError
from tmu_jax.models.function import as_model

Arrays = tuple[Any, Any]


def _uint8_or_float(x) -> np.ndarray:
  x = np.asarray(x)
  return x if x.dtype == np.uint8 else x.astype(np.float32)


def _problem(forget: Arrays, retain: Arrays | None, pool: Arrays | None, test: Arrays | None,
             num_classes: int, forget_class: int, seed: int) -> protocol.Problem:
  """The request as a Problem: training rows = retain, forget, pool (in that order)."""
  parts = [p for p in (retain, forget, pool) if p is not None]
  images = np.concatenate([_uint8_or_float(p[0]) for p in parts])
  labels = np.concatenate([np.asarray(p[1], np.int32) for p in parts])
  n_r = 0 if retain is None else len(retain[1])
  n_f = len(forget[1])
  split = data_lib.Split(holdout=np.arange(n_r + n_f, len(labels), dtype=np.int64),
                         forget=np.arange(n_r, n_r + n_f, dtype=np.int64),
                         retain=np.arange(n_r, dtype=np.int64))
  test = test or retain  # none: L2UL checks collapse on its adversarial set instead
  if test is None:
    x_test, y_test = images[:0], labels[:0]
  else:
    x_test, y_test = _uint8_or_float(test[0]), np.asarray(test[1], np.int32)
  dataset = data_lib.Dataset("user", images, labels, x_test, y_test, num_classes, (0.0,), (1.0,))
  return protocol.make_problem(dataset, split, forget_class, seed)


def unlearn(model, variables: dict, forget: Arrays, retain: Arrays | None = None, *,
            method: str = "finetune", settings: dict | Any | None = None,
            key: jax.Array | None = None, pool: Arrays | None = None,
            test: Arrays | None = None, recipe: protocol.Recipe | None = None,
            mode: str = "misclassify", eval_kwargs: dict | None = None,
            verbose: bool = False) -> tuple[dict, dict]:
  """Unlearns ``forget`` from a trained classifier with the registered ``method``.

  ``model``: a linen Module (or its ``apply`` function) mapping images in [0, 1] (or uint8) to
  logits or (logits, features); ``variables``: its trained variables (params, batch_stats).
  ``forget``/``retain``/``pool``/``test``: (images [N, H, W, C], int labels [N]). ``pool``
  (TMU): class-c images never trained on; ``test``: where L2UL checks for collapse (default:
  retain; without either, L2UL's adversarial set). ``settings``: the method's fields (a dict or its settings
  dataclass), checked like a config section. ``recipe``: batch size, lr schedule etc. of
  networks trained from scratch (TMU's curriculum model) and of the twins' weight decay.
  Returns (new variables, info: steps, stopped, time_s and the method's report).
  BatchNorm statistics are used and kept as they are (eval mode).
  """
  try:
    info = methods.get(method)
  except KeyError as e:
    raise ConfigError(str(e.args[0])) from None
  given = dict(retain=retain, pool=pool, gold=None)
  missing = [n for n in info.needs if given[n] is None]
  if missing:
    what = dict(retain="retain=(x, y): the data to keep (D_r)",
                pool="pool=(x, y): class-c images never trained on (TMU's twin data)",
                gold="the gold model's answers (an oracle reference of the experiment, not "
                "an unlearning method)")
    raise ConfigError(f"method {method!r} needs " + "; ".join(what[m] for m in missing))
  if isinstance(settings, info.settings):
    s = settings
  else:
    s = schema.parse(info.settings, settings, f"unlearn(method={method!r}) settings")
  engine_model = as_model(model, eval_kwargs)
  x_f = jnp.asarray(_uint8_or_float(forget[0]))
  num_classes = int(engine_model.apply(variables, data_lib.to_float(x_f[:1]))[0].shape[-1])
  labels = np.asarray(forget[1])
  forget_class = int(np.bincount(labels).argmax())
  problem = dataclasses.replace(_problem(forget, retain, pool, test, num_classes, forget_class,
                                         0), mode=mode)
  recipe = recipe or protocol.Recipe(augment=False)
  spec = train.StepSpec(model=engine_model, augment=recipe.augment, flip=recipe.flip,
                        num_classes=num_classes)
  state = train.from_variables(variables)
  ctx = methods.Context(problem=problem, original=state, model=engine_model, spec=spec,
                        recipe=recipe, key=jax.random.key(0) if key is None else key,
                        verbose=verbose)
  t0 = time.perf_counter()
  result = info.fn(ctx, s)
  jax.block_until_ready(result.state.params)
  out = dict(result.report)
  out.setdefault("stopped", result.stopped)
  out.update(method=method, steps=result.steps, time_s=time.perf_counter() - t0)
  if result.pred_easy is not None:
    out["pred_easy"] = np.asarray(result.pred_easy)
  return result.state.variables, out
