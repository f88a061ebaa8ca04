"""The report package: tables, plots and files as a pure function of the results dict.

Pins (1) the rendered report.md against the output of the modules it replaced (report.py,
paper_tables.py, plots.py, rendered once from the same fixture: ``EXPECTED_*`` below), (2) the
choice of methods per table from the ``group`` / ``paper`` keys and the config's settings, not
from names, (3) strict JSON with NaN as null read back as "–", (4) atomic files and the merge.
"""

import ast
import copy
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tmu_jax import report
from tmu_jax.report import evaluation, markdown, plots, tables
from tmu_jax.report.write import main as merge_main
from tmu_jax.report.write import merge, render, write

NAN = float("nan")

# ----------------------------------------------------------------------------- fixtures

TMU = dict(features="nf,af,cf", n_twins=1, threshold="half", balanced=False,
           twin=dict(repeat=10, epochs=5), unlearn=dict(mechanism="random_label", epochs=5))
TMU_PLUS = dict(TMU, base="tmu", n_twins=8, threshold="twin_rate", balanced=True,
                unlearn=dict(mechanism="runner_up", epochs=10))
# results["config"]["methods"]: each method's settings, as the experiment dumps its config.
SETTINGS = dict(
    finetune=dict(epochs=5, lr=0.02), tmu=TMU, tmu_twins=dict(TMU, base="tmu", n_twins=8),
    tmu_plus=TMU_PLUS, tmu_nf=dict(TMU, base="tmu", features="nf"),
    tmu_plus_nf=dict(TMU_PLUS, features="nf"), tmu_af=dict(TMU, base="tmu", features="af"),
    l2ul=dict(case="l2ul", lam=1.0), l2ul_naive=dict(base="l2ul", case="naive", lam=1.0))
# name -> (group, paper): what the experiment writes beside each method's metrics.
META = dict(finetune=("baseline", True), tmu=("tmu", True), tmu_twins=("tmu", False),
            tmu_plus=("tmu", True), tmu_nf=("tmu", False), tmu_plus_nf=("tmu", False),
            tmu_af=("tmu", False), l2ul=("l2ul", True), l2ul_naive=("l2ul", False))
ORDER = ("finetune", "tmu", "tmu_twins", "tmu_plus", "tmu_nf", "tmu_plus_nf", "tmu_af")


def _entry(name, forget, gold_f, i, **extra):
  group, paper = META[name]
  m = dict(group=group, paper=paper, acc_test=88.0 + 0.25 * i, acc_forget=forget,
           gap=abs(forget - gold_f), agreement=100.0 - abs(forget - gold_f),
           act_dist_l2=0.05 + 0.01 * i, mia=40.0 + i, steps=100 + i, time_s=1.5 + i)
  if group == "tmu":
    m.update(label_acc=70.0 + 2 * i, pred_hard=10 + i, twin_acc_mt=95.0 + 0.5 * i,
             orig_acc_mo_df=99.0, twin_hard_rate=20.0 + i, twin_auc=0.7 + 0.01 * i)
  m.update(extra)
  return m


def subclass_run(cls, seed, gold_f, size=100, shift=0.0):
  methods = {}
  for i, name in enumerate(ORDER):
    forget = gold_f + (-1) ** i * (i + seed + shift)
    extra = dict(mia=NAN, note="collapsed: loss NaN") if name == "finetune" and seed == 1 else {}
    methods[name] = _entry(name, forget, gold_f, i, **extra)
  return dict(dataset="fashion_mnist", arch="mlp", scenario="subclass", forget_class=cls,
              forget_size=size, seed=seed,
              gold=dict(acc_test=90.0, acc_forget=gold_f, mia=35.0 + cls, time_s=10.0),
              original=dict(acc_test=90.5, acc_forget=100.0, gap=100.0 - gold_f, mia=60.0,
                            time_s=9.0),
              methods=methods)


SUBCLASS = [subclass_run(6, 0, 70.0), subclass_run(6, 1, 80.0), subclass_run(0, 0, 90.0),
            subclass_run(6, 0, 75.0, size=400, shift=2.0)]


def instance_run(draw, k, seed=0, round_=None, order=("l2ul_naive", "l2ul", "finetune")):
  methods = {}
  for i, name in enumerate(order):
    m = _entry(name, 0.0 if name != "finetune" else 100.0, 100.0, i + draw,
               stopped="forgotten" if name != "finetune" else None)
    if round_ is not None:
      m.update(acc_forget_rounds=[0.0] * (round_ - 1) + [6.25 * i], acc_forget_all=3.0 * i)
    methods[name] = m
  run = dict(dataset="fashion_mnist", arch="mlp", scenario="instance", forget_class=draw,
             forget_size=k, seed=seed, mode="misclassify", k=k,
             gold=dict(acc_test=90.0, acc_forget=100.0),
             original=dict(acc_test=90.1, acc_forget=100.0, acc_retain=99.7, time_s=150.0),
             methods=methods)
  if round_ is not None:
    run["round"] = round_
  return run


INSTANCE = [instance_run(1, 16), instance_run(2, 16), instance_run(1, 64),
            instance_run(1, 16, round_=1), instance_run(1, 16, round_=2)]


def results_of(runs, settings=SETTINGS):
  return dict(config=dict(data=dict(name="fashion_mnist", scenario=runs[0]["scenario"]),
                          model=dict(name="mlp"), methods=copy.deepcopy(settings)),
              runs=copy.deepcopy(runs), timing=dict(total_s=12.0))


def without_metadata(runs):
  """``runs`` as a results file written before the experiment recorded group / paper."""
  runs = copy.deepcopy(runs)
  for r in runs:
    for m in r["methods"].values():
      m.pop("group"), m.pop("paper")
  return runs


