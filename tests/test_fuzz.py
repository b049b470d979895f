"""Property-based fuzzing of every public operation in fastconv.functional.

Every name in ``functional.__all__`` (forward ops and their backwards) is called
with hypothesis-drawn shapes, parameters and dtypes, in two rounds:

- valid calls (zero-size batches and channels, 1x1 outputs, kernels equal to
  the padded input, strides larger than the kernel, any real dtype, lists,
  strided and read-only arrays): the result must match the plain NumPy float64
  references of tests/reference.py and tests/reference_ops.py, with the
  documented result dtype;
- the same calls with one or two arguments spoiled (floats, strings, None and
  bools for ints, negative and huge values, wrong ndim, zero-size or resized
  arrays, complex / object / string / datetime data, bad words, out-of-range
  sizes): the only outcomes allowed are ValueError, TypeError or MemoryError
  with a message, or -- where the spoiled call is still meaningful -- a result
  consistent with it (checked against the references when that is cheap).

Any other exception, a crash or a hang fails. Each call runs on a watchdog
thread (a hang fails after ``HANG_SECONDS``), each example has a deadline of a
few seconds, and the address space is capped for the module, so a request that
would need terabytes fails fast on any kernel overcommit setting.

Budget: ``DEFAULT_EXAMPLES`` per test; set FASTCONV_FUZZ_EXAMPLES for a longer
run, e.g. ``FASTCONV_FUZZ_EXAMPLES=1000 pytest tests/test_fuzz.py``.
"""

import inspect
import math
import os
import tempfile
import queue
import threading
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument

from fastconv import functional as F

from reference import conv2d_backward_ref, conv2d_ref, normalize_padding_ref, output_size_ref
from reference_ops import (
    adaptive_avg_pool2d_backward_ref,
    adaptive_avg_pool2d_ref,
    avg_pool2d_backward_ref,
    avg_pool2d_ref,
    conv_transpose2d_backward_ref,
    conv_transpose2d_ref,
    lp_pool2d_backward_ref,
    lp_pool2d_ref,
    max_pool2d_backward_ref,
    max_pool2d_ref,
    max_unpool2d_output_hw_ref,
    max_unpool2d_ref,
    pool_output_size_ref,
)

DEFAULT_EXAMPLES = 40
EXAMPLES = int(os.environ.get("FASTCONV_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
HANG_SECONDS = 60.0
DEADLINE_MS = 5000
ALLOWED = (ValueError, TypeError, MemoryError)

FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=DEADLINE_MS,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.filter_too_much],
)


# --------------------------------------------------------------------------- #
# safety net: a capped address space and a watchdog thread
# --------------------------------------------------------------------------- #


def _address_space_in_use():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture(scope="module", autouse=True)
def capped_address_space():
    """Cap the address space 16 GiB above what is mapped now (Linux only), so that a
    request for terabytes fails with MemoryError even where the kernel overcommits."""
    try:
        import resource

        limit = _address_space_in_use() + (16 << 30)
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    except (ImportError, OSError, ValueError):
        yield
        return
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    if soft != resource.RLIM_INFINITY and soft < limit:
        yield
        return
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


class _Watchdog:
    """Runs calls on a daemon worker thread; a call that does not return in time
    fails the test (the stuck worker is abandoned and a fresh one started)."""

    def __init__(self):
        self._jobs = None

    def _start(self):
        self._jobs = queue.Queue()
        jobs = self._jobs

        def loop():
            while True:
                fn, box, done = jobs.get()
                try:
                    box["result"] = fn()
                except BaseException as exc:  # handed back to the test thread
                    box["error"] = exc
                done.set()

        threading.Thread(target=loop, name="fastconv-fuzz-call", daemon=True).start()

    def __call__(self, fn, what):
        if self._jobs is None:
            self._start()
        box, done = {}, threading.Event()
        self._jobs.put((fn, box, done))
        if not done.wait(HANG_SECONDS):
            self._jobs = None
            pytest.fail(f"{what} did not return within {HANG_SECONDS} s (hang)")
        if "error" in box:
            raise box["error"]
        return box["result"]


WATCHDOG = _Watchdog()


# --------------------------------------------------------------------------- #
# drawing arrays and parameter spellings
# --------------------------------------------------------------------------- #

seeds = st.integers(0, 2**32 - 1)
# float32 and float64 are the kernels' types; the rest are converted on entry.
REAL_DTYPES = [np.float32] * 4 + [np.float64] * 4 + [
    np.float16, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.bool_,
]
real_dtypes = st.sampled_from(REAL_DTYPES)
WORDS = ["valid", "same", "full", "SAME", "Valid", "FULL"]


def make_array(rng, shape, dtype):
    """Random values of ``dtype``: normal floats, small ints, random bools."""
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind == "u":
        return rng.integers(0, 5, shape).astype(dtype)
    return rng.integers(-3, 4, shape).astype(dtype)


def spell_pair(draw, a, b):
    """(a, b) in one of its accepted spellings: int, tuple, list, NumPy ints."""
    options = [(a, b), [a, b], (np.int64(a), np.int64(b))]
    if a == b:
        options += [a, a, np.int64(a)]
    return draw(st.sampled_from(options))


def spell_one(draw, v):
    """A 1-D int parameter: an int or a 1-sequence."""
    return draw(st.sampled_from([v, v, (v,), [v], np.int64(v)]))


def spell_padding(draw, pads, one_d):
    """Numeric padding ((top, bottom), (left, right)) in an accepted spelling."""
    (pt, pb), (pl, pr) = pads
    if one_d:
        options = [(pl, pr), [pl, pr]]
        if pl == pr:
            options += [pl, np.int64(pl)]
        return draw(st.sampled_from(options))
    options = [((pt, pb), (pl, pr)), [[pt, pb], [pl, pr]]]
    if pt == pb and pl == pr:
        options += [(pt, pl), [pt, pl]]
        if pt == pl:
            options += [pt, pt, np.int64(pt)]
    return draw(st.sampled_from(options))


def pick_size(draw, minimum, tight):
    """An input size >= minimum; ``tight`` gives exactly the minimum (kernel equal to
    the padded input, a 1-pixel output)."""
    if tight:
        return minimum
    return max(minimum, draw(st.integers(1, 8)))


# --------------------------------------------------------------------------- #
# geometries
# --------------------------------------------------------------------------- #


@st.composite
def conv_geometry(draw, one_d=False):
    """Sizes and parameters of one valid conv2d / conv1d call."""
    g = {}
    g["n"] = draw(st.sampled_from([1, 1, 2, 3, 0]))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg = draw(st.sampled_from([1, 1, 2, 3, 0]))
    kg = draw(st.sampled_from([1, 1, 2, 3, 0]))
    g["c"], g["k"], g["groups_value"] = cg * groups, kg * groups, groups
    kh = 1 if one_d else draw(st.integers(1, 4))
    kw = draw(st.integers(1, 4))
    sh = 1 if one_d else draw(st.integers(1, 5))
    sw = draw(st.integers(1, 5))
    dh = 1 if one_d else draw(st.integers(1, 3))
    dw = draw(st.integers(1, 3))
    g["kh"], g["kw"], g["stride_hw"], g["dilation_hw"] = kh, kw, (sh, sw), (dh, dw)
    tight = draw(st.integers(0, 3)) == 0
    if draw(st.integers(0, 3)) == 0:
        word = draw(st.sampled_from(WORDS))
        spans = [d * (k - 1) + 1 for k, d in ((kh, dh), (kw, dw))]
        mins = spans if word.lower() == "valid" else [1, 1]
        g["h"] = 1 if one_d else pick_size(draw, mins[0], tight)
        g["w"] = pick_size(draw, mins[1], tight)
        g["padding"] = word
    else:
        pt = 0 if one_d else draw(st.integers(0, 4))
        pb = 0 if one_d else draw(st.sampled_from([pt, pt, draw(st.integers(0, 4))]))
        pl = draw(st.integers(0, 4))
        pr = draw(st.sampled_from([pl, pl, draw(st.integers(0, 4))]))
        g["h"] = 1 if one_d else pick_size(draw, max(1, dh * (kh - 1) + 1 - pt - pb), tight)
        g["w"] = pick_size(draw, max(1, dw * (kw - 1) + 1 - pl - pr), tight)
        g["padding"] = spell_padding(draw, ((pt, pb), (pl, pr)), one_d)
    if one_d:
        g["stride"], g["dilation"] = spell_one(draw, sw), spell_one(draw, dw)
    else:
        g["stride"], g["dilation"] = spell_pair(draw, sh, sw), spell_pair(draw, dh, dw)
    g["groups"] = draw(st.sampled_from([groups, groups, np.int64(groups)]))
    pads = normalize_padding_ref(g["padding"] if not one_d or isinstance(g["padding"], str)
                                 else _pad1d_as_2d(g["padding"]),
                                 (g["h"], g["w"]), (kh, kw), (sh, sw), (dh, dw))
    g["out_hw"] = tuple(output_size_ref(size, k, s, d, *p) for size, k, s, d, p in
                        zip((g["h"], g["w"]), (kh, kw), (sh, sw), (dh, dw), pads))
    assert min(g["out_hw"]) >= 1, g
    return g


