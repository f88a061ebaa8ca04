"""Runs the protocol: data and splits, cached M_o and M_g, methods, metrics (METHODS §1, §5)."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
import zlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tmu_jax import checkpoints, data as data_lib, engine, metrics, validate
from tmu_jax.models import get_model


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

  @property
  def num_classes(self) -> int:
    return self.dataset.num_classes

  @property
  def image_shape(self) -> tuple[int, ...]:
    return tuple(self.dataset.train_images.shape[1:])

  def take(self, index: np.ndarray) -> tuple[jax.Array, jax.Array]:
    """(images, labels) of training-split rows ``index``, on device."""
    index = jnp.asarray(index)
    return jnp.take(self.x_train, index, axis=0), jnp.take(self.y_train, index, axis=0)

  def stream(self, index: np.ndarray, batch_size: int, **extra) -> engine.Stream:
    """A training Stream over rows ``index`` (extra per-example arrays added as fields)."""
    images, labels = self.take(index)
    return engine.Stream(dict(image=images, label=labels, **extra), batch_size)

  @property
  def train_portion(self) -> np.ndarray:
    """T = D_r ∪ D_f: what M_o trains on."""
    return np.sort(np.concatenate([self.split.retain, self.split.forget]))


def load_data(config) -> data_lib.Dataset:
  """Loads the configured dataset and checks the data-dependent fields."""
  dataset = data_lib.load(config.data)
  validate.check_against_data(config, dataset.num_classes, dataset.train_labels)
  return dataset


def make_problem(config, dataset: data_lib.Dataset, forget_class: int, seed: int) -> Problem:
  split = data_lib.make_split(dataset.train_labels, dataset.num_classes,
                              scenario=config.data.scenario, forget_class=forget_class,
                              forget_size=config.data.forget_size,
                              holdout_fraction=config.data.holdout_fraction, seed=seed)
  put = jax.device_put
  return Problem(dataset, split, forget_class, seed, put(dataset.train_images),
                 put(dataset.train_labels), put(dataset.test_images), put(dataset.test_labels))


# ----------------------------------------------------------------------------- models


def build_model(config, problem: Problem):
  """The configured model; one shared object per architecture so compiled steps are reused
  across runs (jit caches on the model's apply function)."""
  kwargs = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                        for k, v in config.model.kwargs.to_dict().items()))
  return _cached_model(config.model.name, problem.num_classes, tuple(problem.dataset.mean),
                       tuple(problem.dataset.std), kwargs)


@functools.lru_cache(maxsize=32)
def _cached_model(name: str, num_classes: int, mean: tuple, std: tuple, kwargs: tuple):
  return get_model(name, num_classes, mean, std, **dict(kwargs))


def mesh_for(config):
  n = config.num_devices if config.num_devices else len(jax.devices())
  return engine.make_mesh(n) if n > 1 else None


def train_spec(config, problem: Problem) -> engine.StepSpec:
  flip = config.train.flip and data_lib.DATASETS.get(problem.dataset.name, {}).get("flip", True)
  return engine.StepSpec(augment=config.train.augment, flip=flip,
                         num_classes=problem.num_classes, mesh=mesh_for(config))


def cache_dir(config, workdir: str) -> str:
  return os.path.abspath(config.cache_dir or os.path.join(workdir, "cache"))


def model_key(config, problem: Problem, role: str, index: np.ndarray, seed: int) -> str:
  """Cache key of a model trained from scratch on ``index`` with the config's recipe."""
  return checkpoints.cache_key(dict(
      role=role, dataset=problem.dataset.name, subset=(config.data.train_subset,
                                                       config.data.subset_seed),
      arch=config.model.name, kwargs=config.model.kwargs.to_dict(),
      recipe=config.train.to_dict(), seed=seed,
      index=checkpoints.cache_key(dict(i=np.asarray(index).tolist()))))


