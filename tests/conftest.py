"""Shared fixtures: one tiny real Fashion-MNIST problem with its M_o and M_g, trained once per
test session (test_methods, test_scrub_salun, test_l2ul and test_api reuse it)."""

from __future__ import annotations

import dataclasses
import os

import jax
import pytest

from configs import fashion_mnist
from tmu_jax import methods, protocol
from tmu_jax.experiment import runs
from tmu_jax.train import loop as train_loop

FMNIST = "/usr/share/datasets/fashion-mnist"


def tiny_config():
  """The embedded default shrunk to seconds: 2 500 images, |D_f| = 30, MLP 784-128-10."""
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


@dataclasses.dataclass
class Tiny:
  """The session's tiny problem: config, workdir, problem, M_o and M_g with their scorer."""
  config: object
  workdir: str
  problem: protocol.Problem
  models: runs.Models
  gold: object

  @property
  def original(self):
    return self.models.original

  def context(self, key=None, start=None) -> methods.Context:
    """A method Context on this problem (from M_o unless ``start`` is given)."""
    recipe = protocol.recipe_of(self.config)
    model = self.models.scorer.model
    return methods.Context(problem=self.problem, original=start or self.original, model=model,
                           spec=protocol.train_spec(self.config, model, self.problem.dataset,
                                                    recipe),
                           recipe=recipe, key=jax.random.key(0) if key is None else key,
                           original_key=self.models.original_key, verbose=False)


@pytest.fixture
def chunk_calls(monkeypatch):
  """The plan length of every call of fit's compiled chunk (one call = one host sync)."""
  calls = []
  real = train_loop._chunk_jit

  def counted(*args, **kwargs):
    calls.append(kwargs["plan"].length)
    return real(*args, **kwargs)

  monkeypatch.setattr(train_loop, "_chunk_jit", counted)
  return calls


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> Tiny:
  if not os.path.isdir(FMNIST):
    pytest.skip("apt-get install dataset-fashion-mnist")
  config = tiny_config()
  workdir = str(tmp_path_factory.mktemp("tiny"))
  dataset = runs.load_data(config)
  problem = runs.make_problem(config, dataset, 6, 0)
  models, _, _ = runs.train_models(config, workdir, problem)
  gold, _ = protocol.train_from_scratch(config, workdir, problem, "gold", problem.split.retain)

  return Tiny(config, workdir, problem, models, gold)
