"""Split invariants, the IDX reader, TFDS under mock data and on-device augmentation."""

import gzip
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmu_jax import data


def _labels(n_per_class=50, classes=10):
  return np.repeat(np.arange(classes), n_per_class).astype(np.int32)


@pytest.mark.parametrize("scenario", ["subclass", "instance", "class"])
def test_split_invariants(scenario):
  labels = _labels()
  s = data.make_split(labels, 10, scenario=scenario, forget_class=3, forget_size=7,
                      holdout_fraction=0.2, seed=0)
  sets = [set(s.holdout), set(s.forget), set(s.retain)]
  assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
  assert sets[0] | sets[1] | sets[2] == set(range(len(labels)))  # P ∪ D_f ∪ D_r = D_train
  # Class-balanced pool: 20% of each class.
  assert np.all(np.bincount(labels[s.holdout], minlength=10) == 10)
  if scenario == "subclass":
    assert len(s.forget) == 7 and np.all(labels[s.forget] == 3)
  elif scenario == "instance":
    assert len(s.forget) == 7
  else:
    assert len(s.forget) == 40 and np.all(labels[s.forget] == 3)
    assert not np.any(labels[s.retain] == 3)


def test_split_deterministic_and_seed_dependent():
  labels = _labels()
  kw = dict(scenario="subclass", forget_class=3, forget_size=7, holdout_fraction=0.2)
  a = data.make_split(labels, 10, seed=0, **kw)
  b = data.make_split(labels, 10, seed=0, **kw)
  c = data.make_split(labels, 10, seed=1, **kw)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a.forget, c.forget)


def test_holdout_shared_across_classes_of_one_seed():
  """M_o trains on T = D_train \\ P, so one M_o serves every forget class of a seed."""
  labels = _labels()
  kw = dict(scenario="subclass", forget_size=7, holdout_fraction=0.2, seed=0)
  a = data.make_split(labels, 10, forget_class=1, **kw)
  b = data.make_split(labels, 10, forget_class=2, **kw)
  np.testing.assert_array_equal(a.holdout, b.holdout)


@pytest.mark.parametrize("kw,msg", [
    (dict(forget_class=10), "forget_class"),
    (dict(forget_class=-1), "forget_class"),
    (dict(forget_size=41), "forget_size"),
    (dict(forget_size=0), "forget_size"),
    (dict(scenario="bogus"), "scenario"),
])
def test_split_rejects_bad_requests(kw, msg):
  args = dict(scenario="subclass", forget_class=3, forget_size=7, holdout_fraction=0.2, seed=0)
  args.update(kw)
  with pytest.raises(ValueError, match=msg):
    data.make_split(_labels(), 10, **args)


def test_balanced_subset():
  labels = _labels(100)
  idx = data.balanced_subset(labels, 10, 55, seed=3)
  assert len(idx) == len(set(idx)) == 55
  counts = np.bincount(labels[idx], minlength=10)
  assert counts.max() - counts.min() <= 1
  np.testing.assert_array_equal(idx, data.balanced_subset(labels, 10, 55, seed=3))


def _write_idx(path, array):
  header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim,
                                                                   *array.shape)
  with gzip.open(path, "wb") as f:
    f.write(header + array.astype(np.uint8).tobytes())


def test_idx_round_trip(tmp_path):
  rng = np.random.default_rng(0)
  arrays = [rng.integers(0, 256, (12, 28, 28)), rng.integers(0, 10, 12),
            rng.integers(0, 256, (5, 28, 28)), rng.integers(0, 10, 5)]
  for name, a in zip(data.IDX_FILES, arrays):
    _write_idx(str(tmp_path / name), a)
  ds = data.load_idx("fashion_mnist", str(tmp_path))
  assert ds.train_images.shape == (12, 28, 28, 1) and ds.train_images.dtype == np.uint8
  np.testing.assert_array_equal(ds.train_images[..., 0], arrays[0])
  np.testing.assert_array_equal(ds.test_labels, arrays[3])
  assert ds.num_classes == 10


def test_idx_rejects_non_idx(tmp_path):
  path = tmp_path / "bad.gz"
  with gzip.open(path, "wb") as f:
    f.write(b"\x12\x34\x08\x01" + b"\x00" * 8)
  with pytest.raises(ValueError, match="not a uint8 IDX"):
    data.read_idx(str(path))


def test_tfds_under_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=40):
    ds = data.load_tfds("cifar10")
  assert ds.train_images.shape == (40, 32, 32, 3) and ds.train_images.dtype == np.uint8
  assert ds.test_images.shape == (40, 32, 32, 3)
  assert ds.num_classes == 10 and ds.train_labels.dtype == np.int32
  assert ds.train_labels.min() >= 0 and ds.train_labels.max() < 10


def test_augment_on_device():
  images = jax.random.uniform(jax.random.key(0), (8, 12, 12, 3))
  out = jax.jit(lambda k, x: data.augment(k, x, pad=2, flip=True))(jax.random.key(1), images)
  assert out.shape == images.shape
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  assert not np.allclose(out, images)
  same = data.augment(jax.random.key(1), images, pad=0, flip=False)
  np.testing.assert_array_equal(same, images)


def test_to_float():
  x = jnp.array([[0, 255]], jnp.uint8)
  np.testing.assert_allclose(data.to_float(x), [[0.0, 1.0]])
