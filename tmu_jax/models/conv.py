"""Convolutions that stay fast inside compiled loops on XLA:CPU.

XLA:CPU rewrites a convolution into the NHWC × HWIO form its fast kernels take
(``ConvCanonicalization``) only in a program's entry computation. The backward convolutions of
a conv layer (input gradient: a flipped, in/out-swapped kernel; kernel gradient: the batch
axis as the contraction) are not in that form, so inside a ``lax.while_loop`` or ``lax.scan``
body, where every training chunk of this project runs, they fall back to a naive elemental
loop: the small CNN's step ran 12-26x slower in a loop than as a plain jitted step
(docs/benchmarks.md, "Convolutions inside the compiled loop").

``patch_conv`` computes the same convolution as im2col: the kh·kw shifted (strided) slices of
the padded input, concatenated on the channel axis, times the kernel reshaped to
[kh·kw·C, F], one matmul. Its gradients are pads, slices and matmuls, which are fast anywhere.
It is a drop-in ``conv_general_dilated`` for ``flax.linen.Conv``, so parameters keep their
names and shapes (a checkpoint is interchangeable between the two). It costs kh·kw times the
input's memory for the patches, which is why it is used on CPU only: on a GPU the library
convolution is both fast in loops and frugal.
"""

from typing import Callable

import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ("auto", "xla", "patches")


def patch_conv(lhs: jnp.ndarray, rhs: jnp.ndarray, window_strides, padding, lhs_dilation=None,
               rhs_dilation=None, dimension_numbers=None, feature_group_count: int = 1,
               precision=None, **kwargs) -> jnp.ndarray:
  """``lax.conv_general_dilated`` for NHWC inputs and HWIO kernels, as im2col + one matmul.

  Covers what the model families use (2-D, strides, kernel dilation, string or explicit
  non-negative padding); anything else (input dilation, feature groups, other layouts,
  negative padding) is passed to ``lax.conv_general_dilated`` unchanged.
  """
  pads = _covered_pads(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                       dimension_numbers, feature_group_count, kwargs)
  if pads is None:
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    precision=precision, **kwargs)
  n, cin = lhs.shape[0], lhs.shape[3]
  kh, kw, _, cout = rhs.shape
  dh, dw = rhs_dilation or (1, 1)
  sh, sw = window_strides
  window = ((kh - 1) * dh + 1, (kw - 1) * dw + 1)
  x = jnp.pad(lhs, ((0, 0), pads[0], pads[1], (0, 0)))
  oh = (x.shape[1] - window[0]) // sh + 1
  ow = (x.shape[2] - window[1]) // sw + 1
  # Patch channel order (i, j, c) is the row order of rhs.reshape(kh·kw·C, F).
  cols = [lax.slice(x, (0, i * dh, j * dw, 0),
                    (n, i * dh + (oh - 1) * sh + 1, j * dw + (ow - 1) * sw + 1, cin),
                    (1, sh, sw, 1))
          for i in range(kh) for j in range(kw)]
  patches = cols[0] if len(cols) == 1 else jnp.concatenate(cols, axis=-1)
  return lax.dot_general(patches, rhs.reshape(kh * kw * cin, cout), (((3,), (0,)), ((), ())),
                         precision=precision)


def _covered_pads(lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation,
                  dimension_numbers, feature_group_count, extra) -> tuple | None:
  """The explicit ((top, bottom), (left, right)) padding of a convolution ``patch_conv``
  computes itself, or None for one it passes on."""
  nhwc = ("NHWC", "HWIO", "NHWC")
  if (lhs.ndim != 4 or rhs.ndim != 4 or dimension_numbers is None or feature_group_count != 1
      or extra or any(d != 1 for d in (lhs_dilation or (1, 1)))
      or lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers)
      != lax.conv_dimension_numbers(lhs.shape, rhs.shape, nhwc)):
    return None
  dh, dw = rhs_dilation or (1, 1)
  window = ((rhs.shape[0] - 1) * dh + 1, (rhs.shape[1] - 1) * dw + 1)
  pads = (lax.padtype_to_pads(lhs.shape[1:3], window, window_strides, padding)
          if isinstance(padding, str) else tuple(tuple(p) for p in padding))
  return pads if all(p >= 0 for pair in pads for p in pair) else None


def conv_general_dilated(impl: str = "auto") -> Callable | None:
  """The ``conv_general_dilated`` for ``flax.linen.Conv``: ``patch_conv`` for ``"patches"``,
  ``None`` (flax's default, ``lax.conv_general_dilated``) for ``"xla"``, and for ``"auto"``
  ``patch_conv`` where the default backend is the CPU."""
  if impl not in IMPLS:
    raise ValueError(f"model.kwargs.conv must be one of {', '.join(IMPLS)}; got {impl!r}")
  if impl == "auto":
    impl = "patches" if jax.default_backend() == "cpu" else "xla"
  return patch_conv if impl == "patches" else None
