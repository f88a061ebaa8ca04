"""Avg. Gap (SalUn / ℓ1-sparse protocol) and runtime efficiency RTE (METHODS §5b)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

KEYS = ("acc_forget", "acc_retain", "acc_test", "mia")  # percent, as tmu_jax.metrics


def _collapse(entry: Mapping[str, Any] | Sequence[Mapping[str, Any]], name: str) -> dict[str,
                                                                                         float]:
  """One result dict, a dict of per-run lists, or a list of dicts → {key: mean} over KEYS."""
  runs = [entry] if isinstance(entry, Mapping) else list(entry)
  if not runs:
    raise ValueError(f"avg_gap: {name} is empty")
  out = {}
  for k in KEYS:
    missing = [i for i, r in enumerate(runs) if k not in r]
    if missing:
      raise KeyError(f"avg_gap: {name} lacks {k!r} (entries {missing}); needs {KEYS}")
    out[k] = float(np.mean(np.concatenate(
        [np.asarray(r[k], np.float64).reshape(-1) for r in runs])))
  return out


def gaps(method: Mapping[str, Any] | Sequence[Mapping[str, Any]],
         gold: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> dict[str, float]:
  """|ΔUA|, |ΔRA|, |ΔTA|, |ΔMIA| in points (UA = 100 − acc_forget) of a method against gold;
  several gold (or method) runs are averaged first."""
  m, g = _collapse(method, "method"), _collapse(gold, "gold")
  return {"ua": abs((100.0 - m["acc_forget"]) - (100.0 - g["acc_forget"])),
          "ra": abs(m["acc_retain"] - g["acc_retain"]),
          "ta": abs(m["acc_test"] - g["acc_test"]),
          "mia": abs(m["mia"] - g["mia"])}


def avg_gap(method: Mapping[str, Any] | Sequence[Mapping[str, Any]],
            gold: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> float:
  """Avg. Gap = mean of |ΔUA|, |ΔRA|, |ΔTA|, |ΔMIA| to gold (its ensemble mean when several)."""
  return float(np.mean(list(gaps(method, gold).values())))


def rte(method_seconds: float, gold_train_seconds: float) -> float:
  """Runtime efficiency: method wall time (compile apart) / the gold model's training time."""
  if not gold_train_seconds > 0:
    raise ValueError(f"rte: gold_train_seconds must be > 0, got {gold_train_seconds}")
  if not method_seconds >= 0:
    raise ValueError(f"rte: method_seconds must be >= 0, got {method_seconds}")
  return float(method_seconds / gold_train_seconds)


def too_slow(rte: float, limit: float = 0.2) -> bool:  # pylint: disable=redefined-outer-name
  """The challenge's efficiency rule: RTE above ``limit`` (20% of retraining) is rejected."""
  return bool(rte > limit)
