"""The run's recipe (METHODS §1): the problem's data on device, the model, the training recipe,
model cache keys, and training a model from scratch (cached).

Everything a method may need from the experiment lives here, below the methods, so that the
methods never import the experiment (imports run one way: experiment → methods → protocol).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tmu_jax import checkpoints, data as data_lib, rng, schema, train
from tmu_jax.models import get_model


@dataclasses.dataclass(frozen=True)
class Recipe:
  """The training recipe of M_o, M_g and the curriculum model (TMU paper §5.1; METHODS §1)."""
  epochs: int = schema.field(30, lo=1, doc="CIFAR: the TMU paper's recipe; lr ÷10 at 50%, 75%")
  batch_size: int = schema.field(128, lo=1)
  optimizer: str = schema.field("sgd", choices=train.optim.NAMES)
  lr: float = schema.field(0.01, lo=0.0, lo_open=True)
  momentum: float = schema.field(0.9, lo=0.0, hi=1.0, hi_open=True)
  weight_decay: float = schema.field(5e-4, lo=0.0, doc="coupled, PyTorch style")
  schedule: str = schema.field("step", choices=train.optim.SCHEDULES)
  augment: bool = schema.field(True, doc="random crop (pad 4) + horizontal flip, on device")
  flip: bool = schema.field(True, doc="horizontal flip as part of augmentation")
  save_every_epochs: int = schema.field(1, lo=1, doc="checkpoint period (not part of the key)")
  eval_batch_size: int = schema.field(1024, lo=1, doc="inference chunk (not part of the key)")

  def optimizer_for(self, total_steps: int) -> train.Optimizer:
    """This recipe's optimizer for a run of ``total_steps`` steps."""
    return train.Optimizer(self.optimizer, self.lr, self.momentum, self.weight_decay,
                           self.schedule, total_steps)

  def model_fields(self) -> dict:
    """The fields that change the trained model (the cache key's part of the recipe)."""
    out = dataclasses.asdict(self)
    del out["save_every_epochs"], out["eval_batch_size"]
    return out


def recipe_of(config) -> Recipe:
  """The typed recipe of ``config.train`` (ConfigError on a bad field)."""
  return schema.parse(Recipe, config.train, "train")