def train_from_scratch(config, workdir: str, problem: Problem, role: str, index: np.ndarray,
                       *, epochs: int | None = None, seed_offset: int = 0
                       ) -> tuple[engine.TrainState, dict]:
  """Trains a fresh model on rows ``index`` with the config's recipe, or loads it from cache.

  Returns (state, info) where info has ``time_s`` (training time, 0 when cached) and
  ``cached``. An interrupted training resumes from its last checkpoint.
  """
  epochs = epochs or config.train.epochs
  seed = problem.seed + seed_offset
  key = model_key(config, problem, role, index, seed) + f"-e{epochs}"
  model = build_model(config, problem)
  stream = problem.stream(index, config.train.batch_size)
  total = epochs * engine.steps_per_epoch((stream,))
  tx = engine.make_optimizer(config.train.optimizer, config.train.lr,
                             momentum=config.train.momentum,
                             weight_decay=config.train.weight_decay,
                             schedule=config.train.schedule, total_steps=total)
  init_key, data_key = jax.random.split(jax.random.key(seed))
  state = engine.create_train_state(init_key, model, problem.image_shape, tx)
  ckpt = checkpoints.Checkpointer(os.path.join(cache_dir(config, workdir), f"{role}-{key}"))
  try:
    if ckpt.is_done():
      state = ckpt.restore(state)
      return state, dict(ckpt.done_metadata(), cached=True)
    state, info = engine.fit(state, stream, epochs=epochs, key=data_key,
                             spec=train_spec(config, problem), checkpointer=ckpt,
                             save_every_epochs=config.train.save_every_epochs, name=role,
                             verbose=config.verbose)
    meta = dict(time_s=info["seconds"], steps=info["steps"], final_loss=info.get("loss"))
    ckpt.mark_done(meta)
    return state, dict(meta, cached=False)
  finally:
    ckpt.close()


# ----------------------------------------------------------------------------- metrics


def model_outputs(config, state: engine.TrainState, images: jax.Array) -> jax.Array:
  logits, _ = engine.predict(state.apply_fn, state.variables, images,
                             config.train.eval_batch_size)
  return logits


@dataclasses.dataclass
class Reference:
  """What every model of a run is scored against: gold outputs and fixed MIA / ZRF sets."""
  gold_logits_forget: jax.Array
  gold_acc_forget: float
  member_index: np.ndarray  # a D_r sample (MIA members)
  nonmember_images: jax.Array  # D_test sample (MIA non-members)
  nonmember_labels: jax.Array
  random_logits_forget: jax.Array  # a randomly initialised net on D_f (ZRF)


def make_reference(config, problem: Problem, gold_state: engine.TrainState) -> Reference:
  key = jax.random.key(problem.seed + 104729)
  k_mem, k_non, k_rand = jax.random.split(key, 3)
  n = min(config.experiment.mia_samples, len(problem.split.retain), problem.y_test.shape[0])
  member = np.sort(problem.split.retain[np.asarray(
      jax.random.choice(k_mem, len(problem.split.retain), (n,), replace=False))])
  non = jax.random.choice(k_non, problem.y_test.shape[0], (n,), replace=False)
  x_f, y_f = problem.take(problem.split.forget)
  random_state = engine.create_train_state(k_rand, build_model(config, problem),
                                           problem.image_shape,
                                           engine.make_optimizer("sgd", 0.0))
  gold_logits = model_outputs(config, gold_state, x_f)
  return Reference(gold_logits, metrics.accuracy(gold_logits, y_f), member,
                   problem.x_test[non], problem.y_test[non],
                   model_outputs(config, random_state, x_f))


