"""Paired comparisons over runs or examples (the study tables of docs/results/)."""

from __future__ import annotations

import math

import numpy as np


def sign_test(diff: np.ndarray) -> float:
  """Two-sided exact sign test p-value of the nonzero entries of ``diff`` (ties dropped): the
  probability, under a fair coin, of a split at least as uneven as the observed one."""
  d = np.asarray(diff)
  d = d[d != 0]
  n, k = d.size, int((d > 0).sum())
  if n == 0:
    return 1.0
  tail = sum(math.comb(n, i) for i in range(0, min(k, n - k) + 1)) / 2 ** n
  return min(1.0, 2 * tail)
