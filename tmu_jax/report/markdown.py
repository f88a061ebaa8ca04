"""Leaf helpers of the report: numbers read from results.json, their formatting, markdown tables.

results.json is strict JSON, so a metric that was NaN (or ±inf) in memory reads back as None:
every reader goes through :func:`number`, which treats None, NaN and ±inf alike (a "–" cell),
so a table rebuilt from the file equals the one rendered before writing it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

DASH = "–"  # an empty cell: no value, or a value that was NaN / inf (null in results.json)


def number(v: Any) -> int | float | None:
  """``v`` if it is a finite int or float (numpy ones too), else None (bools are not numbers)."""
  if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
    return None
  return v if math.isfinite(v) else None


def numbers(values) -> list[float]:
  """The finite numbers among ``values``, as floats (None, NaN, inf and non-numbers dropped)."""
  return [float(v) for v in values if number(v) is not None]


def fmt(v: Any, digits: int = 2) -> str:
  """One cell: ints as they are, floats with ``digits`` decimals (3 below 1), None/NaN/inf "–"."""
  if v is None or (isinstance(v, (float, np.floating)) and not math.isfinite(v)):
    return DASH
  if isinstance(v, (bool, np.bool_)):
    return str(bool(v))
  if isinstance(v, (int, np.integer)):
    return str(v)
  if isinstance(v, (float, np.floating)):
    return f"{v:.{3 if abs(v) < 1 and v != 0 else digits}f}"
  return str(v)


def mean(vals: Sequence[float], digits: int = 1) -> str:
  """The mean of ``vals`` with ``digits`` decimals; "–" for none."""
  return f"{np.mean(vals):.{digits}f}" if len(vals) else DASH


def mean_std(vals: Sequence[float], digits: int = 1) -> str:
  """"mean ± std" of ``vals`` with ``digits`` decimals; "–" for none."""
  if not len(vals):
    return DASH
  return f"{np.mean(vals):.{digits}f} ± {np.std(vals):.{digits}f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """A GitHub markdown table: ``header`` (n names) over ``rows`` (n cells each)."""
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  lines += ["| " + " | ".join(r) + " |" for r in rows]
  return "\n".join(lines)
