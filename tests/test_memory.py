"""Memory behaviour of fastconv's operations.

- No growth of the resident set over thousands of calls of every operation in
  ``functional.__all__`` (forward and backward), nor over thousands of calls that
  fail validation (the error paths must not leak their inputs or buffers).
- A request whose output or workspace cannot fit in memory (terabytes asked for by
  a huge padding, stride, kernel, output size or input shape, or by a broadcast
  view) raises MemoryError or ValueError naming the size, at once, before touching
  memory: no swapping, no growth of the resident set.
- (slow) An input of more than 2**31 elements, with a plane of more than 2**31
  pixels, pools correctly: 64-bit sizes and indices all the way through.

Linux only (the resident set is read from /proc/self/statm).
"""

import gc
import os
import re
import resource
import sys
import threading
import time

import numpy as np
import pytest

from fastconv import functional as F

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="reads the resident set size from /proc/self/statm (Linux only)",
)

MiB = 1 << 20
GiB = 1 << 30
LEAK_SLACK = 20 * MiB
WARMUP_CALLS = 200
CALLS = 2000
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss():
    """Resident set size of this process, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def mapped():
    """Address space mapped by this process, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * PAGE


def mem_available():
    """MemAvailable from /proc/meminfo, in bytes (0 when unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


# --------------------------------------------------------------------------- #
# no growth over repeated calls
# --------------------------------------------------------------------------- #


def op_calls():
    """name -> zero-argument call of every public operation on inputs of ~16-128 KB,
    so that leaking one array per call would show within the slack."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 8, 32, 32))  # 128 KB
    w = rng.standard_normal((8, 4, 3, 3))
    b = rng.standard_normal(8)
    gy = rng.standard_normal((2, 8, 32, 32))
    wt = rng.standard_normal((8, 4, 2, 2))
    ty = F.conv_transpose2d(x[:, :, :16, :16], wt, stride=2)
    tgy = rng.standard_normal(ty.shape)
    y, idx = F.max_pool2d(x, 2, return_indices=True)
    pgy = rng.standard_normal(y.shape)
    lp = F.lp_pool2d(x, 2, 2)
    x1 = x.reshape(2, 8, 1024)
    w1 = rng.standard_normal((8, 4, 3))
    gy1 = rng.standard_normal((2, 8, 1024))
    wt1 = rng.standard_normal((8, 4, 2))
    t1 = F.conv_transpose1d(x1[:, :, :512], wt1, stride=2)
    y1, idx1 = F.max_pool1d(x1, 2, return_indices=True)
    return {
        "conv2d": lambda: F.conv2d(x, w, b, padding=1, groups=2),
        "conv2d_backward": lambda: F.conv2d_backward(gy, x, w, padding=1, groups=2),
        "conv_transpose2d": lambda: F.conv_transpose2d(x[:, :, :16, :16], wt, stride=2),
        "conv_transpose2d_backward": lambda: F.conv_transpose2d_backward(
            tgy, x[:, :, :16, :16], wt, stride=2),
        "max_pool2d": lambda: F.max_pool2d(x, 2, return_indices=True),
        "max_pool2d_backward": lambda: F.max_pool2d_backward(pgy, idx, x.shape),
        "max_unpool2d": lambda: F.max_unpool2d(y, idx, 2),
        "avg_pool2d": lambda: F.avg_pool2d(x, 3, 1, 1),
        "avg_pool2d_backward": lambda: F.avg_pool2d_backward(gy, x.shape, 3, 1, 1),
        "lp_pool2d": lambda: F.lp_pool2d(x, 2, 2),
        "lp_pool2d_backward": lambda: F.lp_pool2d_backward(pgy, x, lp, 2, 2),
        "adaptive_avg_pool2d": lambda: F.adaptive_avg_pool2d(x, (16, 16)),
        "adaptive_avg_pool2d_backward": lambda: F.adaptive_avg_pool2d_backward(pgy, x.shape),
        "global_avg_pool2d": lambda: F.global_avg_pool2d(x),
        "global_avg_pool2d_backward": lambda: F.global_avg_pool2d_backward(
            x[:, :, :1, :1], x.shape),
        "conv1d": lambda: F.conv1d(x1, w1, padding=1, groups=2),
        "conv1d_backward": lambda: F.conv1d_backward(gy1, x1, w1, padding=1, groups=2),
        "conv_transpose1d": lambda: F.conv_transpose1d(x1[:, :, :512], wt1, stride=2),
        "conv_transpose1d_backward": lambda: F.conv_transpose1d_backward(
            t1, x1[:, :, :512], wt1, stride=2),
        "max_pool1d": lambda: F.max_pool1d(x1, 2, return_indices=True),
        "max_pool1d_backward": lambda: F.max_pool1d_backward(y1, idx1, x1.shape),
        "avg_pool1d": lambda: F.avg_pool1d(x1, 3, 1, 1),
        "avg_pool1d_backward": lambda: F.avg_pool1d_backward(gy1, x1.shape, 3, 1, 1),
    }


