"""Plain NumPy float64 reference for 2-D convolution, used only by the tests.

Dimension legend
----------------
N  : batch size
C  : input channels
H, W : input height and width
K  : output channels (filters)
KH, KW : kernel height and width
OH, OW : output height and width
G  : groups (C and K are both multiples of G)

Notes
-----
Everything here is written for clarity, not speed: the input is padded
explicitly with ``np.pad`` and the convolution is a loop over the kernel taps
(kh, kw), each tap contributing one ``einsum`` over a strided slice of the
padded input. The backward pass is derived from the same definition
(scatter-add of ``gy * w`` into a padded input gradient, ``einsum`` of input
slices with ``gy`` for the weight gradient); it does not call the forward.

The padding rules are implemented here independently of the package:

- an int ``p`` means ``((p, p), (p, p))``; a pair ``(ph, pw)`` means
  ``((ph, ph), (pw, pw))``; ``((top, bottom), (left, right))`` is taken as is;
- ``"valid"``: no padding;
- ``"same"``: output size ``ceil(in / stride)`` per axis, total padding
  ``max((out - 1) * stride + (k - 1) * dilation + 1 - in, 0)`` split as
  ``top = total // 2``, ``bottom = total - top`` (the extra row or column
  goes to the bottom or right);
- ``"full"``: ``dilation * (k - 1)`` on each side.
"""

import numpy as np

__all__ = [
    "pair_ref",
    "normalize_padding_ref",
    "output_size_ref",
    "conv2d_ref",
    "conv2d_backward_ref",
]


def pair_ref(value):
    """Return ``value`` as a tuple of two Python ints (int or 1-sequence -> (int, int))."""
    if isinstance(value, (tuple, list)):
        a, b = value if len(value) != 1 else (value[0], value[0])
        return int(a), int(b)
    return int(value), int(value)


def normalize_padding_ref(padding, in_hw, kernel_hw, stride=1, dilation=1):
    """Turn any accepted padding form into ``((top, bottom), (left, right))``.

    Parameters
    ----------
    padding : int, (int, int), ((int, int), (int, int)) or str
        ``"valid"``, ``"same"`` or ``"full"`` in any letter case.
    in_hw : (int, int)
        Input height and width (before padding).
    kernel_hw : (int, int)
        Kernel height and width (before dilation).
    stride, dilation : int or (int, int)

    Returns
    -------
    ((int, int), (int, int))
    """
    sh, sw = pair_ref(stride)
    dh, dw = pair_ref(dilation)
    if isinstance(padding, str):
        word = padding.lower()
        if word == "valid":
            return ((0, 0), (0, 0))
        if word == "full":
            kh, kw = kernel_hw
            return ((dh * (kh - 1),) * 2, (dw * (kw - 1),) * 2)
        if word == "same":
            sides = []
            for n, k, s, d in zip(in_hw, kernel_hw, (sh, sw), (dh, dw)):
                out = -(-n // s)  # ceil(n / s)
                total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
                top = total // 2
                sides.append((top, total - top))
            return tuple(sides)
        raise ValueError(f"unknown padding word {padding!r}")
    if isinstance(padding, (tuple, list)):
        first, second = padding
        if isinstance(first, (tuple, list)):
            (t, b), (l, r) = first, second
            return ((int(t), int(b)), (int(l), int(r)))
        return ((int(first), int(first)), (int(second), int(second)))
    p = int(padding)
    return ((p, p), (p, p))


def output_size_ref(n, k, stride, dilation, pad_before, pad_after):
    """Output length along one axis; may be <= 0 when the kernel does not fit."""
    span = dilation * (k - 1) + 1
    return (n + pad_before + pad_after - span) // stride + 1


def _prepare(x, w, stride, padding, dilation, flip):
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if flip:
        w = w[:, :, ::-1, ::-1]
    sh, sw = pair_ref(stride)
    dh, dw = pair_ref(dilation)
    (pt, pb), (pl, pr) = normalize_padding_ref(
        padding, x.shape[2:], w.shape[2:], (sh, sw), (dh, dw)
    )
    oh = output_size_ref(x.shape[2], w.shape[2], sh, dh, pt, pb)
    ow = output_size_ref(x.shape[3], w.shape[3], sw, dw, pl, pr)
    if oh < 1 or ow < 1:
        raise ValueError("kernel larger than the padded input")
    return x, w, (sh, sw), (dh, dw), ((pt, pb), (pl, pr)), (oh, ow)


def _tap(i, j, oh, ow, stride, dilation):
    """Slices of the padded input seen by kernel tap (i, j)."""
    sh, sw = stride
    dh, dw = dilation
    rows = slice(i * dh, i * dh + sh * (oh - 1) + 1, sh)
    cols = slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)
    return rows, cols


