"""Public operations on NCHW arrays: validation, output shapes, algorithm choice.

The semantics are those of ``torch.nn.functional`` unless said otherwise. Every
function accepts any array-like (lists, views of any strides, read-only arrays),
never modifies its inputs and returns new NumPy arrays of float32 or float64:
float64 when any operand is float64 or an integer array, else float32.
"""

import numpy as np

from fastconv import _config
from fastconv._blas import single_threaded_blas
from fastconv._kernels import _conv_direct, _conv_gemm
from fastconv._validation import (
    as_array,
    as_contiguous,
    as_index,
    as_pair,
    check_ndim,
    check_size,
    normalize_padding,
    output_hw,
    result_dtype,
)

__all__ = ["conv2d", "conv2d_backward", "ALGORITHMS"]

ALGORITHMS = ("auto", "direct", "im2col")

# Column-buffer budget per thread (elements): a band of output rows is packed at a time.
BAND_ELEMENTS = 1 << 18
# With few images, bands are cut smaller so at least this many units exist to share out.
MIN_UNITS = 16
# Weight-gradient partial sums: at most this many chunks, and this many elements in all.
MAX_CHUNKS = 16
CHUNK_ELEMENTS = 1 << 22
# BLAS takes 32-bit sizes.
INT32_MAX = 2**31 - 1


