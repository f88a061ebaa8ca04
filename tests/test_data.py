"""Split invariants, the IDX reader and its checks, the dataset digest, TFDS (mock data and the
unprepared case) and on-device augmentation."""

import gzip
import os
import socket
import struct
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmu_jax import data
from tmu_jax.errors import ConfigError


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


def _idx_bytes(array):
  array = np.asarray(array)
  header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim,
                                                                   *array.shape)
  return header + array.astype(np.uint8).tobytes()


def _write_idx(path, array):
  with gzip.open(path, "wb") as f:
    f.write(_idx_bytes(array))


def _arrays(seed=0, n_train=12, n_test=5):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, 256, (n_train, 28, 28)), np.arange(n_train) % 10,
          rng.integers(0, 256, (n_test, 28, 28)), np.arange(n_test) % 10]


def _write_folder(folder, arrays):
  folder.mkdir(parents=True, exist_ok=True)
  for name, a in zip(data.IDX_FILES, arrays):
    _write_idx(str(folder / name), a)
  return str(folder)


def _one_line_error(fn, *args, match):
  """Calls fn(*args), expecting a one-line ConfigError that matches ``match``; returns it."""
  with pytest.raises(ConfigError, match=match) as info:
    fn(*args)
  assert "\n" not in str(info.value)
  return str(info.value)


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
  with pytest.raises(ValueError, match="not a uint8 IDX"):  # ConfigError is a ValueError
    data.read_idx(str(path))
  msg = _one_line_error(data.read_idx, str(path), match="not a uint8 IDX")
  assert str(path) in msg and "12340801" in msg


