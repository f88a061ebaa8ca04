"""configs/cifar10.py:smoke and configs/cifar100.py:smoke run end to end under mock data."""

import json

import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from configs import cifar10, cifar100  # noqa: E402
from tmu_jax import experiment  # noqa: E402


# Compiling ResNet-18 programs dominates on CPU (~10 s each), so CIFAR-100 runs M_o and M_g
# only, and CIFAR-10 two methods with batch norm in the loop; test_methods.py covers them all.
@pytest.mark.parametrize("module,classes,methods", [
    (cifar10, 10, ("bad_teacher", "tmu")), (cifar100, 100, ())])
def test_smoke_config_under_mock_data(tmp_path, module, classes, methods):
  config = module.get_config("smoke")
  config.verbose = False
  config.experiment.methods = methods
  with tfds.testing.mock_data(num_examples=120 if classes == 10 else 600):
    results = experiment.run(config, str(tmp_path))
  run = results["runs"][0]
  assert run["dataset"] == config.data.name and run["arch"] == "resnet18"
  assert set(run["methods"]) == set(methods)
  assert json.load(open(tmp_path / "results.json"))["runs"][0]["forget_size"] == 4


def test_cifar100_paper_classes():
  assert cifar100.get_config("sweep").experiment.forget_classes == cifar100.PAPER_CLASSES
  assert len(cifar10.get_config("sweep").experiment.seeds) == 3