class _ConvGeometry:
    """Validated sizes of one conv2d call (x: N, C, H, W; w: K, C/G, KH, KW)."""

    def __init__(self, x_shape, w_shape, stride, padding, dilation, groups):
        self.n, self.c, self.h, self.w = x_shape
        self.k, self.cg, self.kh, self.kw = w_shape
        self.groups = as_index(groups, "groups", 1)
        self.stride = as_pair(stride, "stride")
        self.dilation = as_pair(dilation, "dilation")
        if self.kh < 1 or self.kw < 1:
            raise ValueError(f"w must have a kernel of at least 1x1, got shape {tuple(w_shape)}")
        if self.c % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide the input channels of x ({self.c})"
            )
        if self.k % self.groups:
            raise ValueError(
                f"groups={self.groups} must divide the output channels of w ({self.k})"
            )
        if self.cg * self.groups != self.c:
            raise ValueError(
                f"w has {self.cg} input channels per group; with groups={self.groups} x must "
                f"have {self.cg * self.groups} channels, got {self.c} (x shape {tuple(x_shape)})"
            )
        self.padding = normalize_padding(
            padding, (self.h, self.w), (self.kh, self.kw), self.stride, self.dilation
        )
        self.oh, self.ow = output_hw(
            (self.h, self.w), (self.kh, self.kw), self.stride, self.padding, self.dilation
        )
        self.y_shape = (self.n, self.k, self.oh, self.ow)
        check_size(self.y_shape, "the output (check padding and stride)")
        self.kg = self.k // self.groups
        self.ckk = self.cg * self.kh * self.kw

    @property
    def kernel_args(self):
        """(sh, sw, pt, pl, dh, dw, groups) as the kernels take them."""
        (pt, _), (pl, _) = self.padding
        return (*self.stride, pt, pl, *self.dilation, self.groups)

    @property
    def empty(self):
        return 0 in (self.n, self.c, self.k, self.oh, self.ow)

    def gemm_fits(self):
        """True when every GEMM size and leading dimension fits BLAS's 32-bit ints."""
        return max(self.oh * self.ow, self.h * self.w, self.ckk, self.k) <= INT32_MAX

    def band_rows(self, outer_units=None):
        """Output rows per im2col band, from the shape alone (never the thread count).

        With ``outer_units`` (images x groups that run in parallel), bands are also
        cut small enough that at least MIN_UNITS units exist to share out.
        """
        rows = max(1, min(self.oh, BAND_ELEMENTS // max(1, self.ckk * self.ow)))
        if outer_units is not None and outer_units * -(-self.oh // rows) < MIN_UNITS:
            wanted_bands = -(-MIN_UNITS // max(1, outer_units))
            rows = max(1, min(rows, -(-self.oh // wanted_bands)))
        return rows

    def workspace(self, rows, n_threads, dtype):
        """Per-thread column buffers: (threads, CKK * rows * OW)."""
        (pt, pb), (pl, pr) = self.padding
        pointwise = (self.kh, self.kw, *self.stride, pt, pb, pl, pr) == (1, 1, 1, 1, 0, 0, 0, 0)
        per_thread = 1 if pointwise else self.ckk * rows * self.ow
        check_size((n_threads, per_thread), "the im2col workspace")
        return np.empty((n_threads, per_thread), dtype=dtype)


def _check_algorithm(algorithm):
    if not isinstance(algorithm, str) or algorithm.lower() not in ALGORITHMS:
        raise ValueError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    return algorithm.lower()


def _choose_algorithm(algorithm, geom):
    """Resolve "auto": im2col + GEMM once the GEMM is deep and wide enough to pay."""
    algorithm = _check_algorithm(algorithm)
    if algorithm == "im2col" and not geom.gemm_fits():
        raise ValueError(
            "algorithm='im2col' needs GEMM sizes under 2**31 (planes and C/groups*KH*KW); "
            "use algorithm='direct' for this shape"
        )
    if algorithm != "auto":
        return algorithm
    if not geom.gemm_fits():
        return "direct"
    # Depthwise and very shallow convolutions do too little work per column for
    # packing to pay off; the direct loops win there.
    if geom.kg < 4 or geom.ckk < 16:
        return "direct"
    return "im2col"


def _prepare_weights(w, flip):
    """Kernel as the kernels read it: rotated 180 degrees for true convolution."""
    return np.ascontiguousarray(w[:, :, ::-1, ::-1]) if flip else w


def _as_operands(x, w, extra=()):
    """Validate ndim and dtype of x, w (and gy...), returning contiguous arrays."""
    x = as_array(x, "x")
    w = as_array(w, "w")
    check_ndim(x, "x", 4, "(N, C, H, W)")
    check_ndim(w, "w", 4, "(K, C/groups, KH, KW)")
    extra = [as_array(value, name) for name, value in extra]
    dtype = result_dtype(x, w, *extra)
    return dtype, as_contiguous(x, dtype), as_contiguous(w, dtype), [as_contiguous(e, dtype) for e in extra]


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, *, algorithm="auto",
           flip=False):
    """2-D convolution (cross-correlation, as torch.nn.functional.conv2d).

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
        Input images.
    w : array_like, shape (K, C / groups, KH, KW)
        Filters.
    b : array_like, shape (K,), optional
        Bias added to every output pixel of channel k.
    stride, dilation : int or (int, int)
        Step between windows and between kernel taps, per axis (>= 1).
    padding : int, (int, int), ((top, bottom), (left, right)), or str
        Zero padding. Words (any case): ``"valid"`` (none), ``"same"`` (output
        ceil(H / stride) x ceil(W / stride); the odd pixel of padding goes to the
        bottom/right, for any stride), ``"full"`` (dilation * (k - 1) on each side).
    groups : int
        Channel groups: C and K must be multiples; ``groups == C`` is depthwise.
    algorithm : {"auto", "direct", "im2col"}
        ``"direct"``: loops over the output. ``"im2col"``: per-thread im2col bands
        and a BLAS GEMM. ``"auto"`` chooses by shape. All agree within rounding.
    flip : bool
        True computes true convolution (kernel rotated 180 degrees).

    Returns
    -------
    y : ndarray, shape (N, K, OH, OW)
        float64 if x or w is float64 or integer, else float32. OH is
        floor((H + pad_top + pad_bottom - dilation * (KH - 1) - 1) / stride) + 1.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.arange(9.0).reshape(1, 1, 3, 3)
    >>> fastconv.conv2d(x, np.ones((1, 1, 2, 2)))[0, 0]
    array([[ 8., 12.],
           [20., 24.]])
    """
    dtype, x, w, _ = _as_operands(x, w)
    geom = _ConvGeometry(x.shape, w.shape, stride, padding, dilation, groups)
    if b is not None:
        b = as_contiguous(as_array(b, "b"), dtype)
        if b.shape != (geom.k,):
            raise ValueError(f"b must have shape ({geom.k},) (one per output channel), got {b.shape}")
    algorithm = _choose_algorithm(algorithm, geom)
    w = _prepare_weights(w, flip)
    if geom.empty:
        y = np.zeros(geom.y_shape, dtype=dtype)
        if b is not None:
            y += b[None, :, None, None]
        return y
    y = np.empty(geom.y_shape, dtype=dtype)
    n_threads = _config.effective_n_threads()
    if algorithm == "direct":
        _conv_direct.conv2d_forward(x, w, b, y, *geom.kernel_args, n_threads)
        return y
    rows = geom.band_rows(geom.n * geom.groups)
    workspace = geom.workspace(rows, n_threads, dtype)
    with single_threaded_blas():
        _conv_gemm.conv2d_forward(x, w, b, y, workspace, *geom.kernel_args, rows, n_threads)
    return y


def conv2d_backward(gy, x, w, stride=1, padding=0, dilation=1, groups=1, *, flip=False,
                    needs_input_grad=True, algorithm="auto"):
    """Gradients of conv2d with respect to x, w and b.

    Parameters
    ----------
    gy : array_like, shape (N, K, OH, OW)
        Gradient of the loss with respect to conv2d's output.
    x, w, stride, padding, dilation, groups, flip
        As given to :func:`conv2d`.
    needs_input_grad : bool
        False skips the input gradient (a network's first layer needs none).
    algorithm : {"auto", "direct", "im2col"}
        As in :func:`conv2d`.

    Returns
    -------
    gx : ndarray, shape (N, C, H, W), or None when ``needs_input_grad`` is False
        Full correlation of gy (dilated by stride) with the rotated kernel.
    gw : ndarray, shape (K, C / groups, KH, KW)
        Correlation of x with gy, summed over the batch.
    gb : ndarray, shape (K,)
        gy summed over N, OH, OW (returned even if the layer has no bias).

    Notes
    -----
    Results are bit-identical for any thread count: batch sums are split into
    chunks chosen from the shape alone and reduced in a fixed order.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> x = np.ones((1, 1, 3, 3)); w = np.ones((1, 1, 2, 2))
    >>> gx, gw, gb = fastconv.conv2d_backward(np.ones((1, 1, 2, 2)), x, w)
    >>> gx[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    >>> gb
    array([4.])
    """
    dtype, x, w, (gy,) = _as_operands(x, w, [("gy", gy)])
    geom = _ConvGeometry(x.shape, w.shape, stride, padding, dilation, groups)
    check_ndim(gy, "gy", 4, "(N, K, OH, OW)")
    if gy.shape != geom.y_shape:
        raise ValueError(
            f"gy must have the shape of conv2d's output {geom.y_shape}, got {gy.shape}"
        )
    algorithm = _choose_algorithm(algorithm, geom)
    w_eff = _prepare_weights(w, flip)
    n_threads = _config.effective_n_threads()
    gx = np.zeros(x.shape, dtype=dtype) if needs_input_grad else None
    gw = np.zeros(w.shape, dtype=dtype)
    gb = np.zeros(geom.k, dtype=dtype)
    if geom.empty:
        return gx, gw, gb
    _conv_direct.conv2d_bias_grad(gy, gb, n_threads)
    if algorithm == "direct":
        if gx is not None:
            _conv_direct.conv2d_input_grad(gy, w_eff, gx, *geom.kernel_args, n_threads)
        _conv_direct.conv2d_weight_grad(gy, x, gw, *geom.kernel_args, n_threads)
    else:
        _gemm_backward(geom, gy, x, w_eff, gx, gw, n_threads)
    if flip:
        gw = np.ascontiguousarray(gw[:, :, ::-1, ::-1])
    return gx, gw, gb


def _gemm_backward(geom, gy, x, w, gx, gw, n_threads):
    dtype = gw.dtype
    with single_threaded_blas():
        if gx is not None:
            rows = geom.band_rows()  # one task per (image, group): bands only bound memory
            workspace = geom.workspace(rows, n_threads, dtype)
            _conv_gemm.conv2d_input_grad(gy, w, gx, workspace, *geom.kernel_args, rows, n_threads)
        rows = geom.band_rows(geom.n)
        units = geom.n * -(-geom.oh // rows)
        n_chunks = max(1, min(units, MAX_CHUNKS, CHUNK_ELEMENTS // max(1, gw.size)))
        partials = np.zeros((n_chunks, gw.size), dtype=dtype)
        workspace = geom.workspace(rows, n_threads, dtype)
        _conv_gemm.conv2d_weight_grad(gy, x, gw, partials, workspace, *geom.kernel_args, rows,
                                      n_threads)