def _section(md, title):
  """The table under the heading ``## title...`` of a report."""
  part = md.split(f"## {title}", 1)[1].split("\n\n")
  return part[1]


# ----------------------------------------------------------------------------- same output


def test_report_md_is_the_one_the_replaced_modules_rendered():
  assert render(results_of(SUBCLASS)) == EXPECTED_SUBCLASS_MD
  md = render(results_of(INSTANCE))
  assert md[md.index("## L2UL"):md.index("\n\n## Mean ± std over runs")] == EXPECTED_L2UL_MD


def test_accuracy_table_averages_seeds_per_class_and_runs_in_avg():
  lines = tables.accuracy_table(SUBCLASS[:3]).splitlines()
  assert lines[0] == "| class | gold | finetune | tmu | tmu_plus |"
  row6 = next(l for l in lines if l.startswith("| 6 |"))
  # class 6: gold Acc_Df (70 + 80)/2 = 75; finetune Acc_Df (70 + 81)/2, gap (0 + 1)/2
  assert row6.startswith("| 6 | 90.0 \\| 75.0 | 88.0 \\| 75.5; 0.5 |")
  avg = next(l for l in lines if l.startswith("| **Avg**"))
  assert avg.startswith("| **Avg** | **90.0 \\| 80.0** | **88.0 \\| 80.3; 0.3** |")


# ----------------------------------------------------------------------------- which methods


def test_main_tables_take_paper_methods_of_baseline_and_tmu_groups_in_order():
  runs = copy.deepcopy(SUBCLASS[:3])
  for r in runs:  # names say nothing: a paper method with a new name, a non-paper baseline
    r["methods"] = {"my_method": dict(r["methods"]["tmu"]), **r["methods"]}
    r["methods"]["finetune"]["paper"] = False
    r["methods"]["l2ul"] = _entry("l2ul", 50.0, 70.0, 0)
  assert tables.main_methods(runs) == ["my_method", "tmu", "tmu_plus"]
  assert tables.accuracy_table(runs).splitlines()[0] == (
      "| class | gold | my_method | tmu | tmu_plus |")
  assert tables.metric_table(runs, "mia", 1, with_gold=True).splitlines()[0] == (
      "| class | gold | my_method | tmu | tmu_plus |")


def test_ablation_and_table4_come_from_group_and_config_features():
  settings = dict(SETTINGS, tmu_nc=dict(TMU, base="tmu", features="nf,cf"))
  runs = copy.deepcopy(SUBCLASS[:3])
  for r in runs:
    r["methods"]["tmu_nc"] = dict(r["methods"]["tmu_af"], label_acc=50.0)
  subsets = tables.feature_subsets(runs, settings)
  assert subsets == {"tmu": ("nf+af+cf", "tmu"), "tmu_plus": ("nf+af+cf", "tmu_plus"),
                     "tmu_nf": ("nf", "tmu"), "tmu_plus_nf": ("nf", "tmu_plus"),
                     "tmu_af": ("af", "tmu"), "tmu_nc": ("nf+cf", "tmu")}
  assert tables.ablation_methods(runs, settings) == ["tmu", "tmu_twins", "tmu_plus"]
  table4 = tables.feature_table(runs, settings).splitlines()
  assert table4[0] == "| features | tmu label acc | tmu Δ | tmu_plus label acc | tmu_plus Δ |"
  assert table4[-1].startswith("| nf+cf | 50.0 ± 0.0 |") and table4[-1].endswith("| – | – |")
  # A feature list instead of a comma-separated string names the same subset.
  listed = dict(settings, tmu_nc=dict(settings["tmu_nc"], features=["nf", "cf"]))
  assert tables.feature_subsets(runs, listed)["tmu_nc"] == ("nf+cf", "tmu")


def test_old_results_without_group_or_paper_count_as_paper_baselines():
  runs = without_metadata(SUBCLASS[:3])
  assert tables.main_methods(runs) == list(ORDER)
  assert tables.select(runs, ("tmu",)) == []
  md = render(results_of(runs))
  assert "Tables 1–2 layout" in md and "tmu_twins" in _section(md, "Tables 1–2 layout")
  assert "TMU ablation" not in md and "Table 4 layout" not in md and "TMU twin" not in md


def test_group_comes_from_the_first_entry_that_has_it():
  runs = copy.deepcopy(SUBCLASS[:2])
  runs[0]["methods"]["tmu"] = dict(note="collapsed: loss NaN", failed=True)  # no metadata
  assert tables.method_meta(runs)["tmu"] == ("tmu", True)


def test_l2ul_tables_list_the_l2ul_cases_first_then_the_baselines_beside_them():
  order = ("finetune", "l2ul_naive", "l2ul")
  runs = [instance_run(1, 16, order=order), instance_run(1, 16, round_=1, order=order)]
  rows = [l.split(" | ")[1] for l in tables.instance_table(runs[:1]).splitlines()[2:]]
  assert rows == ["original", "l2ul_naive", "l2ul", "finetune"]
  rows = [l.split(" | ")[0][2:] for l in tables.continual_table(runs[1:]).splitlines()[2:]]
  assert rows == ["original", "l2ul_naive", "l2ul", "finetune"]


# ----------------------------------------------------------------------------- strict JSON


def _strict_loads(text):
  def refuse(name):
    raise ValueError(f"bare {name} in results.json")
  return json.loads(text, parse_constant=refuse)