def conv2d_ref(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, flip=False):
    """Reference 2-D cross-correlation (true convolution with ``flip=True``).

    Parameters
    ----------
    x : array_like, shape (N, C, H, W)
    w : array_like, shape (K, C // groups, KH, KW)
    b : array_like, shape (K,), or None
    stride, dilation : int or (int, int)
    padding : any form accepted by :func:`normalize_padding_ref`
    groups : int
    flip : bool

    Returns
    -------
    y : ndarray, float64, shape (N, K, OH, OW)
    """
    x, w, stride, dilation, pad, (oh, ow) = _prepare(x, w, stride, padding, dilation, flip)
    n, c = x.shape[:2]
    k, cg, kh, kw = w.shape
    assert c == cg * groups and k % groups == 0
    kg = k // groups
    xp = np.pad(x, ((0, 0), (0, 0)) + pad)
    y = np.zeros((n, k, oh, ow))
    for g in range(groups):
        xg = xp[:, g * cg:(g + 1) * cg]
        wg = w[g * kg:(g + 1) * kg]
        for i in range(kh):
            for j in range(kw):
                rows, cols = _tap(i, j, oh, ow, stride, dilation)
                y[:, g * kg:(g + 1) * kg] += np.einsum(
                    "nchw,kc->nkhw", xg[:, :, rows, cols], wg[:, :, i, j]
                )
    if b is not None:
        y += np.asarray(b, dtype=np.float64).reshape(1, k, 1, 1)
    return y


def conv2d_backward_ref(gy, x, w, stride=1, padding=0, dilation=1, groups=1, flip=False):
    """Reference gradients of :func:`conv2d_ref`.

    Returns
    -------
    gx : ndarray, float64, shape (N, C, H, W)
    gw : ndarray, float64, shape (K, C // groups, KH, KW)
    gb : ndarray, float64, shape (K,)
    """
    x, w, stride, dilation, pad, (oh, ow) = _prepare(x, w, stride, padding, dilation, flip)
    gy = np.asarray(gy, dtype=np.float64)
    n, c, h, wd = x.shape
    k, cg, kh, kw = w.shape
    kg = k // groups
    assert gy.shape == (n, k, oh, ow)
    (pt, pb), (pl, pr) = pad
    xp = np.pad(x, ((0, 0), (0, 0)) + pad)
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    for g in range(groups):
        cs = slice(g * cg, (g + 1) * cg)
        ks = slice(g * kg, (g + 1) * kg)
        for i in range(kh):
            for j in range(kw):
                rows, cols = _tap(i, j, oh, ow, stride, dilation)
                # y[n, k, p, q] += xp[n, c, rows[p], cols[q]] * w[k, c, i, j]
                gxp[:, cs, rows, cols] += np.einsum(
                    "nkhw,kc->nchw", gy[:, ks], w[ks, :, i, j]
                )
                gw[ks, :, i, j] = np.einsum(
                    "nchw,nkhw->kc", xp[:, cs, rows, cols], gy[:, ks]
                )
    gx = gxp[:, :, pt:pt + h, pl:pl + wd].copy()
    if flip:
        gw = gw[:, :, ::-1, ::-1]
    gb = gy.sum(axis=(0, 2, 3))
    return gx, np.ascontiguousarray(gw), gb
