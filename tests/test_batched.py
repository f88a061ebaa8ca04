"""batched(): per-row functions in fixed-size chunks (map) or summed over chunks (reduce), with
the padding repeating row 0 and a valid mask of the real rows."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tmu_jax.batched import batched

X = jnp.arange(10 * 3, dtype=jnp.int32).reshape(10, 3)


def test_map_equals_the_whole_computation_in_chunks_of_the_given_size():
  """Map mode: fn sees [chunk, ...] rows (10 = 3·3 + 1: padded to 12) and the outputs of the
  real rows come back in order."""
  shapes = []

  def fn(x, valid):
    shapes.append((x.shape, valid.shape, valid.dtype))
    return x * 2 + 1

  out = batched(fn, X, chunk=3)
  np.testing.assert_array_equal(out, X * 2 + 1)
  assert out.shape == (10, 3) and out.dtype == jnp.int32
  assert set(shapes) == {((3, 3), (3,), np.dtype(bool))}


def test_valid_mask_marks_the_real_rows():
  """The valid mask is True on the 10 real rows and False on the 2 padded rows, which end the
  last chunk."""
  masks = batched(lambda x, valid: valid, X, chunk=4)
  np.testing.assert_array_equal(masks, np.ones(10, bool))
  per_position = batched(lambda x, valid: valid.astype(jnp.int32), X, chunk=4, reduce=True)
  np.testing.assert_array_equal(per_position, [3, 3, 2, 2])  # chunks 1, 2 full; 3 has 2 rows


def test_reduce_sums_the_chunks_and_padding_repeats_row_zero():
  """Reduce mode sums fn over the chunks: weighting by valid gives the plain sum; ignoring it
  adds the padded rows, which are copies of row 0."""
  masked = batched(lambda x, valid: jnp.sum(x * valid[:, None], axis=0), X, chunk=4,
                   reduce=True)
  np.testing.assert_array_equal(masked, jnp.sum(X, axis=0))
  unmasked = batched(lambda x, valid: jnp.sum(x, axis=0), X, chunk=4, reduce=True)
  np.testing.assert_array_equal(unmasked, jnp.sum(X, axis=0) + 2 * X[0])
  count = batched(lambda x, valid: jnp.sum(valid.astype(jnp.int32)), X, chunk=4, reduce=True)
  assert int(count) == 10


def test_pytree_inputs_and_outputs():
  """Several arrays go in; a pytree of outputs comes back, each leaf stripped to N rows (map) or
  summed (reduce)."""
  y = jnp.arange(10, dtype=jnp.float32)
  out = batched(lambda x, y, valid: dict(s=x.sum(1), p=(y * 2, x[:, :1])), X, y, chunk=3)
  np.testing.assert_array_equal(out["s"], X.sum(1))
  np.testing.assert_array_equal(out["p"][0], y * 2)
  np.testing.assert_array_equal(out["p"][1], X[:, :1])
  total = batched(lambda x, y, valid: (jnp.sum(y * valid), jnp.sum(x * valid[:, None])), X, y,
                  chunk=3, reduce=True)
  assert float(total[0]) == 45.0 and int(total[1]) == int(X.sum())


@pytest.mark.parametrize("n,chunk", [(1, 8), (5, 8), (8, 8), (8, 4)])
def test_small_and_exact_sizes(n, chunk):
  """N = 1, N < chunk (the chunk shrinks to N: no padding) and N a multiple of the chunk: every
  row valid, outputs as computed whole."""
  x = X[:n]
  seen = []

  def fn(x, valid):
    seen.append(x.shape[0])
    return jnp.stack([x.sum(1), valid.astype(jnp.int32)], 1)

  out = batched(fn, x, chunk=chunk)
  np.testing.assert_array_equal(out, np.stack([np.asarray(x).sum(1), np.ones(n)], 1))
  assert set(seen) == {min(n, chunk)}
  total = batched(lambda x, valid: jnp.sum(x * valid[:, None]), x, chunk=chunk, reduce=True)
  assert int(total) == int(x.sum())


def test_errors_on_mismatched_or_empty_arrays():
  """Arrays with different leading axes, or empty arrays, are refused with a clear message."""
  with pytest.raises(ValueError, match=r"leading axes differ: \[10, 4\]"):
    batched(lambda a, b, valid: a, X, X[:4], chunk=3)
  with pytest.raises(ValueError, match="empty"):
    batched(lambda a, valid: a, X[:0], chunk=3)


def test_typed_prng_key_arrays_as_input_and_output():
  """Typed key arrays pad, reshape and strip like any array: per-row draws equal the vmapped
  draws, and keys come back as keys."""
  keys = jax.random.split(jax.random.key(0), 7)
  draws = batched(lambda k, valid: jax.vmap(jax.random.uniform)(k), keys, chunk=3)
  np.testing.assert_array_equal(draws, jax.vmap(jax.random.uniform)(keys))
  folded = batched(lambda k, valid: jax.vmap(lambda kk: jax.random.fold_in(kk, 1))(k), keys,
                   chunk=3)
  assert jax.dtypes.issubdtype(folded.dtype, jax.dtypes.prng_key) and folded.shape == (7,)
  np.testing.assert_array_equal(jax.random.key_data(folded),
                                jax.random.key_data(jax.vmap(lambda k: jax.random.fold_in(k, 1))(
                                    keys)))


def test_works_inside_jit():
  """Under jit, map and reduce give the same results as outside."""
  @jax.jit
  def both(x):
    return (batched(lambda x, valid: x * 2, x, chunk=4),
            batched(lambda x, valid: jnp.sum(x * valid[:, None]), x, chunk=4, reduce=True))

  mapped, total = both(X)
  np.testing.assert_array_equal(mapped, X * 2)
  assert int(total) == int(X.sum())
