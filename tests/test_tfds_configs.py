"""configs/cifar10.py:smoke and configs/cifar100.py:smoke run end to end under TFDS mock data.

On CPU the run is all compilation (ResNet-18 programs, and ``model.init`` op by op), so each
config runs what only it exercises: CIFAR-10 M_o, M_g and one method with BatchNorm in the loop,
CIFAR-100 (100 classes) M_o alone. Every method of the smoke configs is still validated
(``test_smoke_configs_validate_with_every_method``); test_methods.py runs them all.
"""

import json

import jax
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from configs import cifar10, cifar100  # noqa: E402
from tmu_jax import experiment, validate  # noqa: E402


@pytest.fixture
def rbg_keys():
  """rbg keys while the test runs: threefry's initialisers take ~40 s to compile on 2 cores."""
  previous = jax.config.jax_default_prng_impl
  jax.config.update("jax_default_prng_impl", "rbg")
  yield
  jax.config.update("jax_default_prng_impl", previous)


@pytest.mark.parametrize("module,examples,methods,gold", [
    (cifar10, 120, ("finetune",), True), (cifar100, 600, (), False)])
def test_smoke_config_under_mock_data(tmp_path, rbg_keys, module, examples, methods, gold):
  """The smoke config trains, scores and writes results.json and report.md on mock data."""
  config = module.get_config("smoke")
  config.verbose = False
  config.experiment.methods = methods
  config.experiment.gold = gold
  # finetune with M_g's batch size and lr schedule trains D_r with M_g's compiled program.
  config.train.schedule = "constant"
  config.methods.finetune.batch_size = config.train.batch_size
  with tfds.testing.mock_data(num_examples=examples):
    results = experiment.run(config, str(tmp_path))
  run = results["runs"][0]
  assert run["dataset"] == config.data.name and run["arch"] == "resnet18"
  assert set(run["methods"]) == set(methods)
  for name in methods:
    assert run["methods"][name]["steps"] > 0 and "acc_forget" in run["methods"][name]
  assert ("note" in run["gold"]) != gold  # M_g trained or said not to be
  saved = json.load(open(tmp_path / "results.json"))
  assert saved["runs"][0]["forget_size"] == 4
  assert (tmp_path / "report.md").exists()
  # the last (here the only) run's write draws the plots and lists them
  assert saved["plots"] and all((tmp_path / p).exists() for p in saved["plots"])


@pytest.mark.parametrize("module", [cifar10, cifar100])
def test_smoke_configs_validate_with_every_method(module):
  """Every method section of the smoke configs passes validation (no data needed)."""
  config = module.get_config("smoke")
  assert set(config.experiment.methods) == set(cifar10.ALL_METHODS)
  validate.check_config(config)


def test_cifar100_paper_classes():
  """The sweeps: CIFAR-100's paper classes, three seeds."""
  assert cifar100.get_config("sweep").experiment.forget_classes == cifar100.PAPER_CLASSES
  assert len(cifar10.get_config("sweep").experiment.seeds) == 3
