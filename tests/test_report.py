"""report.md tables: the paper layout (TMU Tables 1–4) computed from hand-made runs."""

import json

from tmu_jax import paper_tables, report


def _run(cls, seed, gold_f, methods, size=100):
  return dict(dataset="fashion_mnist", arch="mlp", scenario="subclass", forget_class=cls,
              forget_size=size, seed=seed,
              gold=dict(acc_test=90.0, acc_forget=gold_f),
              original=dict(acc_test=90.0, acc_forget=100.0, gap=100.0 - gold_f),
              methods={n: dict(acc_test=89.0, acc_forget=f, gap=abs(f - gold_f),
                               act_dist_l2=d, agreement=100.0 - abs(f - gold_f), **extra)
                       for n, (f, d, extra) in methods.items()})


RUNS = [
    _run(6, 0, 70.0, {"finetune": (90.0, 0.2, {}), "tmu": (74.0, 0.1, {"label_acc": 80.0}),
                      "tmu_nf": (80.0, 0.1, {"label_acc": 60.0})}),
    _run(6, 1, 80.0, {"finetune": (96.0, 0.3, {}), "tmu": (82.0, 0.1, {"label_acc": 90.0}),
                      "tmu_nf": (80.0, 0.1, {"label_acc": 70.0})}),
    _run(0, 0, 90.0, {"finetune": (100.0, 0.1, {}), "tmu": (90.0, 0.0, {"label_acc": 100.0}),
                      "tmu_nf": (92.0, 0.1, {"label_acc": 80.0})}),
]


def test_accuracy_table_averages_seeds_per_class_and_runs_in_avg():
  text = paper_tables.accuracy_table(RUNS)
  lines = text.splitlines()
  assert lines[0] == "| class | gold | finetune | tmu |"
  row0 = next(l for l in lines if l.startswith("| 0 |"))
  row6 = next(l for l in lines if l.startswith("| 6 |"))
  # class 6: gold Acc_Df (70 + 80)/2 = 75; finetune Acc_Df 93, gap (20 + 16)/2 = 18
  assert "90.0 \\| 75.0" in row6 and "89.0 \\| 93.0; 18.0" in row6
  assert "89.0 \\| 90.0; 0.0" in row0
  avg = next(l for l in lines if l.startswith("| **Avg**"))
  # Avg over all three runs: gold Acc_Df (70+80+90)/3; finetune gaps 20, 16, 10; tmu 4, 2, 0.
  assert avg == "| **Avg** | **90.0 \\| 80.0** | **89.0 \\| 95.3; 15.3** | **89.0 \\| 82.0; 2.0** |"


def test_feature_table_and_ablation():
  table4 = paper_tables.feature_table(RUNS)
  assert "| nf+af+cf | 90.0 ± 8.2 |" in table4 and "| nf | 70.0 ± 8.2 |" in table4
  ablation = paper_tables.summary_table(RUNS, paper_tables.ABLATION)
  assert ablation.splitlines()[2].startswith("| tmu | 2.0 ± 1.6 |")


def test_report_writes_json_and_markdown(tmp_path):
  results = dict(config=dict(data=dict(name="fashion_mnist", scenario="subclass"),
                             model=dict(name="mlp")), runs=RUNS, timing=dict(total_s=1.0))
  report.write(str(tmp_path), results)
  assert json.load(open(tmp_path / "results.json"))["runs"][0]["forget_class"] == 6
  md = (tmp_path / "report.md").read_text()
  assert "Tables 1–2 layout" in md and "Table 4 layout" in md
  assert (tmp_path / "plots" / "gap_by_class.png").exists()


def test_merge_joins_methods_of_the_same_run_and_appends_others(tmp_path):
  def save(name, runs):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(dict(config=dict(data=dict(name="fashion_mnist",
                                                          scenario="subclass"),
                                                model=dict(name="mlp")),
                                    runs=runs, timing=dict(total_s=2.0))))
    return str(path)

  first = save("a", [_run(6, 0, 70.0, {"tmu": (74.0, 0.1, {})})])
  extra = save("b", [_run(6, 0, 70.0, {"scrub": (80.0, 0.2, {})}),
                     _run(6, 1, 80.0, {"tmu": (82.0, 0.1, {})})])
  merged = report.merge([first, extra], str(tmp_path / "out"))
  assert [r["seed"] for r in merged["runs"]] == [0, 1]
  assert set(merged["runs"][0]["methods"]) == {"tmu", "scrub"}
  assert merged["timing"]["total_s"] == 4.0
  assert (tmp_path / "out" / "report.md").exists()