def evaluate_model(config, problem: Problem, state: engine.TrainState,
                   ref: Reference | None = None) -> dict[str, Any]:
  """Accuracies on D_test, D_r, D_f (percent) and, given the reference, the alignment metrics
  of METHODS §5 (gap, agreement, activation distances, MIA, ZRF)."""
  x_f, y_f = problem.take(problem.split.forget)
  x_r, y_r = problem.take(problem.split.retain)
  logits_f = model_outputs(config, state, x_f)
  out = dict(
      acc_test=metrics.accuracy(model_outputs(config, state, problem.x_test), problem.y_test),
      acc_retain=metrics.accuracy(model_outputs(config, state, x_r), y_r),
      acc_forget=metrics.accuracy(logits_f, y_f),
  )
  if ref is None:
    return out
  out["gap"] = metrics.gap(out["acc_forget"], ref.gold_acc_forget)
  out["agreement"] = metrics.agreement(metrics.correct(logits_f, y_f),
                                       metrics.correct(ref.gold_logits_forget, y_f))
  out["act_dist_l2"] = metrics.activation_distance(logits_f, ref.gold_logits_forget, ord=2)
  out["act_dist_l1"] = metrics.activation_distance(logits_f, ref.gold_logits_forget, ord=1)
  x_m, y_m = problem.take(ref.member_index)
  loss = lambda x, y: metrics.per_sample_ce(model_outputs(config, state, x), y)
  out["mia"] = metrics.membership_inference(loss(x_m, y_m),
                                            loss(ref.nonmember_images, ref.nonmember_labels),
                                            metrics.per_sample_ce(logits_f, y_f))
  out["zrf"] = metrics.zrf(logits_f, ref.random_logits_forget)
  return out


def public(m: dict) -> dict:
  """JSON-able metrics: floats and small lists, without private (underscore) entries."""
  out = {}
  for k, v in m.items():
    if k.startswith("_"):
      continue
    if isinstance(v, (np.ndarray, jax.Array)):
      v = np.asarray(v).tolist()
    elif isinstance(v, (np.floating, np.integer)):
      v = v.item()
    out[k] = v
  return out


class CompileTimer:
  """Sums XLA compile time inside a ``with`` block (to report it apart from run time)."""

  _active: list["CompileTimer"] = []
  _registered = False

  def __init__(self):
    self.seconds = 0.0

  @classmethod
  def _listener(cls, event: str, duration: float, **kwargs):
    del kwargs
    if "compile" in event and "backend_compile" in event:
      for timer in cls._active:
        timer.seconds += duration

  def __enter__(self):
    if not CompileTimer._registered:
      jax.monitoring.register_event_duration_secs_listener(CompileTimer._listener)
      CompileTimer._registered = True
    CompileTimer._active.append(self)
    return self

  def __exit__(self, *exc):
    CompileTimer._active.remove(self)


# ----------------------------------------------------------------------------- runs


def run_method(config, workdir: str, problem: Problem, original: engine.TrainState,
               name: str, ref: Reference) -> dict[str, Any]:
  """Runs one registered method from M_o and scores it against gold."""
  key = jax.random.fold_in(jax.random.key(problem.seed), zlib.crc32(name.encode()))
  state, run_info, info = apply_method(config, workdir, problem, original, name, key)
  if state is None:
    return run_info
  out = evaluate_model(config, problem, state, ref)
  out.update(run_info)
  if "pred_easy" in info:  # TMU: generalization-label accuracy against gold (Table 4)
    y_f = problem.take(problem.split.forget)[1]
    gold_correct = metrics.correct(ref.gold_logits_forget, y_f)
    out["label_acc"] = metrics.label_accuracy(info["pred_easy"], gold_correct)
  if "features" in info:  # TMU's feature values, for the histograms and later analysis
    rel = os.path.join("features", f"{name}-c{problem.forget_class}-n{len(problem.split.forget)}"
                       f"-s{problem.seed}.npz")
    os.makedirs(os.path.join(workdir, "features"), exist_ok=True)
    np.savez_compressed(os.path.join(workdir, rel), **{k: np.asarray(v) for k, v in
                                                      info["features"].items()})
    out["features_file"] = rel
  return out