def test_nan_metric_is_written_as_null_and_shown_as_a_dash(tmp_path):
  results = results_of(SUBCLASS[:3])
  results["runs"][0]["methods"]["tmu"]["gap"] = NAN
  results["runs"][0]["methods"]["tmu"]["act_dist_l2"] = float("inf")
  results["runs"][0]["methods"]["tmu"]["mia"] = np.float32("nan")
  write(str(tmp_path), results)
  back = _strict_loads((tmp_path / "results.json").read_text())
  tmu = back["runs"][0]["methods"]["tmu"]
  assert tmu["gap"] is None and tmu["act_dist_l2"] is None and tmu["mia"] is None
  row = next(l for l in tables.run_table(back["runs"][0]).splitlines() if l.startswith("| tmu |"))
  assert row.split(" | ")[3:6] == ["–", "99.00", "–"]  # gap, agreement, act_dist_l2
  assert row == next(l for l in tables.run_table(results["runs"][0]).splitlines()
                     if l.startswith("| tmu |"))
  # Every table rebuilt from the file equals the report written beside it.
  assert render(back) == (tmp_path / "report.md").read_text()


def test_none_and_nan_read_alike():
  assert markdown.number(None) is None and markdown.number(NAN) is None
  assert markdown.number(True) is None and markdown.number(np.int64(3)) == 3
  assert markdown.numbers([1, None, NAN, float("-inf"), "x", 2.5]) == [1.0, 2.5]
  assert markdown.fmt(None) == markdown.fmt(NAN) == markdown.fmt(float("inf")) == "–"
  runs = [instance_run(1, 16), instance_run(2, 16)]
  nan, none = copy.deepcopy(runs), copy.deepcopy(runs)
  nan[1]["methods"]["l2ul"]["acc_test"] = NAN
  none[1]["methods"]["l2ul"]["acc_test"] = None
  assert tables.instance_table(nan) == tables.instance_table(none)
  assert tables.mean_std_table(nan) == tables.mean_std_table(none)


# ----------------------------------------------------------------------------- files


def test_report_writes_json_markdown_and_plots_atomically(tmp_path):
  results = results_of(SUBCLASS)
  write(str(tmp_path), results)
  assert _strict_loads((tmp_path / "results.json").read_text())["runs"][0]["forget_class"] == 6
  md = (tmp_path / "report.md").read_text()
  assert "Tables 1–2 layout" in md and "Table 4 layout" in md
  assert results["plots"] == ["plots/gap_by_class.png", "plots/forget_size.png"]
  assert "![gap_by_class.png](plots/gap_by_class.png)" in md
  for p in results["plots"]:
    assert (tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  # No temp file is left beside the targets.
  assert sorted(os.listdir(tmp_path)) == ["plots", "report.md", "results.json"]
  assert sorted(os.listdir(tmp_path / "plots")) == ["forget_size.png", "gap_by_class.png"]
  assert report.write is write and report.merge is merge  # the entry points the code uses


def test_intermediate_writes_skip_the_plots(tmp_path):
  """with_plots=False (the experiment after every run but the last) writes results.json and
  report.md, draws nothing and lists no plot; a later full write draws them."""
  results = results_of(SUBCLASS)
  write(str(tmp_path), results, with_plots=False)
  assert sorted(os.listdir(tmp_path)) == ["report.md", "results.json"]
  assert results["plots"] == [] and "## Plots" not in (tmp_path / "report.md").read_text()
  write(str(tmp_path), results)
  assert sorted(os.listdir(tmp_path / "plots")) == ["forget_size.png", "gap_by_class.png"]


def test_l2ul_plots_and_feature_histograms(tmp_path):
  rng = np.random.default_rng(0)
  twin = rng.normal(3.0, 2.0, size=(40, 3))
  os.makedirs(tmp_path / "features")
  np.savez(tmp_path / "features" / "tmu.npz", twin=twin, twin_easy=rng.random(40) < 0.5)
  runs = copy.deepcopy(SUBCLASS[:1])
  runs[0]["methods"]["tmu"]["features_file"] = "features/tmu.npz"
  out = plots.write_all(str(tmp_path), dict(runs=runs + copy.deepcopy(INSTANCE)))
  assert [os.path.basename(p) for p in out] == [
      "gap_by_class.png", "l2ul_k.png", "l2ul_continual.png", "features_tmu.png"]
  z = plots.standardise(twin)
  np.testing.assert_allclose(z, (twin - twin.mean(0)) / twin.std(0), rtol=1e-5)
  assert z.dtype == np.float32 and np.all(plots.standardise(np.ones((4, 3))) == 0)


def test_merge_joins_methods_of_the_same_run_and_appends_others(tmp_path):
  def save(name, runs):
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(results_of(runs)))
    return str(path)

  one = subclass_run(6, 0, 70.0)
  first = save("a", [dict(one, methods={"tmu": one["methods"]["tmu"]})])
  extra = save("b", [dict(one, methods={"finetune": one["methods"]["finetune"]}),
                     subclass_run(6, 1, 80.0)])  # holds a NaN: a bare NaN in an old file
  merged = merge([first, extra], str(tmp_path / "out"))
  assert [r["seed"] for r in merged["runs"]] == [0, 1]
  assert set(merged["runs"][0]["methods"]) == {"tmu", "finetune"}
  assert merged["timing"]["total_s"] == 24.0
  _strict_loads((tmp_path / "out" / "results.json").read_text())
  assert (tmp_path / "out" / "report.md").exists()
  merge_main([first, "--out", str(tmp_path / "cli")])
  assert (tmp_path / "cli" / "report.md").exists()


# ----------------------------------------------------------------------------- §5b (schema 3)


def _spread(mean, std, n):
  return dict(mean=mean, std=std, n=n)


