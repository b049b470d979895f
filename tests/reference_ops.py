"""Plain NumPy float64 references for transposed convolution and pooling (tests only).

Dimension legend
----------------
N  : batch size
C  : channels of the input (for conv_transpose2d: the channels of x)
H, W : input height and width
K  : output channels of conv_transpose2d
KH, KW : kernel (window) height and width
OH, OW : output height and width
G  : groups

Notes
-----
Everything here follows the definitions, written for clarity, not speed, and
never calls fastconv:

- transposed convolution is a scatter: input pixel (ih, iw) of channel c adds
  ``x[n, c, ih, iw] * w[c, k, kh, kw]`` to output pixel
  ``(ih * SH - pad_top + kh * DH, iw * SW - pad_left + kw * DW)`` of channel
  ``g * K/G + k``, where g is c's group; contributions that land outside the
  output are dropped. The scatter is done on an uncropped canvas that starts
  at output row ``-pad_top`` and is cropped at the end. Its gradients follow
  from the same index relation (a gather from gy).
- pooling windows start at ``o * S - P`` and have taps ``start + t * D``
  for t in ``range(KH)``; only taps inside the input take part. The output
  size is PyTorch's: ``floor or ceil((H + 2P - D(K - 1) - 1) / S) + 1``, and in
  ceil mode a last window that would start at or past ``H + P`` (in the right
  padding) is dropped.
- max pooling scans the taps of a window row by row; a value replaces the
  running best when it is greater, or when it is NaN (so the last NaN of a
  window wins, and among equal maxima the first one is kept). The running
  best starts at -inf with the index of the first tap inside the input, so
  a window of -inf values returns -inf and that tap's index. A window whose
  taps all fall in the padding raises ``ValueError`` (fastconv refuses those
  shapes where PyTorch returns -inf with an index outside the window).
- average pooling divides by: ``divisor_override`` when given; else, with
  ``count_include_pad``, the number of taps inside ``[-P, H + P)`` (padding
  counts, the ceil-mode overhang past it does not); else the number of taps
  inside the input.
- Lp pooling (no padding): ``(sum |x|^p * KH*KW / inside)^(1/p)``, where
  ``inside`` is the number of window pixels inside the input (less than
  KH*KW only for ceil-mode windows that overhang the input).
- adaptive average pooling: output i along an axis of size H averages input
  rows ``[floor(i * H / OH), ceil((i + 1) * H / OH))``.
"""

import math

import numpy as np

from reference import normalize_padding_ref, pair_ref

__all__ = [
    "conv_transpose2d_output_hw_ref",
    "conv_transpose2d_ref",
    "conv_transpose2d_backward_ref",
    "pool_output_size_ref",
    "max_pool2d_ref",
    "max_pool2d_backward_ref",
    "max_unpool2d_output_hw_ref",
    "max_unpool2d_ref",
    "avg_pool2d_ref",
    "avg_pool2d_backward_ref",
    "lp_pool2d_ref",
    "lp_pool2d_backward_ref",
    "adaptive_avg_pool2d_ref",
    "adaptive_avg_pool2d_backward_ref",
]


# --------------------------------------------------------------------------- #
# transposed convolution
# --------------------------------------------------------------------------- #


def _transpose_geometry(x_shape, w_shape, stride, padding, output_padding, dilation,
                        output_size):
    """(stride, dilation, ((pt, pb), (pl, pr)), (OH, OW)) of a transposed convolution."""
    h, w = x_shape[2:]
    kh, kw = w_shape[2:]
    sh, sw = pair_ref(stride)
    dh, dw = pair_ref(dilation)
    assert not isinstance(padding, str), "transposed convolution takes numeric padding only"
    pad = normalize_padding_ref(padding, (h, w), (kh, kw), (sh, sw), (dh, dw))
    base = conv_transpose2d_output_hw_ref((h, w), (kh, kw), (sh, sw), pad, 0, (dh, dw))
    if output_size is not None:
        out_hw = tuple(int(v) for v in tuple(output_size)[-2:])
    else:
        oph, opw = pair_ref(output_padding)
        out_hw = (base[0] + oph, base[1] + opw)
    return (sh, sw), (dh, dw), pad, out_hw


