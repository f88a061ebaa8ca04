"""Independent jobs at once on host threads, stopped together (M_o beside M_g on a CPU).

On a CPU one small model's training step leaves cores idle: two trainings on two host threads
(the same device; XLA runs both programs at once and releases the GIL) finished two models in
0.72–0.82× the time of one after the other here, with bit-identical weights
(bench/concurrent_models.py, docs/benchmarks.md). Signals reach only the main thread, so a job
is handed a shared ``threading.Event``: a fit given it as ``cancel`` stops at its next chunk
boundary, saving its checkpoint, when any job fails or the user interrupts.
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Callable, Sequence, TypeVar

from tmu_jax.errors import Terminated

T = TypeVar("T")
Job = Callable[[threading.Event], T]


class Sharing:
  """How many trainings run at this moment among those given this object: a fit's clock
  divides each chunk's seconds by it (:func:`tmu_jax.train.loop.drive`), so a model trained
  beside another is charged its share of the machine while both run, and its whole time once it
  runs alone. Thread-safe; explicit (handed to the fits that share), not a process global."""

  def __init__(self):
    self._lock = threading.Lock()
    self._active = 0

  def enter(self) -> None:
    with self._lock:
      self._active += 1

  def leave(self) -> None:
    with self._lock:
      self._active -= 1

  def active(self) -> int:
    with self._lock:
      return max(1, self._active)


class Cancelled(KeyboardInterrupt):
  """A job stopped because the shared ``cancel`` event was set (a job beside it failed or the
  user interrupted): a fit raises it at its next chunk boundary, after saving its checkpoint,
  as on Ctrl-C."""


def run_together(jobs: Sequence[Job]) -> list:
  """Runs ``jobs`` at once — job 0 on the calling (main) thread, the rest on worker threads —
  and returns their results in order.

  Every job gets the same ``cancel`` event. It is set when a job raises, and on Ctrl-C or
  SIGTERM while the main thread waits for the workers. Then every job is waited for (a fit
  saves its checkpoint), and the first error that is not a mere :class:`Cancelled` is raised
  (job order; a Ctrl-C counts as an error). A second Ctrl-C or SIGTERM (the first may have
  stopped job 0 itself) stops waiting at once.
  """
  cancel = threading.Event()
  results: list = [None] * len(jobs)
  errors: list[BaseException | None] = [None] * len(jobs)
  finished = [threading.Event() for _ in jobs]
  interrupts: list[BaseException] = []  # the user's Ctrl-Cs and SIGTERMs, in order

  def work(i: int) -> None:
    try:
      results[i] = jobs[i](cancel)
    except BaseException as e:  # pylint: disable=broad-except  (re-raised by the main thread)
      errors[i] = e
      cancel.set()
    finally:
      finished[i].set()

  def interrupted(e: BaseException) -> None:
    """A Ctrl-C or SIGTERM: the first stops the jobs at their next chunk; a second, at once."""
    interrupts.append(e)
    cancel.set()
    if len(interrupts) > 1:
      raise e
    print("\nstopping: waiting for the trainings beside this one to stop at the end of "
          "their chunk (Ctrl-C again to stop at once)", flush=True)

  def on_sigterm(signum, frame):
    del signum, frame
    interrupted(Terminated("SIGTERM"))

  main = threading.current_thread() is threading.main_thread()
  old = signal.signal(signal.SIGTERM, on_sigterm) if main else None  # job 0's fits put their
  try:  # own handlers in place while they run, and this one back after
    threads = [threading.Thread(target=work, args=(i,), name=f"job-{i}", daemon=True)
               for i in range(1, len(jobs))]
    for t in threads:
      t.start()
    if jobs:
      work(0)
    if isinstance(errors[0], KeyboardInterrupt) and not isinstance(errors[0], Cancelled):
      interrupts.append(errors[0])  # job 0 was stopped by the user: a next one is the second
    # Poll with sleep rather than Thread.join: a Ctrl-C inside join can leave is_alive()
    # wrongly False (CPython), and the workers would be abandoned before saving.
    while not all(f.is_set() for f in finished[1:]):
      try:
        time.sleep(0.05)
      except KeyboardInterrupt as e:
        interrupted(e)
  finally:
    if old is not None:
      signal.signal(signal.SIGTERM, old)
  if interrupts and (errors[0] is None or isinstance(errors[0], Cancelled)):
    errors[0] = interrupts[0]  # the user's stop, not a job's Cancelled, says the exit code
  real = [e for e in errors if e is not None and not isinstance(e, Cancelled)]
  if real or any(e is not None for e in errors):
    raise (real or [e for e in errors if e is not None])[0]
  return results


__all__ = ["Cancelled", "Sharing", "run_together"]