@st.composite
def transpose_geometry(draw, one_d=False):
    """Sizes and parameters of one valid conv_transpose2d / conv_transpose1d call."""
    g = {}
    g["n"] = draw(st.sampled_from([1, 1, 2, 3, 0]))
    groups = draw(st.sampled_from([1, 1, 2, 3]))
    cg = draw(st.sampled_from([1, 1, 2, 3, 0]))
    kg = draw(st.sampled_from([1, 1, 2, 3, 0]))
    g["c"], g["k"], g["kg"] = cg * groups, kg * groups, kg
    kh = 1 if one_d else draw(st.integers(1, 4))
    kw = draw(st.integers(1, 4))
    sh = 1 if one_d else draw(st.integers(1, 4))
    sw = draw(st.integers(1, 4))
    dh = 1 if one_d else draw(st.integers(1, 3))
    dw = draw(st.integers(1, 3))
    h = 1 if one_d else draw(st.integers(1, 5))
    w = draw(st.integers(1, 5))
    pads = []
    for size, k, s, d, axis in ((h, kh, sh, dh, 0), (w, kw, sw, dw, 1)):
        if one_d and axis == 0:
            pads.append((0, 0))
            continue
        p0 = draw(st.integers(0, 3))
        p1 = draw(st.sampled_from([p0, p0, draw(st.integers(0, 3))]))
        if (size - 1) * s - p0 - p1 + d * (k - 1) + 1 < 1:
            p0 = p1 = 0
        pads.append((p0, p1))
    base = [(size - 1) * s - p0 - p1 + d * (k - 1) + 1
            for size, s, (p0, p1), d, k in zip((h, w), (sh, sw), pads, (dh, dw), (kh, kw))]
    mode = draw(st.sampled_from(["none", "output_padding", "output_size"]))
    ops = [0 if (one_d and axis == 0) or mode == "none" else draw(st.integers(0, max(s, d) - 1))
           for axis, (s, d) in enumerate(zip((sh, sw), (dh, dw)))]
    g.update(h=h, w=w, kh=kh, kw=kw, stride_hw=(sh, sw), dilation_hw=(dh, dw),
             pads=tuple(pads), groups_value=groups, out_hw=(base[0] + ops[0], base[1] + ops[1]))
    g["padding"] = spell_padding(draw, tuple(pads), one_d)
    if one_d:
        g["stride"], g["dilation"] = spell_one(draw, sw), spell_one(draw, dw)
    else:
        g["stride"], g["dilation"] = spell_pair(draw, sh, sw), spell_pair(draw, dh, dw)
    g["groups"] = draw(st.sampled_from([groups, groups, np.int64(groups)]))
    g["extra"] = {}
    if mode == "output_padding":
        g["extra"]["output_padding"] = (spell_one(draw, ops[1]) if one_d
                                        else spell_pair(draw, ops[0], ops[1]))
    elif mode == "output_size":
        oh, ow = g["out_hw"]
        if one_d:
            options = [ow, (ow,), [ow], (g["n"], g["k"], ow)]
        else:
            options = [(oh, ow), [oh, ow], (g["n"], g["k"], oh, ow)]
        g["extra"]["output_size"] = draw(st.sampled_from(options))
    return g


def _window_fits(size, k, s, p, d, ceil_mode):
    """PyTorch's output size is >= 1 and no window lies wholly in the padding."""
    out = pool_output_size_ref(size, k, s, p, d, ceil_mode)
    if out < 1:
        return False
    return all(any(0 <= o * s - p + t * d < size for t in range(k)) for o in range(out))


