"""Datasets as uint8 arrays, the split of METHODS §1, and on-device augmentation.

Sources:
- ``idx``: a folder of the four original (gzipped) IDX files, e.g. Debian's
  ``dataset-fashion-mnist`` at ``/usr/share/datasets/fashion-mnist``.
- ``tfds``: any TFDS image-classification dataset through ``tfds.data_source`` (array_record;
  works without TensorFlow). Offline users prepare it once from the genuine archive, see
  ``docs/reproducing.md``.

Images are kept as ``uint8[N, H, W, C]``; models see ``f32`` in [0, 1] (normalisation lives in
the model, METHODS §1).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import struct
import zlib
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from tmu_jax.errors import ConfigError  # not from tmu_jax.validate: it imports this module
from tmu_jax.rng import numpy_rng as named_rng

# Known datasets: name -> (source, per-channel mean, std, flip makes sense).
DATASETS = {
    "fashion_mnist": dict(source="idx", mean=(0.2860,), std=(0.3530,), flip=True, classes=10),
    "mnist": dict(source="idx", mean=(0.1307,), std=(0.3081,), flip=False, classes=10),
    "cifar10": dict(source="tfds", mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616),
                    flip=True, classes=10),
    "cifar100": dict(source="tfds", mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762),
                     flip=True, classes=100),
}

IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

SCENARIOS = ("subclass", "instance", "class")


class Dataset(NamedTuple):
  """A labelled image dataset held in host memory."""
  name: str
  train_images: np.ndarray  # uint8[N, H, W, C]
  train_labels: np.ndarray  # int32[N]
  test_images: np.ndarray  # uint8[M, H, W, C]
  test_labels: np.ndarray  # int32[M]
  num_classes: int
  mean: tuple
  std: tuple
  train_subset: int = 0  # size of the balanced training subset applied by load(); 0: none
  digest: str = ""  # dataset_digest(), filled by load(); "" when built by hand


class Split(NamedTuple):
  """Index arrays into the training split (METHODS §1); disjoint; sorted."""
  holdout: np.ndarray  # P: never used to train M_o
  forget: np.ndarray  # D_f
  retain: np.ndarray  # D_r = T \ D_f


# ----------------------------------------------------------------------------- sources


def _read_bytes(path: str) -> bytes:
  """File ``path`` → its bytes, gunzipped when named ``.gz``; ConfigError naming it on failure."""
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except OSError as e:
    raise ConfigError(f"{path}: cannot read it ({e.strerror or e}); expected a readable IDX file") \
        from e
  if not path.endswith(".gz"):
    return raw
  if raw[:2] != b"\x1f\x8b":
    raise ConfigError(f"{path} is named .gz but is not gzip data (starts with "
                      f"{raw[:4].hex() or 'nothing'}); expected the gzip magic 1f8b")
  try:
    return gzip.decompress(raw)
  except EOFError as e:
    raise ConfigError(f"{path}: truncated gzip ({len(raw)} bytes, the stream ends early); "
                      "expected a complete .gz file") from e
  except (gzip.BadGzipFile, zlib.error) as e:
    raise ConfigError(f"{path}: corrupt gzip data ({e}); expected a valid .gz file") from e


def parse_idx(path: str, raw: bytes) -> np.ndarray:
  """Bytes of one IDX file (``path`` names it in errors) → its uint8 array; ConfigError if bad."""
  if len(raw) < 4:
    raise ConfigError(f"{path}: {len(raw)} bytes, too short for an IDX header; expected at least 4")
  zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
  if zero != 0 or dtype != 0x08 or ndim == 0:
    raise ConfigError(f"{path} is not a uint8 IDX file (magic {raw[:4].hex()}); expected "
                      "00 00 08 then the number of dimensions")
  offset = 4 + 4 * ndim
  if len(raw) < offset:
    raise ConfigError(f"{path}: IDX header cut short ({len(raw)} bytes); expected {offset} bytes "
                      f"for its {ndim} dimensions")
  shape = struct.unpack(">" + "I" * ndim, raw[4:offset])
  data = np.frombuffer(raw, np.uint8, offset=offset)
  if data.size != int(np.prod(shape)):
    raise ConfigError(f"{path}: header says shape {shape}, found {data.size} data bytes; "
                      f"expected {int(np.prod(shape))}")
  return data.reshape(shape)


def read_idx(path: str) -> np.ndarray:
  """Reads one (optionally gzipped) IDX file into a uint8 array; ConfigError naming it if bad."""
  return parse_idx(path, _read_bytes(path))


def _check_idx_pair(images: np.ndarray, labels: np.ndarray, image_path: str,
                    label_path: str) -> None:
  """Raises ConfigError unless ``images`` is [N, H, W] with N ≥ 1 and ``labels`` is [N]."""
  if images.ndim != 3:
    raise ConfigError(f"{image_path}: images of shape {images.shape}; expected 3-D "
                      "[count, rows, cols]")
  if labels.ndim != 1:
    raise ConfigError(f"{label_path}: labels of shape {labels.shape}; expected 1-D [count]")
  if len(labels) != len(images):
    raise ConfigError(f"{label_path}: {len(labels)} labels for the {len(images)} images of "
                      f"{image_path}; expected one label per image")
  if len(images) == 0:
    raise ConfigError(f"{image_path}: no images; expected at least one")


def _check_labels(labels: np.ndarray, num_classes: int, name: str, label_path: str) -> None:
  """Raises ConfigError unless every label lies in [0, num_classes)."""
  top = int(labels.max())
  if top >= num_classes:
    raise ConfigError(f"{label_path}: label {top} out of range; expected 0..{num_classes - 1} "
                      f"({num_classes} classes of {name})")


def load_idx(name: str, folder: str) -> Dataset:
  """Loads an MNIST-format dataset from a folder of the four IDX files; ConfigError if bad."""
  paths = [os.path.join(folder, f) for f in IDX_FILES]
  arrays = [read_idx(p) for p in paths]
  _check_idx_pair(arrays[0], arrays[1], paths[0], paths[1])
  _check_idx_pair(arrays[2], arrays[3], paths[2], paths[3])
  if arrays[2].shape[1:] != arrays[0].shape[1:]:
    raise ConfigError(f"{paths[2]}: images of {arrays[2].shape[1:]} pixels; expected "
                      f"{arrays[0].shape[1:]} like {paths[0]}")
  info = DATASETS.get(name, dict(mean=(0.5,), std=(0.5,), classes=int(arrays[1].max()) + 1))
  _check_labels(arrays[1], info["classes"], name, paths[1])
  _check_labels(arrays[3], info["classes"], name, paths[3])
  return Dataset(name, arrays[0][..., None], arrays[1].astype(np.int32), arrays[2][..., None],
                 arrays[3].astype(np.int32), info["classes"], tuple(info["mean"]),
                 tuple(info["std"]))


def _tfds_split(source) -> tuple[np.ndarray, np.ndarray]:
  """Materialises a ``tfds.data_source`` split into (uint8 images, int32 labels)."""
  n = len(source)
  try:
    items = source.__getitems__(list(range(n)))
  except (TypeError, AttributeError):  # the mock source only indexes one item at a time
    items = [source[i] for i in range(n)]
  images = np.stack([np.asarray(it["image"], np.uint8) for it in items])
  labels = np.asarray([int(it["label"]) for it in items], np.int32)
  if images.ndim == 3:
    images = images[..., None]
  return images, labels


def _tfds_mocked(tfds) -> bool:
  """The ``tensorflow_datasets`` module → whether ``tfds.testing.mock_data`` is active."""
  # mock_data replaces DatasetBuilder.download_and_prepare by a no-op of its own module.
  prepare = tfds.core.DatasetBuilder.download_and_prepare
  return getattr(prepare, "__module__", "").startswith("tensorflow_datasets.testing")


def load_tfds(name: str, data_dir: str | None = None) -> Dataset:
  """Loads a prepared TFDS image-classification dataset (train and test splits).

  Raises ConfigError at once, before any download or write, when it is not prepared in
  ``data_dir``.
  """
  import tensorflow_datasets as tfds  # imported lazily: slow, and only this path needs it

  builder = tfds.builder(name, data_dir=data_dir or None)
  # Under tfds.testing.mock_data, is_prepared() is False (the mock's metadata folder holds no
  # dataset_info.json) while data_source serves fake examples: skip the check only there.
  if not builder.is_prepared() and not _tfds_mocked(tfds):
    raise ConfigError(f"TFDS dataset {name!r} is not prepared: found nothing at "
                      f"{builder.data_dir}; expected it prepared once offline from the genuine "
                      "archive (set data.manual_dir, see docs/reproducing.md)")
  # download=False: never reach for the network, even if the check above were wrong.
  source = lambda split: tfds.data_source(name, split=split, data_dir=data_dir or None,
                                          download=False)
  num_classes = builder.info.features["label"].num_classes
  x_train, y_train = _tfds_split(source("train"))
  x_test, y_test = _tfds_split(source("test"))
  info = DATASETS.get(name)
  if info is None:  # any other TFDS image dataset: statistics from its training split
    scaled = x_train.astype(np.float32) / 255.0
    mean = tuple(scaled.mean(axis=(0, 1, 2)).tolist())
    std = tuple(scaled.std(axis=(0, 1, 2)).tolist())
  else:
    mean, std = info["mean"], info["std"]
  return Dataset(name, x_train, y_train, x_test, y_test, num_classes, tuple(mean), tuple(std))


def prepare_tfds(name: str, data_dir: str, manual_dir: str) -> None:
  """Builds a TFDS dataset offline from a genuine archive placed in ``manual_dir``.

  TFDS checks the archive's size and sha256; ``array_record`` is the format ``data_source``
  reads. Needs TensorFlow for extraction (see docs/reproducing.md).
  """
  import tensorflow_datasets as tfds

  builder = tfds.builder(name, data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))


def load(data_config) -> Dataset:
  """Loads the dataset named by ``config.data`` (``name``, ``source``, ``dir``, ``tfds_dir``...)."""
  source = data_config.source or DATASETS.get(data_config.name, {}).get("source", "tfds")
  if source == "idx":
    ds = load_idx(data_config.name, data_config.dir)
  else:
    if data_config.manual_dir:
      import tensorflow_datasets as tfds
      if not tfds.builder(data_config.name, data_dir=data_config.tfds_dir or None).is_prepared():
        prepare_tfds(data_config.name, data_config.tfds_dir, data_config.manual_dir)
    ds = load_tfds(data_config.name, data_config.tfds_dir)
  if data_config.train_subset:
    # A fixed, class-balanced subset of the training split for CPU-size runs.
    keep = balanced_subset(ds.train_labels, ds.num_classes, data_config.train_subset,
                           data_config.subset_seed)
    ds = ds._replace(train_images=ds.train_images[keep], train_labels=ds.train_labels[keep],
                     train_subset=int(data_config.train_subset))
  return ds._replace(digest=dataset_digest(ds))


def dataset_digest(ds: Dataset) -> str:
  """Dataset → 16 hex digits of sha256 over its arrays, name, classes and train_subset."""
  arrays = (ds.train_images, ds.train_labels, ds.test_images, ds.test_labels)
  meta = dict(name=ds.name, num_classes=int(ds.num_classes), train_subset=int(ds.train_subset),
              arrays=[[a.dtype.str, list(a.shape)] for a in arrays])
  h = hashlib.sha256(json.dumps(meta, sort_keys=True).encode())
  for a in arrays:
    h.update(np.ascontiguousarray(a).data)
  return h.hexdigest()[:16]


def balanced_subset(labels: np.ndarray, num_classes: int, size: int, seed: int) -> np.ndarray:
  """Sorted indices of ``size`` samples, as equal per class as possible, drawn with ``seed``."""
  rng = named_rng(seed, "data/subset")
  per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]
  quota = np.full(num_classes, size // num_classes)
  quota[: size % num_classes] += 1
  return np.sort(np.concatenate([idx[:q] for idx, q in zip(per_class, quota)]))


# ----------------------------------------------------------------------------- splits


def make_split(labels: np.ndarray, num_classes: int, *, scenario: str, forget_class: int,
               forget_size: int, holdout_fraction: float, seed: int) -> Split:
  """Builds the holdout pool P, forget set D_f and retain set D_r (METHODS §1).

  P takes ``round(holdout_fraction * n_c)`` samples of every class c. From the training portion
  T = D_train \\ P, D_f is ``forget_size`` samples of ``forget_class`` (``subclass``), ``forget_size``
  samples drawn uniformly from T (``instance``, L2UL's k), or all of class c in T (``class``).
  Deterministic in (labels, scenario, forget_class, forget_size, holdout_fraction, seed).
  Raises ValueError on impossible requests.
  """
  if scenario not in SCENARIOS:
    raise ValueError(f"scenario {scenario!r} is not one of {SCENARIOS}")
  if scenario != "instance" and not 0 <= forget_class < num_classes:
    raise ValueError(f"forget_class {forget_class} out of range [0, {num_classes - 1}]")
  rng = named_rng(seed, f"split/forget/{scenario}", max(forget_class, 0), max(forget_size, 0))
  # The holdout pool depends on the seed only, so every scenario of one seed shares M_o.
  pool_rng = named_rng(seed, "split/holdout")
  holdout = []
  for c in range(num_classes):
    idx = np.flatnonzero(labels == c)
    holdout.append(pool_rng.permutation(idx)[: int(round(holdout_fraction * len(idx)))])
  holdout = np.sort(np.concatenate(holdout)).astype(np.int64)
  portion = np.setdiff1d(np.arange(len(labels)), holdout)
  if scenario == "instance":
    candidates = portion
  else:
    candidates = portion[labels[portion] == forget_class]
  if scenario == "class":
    forget = candidates
  else:
    if not 0 < forget_size <= len(candidates):
      raise ValueError(f"forget_size {forget_size} must be in [1, {len(candidates)}] "
                       f"(samples available for scenario {scenario!r})")
    forget = np.sort(rng.choice(candidates, forget_size, replace=False))
  if len(forget) == 0:
    raise ValueError("the forget set is empty")
  retain = np.setdiff1d(portion, forget)
  return Split(holdout=holdout, forget=forget.astype(np.int64), retain=retain.astype(np.int64))


# ----------------------------------------------------------------------------- on device


def to_float(images: jnp.ndarray) -> jnp.ndarray:
  """uint8 images → f32 in [0, 1] (already-float inputs pass through)."""
  if images.dtype == jnp.uint8:
    return images.astype(jnp.float32) / 255.0
  return images.astype(jnp.float32)


def augment(key: jax.Array, images: jnp.ndarray, *, pad: int = 4, flip: bool = True) -> jnp.ndarray:
  """Random crop after zero padding by ``pad`` and random horizontal flip, per example.

  ``images: f32[B, H, W, C]`` → same shape. Runs inside the jitted step (METHODS §1 recipe).
  """
  b, h, w, _ = images.shape
  k_crop, k_flip = jax.random.split(key)
  if pad > 0:
    padded = jnp.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offsets = jax.random.randint(k_crop, (b, 2), 0, 2 * pad + 1)
    crop = lambda img, o: jax.lax.dynamic_slice(img, (o[0], o[1], 0), (h, w, img.shape[-1]))
    images = jax.vmap(crop)(padded, offsets)
  if flip:
    do_flip = jax.random.bernoulli(k_flip, 0.5, (b, 1, 1, 1))
    images = jnp.where(do_flip, images[:, :, ::-1, :], images)
  return images