EVERY_OP = sorted(name for name in F.__all__ if name != "ALGORITHMS")


def test_every_public_op_is_measured():
    assert set(op_calls()) == set(EVERY_OP)


def growth_over(call, n):
    """Resident-set growth over ``n`` calls, after a warm-up."""
    for _ in range(WARMUP_CALLS):
        call()
    gc.collect()
    before = rss()
    for _ in range(n):
        call()
    gc.collect()
    return rss() - before


@pytest.mark.parametrize("op", EVERY_OP)
def test_no_growth_over_thousands_of_calls(op):
    call = op_calls()[op]
    grown = growth_over(call, CALLS)
    assert grown < LEAK_SLACK, (
        f"{op}: resident set grew by {grown / MiB:.1f} MiB over {CALLS} calls")


def failing_calls():
    """Calls that fail validation late (after the inputs were converted), on large inputs:
    a leak of an input or a buffer per call would show."""
    rng = np.random.default_rng(6)
    x32 = rng.standard_normal((2, 8, 32, 32)).astype(np.float32)
    xi = rng.integers(0, 9, (2, 8, 32, 32))  # converted to float64 on entry
    w = rng.standard_normal((8, 4, 3, 3))
    gy = rng.standard_normal((2, 8, 30, 30))
    return {
        "conv2d groups": lambda: F.conv2d(xi, w, groups=3),
        "conv2d algorithm": lambda: F.conv2d(xi, w, groups=2, algorithm="fft"),
        "conv2d_backward gy shape": lambda: F.conv2d_backward(gy, xi, w, padding=1, groups=2),
        "conv_transpose2d padding": lambda: F.conv_transpose2d(xi, w, padding="same"),
        "max_pool2d padding": lambda: F.max_pool2d(x32.astype(np.float16), 2, padding=2),
        "avg_pool2d divisor": lambda: F.avg_pool2d(xi, 2, divisor_override=0),
        "lp_pool2d_backward shape": lambda: F.lp_pool2d_backward(gy, xi, gy, 2, 2),
        "max_pool2d_backward idx": lambda: F.max_pool2d_backward(
            x32, np.full(x32.shape, 10**6), (2, 8, 32, 32)),
        "adaptive size": lambda: F.adaptive_avg_pool2d(xi, 0),
    }


@pytest.mark.parametrize("case", sorted(failing_calls()))
def test_no_growth_over_thousands_of_failing_calls(case):
    call = failing_calls()[case]

    def failing():
        with pytest.raises((ValueError, TypeError)):
            call()

    grown = growth_over(failing, 2000)
    assert grown < LEAK_SLACK, (
        f"{case}: resident set grew by {grown / MiB:.1f} MiB over 2000 failing calls")


# --------------------------------------------------------------------------- #
# requests that cannot fit fail fast
# --------------------------------------------------------------------------- #


def run_with_timeout(fn, seconds):
    """(result or exception, seconds taken); a call still running after ``seconds``
    is left on a daemon thread and reported as None."""
    box = {}

    def target():
        try:
            box["result"] = fn()
        except BaseException as exc:  # returned to the test
            box["error"] = exc

    start = time.perf_counter()
    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(seconds)
    elapsed = time.perf_counter() - start
    if t.is_alive():
        return None, elapsed
    return box.get("error", box.get("result")), elapsed