@dataclasses.dataclass
class Problem:
  """One run's data on device: the whole training split plus the split's index arrays."""
  dataset: data_lib.Dataset
  split: data_lib.Split
  forget_class: int
  seed: int
  x_train: jax.Array  # uint8[N, H, W, C]
  y_train: jax.Array  # int32[N]
  x_test: jax.Array
  y_test: jax.Array
  mode: str = "misclassify"  # instance scenario (L2UL §3): misclassify or relabel

  @property
  def num_classes(self) -> int:
    return self.dataset.num_classes

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.dataset.train_images.shape[1:])

  def take(self, index: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """(images, labels) of training-split rows ``index``, on device. On a CPU they are gathered
    on the host from the dataset's arrays (the same values as ``x_train``), so that no index
    shape compiles a program of its own (33 in the embedded default job); on an accelerator,
    from ``x_train`` on the device (no transfer of the rows)."""
    index = np.asarray(index)
    if jax.default_backend() == "cpu":
      return (jax.device_put(np.take(self.dataset.train_images, index, axis=0)),
              jax.device_put(np.take(self.dataset.train_labels, index, axis=0)))
    return (jnp.take(self.x_train, index, axis=0),
            jnp.take(self.y_train, index, axis=0))

  def stream(self, index: np.ndarray, batch_size: int, **extra) -> train.Stream:
    """A training Stream over rows ``index`` (extra per-example arrays added as fields)."""
    images, labels = self.take(index)
    return train.Stream(dict(image=images, label=labels, **extra), batch_size)

  @property
  def train_portion(self) -> np.ndarray:
    """T = D_r ∪ D_f: what M_o trains on."""
    return np.sort(np.concatenate([self.split.retain, self.split.forget]))

  def class_rows(self, index: np.ndarray, cls: int | None = None) -> np.ndarray:
    """The rows of ``index`` whose label is ``cls`` (default: the forget class)."""
    labels = np.asarray(self.dataset.train_labels)
    return index[labels[index] == (self.forget_class if cls is None else cls)]

  @functools.cached_property
  def split_key(self) -> str:
    """A content key of this problem's data and split (for caches of derived artefacts);
    computed once per problem (it hashes every index of the split)."""
    return checkpoints.cache_key(dict(data=self.dataset.digest, name=self.dataset.name,
                                      **{k: v.tolist() for k, v in self.split._asdict().items()}))


def make_problem(dataset: data_lib.Dataset, split: data_lib.Split, forget_class: int,
                 seed: int, mode: str = "misclassify") -> Problem:
  """The problem of ``split``, its arrays moved to the device once."""
  put = jax.device_put
  return Problem(dataset, split, forget_class, seed, put(dataset.train_images),
                 put(dataset.train_labels), put(dataset.test_images), put(dataset.test_labels),
                 mode)


def build_model(config, dataset: data_lib.Dataset) -> nn.Module:
  """The configured model (linen modules compare and hash by value: equal configs give equal
  keys of the compiled update)."""
  kwargs = {k: tuple(v) if isinstance(v, list) else v
            for k, v in config.model.kwargs.to_dict().items()}
  return get_model(config.model.name, dataset.num_classes, tuple(dataset.mean),
                   tuple(dataset.std), **kwargs)


def mesh_for(config):
  """The data-parallel mesh of ``config.num_devices`` (None for one device)."""
  n = config.num_devices if config.num_devices else len(jax.devices())
  return train.make_mesh(n) if n > 1 else None


def train_spec(config, model: nn.Module, dataset: data_lib.Dataset,
               recipe: Recipe | None = None) -> train.StepSpec:
  """The StepSpec of the training recipe: CE, the recipe's augmentation and optimizer family."""
  recipe = recipe or recipe_of(config)
  flip = recipe.flip and data_lib.DATASETS.get(dataset.name, {}).get("flip", True)
  return train.StepSpec(model=model, optimizer=recipe.optimizer_for(1).family,
                        augment=recipe.augment, flip=flip, num_classes=dataset.num_classes,
                        mesh=mesh_for(config))


def cache_dir(config, workdir: str) -> str:
  """Where trained models are cached: ``config.cache_dir`` or ``<workdir>/cache``."""
  return os.path.abspath(config.cache_dir or os.path.join(workdir, "cache"))


def model_key(config, problem: Problem, role: str, index: np.ndarray, seed: int,
              epochs: int) -> str:
  """Cache key of a model trained from scratch on rows ``index``: data digest, architecture,
  the recipe's model-changing fields, seed, epochs and the rows themselves."""
  return checkpoints.cache_key(dict(
      role=role, dataset=problem.dataset.name, data=problem.dataset.digest,
      subset=(config.data.train_subset, config.data.subset_seed), arch=config.model.name,
      kwargs=config.model.kwargs.to_dict(), recipe=recipe_of(config).model_fields(),
      seed=seed, epochs=epochs, index=checkpoints.cache_key(dict(i=np.asarray(index).tolist()))))


def model_dir(config, workdir: str, problem: Problem, role: str, index: np.ndarray,
              seed: int | None = None) -> tuple[str, str]:
  """(cache key, checkpoint folder) of the model :func:`train_from_scratch` trains."""
  seed = problem.seed if seed is None else seed
  key = model_key(config, problem, role, index, seed, recipe_of(config).epochs)
  return key, os.path.join(cache_dir(config, workdir), f"{role}-{key}")


def train_from_scratch(config, workdir: str, problem: Problem, role: str, index: np.ndarray,
                       *, seed: int | None = None, cancel=None, sharing=None
                       ) -> tuple[train.TrainState, dict]:
  """A fresh model trained on rows ``index`` with the config's recipe, or loaded from cache.

  Returns (state, info) with ``time_s`` (training time) and ``cached``. An interrupted training
  resumes from its last checkpoint; a damaged cache is reported in one line and retrained.
  ``cancel``, ``sharing``: see :func:`train.fit`. With ``sharing`` (the training runs beside
  others on host threads, :func:`tmu_jax.concurrent.run_together`) ``time_s`` is its share of
  the machine: while s trainings run, each second counts 1/s. That is below its time alone,
  since running together was faster than one after the other in every measurement here;
  ``wall_s`` is this session's wall time and ``share`` = wall_s / this session's time_s.
  """
  recipe = recipe_of(config)
  seed = problem.seed if seed is None else seed
  key, folder = model_dir(config, workdir, problem, role, index, seed)
  model = build_model(config, problem.dataset)
  stream = problem.stream(index, recipe.batch_size)
  opt = recipe.optimizer_for(recipe.epochs * train.steps_per_epoch((stream,)))
  init_key, data_key = jax.random.split(rng.seed_key(seed))
  state = train.new_state(init_key, model, problem.image_shape, opt)
  ckpt = checkpoints.Checkpointer(folder)
  try:
    restored = ckpt.restore_done(state)  # None when unfinished or damaged (said in one line)
    if restored is not None:
      return restored, dict(ckpt.done_metadata(), cached=True, key=key)
    state, info = train.fit(state, stream, spec=train_spec(config, model, problem.dataset,
                                                           recipe),
                            epochs=recipe.epochs, key=data_key, checkpointer=ckpt,
                            save_every_epochs=recipe.save_every_epochs, name=role,
                            verbose=config.verbose, cancel=cancel, sharing=sharing)
    meta = dict(time_s=info["seconds"], steps=info["steps"], final_loss=info.get("loss"))
    session = info["seconds"] - info["resumed_seconds"]
    if sharing is not None and session > 0:
      meta.update(wall_s=info["wall_seconds"], share=info["wall_seconds"] / session)
    ckpt.mark_done(meta, state=state)
    return state, dict(meta, cached=False, key=key)
  finally:
    ckpt.close()


def log(message: str, verbose: bool = True) -> None:
  """One progress line on stderr."""
  if verbose:
    print(message, file=sys.stderr, flush=True)
