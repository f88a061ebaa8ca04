"""Each unlearning method moves forget accuracy the expected way on a tiny real problem, and
the whole pipeline (launch → results.json, report.md, plots, cache reuse) runs end to end."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from configs import fashion_mnist
from tmu_jax import data as data_lib, experiment, methods

FMNIST = "/usr/share/datasets/fashion-mnist"
pytestmark = pytest.mark.skipif(not os.path.isdir(FMNIST),
                                reason="apt-get install dataset-fashion-mnist")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config():
  c = fashion_mnist.get_config()
  c.data.train_subset = 2500
  c.data.forget_size = 30
  c.model.kwargs.hidden = (128,)
  c.train.epochs = 30
  c.verbose = False
  for name in ("tmu", "tmu_plus"):
    c.methods[name].twin.epochs = 3
    c.methods[name].clf.epochs = 30
    c.methods[name].n_twins = min(c.methods[name].n_twins, 2)
  return c


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  config = tiny_config()
  workdir = str(tmp_path_factory.mktemp("methods"))
  dataset = data_lib.load(config.data)
  problem = experiment.make_problem(config, dataset, 6, 0)
  original, _ = experiment.train_from_scratch(config, workdir, problem, "original",
                                              problem.train_portion)
  gold, _ = experiment.train_from_scratch(config, workdir, problem, "gold", problem.split.retain)
  ref = experiment.make_reference(config, problem, gold)
  return config, workdir, problem, original, ref


def test_original_memorizes_forget_set(setup):
  config, _, problem, original, ref = setup
  acc = experiment.evaluate_model(config, problem, original)["acc_forget"]
  assert acc >= 95.0 and ref.gold_acc_forget < acc


@pytest.mark.parametrize("name", ["finetune", "neg_grad", "neg_grad_plus", "random_label",
                                  "bad_teacher", "tmu", "tmu_plus"])
def test_method_lowers_forget_accuracy(setup, name):
  config, workdir, problem, original, ref = setup
  before = experiment.evaluate_model(config, problem, original)
  out = experiment.run_method(config, workdir, problem, original, name, ref)
  assert not out.get("failed"), out.get("note")
  assert out["acc_forget"] < before["acc_forget"], (name, out["acc_forget"])
  assert out["acc_test"] > 60.0  # the rest of the model survives
  assert 0.0 <= out["agreement"] <= 100.0 and out["time_s"] >= 0.0
  if name.startswith("tmu"):
    assert 0.0 <= out["label_acc"] <= 100.0 and out["twin_size"] == 30


def test_neg_grad_stops_at_chance(setup):
  config, workdir, problem, original, ref = setup
  ctx = methods.Context(config, problem, original, jax.random.key(0),
                        lambda: experiment.build_model(config, problem), workdir, False)
  state, info = methods.get("neg_grad")(ctx, config.methods.neg_grad)
  assert info["stopped_early"]
  x_f, y_f = problem.take(problem.split.forget)
  ce = np.asarray(experiment.metrics.per_sample_ce(
      experiment.model_outputs(config, state, x_f), y_f))
  assert ce.mean() >= np.log(10)


def test_launch_end_to_end_and_cache(tmp_path):
  args = [sys.executable, "launch.py", "--config=configs/fashion_mnist.py", f"--workdir={tmp_path}",
          "--config.data.train_subset=1500", "--config.data.forget_size=20",
          "--config.train.epochs=3", "--config.methods.tmu.clf.epochs=5",
          "--config.experiment.methods=('finetune','tmu')", "--config.verbose=False"]
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  first = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
  assert first.returncode == 0, first.stderr[-3000:]
  results = json.load(open(tmp_path / "results.json"))
  run = results["runs"][0]
  assert set(run["methods"]) == {"finetune", "tmu"}
  for model in (run["gold"], run["original"], *run["methods"].values()):
    for key in ("acc_test", "acc_retain", "acc_forget"):
      assert 0.0 <= model[key] <= 100.0
  assert "label_acc" in run["methods"]["tmu"] and "gap" in run["methods"]["finetune"]
  md = (tmp_path / "report.md").read_text()
  assert "## Tables 1–2 layout" in md and "## TMU twin problem" in md
  assert md.count("| tmu |") >= 2  # the per-run table and the paper-layout tables
  assert (tmp_path / "plots" / "gap_by_class.png").exists()
  split = np.load(tmp_path / run["split_file"])
  assert len(split["forget"]) == 20
  second = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
  assert second.returncode == 0
  again = json.load(open(tmp_path / "results.json"))["runs"][0]
  assert again["original"]["cached"] and again["gold"]["cached"]
  assert again["original"]["acc_test"] == run["original"]["acc_test"]
  # Same seed, same results: every method reproduces exactly.
  assert again["methods"]["tmu"]["acc_forget"] == run["methods"]["tmu"]["acc_forget"]