def run_one(config, workdir: str, dataset: data_lib.Dataset, forget_class: int, seed: int
            ) -> dict[str, Any]:
  """One (forget class, seed) run: M_o, M_g, every method; the run dict of results.json."""
  problem = make_problem(config, dataset, forget_class, seed)
  timing = {}
  original, info_o = train_from_scratch(config, workdir, problem, "original",
                                        problem.train_portion)
  timing["original_train_s"] = 0.0 if info_o["cached"] else info_o["time_s"]
  if config.experiment.get("gold", True):
    gold_state, info_g = train_from_scratch(config, workdir, problem, "gold",
                                            problem.split.retain)
    timing["gold_train_s"] = 0.0 if info_g["cached"] else info_g["time_s"]
  else:  # experiment.gold = False: no M_g; gold-referenced metrics are then relative to M_o
    gold_state, info_g = original, None
    timing["gold_train_s"] = 0.0
  ref = make_reference(config, problem, gold_state)
  orig = evaluate_model(config, problem, original, ref)
  orig["time_s"], orig["cached"] = info_o["time_s"], info_o["cached"]
  if info_g is None:
    gold = dict(note="not trained (experiment.gold = False); gap etc. are relative to M_o")
  else:
    gold = evaluate_model(config, problem, gold_state, ref)
    gold["time_s"], gold["cached"] = info_g["time_s"], info_g["cached"]
  run = dict(dataset=dataset.name, arch=config.model.name, scenario=config.data.scenario,
             forget_class=forget_class, forget_size=int(len(problem.split.forget)), seed=seed,
             gold=public(gold), original=public(orig), methods={}, timing=timing,
             split_file=save_split(workdir, problem))
  if config.data.scenario == "instance":  # L2UL (METHODS §3)
    run.update(mode=config.data.get("mode", "misclassify"), k=run["forget_size"])
  for name in config.experiment.methods:
    t0 = time.perf_counter()
    run["methods"][name] = public(run_method(config, workdir, problem, original, name, ref))
    timing[f"{name}_s"] = time.perf_counter() - t0
  return run


def save_split(workdir: str, problem: Problem) -> str:
  """Writes the split's index arrays beside the results; returns the relative path."""
  rel = os.path.join("splits", f"{problem.dataset.name}-c{problem.forget_class}"
                     f"-n{len(problem.split.forget)}-s{problem.seed}.npz")
  os.makedirs(os.path.join(workdir, "splits"), exist_ok=True)
  np.savez_compressed(os.path.join(workdir, rel), **problem.split._asdict())
  return rel


def run(config, workdir: str) -> dict[str, Any]:
  """The whole experiment of ``config``: every (class, seed) run, then results and report."""
  from tmu_jax import report  # pylint: disable=import-outside-toplevel

  workdir = validate.check_workdir(workdir)
  validate.check_config(config)
  t0 = time.perf_counter()
  dataset = load_data(config)
  classes = list(config.experiment.forget_classes) or [config.data.forget_class]
  seeds = list(config.experiment.seeds) or [config.seed]
  sizes = list(config.experiment.get("forget_sizes", ())) or [config.data.forget_size]
  runs = []
  for seed in seeds:
    for cls, size in [(c, n) for c in classes for n in sizes]:
      sized = with_forget_size(config, size)
      if config.experiment.get("rounds", 1) > 1:
        runs.extend(run_continual(sized, workdir, dataset, cls, seed))
      else:
        runs.append(run_one(sized, workdir, dataset, cls, seed))
      results = dict(config=json.loads(config.to_json_best_effort()), runs=runs,
                     timing=dict(total_s=time.perf_counter() - t0))
      report.write(workdir, results)  # after every run: nothing is lost on interruption
  return results


def with_forget_size(config, size: int):
  """A copy of ``config`` with data.forget_size = size (one point of experiment.forget_sizes)."""
  c = config.copy_and_resolve_references()
  c.data.forget_size = int(size)
  return c


# ----------------------------------------------------------------------------- continual (§3)


def continual_forget_sets(problem: Problem, k: int, rounds: int, seed: int) -> list[np.ndarray]:
  """``rounds`` disjoint sorted sets of k instances drawn uniformly from T (METHODS §3)."""
  portion = problem.train_portion
  if rounds * k > len(portion):
    raise validate.ConfigError(f"config field experiment.rounds = {rounds} is not valid: "
                               f"{rounds} × k = {rounds * k} exceeds |T| = {len(portion)}")
  order = np.random.default_rng([seed, 4099, k, rounds]).permutation(portion)
  return [np.sort(order[r * k:(r + 1) * k]).astype(np.int64) for r in range(rounds)]