@st.composite
def pool_geometry(draw, one_d=False, padding=True, dilation=True):
    """Sizes and parameters of one valid pooling call."""
    # only the batch may be empty: pooling refuses an input with no channels, as PyTorch
    g = {"n": draw(st.sampled_from([1, 1, 2, 3, 0])), "c": draw(st.sampled_from([1, 2, 3]))}
    kh = 1 if one_d else draw(st.integers(1, 4))
    kw = draw(st.integers(1, 4))
    stride_given = draw(st.booleans())
    sh = 1 if one_d else (draw(st.integers(1, 5)) if stride_given else kh)
    sw = draw(st.integers(1, 5)) if stride_given else kw
    ph = 0 if (one_d or not padding) else draw(st.integers(0, kh // 2))
    pw = draw(st.integers(0, kw // 2)) if padding else 0
    dh = 1 if (one_d or not dilation) else draw(st.integers(1, 3))
    dw = draw(st.integers(1, 3)) if dilation else 1
    ceil_mode = draw(st.booleans())
    tight = draw(st.integers(0, 3)) == 0
    sizes = []
    for k, s, p, d, axis in ((kh, sh, ph, dh, 0), (kw, sw, pw, dw, 1)):
        if one_d and axis == 0:
            sizes.append(1)
            continue
        start = 1 if tight else draw(st.integers(1, 8))
        size = next((v for v in range(start, start + 40) if _window_fits(v, k, s, p, d, ceil_mode)),
                    None)
        if size is None:
            size = next(v for v in range(1, 200) if _window_fits(v, k, s, p, d, ceil_mode))
        sizes.append(size)
    g["h"], g["w"] = sizes
    g.update(kernel_hw=(kh, kw), stride_hw=(sh, sw), padding_hw=(ph, pw), dilation_hw=(dh, dw),
             ceil_mode=ceil_mode)
    g["out_hw"] = tuple(pool_output_size_ref(size, k, s, p, d, ceil_mode) for size, k, s, p, d in
                        zip(sizes, (kh, kw), (sh, sw), (ph, pw), (dh, dw)))
    if one_d:
        g["kernel_size"] = spell_one(draw, kw)
        g["stride"] = spell_one(draw, sw) if stride_given else None
        g["padding"] = spell_one(draw, pw)
        g["dilation"] = spell_one(draw, dw)
    else:
        g["kernel_size"] = spell_pair(draw, kh, kw)
        g["stride"] = spell_pair(draw, sh, sw) if stride_given else None
        g["padding"] = spell_pair(draw, ph, pw)
        g["dilation"] = spell_pair(draw, dh, dw)
    return g


def flag(draw):
    return draw(st.sampled_from([True, False, True, False, np.bool_(True), np.bool_(False)]))


def x_shape(g, one_d):
    return (g["n"], g["c"], g["w"]) if one_d else (g["n"], g["c"], g["h"], g["w"])


def out_shape(n, c, out_hw, one_d):
    return (n, c, out_hw[1]) if one_d else (n, c, *out_hw)


# --------------------------------------------------------------------------- #
# valid cases, one strategy per operation
# --------------------------------------------------------------------------- #


@st.composite
def case_conv(draw, one_d=False, backward=False):
    rng = np.random.default_rng(draw(seeds))
    g = draw(conv_geometry(one_d))
    kwargs = {
        "x": make_array(rng, x_shape(g, one_d), draw(real_dtypes)),
        "w": make_array(rng, (g["k"], g["c"] // g["groups_value"], g["kw"]) if one_d
                        else (g["k"], g["c"] // g["groups_value"], g["kh"], g["kw"]),
                        draw(real_dtypes)),
        "stride": g["stride"], "padding": g["padding"], "dilation": g["dilation"],
        "groups": g["groups"], "flip": flag(draw),
        "algorithm": draw(st.sampled_from(["auto", "direct", "im2col", "Direct", "IM2COL"])),
    }
    if backward:
        kwargs["gy"] = make_array(rng, out_shape(g["n"], g["k"], g["out_hw"], one_d),
                                  draw(real_dtypes))
        kwargs["needs_input_grad"] = flag(draw)
    else:
        kwargs["b"] = (make_array(rng, (g["k"],), draw(real_dtypes)) if draw(st.booleans())
                       else None)
    return kwargs


@st.composite
def case_transpose(draw, one_d=False, backward=False):
    rng = np.random.default_rng(draw(seeds))
    g = draw(transpose_geometry(one_d))
    kwargs = {
        "x": make_array(rng, x_shape(g, one_d), draw(real_dtypes)),
        "w": make_array(rng, (g["c"], g["kg"], g["kw"]) if one_d
                        else (g["c"], g["kg"], g["kh"], g["kw"]), draw(real_dtypes)),
        "stride": g["stride"], "padding": g["padding"], "dilation": g["dilation"],
        "groups": g["groups"],
        "algorithm": draw(st.sampled_from(["auto", "direct", "im2col", "Im2col"])),
        **g["extra"],
    }
    if backward:
        kwargs["gy"] = make_array(rng, out_shape(g["n"], g["k"], g["out_hw"], one_d),
                                  draw(real_dtypes))
        kwargs["needs_input_grad"] = flag(draw)
    else:
        kwargs["b"] = (make_array(rng, (g["k"],), draw(real_dtypes)) if draw(st.booleans())
                       else None)
    return kwargs


def spell_shape(draw, shape):
    return draw(st.sampled_from([tuple(shape), list(shape), tuple(np.int64(v) for v in shape)]))


@st.composite
def case_max_pool(draw, one_d=False):
    rng = np.random.default_rng(draw(seeds))
    g = draw(pool_geometry(one_d))
    # ceil_mode is part of the geometry: it decides which sizes fit
    return {"x": make_array(rng, x_shape(g, one_d), draw(real_dtypes)),
            "kernel_size": g["kernel_size"], "stride": g["stride"], "padding": g["padding"],
            "dilation": g["dilation"], "ceil_mode": g["ceil_mode"],
            "return_indices": flag(draw)}


@st.composite
def case_max_pool_backward(draw, one_d=False):
    rng = np.random.default_rng(draw(seeds))
    n, c = draw(st.sampled_from([1, 1, 2, 0])), draw(st.sampled_from([1, 2, 3, 0]))
    h = 1 if one_d else draw(st.integers(1, 6))
    w = draw(st.integers(1, 6))
    oh = 1 if one_d else draw(st.integers(1, 4))
    ow = draw(st.integers(1, 4))
    gy_shape = out_shape(n, c, (oh, ow), one_d)
    idx = rng.integers(0, h * w, gy_shape).astype(
        draw(st.sampled_from([np.int64, np.int64, np.int32, np.uint16, np.int16])))
    shape = (n, c, w) if one_d else (n, c, h, w)
    return {"gy": make_array(rng, gy_shape, draw(real_dtypes)), "idx": idx,
            "input_shape": spell_shape(draw, shape)}


@st.composite
def case_max_unpool(draw):
    rng = np.random.default_rng(draw(seeds))
    n, c = draw(st.sampled_from([1, 1, 2, 0])), draw(st.sampled_from([1, 2, 3, 0]))
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    stride_given = draw(st.booleans())
    sh, sw = (draw(st.integers(1, 4)), draw(st.integers(1, 4))) if stride_given else (kh, kw)
    pads = []
    for size, k, s in ((h, kh, sh), (w, kw, sw)):
        p = draw(st.integers(0, 2))
        pads.append(p if (size - 1) * s - 2 * p + k >= 1 else 0)
    default = max_unpool2d_output_hw_ref((h, w), (kh, kw), (sh, sw), tuple(pads))
    kwargs = {"kernel_size": spell_pair(draw, kh, kw),
              "stride": spell_pair(draw, sh, sw) if stride_given else None,
              "padding": spell_pair(draw, *pads)}
    out_hw = default
    if draw(st.booleans()):
        out_hw = tuple(max(1, d + draw(st.integers(-(s - 1), s - 1)))
                       for d, s in zip(default, (sh, sw)))
        out_hw = tuple(v if d - s < v < d + s else d for v, d, s in zip(out_hw, default, (sh, sw)))
        kwargs["output_size"] = draw(st.sampled_from([out_hw, list(out_hw), (n, c, *out_hw)]))
    plane = out_hw[0] * out_hw[1]
    idx = np.empty((n, c, h, w), dtype=np.int64)
    for i in range(n):
        for j in range(c):
            idx[i, j] = rng.choice(plane, size=h * w, replace=plane < h * w).reshape(h, w)
    kwargs["y"] = make_array(rng, (n, c, h, w), draw(real_dtypes))
    kwargs["idx"] = idx.astype(draw(st.sampled_from([np.int64, np.int64, np.int32, np.uint16])))
    return kwargs


@st.composite
def case_avg_pool(draw, one_d=False, backward=False):
    rng = np.random.default_rng(draw(seeds))
    g = draw(pool_geometry(one_d, dilation=False))
    kwargs = {"kernel_size": g["kernel_size"], "stride": g["stride"], "padding": g["padding"],
              "ceil_mode": g["ceil_mode"], "count_include_pad": flag(draw)}
    if not one_d:
        kwargs["divisor_override"] = draw(st.sampled_from([None, None, 1, 2, 3, 5]))
    if backward:
        kwargs["gy"] = make_array(rng, out_shape(g["n"], g["c"], g["out_hw"], one_d),
                                  draw(real_dtypes))
        kwargs["input_shape"] = spell_shape(draw, x_shape(g, one_d))
    else:
        kwargs["x"] = make_array(rng, x_shape(g, one_d), draw(real_dtypes))
    return kwargs


P_VALUES = [1, 2, 3, 0.5, 1.5, 2.0, 4, np.float32(2.0), np.int64(3)]


@st.composite
def case_lp_pool(draw, backward=False):
    rng = np.random.default_rng(draw(seeds))
    g = draw(pool_geometry(padding=False, dilation=False))
    p = draw(st.sampled_from(P_VALUES))
    x = make_array(rng, x_shape(g, False), draw(real_dtypes))
    kwargs = {"x": x, "p": p, "kernel_size": g["kernel_size"], "stride": g["stride"],
              "ceil_mode": g["ceil_mode"]}
    if backward:
        y = lp_pool2d_ref(x, float(p), g["kernel_hw"], g["stride_hw"], g["ceil_mode"])
        kwargs["y"] = y.astype(draw(st.sampled_from([np.float32, np.float64])))
        kwargs["gy"] = make_array(rng, y.shape, draw(real_dtypes))
    return kwargs


@st.composite
def case_adaptive(draw, backward=False, global_=False):
    rng = np.random.default_rng(draw(seeds))
    n, c = draw(st.sampled_from([1, 1, 2, 0])), draw(st.sampled_from([1, 2, 3, 0]))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    if global_:
        oh = ow = 1
        size = None
    elif draw(st.booleans()):
        oh = ow = draw(st.integers(1, 6))
        size = draw(st.sampled_from([oh, oh, np.int64(oh), (oh, oh)]))
    else:
        a, b = draw(st.integers(1, 6)), draw(st.integers(1, 6))
        entry_a = draw(st.sampled_from([a, a, None]))
        entry_b = draw(st.sampled_from([b, b, None]))
        oh, ow = (h if entry_a is None else a), (w if entry_b is None else b)
        size = draw(st.sampled_from([(entry_a, entry_b), [entry_a, entry_b]]))
    if backward:
        kwargs = {"gy": make_array(rng, (n, c, oh, ow), draw(real_dtypes)),
                  "input_shape": spell_shape(draw, (n, c, h, w))}
    else:
        kwargs = {"x": make_array(rng, (n, c, h, w), draw(real_dtypes))}
        if not global_:
            kwargs["output_size"] = size
    return kwargs


# --------------------------------------------------------------------------- #
# references with fastconv's argument conventions
# --------------------------------------------------------------------------- #


def _one(v):
    """A 1-D int parameter (int or 1-sequence) as an int."""
    if isinstance(v, (tuple, list, np.ndarray)):
        (v,) = v
    return int(v)


def _pad1d_as_2d(p):
    if isinstance(p, str):
        return p
    if isinstance(p, (tuple, list, np.ndarray)):
        left, right = p
        return ((0, 0), (int(left), int(right)))
    return ((0, 0), (int(p), int(p)))


def _out_size_1d(size):
    if size is None:
        return None
    if isinstance(size, (tuple, list, np.ndarray)):
        size = size[-1]
    return (1, int(size))


def _as2d(a):
    return np.asarray(a)[:, :, None, :]


def _as1d(a):
    return None if a is None else a[:, :, 0, :]


def _stride_pair(v):
    """A 1-D pooling stride as the 2-D reference's; None or () is the kernel size."""
    return None if v is None or (isinstance(v, (tuple, list)) and not v) else (1, _one(v))


def ref_conv2d(k):
    return conv2d_ref(k["x"], k["w"], k["b"], k["stride"], k["padding"], k["dilation"],
                      int(k["groups"]), flip=bool(k["flip"]))


def ref_conv2d_backward(k):
    gx, gw, gb = conv2d_backward_ref(k["gy"], k["x"], k["w"], k["stride"], k["padding"],
                                     k["dilation"], int(k["groups"]), flip=bool(k["flip"]))
    return (gx if k["needs_input_grad"] else None), gw, gb


def ref_conv1d(k):
    y = conv2d_ref(_as2d(k["x"]), _as2d(k["w"]), k["b"], (1, _one(k["stride"])),
                   _pad1d_as_2d(k["padding"]), (1, _one(k["dilation"])), int(k["groups"]),
                   flip=bool(k["flip"]))
    return _as1d(y)


def ref_conv1d_backward(k):
    gx, gw, gb = conv2d_backward_ref(_as2d(k["gy"]), _as2d(k["x"]), _as2d(k["w"]),
                                     (1, _one(k["stride"])), _pad1d_as_2d(k["padding"]),
                                     (1, _one(k["dilation"])), int(k["groups"]),
                                     flip=bool(k["flip"]))
    return (_as1d(gx) if k["needs_input_grad"] else None), _as1d(gw), gb


def ref_conv_transpose2d(k):
    return conv_transpose2d_ref(k["x"], k["w"], k["b"], k["stride"], k["padding"],
                                k.get("output_padding", 0), k["dilation"], int(k["groups"]),
                                output_size=k.get("output_size"))


def ref_conv_transpose2d_backward(k):
    gx, gw, gb = conv_transpose2d_backward_ref(
        k["gy"], k["x"], k["w"], k["stride"], k["padding"], k.get("output_padding", 0),
        k["dilation"], int(k["groups"]), output_size=k.get("output_size"))
    return (gx if k["needs_input_grad"] else None), gw, gb


def ref_conv_transpose1d(k):
    y = conv_transpose2d_ref(_as2d(k["x"]), _as2d(k["w"]), k["b"], (1, _one(k["stride"])),
                             _pad1d_as_2d(k["padding"]), (0, _one(k.get("output_padding", 0))),
                             (1, _one(k["dilation"])), int(k["groups"]),
                             output_size=_out_size_1d(k.get("output_size")))
    return _as1d(y)


def ref_conv_transpose1d_backward(k):
    gx, gw, gb = conv_transpose2d_backward_ref(
        _as2d(k["gy"]), _as2d(k["x"]), _as2d(k["w"]), (1, _one(k["stride"])),
        _pad1d_as_2d(k["padding"]), (0, _one(k.get("output_padding", 0))),
        (1, _one(k["dilation"])), int(k["groups"]), output_size=_out_size_1d(k.get("output_size")))
    return (_as1d(gx) if k["needs_input_grad"] else None), _as1d(gw), gb


def ref_max_pool2d(k):
    y, idx = max_pool2d_ref(k["x"], k["kernel_size"], k["stride"], k["padding"], k["dilation"],
                            bool(k["ceil_mode"]))
    return (y, idx) if k["return_indices"] else y


def ref_max_pool1d(k):
    y, idx = max_pool2d_ref(_as2d(k["x"]), (1, _one(k["kernel_size"])),
                            _stride_pair(k["stride"]), (0, _one(k["padding"])),
                            (1, _one(k["dilation"])), bool(k["ceil_mode"]))
    return (_as1d(y), _as1d(idx)) if k["return_indices"] else _as1d(y)


def ref_max_pool2d_backward(k):
    return max_pool2d_backward_ref(k["gy"], k["idx"], tuple(int(v) for v in k["input_shape"]))


def ref_max_pool1d_backward(k):
    n, c, length = (int(v) for v in k["input_shape"])
    return _as1d(max_pool2d_backward_ref(_as2d(k["gy"]), _as2d(k["idx"]), (n, c, 1, length)))


def ref_max_unpool2d(k):
    y = np.asarray(k["y"])
    size = k.get("output_size")
    out_hw = (max_unpool2d_output_hw_ref(y.shape[2:], k["kernel_size"], k["stride"], k["padding"])
              if size is None else tuple(int(v) for v in tuple(size)[-2:]))
    return max_unpool2d_ref(y, k["idx"], out_hw)


def ref_avg_pool2d(k):
    return avg_pool2d_ref(k["x"], k["kernel_size"], k["stride"], k["padding"],
                          bool(k["ceil_mode"]), bool(k["count_include_pad"]),
                          k.get("divisor_override"))


def ref_avg_pool2d_backward(k):
    return avg_pool2d_backward_ref(k["gy"], tuple(int(v) for v in k["input_shape"]),
                                   k["kernel_size"], k["stride"], k["padding"],
                                   bool(k["ceil_mode"]), bool(k["count_include_pad"]),
                                   k.get("divisor_override"))


def ref_avg_pool1d(k):
    return _as1d(avg_pool2d_ref(_as2d(k["x"]), (1, _one(k["kernel_size"])),
                                _stride_pair(k["stride"]), (0, _one(k["padding"])),
                                bool(k["ceil_mode"]), bool(k["count_include_pad"])))


def ref_avg_pool1d_backward(k):
    n, c, length = (int(v) for v in k["input_shape"])
    return _as1d(avg_pool2d_backward_ref(_as2d(k["gy"]), (n, c, 1, length),
                                         (1, _one(k["kernel_size"])), _stride_pair(k["stride"]),
                                         (0, _one(k["padding"])), bool(k["ceil_mode"]),
                                         bool(k["count_include_pad"])))


def ref_lp_pool2d(k):
    return lp_pool2d_ref(k["x"], float(k["p"]), k["kernel_size"], k["stride"], bool(k["ceil_mode"]))


def ref_lp_pool2d_backward(k):
    return lp_pool2d_backward_ref(k["gy"], k["x"], float(k["p"]), k["kernel_size"], k["stride"],
                                  bool(k["ceil_mode"]), y=k["y"])


def ref_adaptive(k):
    return adaptive_avg_pool2d_ref(k["x"], k["output_size"])


def ref_adaptive_backward(k):
    return adaptive_avg_pool2d_backward_ref(k["gy"], tuple(int(v) for v in k["input_shape"]))


def ref_global(k):
    return adaptive_avg_pool2d_ref(k["x"], 1)


# --------------------------------------------------------------------------- #
# the table: every public operation, its strategy, reference and arguments
# --------------------------------------------------------------------------- #


@dataclass
class Spec:
    cases: st.SearchStrategy
    ref: object
    params: dict  # argument name -> kind (what spoiling it means)
    operands: tuple  # the arrays that decide the result dtype


CONV = {"x": "float", "w": "float", "stride": "pair:1", "padding": "conv_padding",
        "dilation": "pair:1", "groups": "groups", "algorithm": "algorithm", "flip": "flag"}
CONV1D = {**CONV, "stride": "one:1", "padding": "conv1d_padding", "dilation": "one:1"}
TCONV = {"x": "float", "w": "float", "stride": "pair:1", "padding": "tconv_padding",
         "dilation": "pair:1", "groups": "groups", "algorithm": "algorithm",
         "output_padding": "pair:0", "output_size": "tconv_output_size"}
TCONV1D = {**TCONV, "stride": "one:1", "padding": "tconv1d_padding", "dilation": "one:1",
           "output_padding": "one:0", "output_size": "tconv1d_output_size"}
BACKWARD = {"gy": "float", "needs_input_grad": "flag"}
MAXPOOL = {"x": "float", "kernel_size": "pair:1", "stride": "pair:1?", "padding": "pair:0",
           "dilation": "pair:1", "ceil_mode": "flag", "return_indices": "flag"}
MAXPOOL1D = {"x": "float", "kernel_size": "one:1", "stride": "one:1?", "padding": "one:0",
             "dilation": "one:1", "ceil_mode": "flag", "return_indices": "flag"}
AVGPOOL = {"kernel_size": "pair:1", "stride": "pair:1?", "padding": "pair:0", "ceil_mode": "flag",
           "count_include_pad": "flag", "divisor_override": "divisor"}
AVGPOOL1D = {"kernel_size": "one:1", "stride": "one:1?", "padding": "one:0", "ceil_mode": "flag",
             "count_include_pad": "flag"}
LPPOOL = {"x": "float", "p": "p", "kernel_size": "pair:1", "stride": "pair:1?", "ceil_mode": "flag"}

SPECS = {
    "conv2d": Spec(case_conv(), ref_conv2d, {**CONV, "b": "bias"}, ("x", "w")),
    "conv2d_backward": Spec(case_conv(backward=True), ref_conv2d_backward, {**CONV, **BACKWARD},
                            ("x", "w", "gy")),
    "conv_transpose2d": Spec(case_transpose(), ref_conv_transpose2d, {**TCONV, "b": "bias"},
                             ("x", "w")),
    "conv_transpose2d_backward": Spec(case_transpose(backward=True), ref_conv_transpose2d_backward,
                                      {**TCONV, **BACKWARD}, ("x", "w", "gy")),
    "max_pool2d": Spec(case_max_pool(), ref_max_pool2d, MAXPOOL, ("x",)),
    "max_pool2d_backward": Spec(case_max_pool_backward(), ref_max_pool2d_backward,
                                {"gy": "float", "idx": "index", "input_shape": "shape4"}, ("gy",)),
    "max_unpool2d": Spec(case_max_unpool(), ref_max_unpool2d,
                         {"y": "float", "idx": "index", "kernel_size": "pair:1",
                          "stride": "unpool_stride", "padding": "pair:0",
                          "output_size": "unpool_output_size"}, ("y",)),
    "avg_pool2d": Spec(case_avg_pool(), ref_avg_pool2d, {"x": "float", **AVGPOOL}, ("x",)),
    "avg_pool2d_backward": Spec(case_avg_pool(backward=True), ref_avg_pool2d_backward,
                                {"gy": "float", "input_shape": "shape4", **AVGPOOL}, ("gy",)),
    "lp_pool2d": Spec(case_lp_pool(), ref_lp_pool2d, LPPOOL, ("x",)),
    "lp_pool2d_backward": Spec(case_lp_pool(backward=True), ref_lp_pool2d_backward,
                               {**LPPOOL, "gy": "float", "y": "float"}, ("gy", "x", "y")),
    "adaptive_avg_pool2d": Spec(case_adaptive(), ref_adaptive,
                                {"x": "float", "output_size": "adaptive_output_size"}, ("x",)),
    "adaptive_avg_pool2d_backward": Spec(case_adaptive(backward=True), ref_adaptive_backward,
                                         {"gy": "float", "input_shape": "shape4"}, ("gy",)),
    "global_avg_pool2d": Spec(case_adaptive(global_=True), ref_global, {"x": "float"}, ("x",)),
    "global_avg_pool2d_backward": Spec(case_adaptive(backward=True, global_=True),
                                       ref_adaptive_backward,
                                       {"gy": "float", "input_shape": "shape4"}, ("gy",)),
    "conv1d": Spec(case_conv(one_d=True), ref_conv1d, {**CONV1D, "b": "bias"}, ("x", "w")),
    "conv1d_backward": Spec(case_conv(one_d=True, backward=True), ref_conv1d_backward,
                            {**CONV1D, **BACKWARD}, ("x", "w", "gy")),
    "conv_transpose1d": Spec(case_transpose(one_d=True), ref_conv_transpose1d,
                             {**TCONV1D, "b": "bias"}, ("x", "w")),
    "conv_transpose1d_backward": Spec(case_transpose(one_d=True, backward=True),
                                      ref_conv_transpose1d_backward, {**TCONV1D, **BACKWARD},
                                      ("x", "w", "gy")),
    "max_pool1d": Spec(case_max_pool(one_d=True), ref_max_pool1d, MAXPOOL1D, ("x",)),
    "max_pool1d_backward": Spec(case_max_pool_backward(one_d=True), ref_max_pool1d_backward,
                                {"gy": "float", "idx": "index", "input_shape": "shape3"}, ("gy",)),
    "avg_pool1d": Spec(case_avg_pool(one_d=True), ref_avg_pool1d, {"x": "float", **AVGPOOL1D},
                       ("x",)),
    "avg_pool1d_backward": Spec(case_avg_pool(one_d=True, backward=True), ref_avg_pool1d_backward,
                                {"gy": "float", "input_shape": "shape3", **AVGPOOL1D}, ("gy",)),
}
OPS = sorted(SPECS)


def test_every_public_operation_is_fuzzed():
    assert set(SPECS) == set(F.__all__) - {"ALGORITHMS"}


# --------------------------------------------------------------------------- #
# spoiling arguments
# --------------------------------------------------------------------------- #

# Each spoiled value comes with what the call must then do:
#   "same"    -- another spelling of the same value: the call must still succeed and match;
#   "invalid" -- wrong whatever the other arguments are: it must raise;
#   "context" -- wrong with the other arguments as they are (a range, a shape): it must
#                raise unless another argument was spoiled too;
#   "unknown" -- maybe valid, maybe not: an allowed error, or a consistent result.
INT_BAD_TYPES = [1.5, 2.0, np.float64(2.0), np.float32(1.0), "2", b"2", True, False,
                 np.bool_(True), 1 + 0j, object(), {}, frozenset()]
HUGE = [10**12, 2**40 + 3, 2**62, 2**63 - 1, 2**63, 2**64, 10**30]


def _int_of(value):
    if isinstance(value, (tuple, list, np.ndarray)):
        return [int(v) for v in value]
    return int(value)


def spoil_pair(value, minimum, allow_none, one_d=False, empty_ok=None):
    """Spoilings of an int-or-pair argument (kernel_size, stride, dilation, ...);
    ``empty_ok``: an empty tuple means what None does (a pooling stride; by default
    where None is allowed)."""
    empty_ok = allow_none if empty_ok is None else empty_ok
    same, invalid, context, unknown = [], list(INT_BAD_TYPES), [], list(HUGE)
    if value is None:
        same.append(None)
        a = b = 2
    elif one_d:
        a = b = _one(value)
        same += [a, np.int64(a), np.int32(a), (a,), [a]]
    else:
        raw = _int_of(value)
        a, b = (raw, raw) if isinstance(raw, int) else raw
        same += [(a, b), [a, b], (np.int64(a), np.int64(b)), np.array([a, b])]
        if a == b:
            same += [a, np.int64(a)]
    if one_d:
        invalid += [(a, a), (float(a),), (str(a),), (True,), (minimum - 1,), [None]]
        unknown += [(h,) for h in HUGE[:3]]
    else:
        invalid += [(a, b, 1), (float(a), b), (str(a), b), (a, True), (a, None),
                    (minimum - 1, b), (a, -5), np.array([float(a), float(b)]), (minimum - 1,)]
        unknown += [(HUGE[0], b), (a, HUGE[4]), (HUGE[3], HUGE[3])]
        # a one-element tuple stands for both axes, as in PyTorch
        (same if a == b and value is not None else unknown).extend([(a,), [a]])
    # an empty tuple is a pooling stride's "the kernel size", as None; elsewhere wrong
    if not empty_ok:
        invalid.append([])
    elif value is None:
        same += [(), []]
    else:
        unknown.append(())
    invalid += [minimum - 1, -1, -(2**63), -(10**30)]
    (unknown if allow_none else invalid).append(None)
    unknown += [v for v in range(minimum, 6) if v not in (a, b)]
    return same, invalid, context, unknown


def spoil_int(value, minimum, allow_none, negatives_ok=False):
    """Spoilings of a plain int argument (groups, divisor_override); ``negatives_ok``: any
    non-zero int is valid (divisor_override, as PyTorch)."""
    if value is None:
        same = [None]
        unknown = [1, 2, 3] + HUGE
    else:
        v = int(value)
        same = [v, np.int64(v), np.int32(v)]
        unknown = [u for u in range(minimum, 5) if u != v] + HUGE
    invalid = INT_BAD_TYPES + [minimum - 1, (2,), [2]]
    (unknown if negatives_ok else invalid).extend([-1, -3, -(2**64)])
    (unknown if allow_none else invalid).append(None)
    return same, invalid, [], unknown


def spoil_conv_padding(value, words_ok, one_d):
    """Spoilings of a convolution's padding."""
    same, context = [], []
    if isinstance(value, str):
        same += [value.upper(), value.lower(), value.title()]
    elif one_d:
        raw = _int_of(value)
        left, right = (raw, raw) if isinstance(raw, int) else raw
        same += [(left, right), [left, right], (np.int64(left), np.int64(right))]
        if left == right:
            same += [left, np.int64(left)]
    else:
        (pt, pb), (pl, pr) = normalize_padding_ref(value, (1, 1), (1, 1))
        same += [((pt, pb), (pl, pr)), [[pt, pb], [pl, pr]],
                 ((np.int64(pt), pb), (pl, np.int64(pr)))]
        if pt == pb and pl == pr:
            same += [(pt, pl), [pt, pl]]
            if pt == pl:
                same += [pt, np.int64(pt)]
    invalid = ["bogus", "", "same ", "samee", "valid\x00", b"same", None, -1, 1.5, True,
               (1, -1), (-1, 0), (1, 2, 3), [], object(), (1.0, 0), ("1", 0)]
    unknown = list(HUGE) + [0, 1, 2, 5]
    if one_d:
        invalid += [((0, 0), (1, 1)), [None, 1]]
        unknown += [(1,), (HUGE[0], 0)]
    else:
        invalid += [((0, 1), (2,)), ((0, -1), (0, 0)), ((1.0, 0), (0, 0)), (("a", 0), (0, 0)),
                    ((0, 0), (0, 0), (0, 0))]
        unknown += [(HUGE[0], 0), ((0, HUGE[4]), (0, 0)), ((1, 0), (0, 2))]
    if words_ok:
        unknown += ["valid", "same", "full", "Same"]
    else:
        invalid += ["valid", "same", "full"]
    return same, invalid, context, unknown


def spoil_flag(value):
    return ([bool(value), np.bool_(value), int(bool(value))], [], [],
            ["yes", "", None, 2, [], [0], 0.5])


def spoil_algorithm(value):
    return ([value.upper(), value.lower(), "auto", "direct", "im2col", "Direct"],
            ["fft", "", "direct ", None, 1, b"direct", ["direct"], True], [],
            ["winograd", "Winograd"])


def spoil_p(value):
    p = float(value)
    same = [p, np.float64(p), np.float32(p), np.float16(p)]
    if p == int(p):
        same += [int(p), np.int64(int(p))]
    invalid = [math.nan, math.inf, -math.inf, 0, 0.0, -1, -0.5, "2", None, True, False, 1 + 0j,
               [2.0], np.nan, -(10**400)]
    unknown = [1e300, 1e-300, 10**400, 2**64, 200.0, 1e-3, np.array(2.0)]
    return same, invalid, [], unknown


def spoil_shape(value, ndim):
    shape = tuple(int(v) for v in value)
    same = [shape, list(shape), np.array(shape), tuple(np.int64(v) for v in shape)]
    invalid = [shape[:-1], shape + (1,), (-1,) + shape[1:], shape[:-1] + (-1,),
               shape[:-1] + (float(shape[-1]),), str(shape), None, 5, shape[:-1] + (None,),
               shape[:-1] + ("3",), shape[:-1] + (True,)]
    context = [(shape[0] + 1,) + shape[1:], shape[:1] + (shape[1] + 1,) + shape[2:]]
    unknown = [shape[:-1] + (shape[-1] + 1,), shape[:-1] + (0,), shape[:-1] + (HUGE[0],),
               shape[:2] + (HUGE[3],) * (ndim - 2), shape[:-1] + (2**63,)]
    return same, invalid, context, unknown


def spoil_tconv_output_size(value, one_d):
    if value is None:
        return [None], ["ab", 1.5, ()], [], [5, (5, 5), HUGE[0]]
    if one_d:
        length = int(value[-1]) if isinstance(value, (tuple, list)) else int(value)
        same = [length, (length,), [length], np.int64(length), (7, 7, length)]
        # (C, L) is an unbatched input's output_size in PyTorch; the input here is batched
        invalid = ["ab", "1", 1.5, (), (1.5,), (0,), (-1,), 0, True, (3, length)]
        context = [length + 50, (length + 50,)]
        unknown = [None, HUGE[0], 2**63, (HUGE[1],), length + 1, max(1, length - 1)]
        return same, invalid, context, unknown
    oh, ow = (int(v) for v in tuple(value)[-2:])
    same = [(oh, ow), [oh, ow], (9, 9, oh, ow), (np.int64(oh), np.int64(ow)), np.array([oh, ow])]
    invalid = ["ab", 5, (oh, ow, 1), (oh,), [], (float(oh), ow), (oh, "1"), (0, ow), (oh, -1),
               (True, ow), (oh, None)]
    context = [(oh + 50, ow), (oh, ow + 50)]
    unknown = [None, (HUGE[0], ow), (oh, 2**63), (oh + 1, ow), (oh, max(1, ow - 1))]
    return same, invalid, context, unknown


def spoil_unpool_output_size(value):
    invalid = ["ab", 5, (1, 2, 3), (0, 1), (1, -1), (1.5, 2), (True, 2), ["1", 2], ()]
    if value is None:
        return [None], invalid, [], [(HUGE[0], HUGE[0]), (2, 2), (50, 50)]
    oh, ow = (int(v) for v in tuple(value)[-2:])
    same = [(oh, ow), [oh, ow], (9, 9, oh, ow), np.array([oh, ow])]
    context = [(oh + 60, ow), (oh, ow + 60)]
    unknown = [None, (HUGE[0], ow), (oh, 2**64), (oh + 1, ow)]
    return same, invalid, context, unknown


def spoil_adaptive_output_size(value):
    if isinstance(value, (tuple, list)):
        same = [tuple(value), list(value)]
    else:
        v = int(value)
        same = [v, np.int64(v), (v, v), [v, v]]
    invalid = [0, -1, 1.5, "2", True, None, (1, 2, 3), (0, 1), (1.5, 1), [], (1,), (1, "2"),
               (1, -3)]
    unknown = list(HUGE) + [(HUGE[0], 1), (None, None), (None, 2), 1, 3, 6]
    return same, invalid, [], unknown


REAL_CASTS = [np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64,
              np.uint8, np.uint16, np.uint32, np.uint64, np.bool_]
INDEX_CASTS = [np.int16, np.int32, np.int64, np.uint16, np.uint32, np.uint64]


def _non_contiguous(a):
    """Same values, not C-contiguous (every other element of a doubled array)."""
    if a.ndim == 0:
        return a
    return np.repeat(a, 2, axis=-1)[..., ::2]


def _read_only(a):
    a = a.copy()
    a.setflags(write=False)
    return a


def _byte_swapped(a):
    return a.astype(a.dtype.newbyteorder())


def spoil_array(draw, value, kind):
    """Spoilings of an array argument: returns (new value, outcome, description)."""
    if value is None:  # an absent bias
        options = [("same", lambda: None, "None"),
                   ("unknown", lambda: np.ones(1), "bias of one element"),
                   ("invalid", lambda: "abc", "a string")]
        outcome, make, what = draw(st.sampled_from(options))
        return make(), outcome, what
    a = np.asarray(value)
    long_double_invalid = np.dtype(np.longdouble).itemsize > 8
    choices = [
        ("same", lambda: _non_contiguous(a), "non-contiguous"),
        ("same", lambda: _read_only(a), "read-only"),
        ("same", lambda: np.asfortranarray(a), "Fortran order"),
        ("invalid", lambda: a.astype(np.complex64), "complex64"),
        ("invalid", lambda: a.astype(np.complex128), "complex128"),
        ("invalid", lambda: a.astype(object), "object dtype"),
        ("invalid", lambda: a.astype(str), "str dtype"),
        ("invalid", lambda: np.zeros(a.shape, dtype="datetime64[s]"), "datetime64"),
        ("invalid", lambda: np.zeros(a.shape, dtype="timedelta64[s]"), "timedelta64"),
        ("invalid", lambda: "abc", "a string"),
        ("invalid", lambda: {"a": 1}, "a dict"),
        ("invalid", lambda: object(), "an object"),
        ("invalid", lambda: [[1.0, 2.0], [3.0]], "a ragged list"),
        ("invalid", lambda: a[None], "one more dimension"),
        ("invalid", lambda: a.reshape(-1), "flattened"),
        ("unknown", lambda: _resized(draw, a, 0), "a zero-size axis"),
        ("unknown", lambda: _resized(draw, a, 1), "an axis one longer"),
    ]
    if not (a.dtype.kind == "f" and a.dtype.itemsize == 8):
        # (byte-swapped float64 has a test of its own, test_byte_swapped_float64_keeps_float64)
        choices.append(("same", lambda: _byte_swapped(a), "byte-swapped"))
    if a.size:  # nested lists lose the shape of an empty array
        choices.append(("same", lambda: a.tolist(), "as nested lists"))
    if long_double_invalid:
        choices.append(("invalid", lambda: a.astype(np.longdouble), "longdouble"))
    if kind == "bias":
        choices += [("same", lambda: None, "None"), ("unknown", lambda: np.float64(1.0), "scalar")]
        choices = [c for c in choices if c[2] not in ("flattened",)]
    else:
        choices.append(("invalid", lambda: None, "None"))
        choices.append(("invalid", lambda: np.float64(1.0), "a scalar"))
    if kind == "index":
        choices += [("same", lambda: a.astype(draw(st.sampled_from(INDEX_CASTS))), "int cast")]
        choices += [("invalid", lambda: a.astype(np.float64), "float64 indices"),
                    ("invalid", lambda: a.astype(np.float32), "float32 indices"),
                    ("invalid", lambda: a.astype(bool), "bool indices")]
        if a.size:
            choices += [("invalid", lambda: a.astype(np.int64) + 10**9, "indices past the plane"),
                        ("invalid", lambda: a.astype(np.int64) - 10**9, "negative indices"),
                        ("invalid", lambda: np.full(a.shape, 2**63, np.uint64),
                         "uint64 indices of 2**63")]
    else:
        choices.append(("same", lambda: a.astype(draw(st.sampled_from(REAL_CASTS))),
                        "real cast"))
    outcome, make, what = draw(st.sampled_from(choices))
    return make(), outcome, what


def _resized(draw, a, delta):
    """An array like ``a`` with one axis set to 0 (delta 0) or made one longer."""
    if a.ndim == 0:
        return a
    shape = list(a.shape)
    axis = draw(st.integers(0, a.ndim - 1))
    shape[axis] = 0 if delta == 0 else shape[axis] + 1
    return np.ones(shape, dtype=a.dtype)


def spoilings(kind, value):
    """(same, invalid, context, unknown) values for a non-array argument."""
    if kind == "unpool_stride":  # None is the kernel size, () is wrong (as PyTorch)
        return spoil_pair(value, 1, True, empty_ok=False)
    if kind.startswith("pair:") or kind.startswith("one:"):
        minimum = int(kind.split(":")[1].rstrip("?"))
        return spoil_pair(value, minimum, kind.endswith("?"), one_d=kind.startswith("one:"))
    if kind == "groups":
        return spoil_int(value, 1, False)
    if kind == "divisor":
        return spoil_int(value, 1, True, negatives_ok=True)
    if kind == "conv_padding":
        return spoil_conv_padding(value, True, False)
    if kind == "conv1d_padding":
        return spoil_conv_padding(value, True, True)
    if kind == "tconv_padding":
        return spoil_conv_padding(value, False, False)
    if kind == "tconv1d_padding":
        return spoil_conv_padding(value, False, True)
    if kind == "flag":
        return spoil_flag(value)
    if kind == "algorithm":
        return spoil_algorithm(value)
    if kind == "p":
        return spoil_p(value)
    if kind in ("shape4", "shape3"):
        return spoil_shape(value, int(kind[-1]))
    if kind == "tconv_output_size":
        return spoil_tconv_output_size(value, False)
    if kind == "tconv1d_output_size":
        return spoil_tconv_output_size(value, True)
    if kind == "unpool_output_size":
        return spoil_unpool_output_size(value)
    if kind == "adaptive_output_size":
        return spoil_adaptive_output_size(value)
    raise AssertionError(kind)


def spoil(draw, kind, value):
    if kind in ("float", "bias", "index"):
        return spoil_array(draw, value, kind)
    groups = dict(zip(("same", "invalid", "context", "unknown"), spoilings(kind, value)))
    outcome = draw(st.sampled_from([o for o in ("same", "invalid", "invalid", "context",
                                                "unknown") if groups[o]]))
    new = draw(st.sampled_from(groups[outcome]))
    return new, outcome, repr(new)


def combined_outcome(outcomes):
    if "invalid" in outcomes:
        return "invalid"
    if "unknown" in outcomes:
        return "unknown"
    if "context" in outcomes:
        return "invalid" if outcomes.count("context") == 1 else "unknown"
    return "same"


# --------------------------------------------------------------------------- #
# running one call and judging its outcome
# --------------------------------------------------------------------------- #


def describe(kwargs):
    def short(v):
        if isinstance(v, np.ndarray):
            return f"ndarray{v.shape}:{v.dtype}{'' if v.flags.c_contiguous else ':strided'}"
        text = repr(v)
        return text if len(text) < 80 else text[:77] + "..."
    return ", ".join(f"{k}={short(v)}" for k, v in kwargs.items())


def expected_dtype(op, kwargs):
    """float64 if any operand is float64 or integer/bool, else float32 (fastconv's rule)."""
    dtypes = [np.asarray(kwargs[name]).dtype for name in SPECS[op].operands]
    if any((d.kind == "f" and d.itemsize == 8) or d.kind in "iub" for d in dtypes):
        return np.dtype(np.float64)
    return np.dtype(np.float32)


def flat_results(result):
    return list(result) if isinstance(result, tuple) else [result]


def compare(op, result, expected, dtype, assert_close):
    """The result has the reference's structure, dtypes and values."""
    got, want = flat_results(result), flat_results(expected)
    assert isinstance(result, tuple) == isinstance(expected, tuple), (
        f"{op}: returned {type(result).__name__}, expected {type(expected).__name__}")
    assert len(got) == len(want), f"{op}: {len(got)} results, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        what = f"{op} result {i}:"
        if w is None:
            assert g is None, f"{what} expected None, got {type(g).__name__}"
            continue
        assert isinstance(g, np.ndarray), f"{what} got {type(g).__name__}"
        if w.dtype.kind in "iu":
            assert g.dtype == np.int64, f"{what} index dtype {g.dtype}"
            assert g.shape == w.shape, f"{what} shape {g.shape} != {w.shape}"
            np.testing.assert_array_equal(g, w, err_msg=what)
        else:
            assert g.dtype == dtype, f"{what} dtype {g.dtype}, expected {dtype}"
            assert_close(g, w, err_msg=what)


def _operands_finite(op, kwargs):
    for name, kind in SPECS[op].params.items():
        if kind in ("float", "bias") and name in kwargs and kwargs[name] is not None:
            try:
                a = np.asarray(kwargs[name], dtype=np.float64)
            except (TypeError, ValueError):
                return False
            if not np.all(np.isfinite(a)):
                return False
    p = kwargs.get("p")
    if p is not None:
        try:
            if not 0.1 <= float(p) <= 8:
                return False
        except (TypeError, ValueError, OverflowError):
            return False
    return True


def _small_ints(value, limit=10**6):
    """True when every int inside ``value`` (nested sequences) is at most ``limit``."""
    if isinstance(value, (bool, np.bool_)):
        return True
    if isinstance(value, (int, np.integer)):
        return abs(int(value)) <= limit
    if isinstance(value, (tuple, list)):
        return all(_small_ints(v, limit) for v in value)
    return True


def check_plausible(op, kwargs, result, assert_close):
    """A spoiled call that succeeded: sane arrays, and the reference's answer when the
    reference can give one cheaply."""
    arrays = [r for r in flat_results(result) if r is not None]
    assert arrays, f"{op} returned nothing"
    for a in arrays:
        assert isinstance(a, np.ndarray), f"{op} returned {type(a).__name__}"
        assert a.dtype in (np.float32, np.float64, np.int64), f"{op} returned dtype {a.dtype}"
        if a.dtype != np.int64 and _operands_finite(op, kwargs):
            assert np.all(np.isfinite(a)), f"{op}: non-finite result from finite operands"
    if sum(a.size for a in arrays) > 20000 or not all(_small_ints(v) for v in kwargs.values()):
        return
    try:
        expected = SPECS[op].ref(kwargs)
        dtype = expected_dtype(op, kwargs)
    except Exception:  # the reference does not take these arguments: nothing to compare
        return
    if not all(np.all(np.isfinite(e)) for e in flat_results(expected) if e is not None):
        return  # e.g. an extreme p: overflow in both
    compare(op, result, expected, dtype, assert_close)


def with_defaults(op, kwargs):
    """The arguments of a call as the references take them: every default filled in,
    NumPy arrays given for int parameters as tuples."""
    bound = inspect.signature(getattr(F, op)).bind(**kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    for name, kind in SPECS[op].params.items():
        value = arguments.get(name)
        if kind not in ("float", "bias", "index") and isinstance(value, np.ndarray) and value.ndim:
            arguments[name] = tuple(value.tolist())
    return arguments


def _note(text):
    try:
        note(text)
    except InvalidArgument:  # outside a hypothesis test: the assertion messages say it all
        pass


def run_call(op, kwargs, outcome, assert_close):
    """Call ``op`` and judge the outcome (see the module docstring)."""
    fn = getattr(F, op)
    _note(f"{op}({describe(kwargs)}) -> expected outcome: {outcome}")
    try:
        result = WATCHDOG(lambda: fn(**kwargs), f"{op}({describe(kwargs)})")
    except ALLOWED as exc:
        assert str(exc).strip(), f"{op} raised {type(exc).__name__} with an empty message"
        if outcome == "same":
            raise AssertionError(f"{op} refused a valid call: {type(exc).__name__}: {exc}") from exc
        return
    if outcome == "invalid":
        raise AssertionError(f"{op} accepted an invalid call and returned "
                             f"{[getattr(r, 'shape', r) for r in flat_results(result)]}")
    kwargs = with_defaults(op, kwargs)
    if outcome == "same":
        compare(op, result, SPECS[op].ref(kwargs), expected_dtype(op, kwargs), assert_close)
    else:
        check_plausible(op, kwargs, result, assert_close)


# --------------------------------------------------------------------------- #
# the fuzz tests
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("op", OPS)
@FUZZ
@given(data=st.data())
def test_valid_calls_match_the_reference(op, data, assert_close):
    kwargs = data.draw(SPECS[op].cases, label="arguments")
    run_call(op, kwargs, "same", assert_close)


@pytest.mark.parametrize("op", OPS)
@FUZZ
@given(data=st.data())
def test_spoiled_calls_fail_cleanly(op, data, assert_close):
    spec = SPECS[op]
    kwargs = dict(data.draw(spec.cases, label="valid arguments"))
    names = [name for name in spec.params if name in kwargs]
    chosen = data.draw(st.lists(st.sampled_from(names), min_size=1, max_size=2, unique=True),
                       label="spoiled arguments")
    outcomes = []
    for name in chosen:
        kwargs[name], outcome, what = spoil(data.draw, spec.params[name], kwargs[name])
        _note(f"spoiled {name}: {what} ({outcome})")
        outcomes.append(outcome)
    run_call(op, kwargs, combined_outcome(outcomes), assert_close)


# --------------------------------------------------------------------------- #
# a deterministic sweep: every int-like argument of every op, every bad value
# --------------------------------------------------------------------------- #


def base_arguments(op):
    """A fixed small valid call of ``op``."""
    rng = np.random.default_rng(7)
    x4, x3 = rng.standard_normal((2, 2, 6, 7)), rng.standard_normal((2, 2, 7))
    bases = {
        "conv2d": dict(x=x4, w=rng.standard_normal((2, 1, 3, 2)), b=np.ones(2), stride=1,
                       padding=1, dilation=1, groups=2, algorithm="auto", flip=False),
        "conv2d_backward": dict(gy=rng.standard_normal((2, 2, 6, 8)), x=x4,
                                w=rng.standard_normal((2, 1, 3, 2)), stride=1, padding=1,
                                dilation=1, groups=2),
        "conv_transpose2d": dict(x=x4, w=rng.standard_normal((2, 3, 2, 2)), b=np.ones(3),
                                 stride=2, padding=0, output_padding=1, dilation=1, groups=1),
        "conv_transpose2d_backward": dict(gy=rng.standard_normal((2, 3, 13, 15)), x=x4,
                                          w=rng.standard_normal((2, 3, 2, 2)), stride=2,
                                          padding=0, output_padding=1, dilation=1, groups=1),
        "max_pool2d": dict(x=x4, kernel_size=3, stride=2, padding=1, dilation=1,
                           return_indices=True),
        "max_pool2d_backward": dict(gy=np.ones((2, 2, 3, 3)), idx=np.zeros((2, 2, 3, 3), int),
                                    input_shape=(2, 2, 6, 7)),
        "max_unpool2d": dict(y=np.ones((2, 2, 3, 3)), idx=np.arange(9).reshape(3, 3) * np.ones(
            (2, 2, 1, 1), int), kernel_size=2, stride=2, padding=0, output_size=(6, 7)),
        "avg_pool2d": dict(x=x4, kernel_size=3, stride=2, padding=1, divisor_override=None),
        "avg_pool2d_backward": dict(gy=np.ones((2, 2, 3, 4)), input_shape=(2, 2, 6, 7),
                                    kernel_size=3, stride=2, padding=1),
        "lp_pool2d": dict(x=x4, p=2, kernel_size=2, stride=2),
        "lp_pool2d_backward": dict(gy=np.ones((2, 2, 3, 3)), x=x4,
                                   y=lp_pool2d_ref(x4, 2.0, 2, 2), p=2, kernel_size=2, stride=2),
        "adaptive_avg_pool2d": dict(x=x4, output_size=(3, 2)),
        "adaptive_avg_pool2d_backward": dict(gy=np.ones((2, 2, 3, 2)), input_shape=(2, 2, 6, 7)),
        "global_avg_pool2d": dict(x=x4),
        "global_avg_pool2d_backward": dict(gy=np.ones((2, 2, 1, 1)), input_shape=(2, 2, 6, 7)),
        "conv1d": dict(x=x3, w=rng.standard_normal((4, 2, 3)), b=np.ones(4), stride=1,
                       padding=1, dilation=1, groups=1),
        "conv1d_backward": dict(gy=np.ones((2, 4, 7)), x=x3, w=rng.standard_normal((4, 2, 3)),
                                stride=1, padding=1, dilation=1, groups=1),
        "conv_transpose1d": dict(x=x3, w=rng.standard_normal((2, 2, 3)), stride=2, padding=1,
                                 output_padding=1, dilation=1, groups=1),
        "conv_transpose1d_backward": dict(gy=np.ones((2, 2, 14)), x=x3,
                                          w=rng.standard_normal((2, 2, 3)), stride=2, padding=1,
                                          output_padding=1, dilation=1, groups=1),
        "max_pool1d": dict(x=x3, kernel_size=3, stride=2, padding=1, dilation=1),
        "max_pool1d_backward": dict(gy=np.ones((2, 2, 3)), idx=np.zeros((2, 2, 3), int),
                                    input_shape=(2, 2, 7)),
        "avg_pool1d": dict(x=x3, kernel_size=3, stride=2, padding=1),
        "avg_pool1d_backward": dict(gy=np.ones((2, 2, 4)), input_shape=(2, 2, 7), kernel_size=3,
                                    stride=2, padding=1),
    }
    return bases[op]


@pytest.mark.parametrize("op", OPS)
def test_every_argument_with_every_listed_bad_value(op, assert_close):
    """Each non-array argument of a fixed valid call, given in turn every value of its
    spoiling lists (floats, strings, bools, None, negatives, huge ints up to 10**30,
    bad words, out-of-range sizes): same-meaning spellings must give the reference's
    result, invalid values an allowed error, the rest an allowed error or a consistent
    result. Failures are collected and reported together."""
    base = base_arguments(op)
    run_call(op, dict(base), "same", assert_close)
    failures = []
    for name, kind in SPECS[op].params.items():
        if name not in base or kind in ("float", "bias", "index"):
            continue
        same, invalid, context, unknown = spoilings(kind, base[name])
        for outcome, values in (("same", same), ("invalid", invalid + context),
                                ("unknown", unknown)):
            for value in values:
                try:
                    run_call(op, {**base, name: value}, outcome, assert_close)
                except (AssertionError, Exception) as exc:
                    failures.append(f"{name}={value!r} ({outcome}): {type(exc).__name__}: "
                                    f"{str(exc).splitlines()[0] if str(exc) else ''}")
    assert not failures, f"{op}: {len(failures)} failures\n" + "\n".join(failures)


def test_byte_swapped_float64_keeps_float64():
    """A big-endian (or other byte order) float64 array is float64 data: the result is
    float64, as for a native one (no silent loss of precision)."""
    x = np.arange(16.0).reshape(1, 1, 4, 4) / 3
    swapped = x.astype(x.dtype.newbyteorder())
    for call in (lambda a: F.avg_pool2d(a, 2), lambda a: F.conv2d(a, np.ones((1, 1, 2, 2))),
                 lambda a: F.max_pool2d(a, 2), lambda a: F.adaptive_avg_pool2d(a, 1)):
        expected = call(x)
        got = call(swapped)
        assert got.dtype == np.float64, f"byte-swapped float64 gave {got.dtype}"
        np.testing.assert_array_equal(got, expected)


# --------------------------------------------------------------------------- #
# cases the fuzzing found, kept as fixed regression tests
# --------------------------------------------------------------------------- #


def test_invalid_algorithm_is_refused_even_when_the_output_is_empty():
    """An unknown algorithm name is a ValueError whatever the sizes (fuzzing found
    conv_transpose2d accepting algorithm='fft' when w has no output channels)."""
    x = np.ones((1, 1, 3, 3))
    empty_w = np.ones((1, 0, 2, 2))  # K/groups = 0
    gy = np.ones((1, 0, 4, 4))
    calls = {
        "conv2d": lambda: F.conv2d(x, np.ones((0, 1, 2, 2)), algorithm="fft"),
        "conv2d_backward": lambda: F.conv2d_backward(np.ones((1, 0, 2, 2)), x,
                                                     np.ones((0, 1, 2, 2)), algorithm="fft"),
        "conv_transpose2d": lambda: F.conv_transpose2d(x, empty_w, algorithm="fft"),
        "conv_transpose2d_backward": lambda: F.conv_transpose2d_backward(gy, x, empty_w,
                                                                         algorithm="fft"),
        "conv_transpose1d": lambda: F.conv_transpose1d(x[:, :, 0], empty_w[:, :, 0],
                                                       algorithm="fft"),
    }
    accepted = []
    for name, call in calls.items():
        try:
            call()
        except ValueError as exc:
            assert "algorithm" in str(exc), f"{name}: {exc}"
        else:
            accepted.append(name)
    assert not accepted, f"algorithm='fft' accepted by {accepted}"


# Runs in a child process: these shapes corrupted the heap (wrong results, then
# "double free or corruption" or a segmentation fault) when fuzzing found them.
POINTWISE_TRANSPOSED = r"""
import sys
import numpy as np
from fastconv import functional as F
sys.path.insert(0, sys.argv[1])
from reference_ops import conv_transpose2d_backward_ref, conv_transpose2d_ref

rng = np.random.default_rng(0)
bad = []
# (x shape, w shape, keyword arguments): 1x1 kernels whose output is larger than
# the plane the kernel reaches (output_padding / output_size with dilation or stride)
cases = [
    ((2, 1, 1, 2), (1, 1, 1, 1), dict(dilation=(1, 2), output_padding=(0, 1))),
    ((2, 3, 3, 4), (3, 2, 1, 1), dict(dilation=2, output_padding=(1, 0))),
    ((2, 3, 3, 4), (3, 2, 1, 1), dict(dilation=2, output_padding=(0, 1))),
    ((2, 16, 3, 4), (16, 8, 1, 1), dict(dilation=2, output_padding=(0, 1))),
    ((2, 16, 3, 4), (16, 16, 1, 1), dict(dilation=2, output_size=(3, 5))),
    ((3, 4, 2, 3), (4, 4, 1, 1), dict(stride=2, output_padding=1)),
]
for xs, ws, kw in cases:
    x, w = rng.standard_normal(xs), rng.standard_normal(ws)
    ref = conv_transpose2d_ref(x, w, **kw)
    gy = rng.standard_normal(ref.shape)
    gx_ref, gw_ref, _ = conv_transpose2d_backward_ref(gy, x, w, **kw)
    for alg in ("direct", "im2col", "auto"):
        for _ in range(3):
            y = F.conv_transpose2d(x, w, **kw, algorithm=alg)
            gx, gw, _ = F.conv_transpose2d_backward(gy, x, w, **kw, algorithm=alg)
        for name, got, want in (("y", y, ref), ("gx", gx, gx_ref), ("gw", gw, gw_ref)):
            err = float(np.max(np.abs(got - want)))
            if not err <= 1e-9 * max(1.0, float(np.max(np.abs(want)))):
                bad.append(f"x {xs} w {ws} {kw} {alg}: {name} off by {err:.3g}")
print("\n".join(bad))
sys.exit(1 if bad else 0)
"""


def test_pointwise_transposed_convolution_with_a_larger_output():
    """conv_transpose2d and its backward with a 1x1 kernel and output_padding /
    output_size, every algorithm, against the reference; in a child process so that
    memory corruption fails this test instead of the whole run."""
    import subprocess
    import sys

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(F.__file__)))
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", POINTWISE_TRANSPOSED, tests_dir], env=env,
                          capture_output=True, text=True, timeout=300,
                          cwd=tempfile.gettempdir())  # `python -c` puts the cwd on sys.path
    if proc.returncode < 0:
        raise AssertionError(f"the child died of signal {-proc.returncode}:\n{proc.stdout}"
                             f"{proc.stderr[-2000:]}")
    assert proc.returncode == 0, f"wrong results:\n{proc.stdout}{proc.stderr[-2000:]}"