def _epsilon(f, score, eps):
  return dict(forget_quality=f, final_score=score, ra_ratio=1.0, ta_ratio=0.99, n=4, eps=eps,
              mean_eps=float(np.mean(eps)))


def evaluated_run(seed=0, shift=0.0):
  """A run with every schema-3 key: G = 4 gold models, N = 4 ε models a side, two methods.
  Missing on purpose: retrain's act_l2, tmu's act_l2 against the members (its single-gold
  act_dist_l2 stands in), original's RTE; tmu's gap std is NaN and its agreement floors inf."""
  run = dict(dataset="fashion_mnist", arch="mlp", scenario="subclass", forget_class=6,
             forget_size=4, seed=seed, gold_models=4,
             floor=dict(gap=_spread(1.0, 0.5, 6), agreement=_spread(91.0, 0.8, 6),
                        act_l2=_spread(0.05, 0.01, 6), act_l1=_spread(0.07, 0.01, 6)),
             epsilon_settings=dict(n=4, grid_per_unit=100.0, delta=1e-5, bin_width=0.5,
                                   max_epsilon=1.5, cap=50.0))
  run["gold"] = dict(acc_test=90.0, acc_retain=99.0, acc_forget=75.0, mia=40.0, time_s=100.0,
                     members=4, spread=dict(acc_test=0.2, acc_forget=1.5),
                     vs_gold=dict(gap=_spread(1.1, 0.6, 4), agreement=_spread(90.8, 0.9, 4)),
                     floors_away=dict(gap=0.2, agreement=0.25), avg_gap=0.5,
                     avg_gap_parts=dict(ua=1.0, ra=0.5, ta=0.25, mia=0.25),
                     epsilon=_epsilon(0.9 + shift, 0.88 + shift, [0.1, 0.2, 0.3, 0.6]))
  run["original"] = dict(acc_test=90.5, acc_retain=100.0, acc_forget=100.0, gap=25.0, mia=60.0,
                         members=1, vs_gold=dict(gap=_spread(25.0, 1.0, 4),
                                                 agreement=_spread(75.0, 1.0, 4),
                                                 act_l2=_spread(0.4, 0.02, 4)),
                         floors_away=dict(gap=48.0, agreement=20.0, act_l2=35.0), avg_gap=13.0,
                         epsilon=_epsilon(0.05, 0.05, [50.0, 50.0, 3.0, 2.0]))
  finetune = _entry("finetune", 80.0, 75.0, 0, time_s=30.0, members=4,
                    vs_gold=dict(gap=_spread(4.4, 1.2, 16), agreement=_spread(87.2, 1.3, 16),
                                 act_l2=_spread(0.123, 0.01, 16)),
                    floors_away=dict(gap=6.8, agreement=4.75, act_l2=7.3), avg_gap=3.25,
                    rte=0.3, too_slow=True,
                    epsilon=_epsilon(0.4, 0.38 + shift, [0.2, 1.0, 2.0, 50.0]))
  tmu = _entry("tmu", 76.0, 75.0, 1, time_s=5.0, members=4,
               vs_gold=dict(gap=_spread(1.5, NAN, 16), agreement=_spread(90.1, 1.0, 16)),
               floors_away=dict(gap=1.0, agreement=float("inf")), avg_gap=1.25, rte=0.05,
               too_slow=False, epsilon=_epsilon(0.7, 0.69, [0.1, 0.4, 0.9, 1.2]))
  run["methods"] = dict(finetune=finetune, tmu=tmu)
  return run


RUN_EVAL = "### Evaluation against the gold ensemble (METHODS §5b)"
SWEEP_EVAL = "## Evaluation against the gold ensemble: mean ± std over runs"


def _table_after(md, heading):
  """The first table after the (first) line ``heading`` of a report."""
  return next(p for p in md.split(f"{heading}\n", 1)[1].split("\n\n") if p.startswith("|"))


def _rows(md_table):
  """{first cell: cells} of a markdown table's body."""
  rows = [l[2:-2].split(" | ") for l in md_table.splitlines()[2:]]
  return {r[0]: r for r in rows}


def test_evaluation_table_ranks_by_final_score_against_the_floor():
  md = render(results_of([evaluated_run()]))
  text = _table_after(md, RUN_EVAL)
  lines = text.splitlines()
  assert lines[0] == ("| model | models | F | final score | Avg. Gap | agreement (vs floor) | "
                      "gap (vs floor) | act. distance L2 (vs floor) | RTE |")
  rows = _rows(text)
  assert list(rows) == ["retrain (gold)", "tmu", "finetune", "original"]
  assert rows["finetune"] == [
      "finetune", "4", "0.400", "0.380", "3.25", "87.2 ± 1.3 (floor 91.0 ± 0.8, 4.8 floors)",
      "4.4 ± 1.2 (floor 1.0 ± 0.5, 6.8 floors)",
      "0.123 ± 0.010 (floor 0.050 ± 0.010, 7.3 floors)", "0.300 ⚠ >0.2"]
  # NaN std: no "±"; inf floors away: no floors; no act_l2 against the members: the single-gold
  # act_dist_l2 beside the floor; no ⚠ at RTE 0.05.
  assert rows["tmu"][5:] == ["90.1 ± 1.0 (floor 91.0 ± 0.8)",
                             "1.5 (floor 1.0 ± 0.5, 1.0 floors)", "0.060 (floor 0.050 ± 0.010)",
                             "0.050"]
  assert rows["retrain (gold)"][7:] == ["–", "–"] and rows["original"][-1] == "–"
  assert ("G = 4 gold models; ε from N = 4 models a side (bins of 0.5 up to max ε 1.5, cap 50). "
          "F = forgetting quality") in md
  assert "Ranked by final score, best first." in md
  assert SWEEP_EVAL not in md  # one run


