"""The phase breakdown printed at the end of every command (experiment.phase_lines)."""

from tmu_jax.experiment import phase_lines


def test_phases_sum_over_runs_and_leave_the_rest_as_other():
  run = dict(timing=dict(original_train_s=10.0, gold_train_s=20.0, gold_ensemble_train_s=5.0,
                         models_s=40.0, finetune_s=3.0, tmu_plus_s=7.0))
  results = dict(runs=[run, run], timing=dict(total_s=120.0, data_s=2.0, report_s=1.0))
  lines = phase_lines(results)
  assert lines[0] == "[timing] wall time by phase (2 run(s), total 120.0 s)"
  got = {l.split("  ")[1].strip(): float(l.split()[-3]) for l in lines[1:]}
  assert got == {"data": 2.0, "train M_o": 20.0, "train M_g": 40.0,
                 "train other gold members": 10.0, "score M_o and gold": 10.0,
                 "finetune": 6.0, "tmu_plus": 14.0, "reports": 1.0, "other": 17.0}
  assert lines[2].endswith("16.7%")  # train M_o: 20 of 120 s
