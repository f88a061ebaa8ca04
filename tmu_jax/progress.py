"""Terminal progress for long work: steps, throughput, ETA, latest metrics."""

from __future__ import annotations

import sys
import time


def format_seconds(s: float) -> str:
  s = max(0, int(s))
  h, rem = divmod(s, 3600)
  m, sec = divmod(rem, 60)
  return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s" if m else f"{sec}s"


class Progress:
  """Prints one line at most every ``interval`` seconds (and a final line) to stderr.

  Metrics are device arrays: they are read only when a line is printed, so the host does not
  block the asynchronous dispatch of steps in between.
  """

  def __init__(self, name: str, total: int, unit: str = "step", unit_per_step: int = 1,
               interval: float = 5.0, verbose: bool = True, stream=None):
    self.name, self.total, self.unit = name, total, unit
    self.unit_per_step, self.interval, self.verbose = unit_per_step, interval, verbose
    self.stream = stream or sys.stderr
    self._start_step = 0
    self._t0 = self._last = 0.0

  def start(self, step: int = 0) -> None:
    self._start_step = step
    self._t0 = self._last = time.perf_counter()
    if step and self.verbose:
      self._print(f"resuming at step {step}/{self.total}")

  def update(self, step: int, metrics: dict | None = None, force: bool = False) -> None:
    now = time.perf_counter()
    if not self.verbose or (not force and now - self._last < self.interval):
      return
    self._last = now
    done = step - self._start_step
    elapsed = now - self._t0
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = (self.total - step) / rate if rate > 0 else float("nan")
    parts = [f"{step}/{self.total} ({100.0 * step / max(self.total, 1):.0f}%)",
             f"{rate * self.unit_per_step:,.0f} {self.unit}/s",
             f"ETA {format_seconds(eta) if eta == eta else '?'}"]
    if metrics:
      parts += [f"{k} {float(v):.4g}" for k, v in metrics.items() if k != "finite"]
    self._print("  ".join(parts))

  def finish(self) -> None:
    if self.verbose:
      self._print(f"done in {format_seconds(time.perf_counter() - self._t0)}")

  def _print(self, text: str) -> None:
    print(f"[{self.name}] {text}", file=self.stream, flush=True)