def apply_method(config, workdir: str, problem: Problem, start: engine.TrainState, name: str,
                 key: jax.Array) -> tuple[engine.TrainState | None, dict[str, Any], dict]:
  """Runs method ``name`` from ``start`` (not necessarily M_o).

  Returns (state or None if it collapsed to a NaN loss, JSON-able entries: timings, steps and
  the method's report, the method's raw info dict).
  """
  from tmu_jax import methods  # pylint: disable=import-outside-toplevel

  ctx = methods.Context(config=config, problem=problem, original=start, key=key,
                        build_model=lambda: build_model(config, problem), workdir=workdir,
                        verbose=config.verbose)
  cfg = config.methods[name] if name in config.methods else None
  fn = methods.get(cfg.get("base", name) if cfg is not None else name)
  t0 = time.perf_counter()
  with CompileTimer() as compile_timer:
    try:
      state, info = fn(ctx, cfg)
      jax.block_until_ready(state.params)
    except engine.NonFiniteLoss as e:
      return None, dict(note=f"collapsed: {e}", failed=True), {}
  out = dict(time_s=time.perf_counter() - t0 - compile_timer.seconds,
             compile_s=compile_timer.seconds)
  for k in ("steps", "stopped_early"):
    if k in info:
      out[k] = info[k]
  out.update(info.get("report", {}))
  return state, out, info


def run_continual(config, workdir: str, dataset: data_lib.Dataset, forget_class: int,
                  seed: int) -> list[dict[str, Any]]:
  """Continual unlearning (METHODS §3): ``experiment.rounds`` requests of k new instances each,
  applied in sequence to the same model per method; one run dict per round (``round`` 1…R)
  with accuracy on every forget set so far (``acc_forget_rounds``), on D_r and on D_test."""
  problem = make_problem(config, dataset, forget_class, seed)
  k, rounds = config.data.forget_size, config.experiment.rounds
  original, info_o = train_from_scratch(config, workdir, problem, "original",
                                        problem.train_portion)
  sets = continual_forget_sets(problem, k, rounds, seed)
  current = {name: original for name in config.experiment.methods}
  failed: dict[str, str] = {}
  runs = []
  for r in range(rounds):
    gone = np.concatenate(sets[:r + 1])
    split = data_lib.Split(holdout=problem.split.holdout, forget=sets[r],
                           retain=np.setdiff1d(problem.train_portion, gone))
    pr = dataclasses.replace(problem, split=split)
    seen = [problem.take(s) for s in sets[:r + 1]]

    def scores(state):
      m = evaluate_model(config, pr, state)
      m["acc_forget_rounds"] = [metrics.accuracy(model_outputs(config, state, x), y)
                                for x, y in seen]
      m["acc_forget_all"] = float(np.mean(m["acc_forget_rounds"]))
      return m

    orig = scores(original)
    orig.update(time_s=info_o["time_s"], cached=info_o["cached"])
    run = dict(dataset=dataset.name, arch=config.model.name, scenario=config.data.scenario,
               mode=config.data.get("mode", "misclassify"), k=k, round=r + 1,
               forget_class=forget_class, forget_size=k, seed=seed,
               gold=dict(note="continual: no gold model per round"), original=public(orig),
               methods={}, timing={})
    for name in config.experiment.methods:
      if name in failed:
        run["methods"][name] = dict(failed=True, note=f"stopped after an earlier round: "
                                    f"{failed[name]}")
        continue
      key = jax.random.fold_in(jax.random.fold_in(jax.random.key(seed),
                                                  zlib.crc32(name.encode())), r)
      state, out, _ = apply_method(config, workdir, pr, current[name], name, key)
      if state is None:
        failed[name] = out["note"]
      else:
        current[name] = state
        out.update(scores(state))
      run["methods"][name] = public(out)
      run["timing"][f"{name}_s"] = out.get("time_s", 0.0)
    runs.append(run)
  return runs
