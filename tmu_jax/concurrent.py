"""Independent jobs at once on host threads, stopped together (M_o beside M_g on a CPU).

On a CPU one small model's training step leaves cores idle: two trainings on two host threads
(the same device; XLA runs both programs at once and releases the GIL) finished two models in
0.82× the time of one after the other here, with bit-identical weights
(bench/concurrent_models.py, docs/benchmarks.md). Signals reach only the main thread, so a job
is handed a shared ``threading.Event``: a fit given it as ``cancel`` stops at its next chunk
boundary, saving its checkpoint, when any job fails or the user interrupts.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable, Sequence, TypeVar

from tmu_jax.errors import Terminated

T = TypeVar("T")
Job = Callable[[threading.Event], T]


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
  (job order; a Ctrl-C counts as an error).
  """
  cancel = threading.Event()
  results: list = [None] * len(jobs)
  errors: list[BaseException | None] = [None] * len(jobs)

  def work(i: int) -> None:
    try:
      results[i] = jobs[i](cancel)
    except BaseException as e:  # pylint: disable=broad-except  (re-raised by the main thread)
      errors[i] = e
      cancel.set()

  threads = [threading.Thread(target=work, args=(i,), name=f"job-{i}", daemon=True)
             for i in range(1, len(jobs))]
  for t in threads:
    t.start()
  if jobs:
    work(0)
  terminated: list = []

  def on_sigterm(signum, frame):
    del signum, frame
    terminated.append(True)
    cancel.set()

  old = (signal.signal(signal.SIGTERM, on_sigterm)
         if threading.current_thread() is threading.main_thread() else None)
  try:
    for t in threads:
      while t.is_alive():
        try:
          t.join(timeout=0.2)
        except KeyboardInterrupt as e:  # Ctrl-C while waiting: stop the workers, then raise
          errors[0] = errors[0] or e
          cancel.set()
  finally:
    if old is not None:
      signal.signal(signal.SIGTERM, old)
  if terminated and errors[0] is None:
    errors[0] = Terminated("SIGTERM")
  real = [e for e in errors if e is not None and not isinstance(e, Cancelled)]
  if real or any(e is not None for e in errors):
    raise (real or [e for e in errors if e is not None])[0]
  return results


__all__ = ["Cancelled", "run_together"]
