"""The report: results.json, report.md and plots/ as a pure function of the results dict.

Nothing here imports the methods, the experiment or the engine: a reader rebuilds every table
and plot from a committed results.json. Modules, imports running one way:

- ``markdown``: leaf helpers (numbers read from results.json, cell formatting, tables);
- ``tables``: which methods a table shows (the ``group`` / ``paper`` keys of each method's
  entry), the run tables, the TMU paper tables and the L2UL tables;
- ``evaluation``: the evaluation against the gold ensemble (METHODS §5b, schema version 3): a
  table per run and one over runs of ε, Avg. Gap, the noise floor and RTE;
- ``plots``: matplotlib figures, saved atomically;
- ``write``: results.json + report.md + plots/ into a workdir, and the merge of several files.

``tmu_jax.report.write(workdir, results)`` and ``merge(paths, workdir)`` are the entry points
(the name ``write`` here is the function; the module is ``tmu_jax.report.write`` in
``sys.modules``). Command line: ``python -m tmu_jax.report a/results.json ... --out DIR``.
"""

from tmu_jax.report.write import merge, render, write

__all__ = ["merge", "render", "write"]