def test_evaluation_flags_rte_over_the_configs_limit():
  results = results_of([evaluated_run()])
  results["config"]["evaluation"] = dict(rte_limit=0.5)  # the producer set too_slow by it
  results["runs"][0]["methods"]["finetune"]["too_slow"] = False
  results["runs"][0]["methods"]["tmu"].update(rte=0.6, too_slow=True)
  rows = _rows(_table_after(render(results), RUN_EVAL))
  assert rows["finetune"][-1] == "0.300" and rows["tmu"][-1] == "0.600 ⚠ >0.5"
  assert evaluation.rte_limit(None) == evaluation.rte_limit({}) == 0.2


def test_evaluation_ranks_by_avg_gap_without_epsilon_and_missing_values_last():
  run = evaluated_run()
  for m in tables.models_of(run).values():
    m.pop("epsilon")
  run["methods"]["tmu"].pop("avg_gap")
  md = render(results_of([run]))
  rows = _rows(_table_after(md, RUN_EVAL))
  assert list(rows) == ["retrain (gold)", "finetune", "original", "tmu"]
  assert rows["tmu"][1:5] == ["4", "–", "–", "–"]
  assert "Ranked by Avg. Gap, smallest first." in md


def test_evaluation_over_runs_aggregates_and_ends_with_the_floor():
  md = render(results_of([evaluated_run(0), evaluated_run(1, shift=0.02)]))
  rows = _rows(_table_after(md, SWEEP_EVAL))
  assert list(rows) == ["retrain (gold)", "tmu", "finetune", "original",
                        "gold-vs-gold floor"]
  assert rows["finetune"][1:5] == ["2", "0.400 ± 0.000", "0.390 ± 0.010", "3.25 ± 0.00"]
  assert rows["finetune"][5] == "87.2 ± 0.0 (4.8 ± 0.0 floors)"
  assert rows["finetune"][-2:] == ["0.300 ± 0.000", "2/2"]
  assert rows["tmu"][5] == "90.1 ± 0.0" and rows["original"][-2:] == ["–", "–"]
  assert rows["gold-vs-gold floor"][5:8] == ["91.0 ± 0.0", "1.0 ± 0.0", "0.050 ± 0.000"]
  assert md.count(RUN_EVAL) == 2


def test_evaluation_plots_are_written_linked_and_rebuilt_from_strict_json(tmp_path):
  results = results_of([evaluated_run(0), evaluated_run(1, shift=0.02)])
  write(str(tmp_path), results)
  assert results["plots"] == ["plots/gap_by_class.png", "plots/epsilon_hist.png",
                              "plots/floor_band.png", "plots/cost_quality.png"]
  for p in results["plots"]:
    assert (tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  md = (tmp_path / "report.md").read_text()
  assert "![cost_quality.png](plots/cost_quality.png)" in md
  back = _strict_loads((tmp_path / "results.json").read_text())
  tmu = back["runs"][0]["methods"]["tmu"]
  assert tmu["floors_away"]["agreement"] is None and tmu["vs_gold"]["gap"]["std"] is None
  assert render(back) == md
  # Without ε the cost plot's y is Avg. Gap; with neither it and no RTE there is nothing to draw.
  run = evaluated_run()
  for m in tables.models_of(run).values():
    m.pop("epsilon"), m.pop("rte", None)
  out = plots.write_all(str(tmp_path / "bare"), dict(runs=[run]))
  assert [os.path.basename(p) for p in out] == ["gap_by_class.png", "floor_band.png"]


def test_old_results_hold_no_evaluation_and_render_without_it():
  assert not any(evaluation.has_evaluation(r) for r in SUBCLASS + INSTANCE)
  assert evaluation.run_section(SUBCLASS[0]) == [] and evaluation.sweep_section(SUBCLASS) == []
  assert "Evaluation against the gold ensemble" not in render(results_of(SUBCLASS))


# ----------------------------------------------------------------------------- import graph

PACKAGE = pathlib.Path(tables.__file__).parent
# Imports run one way, markdown <- tables, evaluation <- plots <- write; tmu_jax.workdir is the
# file helper.
ALLOWED = {"markdown": set(), "tables": {"tmu_jax.report.markdown"},
           "evaluation": {"tmu_jax.report.markdown"},
           "plots": {"tmu_jax.workdir", "tmu_jax.report.markdown", "tmu_jax.report.tables",
                     "tmu_jax.report.evaluation"},
           "write": {"tmu_jax.workdir", "tmu_jax.report.evaluation", "tmu_jax.report.plots",
                     "tmu_jax.report.tables"},
           "__init__": {"tmu_jax.report.write"}, "__main__": {"tmu_jax.report.write"}}


@pytest.mark.parametrize("module", sorted(ALLOWED))
def test_imports_run_one_way_at_module_level(module):
  tree = ast.parse((PACKAGE / f"{module}.py").read_text())
  top = {id(n) for n in tree.body}
  for node in ast.walk(tree):
    if isinstance(node, (ast.Import, ast.ImportFrom)):
      assert id(node) in top, f"{module}.py imports inside a function (line {node.lineno})"
      if isinstance(node, ast.Import):
        pairs = [(a.name, a.name) for a in node.names]
      else:  # from X import a: a is a name of module X, or the module X.a
        pairs = [(node.module, f"{node.module}.{a.name}") for a in node.names]
      for mod, sub in pairs:
        if mod.split(".")[0] == "tmu_jax":
          assert mod in ALLOWED[module] or sub in ALLOWED[module], f"{module}.py imports {sub}"


def test_report_needs_neither_jax_nor_the_experiment():
  code = ("import sys, tmu_jax.report; bad = sorted(m for m in sys.modules if m.split('.')[0] in "
          "('jax', 'flax', 'optax') or m.startswith(('tmu_jax.methods', 'tmu_jax.experiment', "
          "'tmu_jax.engine', 'tmu_jax.train', 'tmu_jax.features'))); print(bad); "
          "sys.exit(1 if bad else 0)")
  root = str(PACKAGE.parent.parent)
  env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
  proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                        cwd=root, check=False)
  assert proc.returncode == 0, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- expected output