def conv_transpose2d_output_hw_ref(in_hw, kernel_hw, stride, padding, output_padding, dilation):
    """(OH, OW) = (H - 1) * S - pad_before - pad_after + D * (K - 1) + output_padding + 1."""
    sh, sw = pair_ref(stride)
    dh, dw = pair_ref(dilation)
    oph, opw = pair_ref(output_padding)
    pad = normalize_padding_ref(padding, in_hw, kernel_hw, (sh, sw), (dh, dw))
    return tuple(
        (n - 1) * s - p0 - p1 + d * (k - 1) + op + 1
        for n, s, (p0, p1), d, k, op in zip(in_hw, (sh, sw), pad, (dh, dw), kernel_hw, (oph, opw))
    )


def _canvas_size(n, k, s, d, p0, out):
    """Length of an uncropped canvas (starting at output position -p0) that holds
    every scattered tap and the whole output."""
    return max((n - 1) * s + d * (k - 1) + 1, p0 + out)


def _scatter_slice(i, n, s, d):
    """Canvas positions reached by tap i from input positions 0..n-1."""
    start = i * d
    return slice(start, start + s * (n - 1) + 1, s)


def conv_transpose2d_ref(x, w, b=None, stride=1, padding=0, output_padding=0, dilation=1,
                         groups=1, output_size=None):
    """Reference 2-D transposed convolution (scatter form).

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    w : array_like, shape (C, K // groups, KH, KW)
    b : array_like, shape (K,), or None
    stride, dilation, output_padding : int or (int, int)
    padding : int, (int, int) or ((top, bottom), (left, right))
    groups : int
    output_size : (OH, OW) or (N, K, OH, OW), optional
        Used as the output size instead of the one from ``output_padding``
        (not range-checked here).

    Returns
    -------
    y : ndarray, float64, shape (N, K, OH, OW)
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    n, c, h, wd = x.shape
    c_w, kg, kh, kw = w.shape
    assert c_w == c and c % groups == 0
    cg = c // groups
    (sh, sw), (dh, dw), ((pt, _), (pl, _)), (oh, ow) = _transpose_geometry(
        x.shape, w.shape, stride, padding, output_padding, dilation, output_size
    )
    ch = _canvas_size(h, kh, sh, dh, pt, oh)
    cw = _canvas_size(wd, kw, sw, dw, pl, ow)
    canvas = np.zeros((n, kg * groups, ch, cw))
    for g in range(groups):
        cs = slice(g * cg, (g + 1) * cg)
        ks = slice(g * kg, (g + 1) * kg)
        for i in range(kh):
            for j in range(kw):
                rows = _scatter_slice(i, h, sh, dh)
                cols = _scatter_slice(j, wd, sw, dw)
                canvas[:, ks, rows, cols] += np.einsum(
                    "nchw,ck->nkhw", x[:, cs], w[cs, :, i, j]
                )
    y = canvas[:, :, pt:pt + oh, pl:pl + ow].copy()
    if b is not None:
        y += np.asarray(b, dtype=np.float64).reshape(1, -1, 1, 1)
    return y


def conv_transpose2d_backward_ref(gy, x, w, stride=1, padding=0, output_padding=0, dilation=1,
                                  groups=1, output_size=None):
    """Reference gradients of :func:`conv_transpose2d_ref`.

    With ``y[n, g*K/G + k, ih*S - p + i*D, ...] += x[n, c, ih, ...] * w[c, k, i, ...]``:
    ``gx[n, c, ih, iw] = sum gy[n, k, oh, ow] * w[c, k, i, j]`` and
    ``gw[c, k, i, j] = sum x[n, c, ih, iw] * gy[n, k, oh, ow]`` over the pairs
    whose output pixel lies inside y; ``gb`` is gy summed over N, OH, OW.

    Returns
    -------
    gx : ndarray, float64, shape (N, C, H, W)
    gw : ndarray, float64, shape (C, K // groups, KH, KW)
    gb : ndarray, float64, shape (K,)
    """
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    gy = np.asarray(gy, dtype=np.float64)
    n, c, h, wd = x.shape
    _, kg, kh, kw = w.shape
    cg = c // groups
    (sh, sw), (dh, dw), ((pt, _), (pl, _)), (oh, ow) = _transpose_geometry(
        x.shape, w.shape, stride, padding, output_padding, dilation, output_size
    )
    assert gy.shape == (n, kg * groups, oh, ow), (gy.shape, (n, kg * groups, oh, ow))
    ch = _canvas_size(h, kh, sh, dh, pt, oh)
    cw = _canvas_size(wd, kw, sw, dw, pl, ow)
    # gy placed on the canvas; canvas pixels outside y receive no gradient (zero)
    gcanvas = np.zeros((n, kg * groups, ch, cw))
    gcanvas[:, :, pt:pt + oh, pl:pl + ow] = gy
    gx = np.zeros_like(x)
    gw = np.zeros_like(w)
    for g in range(groups):
        cs = slice(g * cg, (g + 1) * cg)
        ks = slice(g * kg, (g + 1) * kg)
        for i in range(kh):
            for j in range(kw):
                tap = gcanvas[:, ks, _scatter_slice(i, h, sh, dh), _scatter_slice(j, wd, sw, dw)]
                gx[:, cs] += np.einsum("nkhw,ck->nchw", tap, w[cs, :, i, j])
                gw[cs, :, i, j] = np.einsum("nchw,nkhw->ck", x[:, cs], tap)
    return gx, gw, gy.sum(axis=(0, 2, 3))


# --------------------------------------------------------------------------- #
# pooling geometry
# --------------------------------------------------------------------------- #


def pool_output_size_ref(size, k, s, p, d=1, ceil_mode=False):
    """PyTorch's pooling output length along one axis (may be < 1)."""
    room = size + 2 * p - d * (k - 1) - 1
    out = (math.ceil(room / s) if ceil_mode else math.floor(room / s)) + 1
    if ceil_mode and out >= 1 and (out - 1) * s >= size + p:
        out -= 1  # the last window would start in the right padding
    return out


def _taps(o, size, k, s, p, d):
    """Input positions of the taps of window o that lie inside the input."""
    start = o * s - p
    return [start + t * d for t in range(k) if 0 <= start + t * d < size]


def _pool_setup(x, kernel_size, stride, padding, dilation, ceil_mode):
    x = np.asarray(x, dtype=np.float64)
    kh, kw = pair_ref(kernel_size)
    sh, sw = pool_stride_ref(stride, (kh, kw))
    ph, pw = pair_ref(padding)
    dh, dw = pair_ref(dilation)
    oh = pool_output_size_ref(x.shape[2], kh, sh, ph, dh, ceil_mode)
    ow = pool_output_size_ref(x.shape[3], kw, sw, pw, dw, ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError("the pooling window does not fit the padded input")
    return x, (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow)


# --------------------------------------------------------------------------- #
# max pooling
# --------------------------------------------------------------------------- #


def pool_stride_ref(stride, kernel_hw):
    """A pooling stride as (sh, sw): None or an empty sequence means the kernel size."""
    if stride is None or (isinstance(stride, (tuple, list)) and not stride):
        return tuple(kernel_hw)
    return pair_ref(stride)


def max_pool2d_ref(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Reference 2-D max pooling.

    Returns
    -------
    y : ndarray, float64, shape (N, C, OH, OW)
    idx : ndarray, int64, shape (N, C, OH, OW)
        Flat offset ``h * W + w`` of each window's maximum in its input plane.

    Raises
    ------
    ValueError
        When a window covers only padding.
    """
    x, (kh, kw), (sh, sw), (ph, pw), (dh, dw), (oh, ow) = _pool_setup(
        x, kernel_size, stride, padding, dilation, ceil_mode
    )
    n, c, h, wd = x.shape
    y = np.empty((n, c, oh, ow))
    idx = np.empty((n, c, oh, ow), dtype=np.int64)
    for o in range(oh):
        rows = _taps(o, h, kh, sh, ph, dh)
        for q in range(ow):
            cols = _taps(q, wd, kw, sw, pw, dw)
            if not rows or not cols:
                raise ValueError(f"window ({o}, {q}) covers only padding")
            best = np.full((n, c), -np.inf)
            best_at = np.full((n, c), rows[0] * wd + cols[0], dtype=np.int64)
            for r in rows:  # scan order: row by row, left to right
                for col in cols:
                    value = x[:, :, r, col]
                    take = (value > best) | np.isnan(value)
                    best = np.where(take, value, best)
                    best_at = np.where(take, r * wd + col, best_at)
            y[:, :, o, q] = best
            idx[:, :, o, q] = best_at
    return y, idx


def max_pool2d_backward_ref(gy, idx, input_shape):
    """gx with ``gx[n, c].flat[idx[n, c, o, q]] += gy[n, c, o, q]`` (repeats add up)."""
    gy = np.asarray(gy, dtype=np.float64)
    idx = np.asarray(idx)
    n, c, h, w = input_shape
    gx = np.zeros((n, c, h * w))
    for i in range(n):
        for j in range(c):
            np.add.at(gx[i, j], idx[i, j].ravel(), gy[i, j].ravel())
    return gx.reshape(n, c, h, w)


def max_unpool2d_output_hw_ref(in_hw, kernel_size, stride=None, padding=0):
    """Default max_unpool2d output size: (H - 1) * S - 2P + K per axis."""
    k = pair_ref(kernel_size)
    s = pool_stride_ref(stride, k)
    p = pair_ref(padding)
    return tuple((n - 1) * si - 2 * pi + ki for n, si, pi, ki in zip(in_hw, s, p, k))


def max_unpool2d_ref(y, idx, out_hw):
    """out of shape (N, C, *out_hw), zero except ``out[n, c].flat[idx] = y``.

    Where an index repeats, the value written last in row-major order of y
    stays.
    """
    y = np.asarray(y, dtype=np.float64)
    idx = np.asarray(idx)
    n, c = y.shape[:2]
    out = np.zeros((n, c, out_hw[0] * out_hw[1]))
    for i in range(n):
        for j in range(c):
            for at, value in zip(idx[i, j].ravel(), y[i, j].ravel()):
                out[i, j, at] = value
    return out.reshape(n, c, *out_hw)


# --------------------------------------------------------------------------- #
# average pooling
# --------------------------------------------------------------------------- #


def _avg_windows(in_hw, kernel_size, stride, padding, ceil_mode, count_include_pad,
                 divisor_override):
    """Yield (o, q, rows, cols, divisor) for every average-pooling window."""
    h, wd = in_hw
    kh, kw = pair_ref(kernel_size)
    sh, sw = pool_stride_ref(stride, (kh, kw))
    ph, pw = pair_ref(padding)
    oh = pool_output_size_ref(h, kh, sh, ph, 1, ceil_mode)
    ow = pool_output_size_ref(wd, kw, sw, pw, 1, ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError("the pooling window does not fit the padded input")
    for o in range(oh):
        rows = _taps(o, h, kh, sh, ph, 1)
        # taps inside the padded input [-P, H + P): padding counts, overhang not
        rows_padded = [o * sh - ph + t for t in range(kh) if -ph <= o * sh - ph + t < h + ph]
        for q in range(ow):
            cols = _taps(q, wd, kw, sw, pw, 1)
            cols_padded = [q * sw - pw + t for t in range(kw) if -pw <= q * sw - pw + t < wd + pw]
            if divisor_override is not None:
                divisor = divisor_override
            elif count_include_pad:
                divisor = len(rows_padded) * len(cols_padded)
            else:
                divisor = len(rows) * len(cols)
            yield o, q, rows, cols, divisor


def _avg_out_hw(in_hw, kernel_size, stride, padding, ceil_mode):
    kh, kw = pair_ref(kernel_size)
    sh, sw = pool_stride_ref(stride, (kh, kw))
    ph, pw = pair_ref(padding)
    return (pool_output_size_ref(in_hw[0], kh, sh, ph, 1, ceil_mode),
            pool_output_size_ref(in_hw[1], kw, sw, pw, 1, ceil_mode))


def avg_pool2d_ref(x, kernel_size, stride=None, padding=0, ceil_mode=False,
                   count_include_pad=True, divisor_override=None):
    """Reference 2-D average pooling (zero padding); float64 (N, C, OH, OW)."""
    x = np.asarray(x, dtype=np.float64)
    oh, ow = _avg_out_hw(x.shape[2:], kernel_size, stride, padding, ceil_mode)
    y = np.zeros(x.shape[:2] + (oh, ow))
    for o, q, rows, cols, divisor in _avg_windows(x.shape[2:], kernel_size, stride, padding,
                                                  ceil_mode, count_include_pad,
                                                  divisor_override):
        y[:, :, o, q] = x[:, :, rows][:, :, :, cols].sum(axis=(2, 3)) / divisor
    return y


def avg_pool2d_backward_ref(gy, input_shape, kernel_size, stride=None, padding=0,
                            ceil_mode=False, count_include_pad=True, divisor_override=None):
    """Reference gradient of :func:`avg_pool2d_ref`: gy / divisor over each window."""
    gy = np.asarray(gy, dtype=np.float64)
    gx = np.zeros(tuple(input_shape))
    for o, q, rows, cols, divisor in _avg_windows(tuple(input_shape)[2:], kernel_size, stride,
                                                  padding, ceil_mode, count_include_pad,
                                                  divisor_override):
        for r in rows:
            for col in cols:
                gx[:, :, r, col] += gy[:, :, o, q] / divisor
    return gx


# --------------------------------------------------------------------------- #
# Lp pooling
# --------------------------------------------------------------------------- #


def _lp_windows(in_hw, kernel_size, stride, ceil_mode):
    """Yield (o, q, rows, cols, scale) with scale = KH*KW / pixels inside."""
    kh, kw = pair_ref(kernel_size)
    oh, ow = _avg_out_hw(in_hw, kernel_size, stride, 0, ceil_mode)
    if oh < 1 or ow < 1:
        raise ValueError("the pooling window does not fit the input")
    sh, sw = pool_stride_ref(stride, (kh, kw))
    for o in range(oh):
        rows = _taps(o, in_hw[0], kh, sh, 0, 1)
        for q in range(ow):
            cols = _taps(q, in_hw[1], kw, sw, 0, 1)
            yield o, q, rows, cols, (kh * kw) / (len(rows) * len(cols))


def lp_pool2d_ref(x, p, kernel_size, stride=None, ceil_mode=False):
    """Reference Lp pooling: (sum over the window of |x|^p * scale)^(1/p)."""
    x = np.asarray(x, dtype=np.float64)
    oh, ow = _avg_out_hw(x.shape[2:], kernel_size, stride, 0, ceil_mode)
    y = np.zeros(x.shape[:2] + (oh, ow))
    for o, q, rows, cols, scale in _lp_windows(x.shape[2:], kernel_size, stride, ceil_mode):
        window = x[:, :, rows][:, :, :, cols]
        y[:, :, o, q] = (np.sum(np.abs(window) ** p, axis=(2, 3)) * scale) ** (1.0 / p)
    return y


def lp_pool2d_backward_ref(gy, x, p, kernel_size, stride=None, ceil_mode=False, y=None):
    """Reference gradient of :func:`lp_pool2d_ref`.

    ``gx += gy * scale * y^(1-p) * |x|^(p-1) * sign(x)`` over each window, 0 for
    windows with ``y == 0`` and for pixels with ``x == 0``. ``y`` defaults to
    :func:`lp_pool2d_ref` of ``x``.
    """
    gy = np.asarray(gy, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    y = lp_pool2d_ref(x, p, kernel_size, stride, ceil_mode) if y is None else np.asarray(
        y, dtype=np.float64)
    gx = np.zeros_like(x)
    for o, q, rows, cols, scale in _lp_windows(x.shape[2:], kernel_size, stride, ceil_mode):
        out = y[:, :, o, q]
        safe = np.where(out == 0, 1.0, out)
        factor = np.where(out == 0, 0.0, gy[:, :, o, q] * scale * safe ** (1.0 - p))
        for r in rows:
            for col in cols:
                v = x[:, :, r, col]
                mag = np.abs(np.where(v == 0, 1.0, v)) ** (p - 1)
                gx[:, :, r, col] += np.where(v == 0, 0.0, factor * mag * np.sign(v))
    return gx


# --------------------------------------------------------------------------- #
# adaptive average pooling
# --------------------------------------------------------------------------- #


def _adaptive_bounds(i, size, out):
    """[floor(i * size / out), ceil((i + 1) * size / out))."""
    return (i * size) // out, -(-((i + 1) * size) // out)


def _adaptive_out_hw(in_hw, output_size):
    if isinstance(output_size, (tuple, list)):
        return tuple(n if o is None else int(o) for n, o in zip(in_hw, output_size))
    return (int(output_size), int(output_size))


def adaptive_avg_pool2d_ref(x, output_size):
    """Reference adaptive average pooling; ``None`` in output_size keeps that axis."""
    x = np.asarray(x, dtype=np.float64)
    h, w = x.shape[2:]
    oh, ow = _adaptive_out_hw((h, w), output_size)
    y = np.zeros(x.shape[:2] + (oh, ow))
    for o in range(oh):
        r0, r1 = _adaptive_bounds(o, h, oh)
        for q in range(ow):
            c0, c1 = _adaptive_bounds(q, w, ow)
            y[:, :, o, q] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return y


def adaptive_avg_pool2d_backward_ref(gy, input_shape):
    """Reference gradient of :func:`adaptive_avg_pool2d_ref` (gy's size is the output size)."""
    gy = np.asarray(gy, dtype=np.float64)
    h, w = tuple(input_shape)[2:]
    oh, ow = gy.shape[2:]
    gx = np.zeros(tuple(input_shape))
    for o in range(oh):
        r0, r1 = _adaptive_bounds(o, h, oh)
        for q in range(ow):
            c0, c1 = _adaptive_bounds(q, w, ow)
            gx[:, :, r0:r1, c0:c1] += (gy[:, :, o, q] / ((r1 - r0) * (c1 - c0)))[:, :, None, None]
    return gx
