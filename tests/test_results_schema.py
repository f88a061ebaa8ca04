"""docs/results_schema.md lists every key a real results.json holds."""

import json
import os
import re

import pytest

from tmu_jax import report
from tmu_jax.experiment import runs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def documented_keys() -> set[str]:
  """The backticked keys of the first column of every table in docs/results_schema.md."""
  text = open(os.path.join(ROOT, "docs", "results_schema.md"), encoding="utf-8").read()
  return set(re.findall(r"^\| `([a-z0-9_]+)` \|", text, flags=re.M))


def keys_of(results: dict) -> set[str]:
  """Every key results.json uses (config contents and per-method timing names excluded)."""
  keys = set(results) | set(results["timing"])
  for run in results["runs"]:
    keys |= set(run)
    keys |= {k for k in run["timing"] if not k.endswith("_s") or k in (
        "original_train_s", "gold_train_s")}
    for model in (run["gold"], run["original"], *run["methods"].values()):
      keys |= set(model)
  return keys


def test_a_real_results_file_matches_the_schema(tiny, tmp_path):
  """A real run (the session's tiny problem, its cached M_o and M_g) with SalUn, TMU and L2UL and
  the ε evaluation (N = 3: 6 gold models, 3 seeds per method), written by the report writer,
  holds only documented keys, in strict JSON."""
  config = tiny.config.copy_and_resolve_references()
  config.experiment.methods = ("salun", "tmu", "l2ul")
  config.experiment.epsilon = 3
  config.methods.l2ul.max_steps = 3
  config.methods.l2ul.num_adv = 2
  config.methods.l2ul.adv_steps = 2
  dataset = runs.load_data(config)
  run = runs.run_one(config, tiny.workdir, dataset, 6, 0)
  report.write(str(tmp_path), dict(config=json.loads(config.to_json_best_effort()),
                                   config_digest="test", runs=[run], timing=dict(total_s=1.0)))
  text = (tmp_path / "results.json").read_text()
  results = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
  missing = keys_of(results) - documented_keys()
  assert not missing, f"keys not in docs/results_schema.md: {sorted(missing)}"
  assert {"group", "paper", "base", "label_acc", "mask_kept", "stopped", "split_file",
          "twin_auc", "floor", "epsilon", "vs_gold", "floors_away", "avg_gap", "rte",
          "epsilon_settings", "gold_models", "members", "label_auc"} <= keys_of(results)


def test_another_configs_results_are_kept(tmp_path):
  """Results of another config in the same workdir are moved aside, never overwritten; the same
  config's results stay in place (to be rewritten by the rerun)."""
  from tmu_jax.experiment import keep_other_results  # pylint: disable=import-outside-toplevel
  (tmp_path / "results.json").write_text(json.dumps(dict(config_digest="aaa", runs=[1])))
  keep_other_results(str(tmp_path), "aaa")
  assert (tmp_path / "results.json").exists()
  keep_other_results(str(tmp_path), "bbb")
  assert not (tmp_path / "results.json").exists()
  assert json.loads((tmp_path / "results-aaa.json").read_text())["runs"] == [1]