def oversized_requests():
    """name -> (call, numbers any of which a message naming the size contains)."""
    x = np.ones((1, 1, 4, 4), np.float32)
    w = np.ones((1, 1, 3, 3), np.float32)
    y = np.ones((1, 1, 2, 2), np.float32)
    idx = np.zeros((1, 1, 2, 2), np.int64)
    one = np.ones((1, 1, 1, 1), np.float32)
    one1 = np.ones((1, 1, 1), np.float32)
    zero = np.zeros((1, 1, 1, 1), np.int64)
    big = 10**6  # per axis: 10**12 elements, 4-8 TB
    huge_view = np.broadcast_to(np.float32(1), (1, 1, big, big))  # no memory behind it
    wide = np.ones((1, 1, 1, 10**5), np.float32)
    return {
        "conv2d padding 10**6": (lambda: F.conv2d(x, w, padding=big), [2 * big + 2]),
        "conv2d padding 10**6 direct": (
            lambda: F.conv2d(x, w, padding=big, algorithm="direct"), [2 * big + 2]),
        "conv1d padding 10**13": (
            lambda: F.conv1d(x[:, :, 0], w[:, :, 0], padding=10**13), [2 * 10**13 + 2]),
        "conv_transpose2d stride 10**6": (
            lambda: F.conv_transpose2d(x, w, stride=big), [3 * big + 3]),
        "conv_transpose1d stride 10**13": (
            lambda: F.conv_transpose1d(x[:, :, 0], w[:, :, 0], stride=10**13), [3 * 10**13 + 3]),
        "max_unpool2d kernel 10**6": (lambda: F.max_unpool2d(y, idx, big), [2 * big]),
        "max_pool2d_backward input_shape": (
            lambda: F.max_pool2d_backward(one, zero, (1, 1, big, big)), [big]),
        "max_pool1d_backward input_shape": (
            lambda: F.max_pool1d_backward(one1, zero[0], (1, 1, 10**13)), [10**13]),
        "avg_pool2d_backward input_shape": (
            lambda: F.avg_pool2d_backward(one, (1, 1, big, big), big), [big]),
        "avg_pool1d_backward input_shape": (
            lambda: F.avg_pool1d_backward(one1, (1, 1, 10**13), 10**13), [10**13]),
        "adaptive_avg_pool2d output 10**6": (
            lambda: F.adaptive_avg_pool2d(x, big), [big]),
        "adaptive_avg_pool2d_backward input_shape": (
            lambda: F.adaptive_avg_pool2d_backward(one, (1, 1, big, big)), [big]),
        "global_avg_pool2d_backward input_shape": (
            lambda: F.global_avg_pool2d_backward(one, (1, 1, big, big)), [big]),
        "max_pool2d on a broadcast view": (lambda: F.max_pool2d(huge_view, 2), [big]),
        "avg_pool2d on a broadcast view": (lambda: F.avg_pool2d(huge_view, 2), [big]),
        "lp_pool2d on a broadcast view": (lambda: F.lp_pool2d(huge_view, 2, 2), [big]),
        "global_avg_pool2d on a broadcast view": (lambda: F.global_avg_pool2d(huge_view), [big]),
        "conv2d on a broadcast view": (lambda: F.conv2d(huge_view, w), [big]),
        # im2col workspace: C*KH*KW x OW per thread = 10**5 x 200001 elements, while
        # the output is one row of 200001.
        "conv2d im2col workspace": (
            lambda: F.conv2d(wide, wide, padding=((0, 0), (10**5, 10**5)),
                             algorithm="im2col"), [10**5 * (2 * 10**5 + 1), 2 * 10**5 + 1]),
        "conv2d_backward im2col workspace": (
            lambda: F.conv2d_backward(np.ones((1, 1, 1, 2 * 10**5 + 1), np.float32), wide, wide,
                                      padding=((0, 0), (10**5, 10**5)), algorithm="im2col"),
            [10**5 * (2 * 10**5 + 1), 2 * 10**5 + 1]),
    }


SIZE_WORDS = re.compile(r"\b[KMGTPEZ]i?B\b|bytes|elements|too (large|big)", re.IGNORECASE)


def names_the_size(message, numbers):
    digits = message.replace(",", "").replace("_", "")
    return any(str(n) in digits for n in numbers) or bool(SIZE_WORDS.search(message))