# Rendered by the replaced modules (tmu_jax/report.py + paper_tables.py) from results_of(...).

EXPECTED_SUBCLASS_MD = r'''# Unlearning report: fashion_mnist, mlp, scenario subclass

4 run(s); total wall time 12 s. Accuracies in %; gap = |Acc_Df − gold Acc_Df| in points; agreement = % of D_f whose correctness matches gold's; act_dist = mean ‖softmax − gold softmax‖ on D_f.

## Tables 1–2 layout: Acc_test \| Acc_Df; Δ (|D_f| = 100)

| class | gold | finetune | tmu | tmu_plus |
|---|---|---|---|---|
| 0 | 90.0 \| 90.0 | 88.0 \| 90.0; 0.0 | 88.2 \| 89.0; 1.0 | 88.8 \| 87.0; 3.0 |
| 6 | 90.0 \| 75.0 | 88.0 \| 75.5; 0.5 | 88.2 \| 73.5; 1.5 | 88.8 \| 71.5; 3.5 |
| **Avg** | **90.0 \| 80.0** | **88.0 \| 80.3; 0.3** | **88.2 \| 78.7; 1.3** | **88.8 \| 76.7; 3.3** |
| Δ std across runs |  | 0.5 | 0.5 | 0.5 |

## Table 3 layout: activation distance ‖softmax(M_u) − softmax(M_g)‖₂ on D_f

| class | finetune | tmu | tmu_plus |
|---|---|---|---|
| 0 | 0.050 | 0.060 | 0.080 |
| 6 | 0.050 | 0.060 | 0.080 |
| **Avg** | 0.050 ± 0.000 | 0.060 ± 0.000 | 0.080 ± 0.000 |

## Per-sample agreement with gold on D_f (%)

| class | finetune | tmu | tmu_plus |
|---|---|---|---|
| 0 | 100.0 | 99.0 | 97.0 |
| 6 | 99.5 | 98.5 | 96.5 |
| **Avg** | 99.7 ± 0.5 | 98.7 ± 0.5 | 96.7 ± 0.5 |

## MIA: % of D_f predicted member (gold's own value first)

| class | gold | finetune | tmu | tmu_plus |
|---|---|---|---|---|
| 0 | 35.0 | 40.0 | 41.0 | 43.0 |
| 6 | 41.0 | 40.0 | 41.0 | 43.0 |
| **Avg** | 39.0 ± 2.8 | 40.0 ± 0.0 | 41.0 ± 0.0 | 43.0 ± 0.0 |

## TMU twin problem beside the original problem

| method | M_t acc on D_t | M_o acc on D_f | gold acc on D_f | twin hard rate % | gold hard rate % | predicted hard (count) | twin AUC |
|---|---|---|---|---|---|---|---|
| tmu | 95.5 ± 0.0 | 99.0 ± 0.0 | 80.0 ± 8.2 | 21.0 ± 0.0 | 20.0 ± 8.2 | 11.0 ± 0.0 | 0.71 ± 0.00 |
| tmu_plus | 96.5 ± 0.0 | 99.0 ± 0.0 | 80.0 ± 8.2 | 23.0 ± 0.0 | 20.0 ± 8.2 | 13.0 ± 0.0 | 0.73 ± 0.00 |

## TMU ablation: which change buys what (mean ± std over runs)

| method | gap Δ | agreement | act_dist_l2 | Acc_test | Acc_Df | label acc | pred. hard |
|---|---|---|---|---|---|---|---|
| tmu | 1.3 ± 0.5 | 98.7 ± 0.5 | 0.060 ± 0.000 | 88.2 ± 0.0 | 78.7 ± 8.2 | 72.0 ± 0.0 | 11.0 ± 0.0 |
| tmu_twins | 2.3 ± 0.5 | 97.7 ± 0.5 | 0.070 ± 0.000 | 88.5 ± 0.0 | 82.3 ± 8.2 | 74.0 ± 0.0 | 12.0 ± 0.0 |
| tmu_plus | 3.3 ± 0.5 | 96.7 ± 0.5 | 0.080 ± 0.000 | 88.8 ± 0.0 | 76.7 ± 8.2 | 76.0 ± 0.0 | 13.0 ± 0.0 |

## Table 4 layout: generalization-label accuracy by feature subset

| features | tmu label acc | tmu Δ | tmu_plus label acc | tmu_plus Δ |
|---|---|---|---|---|
| nf+af+cf | 72.0 ± 0.0 | 1.3 ± 0.5 | 76.0 ± 0.0 | 3.3 ± 0.5 |
| nf | 78.0 ± 0.0 | 4.3 ± 0.5 | 80.0 ± 0.0 | 5.3 ± 0.5 |
| af | 82.0 ± 0.0 | 6.3 ± 0.5 | – | – |

## Fig. 3 data: gap against |D_f|

| |D_f| | gold Acc_Df | finetune Δ | tmu Δ | tmu_plus Δ |
|---|---|---|---|---|
| 100 | 80.0 | 0.3 | 1.3 (label acc 72.0) | 3.3 (label acc 76.0) |
| 400 | 75.0 | 2.0 | 3.0 (label acc 72.0) | 5.0 (label acc 76.0) |

## Mean ± std over runs

| model | acc_test | acc_forget | gap | agreement | act_dist_l2 | mia | label_acc | steps |
|---|---|---|---|---|---|---|---|---|
| gold | 90.00 ± 0.00 | 78.75 ± 7.40 | – | – | – | 39.50 ± 2.60 | – | – |
| original | 90.50 ± 0.00 | 100.00 ± 0.00 | 21.25 ± 7.40 | – | – | 60.00 ± 0.00 | – | – |
| finetune | 88.00 ± 0.00 | 79.50 ± 7.23 | 0.75 ± 0.83 | 99.25 ± 0.83 | 0.05 ± 0.00 | 40.00 ± 0.00 | – | 100.00 ± 0.00 |
| tmu | 88.25 ± 0.00 | 77.00 ± 7.65 | 1.75 ± 0.83 | 98.25 ± 0.83 | 0.06 ± 0.00 | 41.00 ± 0.00 | 72.00 ± 0.00 | 101.00 ± 0.00 |
| tmu_twins | 88.50 ± 0.00 | 81.50 ± 7.23 | 2.75 ± 0.83 | 97.25 ± 0.83 | 0.07 ± 0.00 | 42.00 ± 0.00 | 74.00 ± 0.00 | 102.00 ± 0.00 |
| tmu_plus | 88.75 ± 0.00 | 75.00 ± 7.65 | 3.75 ± 0.83 | 96.25 ± 0.83 | 0.08 ± 0.00 | 43.00 ± 0.00 | 76.00 ± 0.00 | 103.00 ± 0.00 |
| tmu_nf | 89.00 ± 0.00 | 83.50 ± 7.23 | 4.75 ± 0.83 | 95.25 ± 0.83 | 0.09 ± 0.00 | 44.00 ± 0.00 | 78.00 ± 0.00 | 104.00 ± 0.00 |
| tmu_plus_nf | 89.25 ± 0.00 | 73.00 ± 7.65 | 5.75 ± 0.83 | 94.25 ± 0.83 | 0.10 ± 0.00 | 45.00 ± 0.00 | 80.00 ± 0.00 | 105.00 ± 0.00 |
| tmu_af | 89.50 ± 0.00 | 85.50 ± 7.23 | 6.75 ± 0.83 | 93.25 ± 0.83 | 0.11 ± 0.00 | 46.00 ± 0.00 | 82.00 ± 0.00 | 106.00 ± 0.00 |

## class 6, seed 0, |D_f| = 100

| model | acc_test | acc_forget | gap | agreement | act_dist_l2 | mia | label_acc | steps | time_s | note |
|---|---|---|---|---|---|---|---|---|---|---|
| gold | 90.00 | 70.00 | – | – | – | 41.00 | – | – | 10.00 |  |
| original | 90.50 | 100.00 | 30.00 | – | – | 60.00 | – | – | 9.00 |  |
| finetune | 88.00 | 70.00 | 0.00 | 100.00 | 0.050 | 40.00 | – | 100 | 1.50 |  |
| tmu | 88.25 | 69.00 | 1.00 | 99.00 | 0.060 | 41.00 | 72.00 | 101 | 2.50 |  |
| tmu_twins | 88.50 | 72.00 | 2.00 | 98.00 | 0.070 | 42.00 | 74.00 | 102 | 3.50 |  |
| tmu_plus | 88.75 | 67.00 | 3.00 | 97.00 | 0.080 | 43.00 | 76.00 | 103 | 4.50 |  |
| tmu_nf | 89.00 | 74.00 | 4.00 | 96.00 | 0.090 | 44.00 | 78.00 | 104 | 5.50 |  |
| tmu_plus_nf | 89.25 | 65.00 | 5.00 | 95.00 | 0.100 | 45.00 | 80.00 | 105 | 6.50 |  |
| tmu_af | 89.50 | 76.00 | 6.00 | 94.00 | 0.110 | 46.00 | 82.00 | 106 | 7.50 |  |

## class 6, seed 1, |D_f| = 100

| model | acc_test | acc_forget | gap | agreement | act_dist_l2 | mia | label_acc | steps | time_s | note |
|---|---|---|---|---|---|---|---|---|---|---|
| gold | 90.00 | 80.00 | – | – | – | 41.00 | – | – | 10.00 |  |
| original | 90.50 | 100.00 | 20.00 | – | – | 60.00 | – | – | 9.00 |  |
| finetune | 88.00 | 81.00 | 1.00 | 99.00 | 0.050 | – | – | 100 | 1.50 | collapsed: loss NaN |
| tmu | 88.25 | 78.00 | 2.00 | 98.00 | 0.060 | 41.00 | 72.00 | 101 | 2.50 |  |
| tmu_twins | 88.50 | 83.00 | 3.00 | 97.00 | 0.070 | 42.00 | 74.00 | 102 | 3.50 |  |
| tmu_plus | 88.75 | 76.00 | 4.00 | 96.00 | 0.080 | 43.00 | 76.00 | 103 | 4.50 |  |
| tmu_nf | 89.00 | 85.00 | 5.00 | 95.00 | 0.090 | 44.00 | 78.00 | 104 | 5.50 |  |
| tmu_plus_nf | 89.25 | 74.00 | 6.00 | 94.00 | 0.100 | 45.00 | 80.00 | 105 | 6.50 |  |
| tmu_af | 89.50 | 87.00 | 7.00 | 93.00 | 0.110 | 46.00 | 82.00 | 106 | 7.50 |  |

## class 0, seed 0, |D_f| = 100

| model | acc_test | acc_forget | gap | agreement | act_dist_l2 | mia | label_acc | steps | time_s | note |
|---|---|---|---|---|---|---|---|---|---|---|
| gold | 90.00 | 90.00 | – | – | – | 35.00 | – | – | 10.00 |  |
| original | 90.50 | 100.00 | 10.00 | – | – | 60.00 | – | – | 9.00 |  |
| finetune | 88.00 | 90.00 | 0.00 | 100.00 | 0.050 | 40.00 | – | 100 | 1.50 |  |
| tmu | 88.25 | 89.00 | 1.00 | 99.00 | 0.060 | 41.00 | 72.00 | 101 | 2.50 |  |
| tmu_twins | 88.50 | 92.00 | 2.00 | 98.00 | 0.070 | 42.00 | 74.00 | 102 | 3.50 |  |
| tmu_plus | 88.75 | 87.00 | 3.00 | 97.00 | 0.080 | 43.00 | 76.00 | 103 | 4.50 |  |
| tmu_nf | 89.00 | 94.00 | 4.00 | 96.00 | 0.090 | 44.00 | 78.00 | 104 | 5.50 |  |
| tmu_plus_nf | 89.25 | 85.00 | 5.00 | 95.00 | 0.100 | 45.00 | 80.00 | 105 | 6.50 |  |
| tmu_af | 89.50 | 96.00 | 6.00 | 94.00 | 0.110 | 46.00 | 82.00 | 106 | 7.50 |  |

## class 6, seed 0, |D_f| = 400

| model | acc_test | acc_forget | gap | agreement | act_dist_l2 | mia | label_acc | steps | time_s | note |
|---|---|---|---|---|---|---|---|---|---|---|
| gold | 90.00 | 75.00 | – | – | – | 41.00 | – | – | 10.00 |  |
| original | 90.50 | 100.00 | 25.00 | – | – | 60.00 | – | – | 9.00 |  |
| finetune | 88.00 | 77.00 | 2.00 | 98.00 | 0.050 | 40.00 | – | 100 | 1.50 |  |
| tmu | 88.25 | 72.00 | 3.00 | 97.00 | 0.060 | 41.00 | 72.00 | 101 | 2.50 |  |
| tmu_twins | 88.50 | 79.00 | 4.00 | 96.00 | 0.070 | 42.00 | 74.00 | 102 | 3.50 |  |
| tmu_plus | 88.75 | 70.00 | 5.00 | 95.00 | 0.080 | 43.00 | 76.00 | 103 | 4.50 |  |
| tmu_nf | 89.00 | 81.00 | 6.00 | 94.00 | 0.090 | 44.00 | 78.00 | 104 | 5.50 |  |
| tmu_plus_nf | 89.25 | 68.00 | 7.00 | 93.00 | 0.100 | 45.00 | 80.00 | 105 | 6.50 |  |
| tmu_af | 89.50 | 83.00 | 8.00 | 92.00 | 0.110 | 46.00 | 82.00 | 106 | 7.50 |  |
'''

