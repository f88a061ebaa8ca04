"""``python -m tmu_jax.report a/results.json b/results.json --out DIR``: merge into one report."""

from tmu_jax.report.write import main

main()