@pytest.fixture
def capped_address_space():
    """Cap the address space 8 GiB above what is mapped now, so that a request for
    terabytes fails with MemoryError even where the kernel overcommits memory."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped() + 8 * GiB
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


@pytest.mark.parametrize("case", sorted(oversized_requests()))
def test_a_request_that_cannot_fit_fails_fast(case, capped_address_space):
    call, numbers = oversized_requests()[case]
    gc.collect()
    before = rss()
    outcome, seconds = run_with_timeout(call, 30)
    grown = rss() - before
    assert outcome is not None or seconds < 30, f"{case}: still running after {seconds:.0f} s"
    assert isinstance(outcome, (MemoryError, ValueError)), (
        f"{case}: expected MemoryError or ValueError, got {outcome!r}")
    assert seconds < 1.0, f"{case}: took {seconds:.2f} s to fail (touching memory?)"
    assert grown < 64 * MiB, f"{case}: resident set grew by {grown / MiB:.0f} MiB before failing"
    message = str(outcome)
    assert message.strip(), f"{case}: empty message"
    assert names_the_size(message, numbers), f"{case}: the message does not name the size: {message}"


# --------------------------------------------------------------------------- #
# beyond 2**31 elements
# --------------------------------------------------------------------------- #

BIG_H, BIG_W = 2**16, 2**15 + 16  # 2**31 + 2**20 elements in one plane
BIG_BYTES = BIG_H * BIG_W * 4


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")
def test_max_pool2d_over_2_31_elements_in_one_plane():
    """float32 (1, 1, 65536, 32784): 2**31 + 2**20 elements (8.6 GB) in one plane, so
    flat offsets past 2**31 appear both in the kernel's reads and in the returned
    indices. Pooling with (2, 64) windows gives a 67 MB output; a few windows (first,
    last, across the 2**31 boundary, random) are checked against NumPy."""
    need = BIG_BYTES + 2 * GiB
    available = mem_available()
    if available < need:
        pytest.skip(f"needs {need / GiB:.1f} GiB of available memory, "
                    f"/proc/meminfo says {available / GiB:.1f} GiB")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY and soft - mapped() < need:
        pytest.skip(f"the address-space limit leaves less than {need / GiB:.1f} GiB")
    x = np.empty((1, 1, BIG_H, BIG_W), dtype=np.float32)
    plane = x[0, 0]
    # Distinct values in every window, exact in float32: rows step by 919 (mod 1000),
    # columns by 729/1024 (mod 1000/1024), so each window has one maximum.
    rows = ((np.arange(BIG_H, dtype=np.int64) * 919) % 1000).astype(np.float32)
    cols = (((np.arange(BIG_W, dtype=np.int64) * 729) % 1000) / 1024).astype(np.float32)
    chunk = 4096
    for start in range(0, BIG_H, chunk):
        np.add(rows[start:start + chunk, None], cols[None, :], out=plane[start:start + chunk])
    kh, kw = 2, 64
    y, idx = F.max_pool2d(x, (kh, kw), return_indices=True)
    oh, ow = BIG_H // kh, BIG_W // kw
    assert y.shape == idx.shape == (1, 1, oh, ow)
    assert y.dtype == np.float32 and idx.dtype == np.int64
    boundary_row = (2**31 // BIG_W) // kh  # the window row holding flat offset 2**31
    rng = np.random.default_rng(0)
    windows = [(0, 0), (oh - 1, ow - 1), (oh - 1, 0), (boundary_row, ow // 2),
               (boundary_row + 1, 3)] + [tuple(v) for v in
                                         rng.integers(0, (oh, ow), size=(20, 2))]
    for i, j in windows:
        window = plane[i * kh:(i + 1) * kh, j * kw:(j + 1) * kw]
        r, c = np.unravel_index(int(np.argmax(window)), window.shape)
        expected_idx = (i * kh + r) * BIG_W + j * kw + c
        assert y[0, 0, i, j] == window.max(), (i, j)
        assert idx[0, 0, i, j] == expected_idx, (i, j, int(idx[0, 0, i, j]), expected_idx)
    assert int(idx.max()) > 2**31
    del x, plane