EXPECTED_L2UL_MD = r'''## L2UL: k × case (mode misclassify)

Acc_Df = % of D_f still predicted as its true label; relabel = % of D_f at its requested label (relabel mode); steps = unlearning steps taken; time_s excludes compilation.

| k | case | Acc_Df | Acc_Dr | Acc_test | relabel | steps | time_s | stopped | note |
|---|---|---|---|---|---|---|---|---|---|
| 16 | original | 100.0 ± 0.0 | 99.7 ± 0.0 | 90.1 ± 0.0 | – | – | 150.0 ± 0.0 |  |  |
| 16 | l2ul_naive | 0.0 ± 0.0 | – | 88.4 ± 0.1 | – | 101.5 ± 0.5 | 3.0 ± 0.5 | forgotten ×2 |  |
| 16 | l2ul | 0.0 ± 0.0 | – | 88.6 ± 0.1 | – | 102.5 ± 0.5 | 4.0 ± 0.5 | forgotten ×2 |  |
| 16 | finetune | 100.0 ± 0.0 | – | 88.9 ± 0.1 | – | 103.5 ± 0.5 | 5.0 ± 0.5 |  |  |
| 64 | original | 100.00 | 99.70 | 90.10 | – | – | 150.00 |  |  |
| 64 | l2ul_naive | 0.00 | – | 88.25 | – | 101 | 2.50 | forgotten |  |
| 64 | l2ul | 0.00 | – | 88.50 | – | 102 | 3.50 | forgotten |  |
| 64 | finetune | 100.00 | – | 88.75 | – | 103 | 4.50 |  |  |

## Continual unlearning: 2 rounds of k = 16

| case | round | Acc on D_f of rounds 1…r | mean | Acc_Dr | Acc_test | steps | note |
|---|---|---|---|---|---|---|---|
| original | 1 |  | – | 99.70 | 90.10 | – |  |
| original | 2 |  | – | 99.70 | 90.10 | – |  |
| l2ul_naive | 1 | 0 | 0.00 | – | 88.25 | 101 |  |
| l2ul_naive | 2 | 0 / 0 | 0.00 | – | 88.25 | 101 |  |
| l2ul | 1 | 6 | 3.00 | – | 88.50 | 102 |  |
| l2ul | 2 | 0 / 6 | 3.00 | – | 88.50 | 102 |  |
| finetune | 1 | 12 | 6.00 | – | 88.75 | 103 |  |
| finetune | 2 | 0 / 12 | 6.00 | – | 88.75 | 103 |  |'''