def test_idx_rejects_truncated_gz(tmp_path):
  path = tmp_path / "train-images-idx3-ubyte.gz"
  _write_idx(str(path), _arrays()[0])
  raw = path.read_bytes()
  path.write_bytes(raw[: len(raw) // 2])
  msg = _one_line_error(data.read_idx, str(path), match="truncated gzip")
  assert str(path) in msg


def test_idx_rejects_corrupt_gz(tmp_path):
  path = tmp_path / "x.gz"
  raw = bytearray(gzip.compress(_idx_bytes(_arrays()[0])))
  raw[20:40] = b"\xff" * 20
  path.write_bytes(bytes(raw))
  msg = _one_line_error(data.read_idx, str(path), match="gzip")
  assert str(path) in msg


def test_idx_rejects_uncompressed_file_named_gz(tmp_path):
  path = tmp_path / "train-labels-idx1-ubyte.gz"
  path.write_bytes(_idx_bytes(np.arange(12) % 10))
  msg = _one_line_error(data.read_idx, str(path), match="named .gz but is not gzip data")
  assert str(path) in msg and "1f8b" in msg
  plain = tmp_path / "train-labels-idx1-ubyte"  # without .gz it is read as is
  plain.write_bytes(_idx_bytes(np.arange(12) % 10))
  np.testing.assert_array_equal(data.read_idx(str(plain)), np.arange(12) % 10)


@pytest.mark.parametrize("raw,match", [
    (struct.pack(">HBB", 0, 0x08, 2) + struct.pack(">II", 3, 4) + b"\x00" * 10,
     r"header says shape \(3, 4\), found 10 data bytes; expected 12"),
    (struct.pack(">HBB", 0, 0x08, 2) + struct.pack(">II", 3, 4) + b"\x00" * 13,
     "found 13 data bytes; expected 12"),
    (struct.pack(">HBB", 0, 0x08, 3) + b"\x00" * 5, "header cut short"),
    (b"\x00\x00", "too short for an IDX header"),
    (struct.pack(">HBB", 0, 0x0D, 1) + struct.pack(">I", 1) + b"\x00" * 4, "not a uint8 IDX"),
])
def test_idx_rejects_bad_headers(tmp_path, raw, match):
  path = tmp_path / "bad-idx.gz"
  path.write_bytes(gzip.compress(raw))
  assert str(path) in _one_line_error(data.read_idx, str(path), match=match)


def test_idx_rejects_unreadable_files(tmp_path, monkeypatch):
  missing = tmp_path / "nowhere" / "t10k-labels-idx1-ubyte.gz"
  msg = _one_line_error(data.read_idx, str(missing), match="cannot read it")
  assert str(missing) in msg and "No such file" in msg
  folder = tmp_path / "a_folder.gz"
  folder.mkdir()
  assert str(folder) in _one_line_error(data.read_idx, str(folder), match="cannot read it")
  # A file missing from the folder: load_idx names it.
  arrays = _arrays()
  src = _write_folder(tmp_path / "three", arrays)
  os.remove(os.path.join(src, data.IDX_FILES[3]))
  msg = _one_line_error(data.load_idx, "fashion_mnist", src, match="cannot read it")
  assert os.path.join(src, data.IDX_FILES[3]) in msg
  # Permission denied (tests run as root here, so chmod would not stop the read: fake it).
  denied = str(tmp_path / "denied.gz")
  def refuse(path, *args, **kwargs):
    raise PermissionError(13, "Permission denied", path)
  monkeypatch.setattr(data, "open", refuse, raising=False)
  msg = _one_line_error(data.read_idx, denied, match="Permission denied")
  assert denied in msg


def test_idx_rejects_label_count_mismatch(tmp_path):
  arrays = _arrays()
  arrays[1] = np.arange(10) % 10  # 10 labels for 12 images
  src = _write_folder(tmp_path, arrays)
  msg = _one_line_error(data.load_idx, "fashion_mnist", src,
                        match="10 labels for the 12 images")
  assert os.path.join(src, data.IDX_FILES[1]) in msg
  assert os.path.join(src, data.IDX_FILES[0]) in msg
  arrays = _arrays()
  arrays[3] = np.arange(7) % 10  # test split: 7 labels for 5 images
  src = _write_folder(tmp_path / "test_split", arrays)
  msg = _one_line_error(data.load_idx, "fashion_mnist", src, match="7 labels for the 5 images")
  assert os.path.join(src, data.IDX_FILES[3]) in msg


def test_idx_rejects_labels_out_of_range(tmp_path):
  arrays = _arrays()
  arrays[1][3] = 12
  src = _write_folder(tmp_path / "train", arrays)
  msg = _one_line_error(data.load_idx, "fashion_mnist", src,
                        match=r"label 12 out of range; expected 0\.\.9")
  assert os.path.join(src, data.IDX_FILES[1]) in msg
  # An unknown name takes its classes from the training labels: the test labels must fit.
  arrays = _arrays()
  arrays[3][0] = 10
  src = _write_folder(tmp_path / "test", arrays)
  msg = _one_line_error(data.load_idx, "my_digits", src, match=r"label 10 out of range")
  assert os.path.join(src, data.IDX_FILES[3]) in msg


def test_idx_rejects_wrong_image_shapes(tmp_path):
  arrays = _arrays()
  arrays[0] = arrays[0].reshape(12, 28 * 28)  # 2-D images
  src = _write_folder(tmp_path / "flat", arrays)
  msg = _one_line_error(data.load_idx, "fashion_mnist", src, match="expected 3-D")
  assert os.path.join(src, data.IDX_FILES[0]) in msg and "(12, 784)" in msg
  arrays = _arrays()
  arrays[2] = arrays[2][:, :20, :20]  # test images of another size
  src = _write_folder(tmp_path / "small", arrays)
  msg = _one_line_error(data.load_idx, "fashion_mnist", src, match=r"\(20, 20\) pixels")
  assert os.path.join(src, data.IDX_FILES[2]) in msg


def _data_config(folder, train_subset=0, subset_seed=0, name="fashion_mnist"):
  return types.SimpleNamespace(name=name, source="idx", dir=folder, tfds_dir="", manual_dir="",
                               train_subset=train_subset, subset_seed=subset_seed)


def test_dataset_digest(tmp_path):
  arrays = _arrays()
  a = data.load(_data_config(_write_folder(tmp_path / "a", arrays)))
  b = data.load(_data_config(_write_folder(tmp_path / "b", arrays)))  # same data, other folder
  assert len(a.digest) == 16 and int(a.digest, 16) >= 0
  assert a.digest == b.digest == data.dataset_digest(a)
  arrays[2][0, 0, 0] ^= 1  # one test pixel differs
  c = data.load(_data_config(_write_folder(tmp_path / "c", arrays)))
  assert c.digest != a.digest
  sub = data.load(_data_config(str(tmp_path / "a"), train_subset=10))
  assert sub.train_subset == 10 and len(sub.train_labels) == 10
  assert sub.digest not in (a.digest, c.digest)
  assert data.dataset_digest(a._replace(name="mnist")) != a.digest
  assert data.dataset_digest(a._replace(num_classes=11)) != a.digest
  assert data.dataset_digest(a._replace(train_subset=12)) != a.digest
  # The stored digest is not part of what is hashed.
  assert data.dataset_digest(a._replace(digest="")) == a.digest


def test_dataset_constructible_without_digest():
  x = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4, 1)
  y = np.array([0, 1], np.int32)
  ds = data.Dataset("toy", x, y, x, y, 10, (0.5,), (0.5,))
  assert ds.digest == "" and ds.train_subset == 0
  # Pinned: a model cache keyed on it must survive a new process, numpy version or refactor.
  assert data.dataset_digest(ds) == "91d33c698d381916"


def test_split_has_no_as_dict():
  assert not hasattr(data.Split, "as_dict")


def test_tfds_unprepared_fails_at_once(tmp_path, monkeypatch):
  tfds = pytest.importorskip("tensorflow_datasets")
  def no_network(*args, **kwargs):
    raise AssertionError("tried to reach the network")
  monkeypatch.setattr(socket.socket, "connect", no_network)
  monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", no_network)
  data_dir = tmp_path / "tfds"
  start = time.perf_counter()
  msg = _one_line_error(data.load_tfds, "cifar10", str(data_dir),
                        match=r"'cifar10' is not prepared.*docs/reproducing\.md")
  assert time.perf_counter() - start < 1.0
  assert str(data_dir) in msg and "manual_dir" in msg
  # Through load(), no manual_dir: the same error.
  config = types.SimpleNamespace(name="cifar10", source="", dir="", tfds_dir=str(data_dir),
                                 manual_dir="", train_subset=0, subset_seed=0)
  _one_line_error(data.load, config, match="is not prepared")
  # Nothing was written: at most empty folders.
  files = [f for _, _, names in os.walk(tmp_path) for f in names]
  assert files == []


def test_tfds_under_mock_data():
  tfds = pytest.importorskip("tensorflow_datasets")
  with tfds.testing.mock_data(num_examples=40):
    ds = data.load_tfds("cifar10")
  assert ds.train_images.shape == (40, 32, 32, 3) and ds.train_images.dtype == np.uint8
  assert ds.test_images.shape == (40, 32, 32, 3)
  assert ds.num_classes == 10 and ds.train_labels.dtype == np.int32
  assert ds.train_labels.min() >= 0 and ds.train_labels.max() < 10


def test_tfds_load_under_mock_data(tmp_path):
  """The smoke configs run load() under mock_data with an unprepared data_dir: it must load."""
  tfds = pytest.importorskip("tensorflow_datasets")
  config = types.SimpleNamespace(name="cifar10", source="", dir="", tfds_dir=str(tmp_path),
                                 manual_dir="", train_subset=20, subset_seed=0)
  with tfds.testing.mock_data(num_examples=40):
    ds = data.load(config)
  assert ds.train_images.shape == (20, 32, 32, 3) and len(ds.digest) == 16


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
