"""Thread safety and thread-count independence of fastconv's operations.

- Eight Python threads, released together by a Barrier, call the same operation
  (or a mix of operations) on their own inputs: every result must be exactly the
  one a serial call gives (np.array_equal, not a tolerance).
- The thread count may change between calls, and while other Python threads are
  in the middle of calls: results do not change.
- Every operation of ``functional.__all__``, forward and backward, gives
  bit-identical results with 1, 2 and 3 OpenMP threads, on shapes that split
  unevenly across threads (odd batch sizes, a batch of one, odd planes).
"""

import threading

import numpy as np
import pytest

import fastconv
from fastconv import functional as F

PY_THREADS = 8
ITERATIONS = 5
JOIN_SECONDS = 180


def as_tuple(result):
    return result if isinstance(result, tuple) else (result,)


def assert_identical(got, expected, what):
    got, expected = as_tuple(got), as_tuple(expected)
    assert len(got) == len(expected), what
    for i, (g, e) in enumerate(zip(got, expected)):
        if e is None:
            assert g is None, f"{what}: result {i} should be None"
            continue
        assert g.dtype == e.dtype and g.shape == e.shape, (
            f"{what}: result {i} is {g.dtype}{g.shape}, expected {e.dtype}{e.shape}")
        if not np.array_equal(g, e, equal_nan=True):
            diff = np.abs(g.astype(np.float64) - e.astype(np.float64))
            raise AssertionError(
                f"{what}: result {i} differs in {int(np.count_nonzero(diff))} of {e.size} "
                f"elements (max difference {np.nanmax(diff):.3g})")


# --------------------------------------------------------------------------- #
# concurrent Python threads
# --------------------------------------------------------------------------- #


def concurrent_calls(rng):
    """The operations the concurrency tests call, on inputs drawn from ``rng``."""
    dtype = np.float32
    x = rng.standard_normal((4, 8, 19, 18)).astype(dtype)
    w = rng.standard_normal((12, 4, 3, 3)).astype(dtype)
    b = rng.standard_normal(12).astype(dtype)
    gy = rng.standard_normal((4, 12, 19, 18)).astype(dtype)
    wt = rng.standard_normal((8, 3, 3, 3)).astype(dtype)
    pool_gy = rng.standard_normal((4, 8, 10, 9)).astype(dtype)
    _, idx = F.max_pool2d(x, 3, 2, 1, return_indices=True)
    conv = dict(padding=1, groups=2)
    return {
        "conv2d-direct": lambda: F.conv2d(x, w, b, **conv, algorithm="direct"),
        "conv2d-im2col": lambda: F.conv2d(x, w, b, **conv, algorithm="im2col"),
        "conv2d_backward-direct": lambda: F.conv2d_backward(gy, x, w, **conv, algorithm="direct"),
        "conv2d_backward-im2col": lambda: F.conv2d_backward(gy, x, w, **conv, algorithm="im2col"),
        "conv_transpose2d": lambda: F.conv_transpose2d(x, wt, b[:3], stride=2, padding=1,
                                                       output_padding=1),
        "conv_transpose2d-im2col": lambda: F.conv_transpose2d(x, wt, stride=2, padding=1,
                                                              algorithm="im2col"),
        "max_pool2d": lambda: F.max_pool2d(x, 3, 2, 1, return_indices=True),
        "max_pool2d_backward": lambda: F.max_pool2d_backward(pool_gy, idx, x.shape),
        "avg_pool2d": lambda: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
    }


CONCURRENT = sorted(concurrent_calls(np.random.default_rng(0)))


def run_in_threads(work, n=PY_THREADS):
    """Run ``work(i)`` in ``n`` threads released together; re-raise the first error."""
    barrier = threading.Barrier(n)
    errors = []

    def target(i):
        try:
            barrier.wait(timeout=60)
            work(i)
        except BaseException as exc:  # reported by the test thread
            errors.append((i, exc))
            barrier.abort()

    threads = [threading.Thread(target=target, args=(i,), name=f"worker-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(JOIN_SECONDS)
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"threads still running after {JOIN_SECONDS} s (deadlock?): {stuck}"
    if errors:
        i, exc = errors[0]
        raise AssertionError(f"thread {i} failed: {type(exc).__name__}: {exc}") from exc


@pytest.mark.parametrize("name", CONCURRENT)
def test_eight_threads_calling_one_op_match_serial(name):
    calls = [concurrent_calls(np.random.default_rng(100 + i))[name] for i in range(PY_THREADS)]
    expected = [call() for call in calls]

    def work(i):
        for it in range(ITERATIONS):
            assert_identical(calls[i](), expected[i], f"{name}, thread {i}, call {it}")

    run_in_threads(work)


def test_eight_threads_calling_different_ops_match_serial():
    calls = [concurrent_calls(np.random.default_rng(200 + i)) for i in range(PY_THREADS)]
    expected = [{name: call() for name, call in c.items()} for c in calls]

    def work(i):
        names = CONCURRENT[i % len(CONCURRENT):] + CONCURRENT[:i % len(CONCURRENT)]
        for it in range(2):
            for name in names:
                assert_identical(calls[i][name](), expected[i][name],
                                 f"{name}, thread {i}, round {it}")

    run_in_threads(work)


def test_thread_count_changed_between_calls(restore_threads):
    calls = concurrent_calls(np.random.default_rng(3))
    expected = {name: call() for name, call in calls.items()}
    for n in (1, 3, 2, 1, 4, 2, 1):
        fastconv.set_num_threads(n)
        assert fastconv.get_num_threads() == n
        for name, call in calls.items():
            assert_identical(call(), expected[name], f"{name} after set_num_threads({n})")


def test_thread_count_changed_while_other_threads_compute(restore_threads):
    """One thread keeps changing the thread count while seven others compute."""
    workers = PY_THREADS - 1
    calls = [concurrent_calls(np.random.default_rng(300 + i)) for i in range(workers)]
    expected = [{name: call() for name, call in c.items()} for c in calls]
    done = threading.Event()
    finished = []

    def work(i):
        if i == workers:  # the toggler
            counts = [1, 2, 3, 4]
            k = 0
            while not done.is_set():
                fastconv.set_num_threads(counts[k % len(counts)])
                k += 1
                done.wait(0.001)
            return
        try:
            for name in CONCURRENT:
                assert_identical(calls[i][name](), expected[i][name],
                                 f"{name}, thread {i}, counts changing")
        finally:
            finished.append(i)
            if len(finished) == workers:
                done.set()

    run_in_threads(work, PY_THREADS)


# --------------------------------------------------------------------------- #
# the same bits for 1, 2 and 3 threads, for every public operation
# --------------------------------------------------------------------------- #


def _conv_inputs(rng, dtype, n, c, k, hw, khw, groups, stride, padding):
    x = rng.standard_normal((n, c, *hw)).astype(dtype)
    w = rng.standard_normal((k, c // groups, *khw)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    y = F.conv2d(x, w, b, stride, padding, groups=groups, algorithm="direct")
    gy = rng.standard_normal(y.shape).astype(dtype)
    return x, w, b, gy


def _unpool_size(y, shape, k, s, p):
    """max_pool2d's input size when max_unpool2d accepts it, else None (its default)."""
    kh, kw = (k, k) if isinstance(k, int) else k
    sh, sw = (kh, kw) if s is None else ((s, s) if isinstance(s, int) else s)
    ph, pw = (p, p) if isinstance(p, int) else p
    default = ((y.shape[2] - 1) * sh - 2 * ph + kh, (y.shape[3] - 1) * sw - 2 * pw + kw)
    fits = all(d - st < v < d + st for v, d, st in zip(shape[2:], default, (sh, sw)))
    return shape[2:] if fits else None


def every_op_calls(rng):
    """name -> list of (case id, zero-argument call), covering functional.__all__."""
    cases = {name: [] for name in F.__all__ if name != "ALGORITHMS"}

    def add(name, case, call):
        cases[name].append((case, call))

    # (dtype, N, C, K, (H, W), (KH, KW), groups, stride, padding)
    conv_shapes = [
        (np.float32, 5, 6, 8, (17, 15), (3, 3), 2, 1, 1),
        (np.float64, 1, 4, 6, (40, 33), (5, 5), 1, 2, "same"),
        (np.float32, 3, 16, 24, (12, 13), (3, 3), 1, 1, 1),
        (np.float64, 7, 3, 3, (9, 11), (3, 2), 3, (2, 1), ((0, 2), (1, 0))),
        (np.float32, 3, 26, 5, (9, 8), (7, 7), 1, 1, 3),  # weight gradient in channel blocks
    ]
    for i, (dtype, n, c, k, hw, khw, groups, stride, padding) in enumerate(conv_shapes):
        x, w, b, gy = _conv_inputs(rng, dtype, n, c, k, hw, khw, groups, stride, padding)
        kw = dict(stride=stride, padding=padding, groups=groups)
        for alg in ("direct", "im2col", "auto"):
            add("conv2d", f"{i}-{alg}", lambda x=x, w=w, b=b, kw=kw, alg=alg:
                F.conv2d(x, w, b, **kw, algorithm=alg))
            add("conv2d_backward", f"{i}-{alg}", lambda gy=gy, x=x, w=w, kw=kw, alg=alg:
                F.conv2d_backward(gy, x, w, **kw, algorithm=alg))
            add("conv2d_backward", f"{i}-{alg}-flip-no-gx", lambda gy=gy, x=x, w=w, kw=kw, alg=alg:
                F.conv2d_backward(gy, x, w, **kw, algorithm=alg, flip=True,
                                  needs_input_grad=False))
        # transposed: x plays gy's role (channels K), w is (K, C/groups, KH, KW)
        tkw = dict(stride=stride if stride != 1 else 2, padding=0, groups=groups)
        y = F.conv_transpose2d(gy, w, **tkw, algorithm="direct")
        tgy = rng.standard_normal(y.shape).astype(dtype)
        for alg in ("direct", "im2col"):
            add("conv_transpose2d", f"{i}-{alg}", lambda gy=gy, w=w, tkw=tkw, alg=alg:
                F.conv_transpose2d(gy, w, **tkw, algorithm=alg))
            add("conv_transpose2d_backward", f"{i}-{alg}", lambda tgy=tgy, gy=gy, w=w, tkw=tkw,
                alg=alg: F.conv_transpose2d_backward(tgy, gy, w, **tkw, algorithm=alg))

    # 1-D convolutions
    for i, (dtype, n, c, k, length, kl, groups, stride, padding) in enumerate([
        (np.float32, 5, 4, 6, 53, 5, 2, 1, 2),
        (np.float64, 1, 3, 8, 301, 3, 1, 2, "same"),
    ]):
        x = rng.standard_normal((n, c, length)).astype(dtype)
        w = rng.standard_normal((k, c // groups, kl)).astype(dtype)
        y = F.conv1d(x, w, stride=stride, padding=padding, groups=groups)
        gy = rng.standard_normal(y.shape).astype(dtype)
        kw = dict(stride=stride, padding=padding, groups=groups)
        for alg in ("direct", "im2col"):
            add("conv1d", f"{i}-{alg}", lambda x=x, w=w, kw=kw, alg=alg:
                F.conv1d(x, w, **kw, algorithm=alg))
            add("conv1d_backward", f"{i}-{alg}", lambda gy=gy, x=x, w=w, kw=kw, alg=alg:
                F.conv1d_backward(gy, x, w, **kw, algorithm=alg))
        tkw = dict(stride=2, padding=1, groups=groups, output_padding=1)
        ty = F.conv_transpose1d(gy, w, **tkw)
        tgy = rng.standard_normal(ty.shape).astype(dtype)
        for alg in ("direct", "im2col"):
            add("conv_transpose1d", f"{i}-{alg}", lambda gy=gy, w=w, tkw=tkw, alg=alg:
                F.conv_transpose1d(gy, w, **tkw, algorithm=alg))
            add("conv_transpose1d_backward", f"{i}-{alg}", lambda tgy=tgy, gy=gy, w=w, tkw=tkw,
                alg=alg: F.conv_transpose1d_backward(tgy, gy, w, **tkw, algorithm=alg))

    # pooling, 2-D and 1-D
    for i, (dtype, shape) in enumerate([(np.float32, (5, 6, 17, 15)),
                                        (np.float64, (1, 3, 40, 33)),
                                        (np.float64, (3, 1, 7, 64))]):
        x = rng.standard_normal(shape).astype(dtype)
        for j, (k, s, p, d, ceil) in enumerate([(3, 2, 1, 1, False), (2, None, 0, 1, True),
                                                ((3, 2), 1, (1, 0), (2, 1), False)]):
            y, idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
            gy = rng.standard_normal(y.shape).astype(dtype)
            add("max_pool2d", f"{i}{j}", lambda x=x, a=(k, s, p, d, ceil):
                F.max_pool2d(x, *a, return_indices=True))
            add("max_pool2d_backward", f"{i}{j}", lambda gy=gy, idx=idx, shape=shape:
                F.max_pool2d_backward(gy, idx, shape))
            if d == 1:  # max_unpool2d takes no dilation
                add("max_unpool2d", f"{i}{j}", lambda y=y, idx=idx, a=(k, s, p), shape=shape:
                    F.max_unpool2d(y, idx, *a, output_size=_unpool_size(y, shape, *a)))
            if d == 1:
                for cip in (True, False):
                    add("avg_pool2d", f"{i}{j}-{cip}", lambda x=x, a=(k, s, p, ceil, cip):
                        F.avg_pool2d(x, *a))
                    add("avg_pool2d_backward", f"{i}{j}-{cip}", lambda gy=gy, shape=shape,
                        a=(k, s, p, ceil, cip): F.avg_pool2d_backward(gy, shape, *a))
        for j, (p, k, s) in enumerate([(2, 3, 2), (1.5, 2, None), (3, (2, 3), 1)]):
            y = F.lp_pool2d(x, p, k, s)
            gy = rng.standard_normal(y.shape).astype(dtype)
            add("lp_pool2d", f"{i}{j}", lambda x=x, a=(p, k, s): F.lp_pool2d(x, *a))
            add("lp_pool2d_backward", f"{i}{j}", lambda gy=gy, x=x, y=y, a=(p, k, s):
                F.lp_pool2d_backward(gy, x, y, *a))
        for j, size in enumerate([(5, 4), 3, (None, 7)]):
            y = F.adaptive_avg_pool2d(x, size)
            gy = rng.standard_normal(y.shape).astype(dtype)
            add("adaptive_avg_pool2d", f"{i}{j}", lambda x=x, size=size:
                F.adaptive_avg_pool2d(x, size))
            add("adaptive_avg_pool2d_backward", f"{i}{j}", lambda gy=gy, shape=shape:
                F.adaptive_avg_pool2d_backward(gy, shape))
        gy = rng.standard_normal(shape[:2] + (1, 1)).astype(dtype)
        add("global_avg_pool2d", f"{i}", lambda x=x: F.global_avg_pool2d(x))
        add("global_avg_pool2d_backward", f"{i}", lambda gy=gy, shape=shape:
            F.global_avg_pool2d_backward(gy, shape))
        x1 = x.reshape(shape[0], shape[1], -1)
        for j, (k, s, p) in enumerate([(3, 2, 1), (4, 1, 2)]):
            y, idx = F.max_pool1d(x1, k, s, p, return_indices=True)
            gy = rng.standard_normal(y.shape).astype(dtype)
            add("max_pool1d", f"{i}{j}", lambda x1=x1, a=(k, s, p):
                F.max_pool1d(x1, *a, return_indices=True))
            add("max_pool1d_backward", f"{i}{j}", lambda gy=gy, idx=idx, shape=x1.shape:
                F.max_pool1d_backward(gy, idx, shape))
            add("avg_pool1d", f"{i}{j}", lambda x1=x1, a=(k, s, p): F.avg_pool1d(x1, *a))
            add("avg_pool1d_backward", f"{i}{j}", lambda gy=gy, shape=x1.shape, a=(k, s, p):
                F.avg_pool1d_backward(gy, shape, *a))
    return cases


EVERY_OP = sorted(name for name in F.__all__ if name != "ALGORITHMS")


def test_every_public_op_has_thread_cases():
    cases = every_op_calls(np.random.default_rng(0))
    assert set(cases) == set(EVERY_OP)
    assert all(cases[name] for name in EVERY_OP), [n for n in EVERY_OP if not cases[n]]


@pytest.mark.parametrize("op", EVERY_OP)
def test_bit_identical_for_1_2_and_3_threads(op):
    failures = []
    for case, call in every_op_calls(np.random.default_rng(11))[op]:
        with fastconv.threads(1):
            expected = call()
        for n in (2, 3):
            with fastconv.threads(n):
                got = call()
            try:
                assert_identical(got, expected, f"{op} case {case}: {n} threads vs 1")
            except AssertionError as exc:
                failures.append(str(exc))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.intc])
@pytest.mark.parametrize("elements", [1, 15, 16, 28, 1000])
def test_per_thread_rows_never_share_a_cache_line(dtype, elements):
    """Each thread's scratch row ends at least one 64-byte line before the next starts."""
    from fastconv._geometry import per_thread

    rows = per_thread(3, elements, dtype, "a test workspace")
    itemsize = np.dtype(dtype).itemsize
    assert rows.shape[0] == 3 and rows.shape[1] >= elements
    gap = rows.strides[0] - elements * itemsize
    assert gap >= 64


def test_per_thread_scratch_is_reused_per_python_thread():
    """Within one Python thread the scratch is one buffer, reused and grown; another
    Python thread gets its own; a request over SCRATCH_KEPT_BYTES its own array; rows
    are as per_thread's (a cache line apart)."""
    from fastconv._geometry import SCRATCH_KEPT_BYTES, per_thread_scratch

    def base(a):
        return a.__array_interface__["data"][0]

    first = per_thread_scratch(2, 1000, np.float32, "a test workspace")
    again = per_thread_scratch(2, 500, np.float32, "a test workspace")
    assert first.flags.c_contiguous and first.shape == (2, 1024) and base(again) == base(first)
    assert first.strides[0] - 1000 * 4 >= 64
    grown = per_thread_scratch(2, 5000, np.float32, "a test workspace")
    assert grown.shape[0] == 2 and grown.shape[1] >= 5000
    assert base(per_thread_scratch(2, 1000, np.float32, "a test workspace")) == base(grown)
    doubles = per_thread_scratch(2, 1000, np.float64, "a test workspace")
    assert not np.shares_memory(doubles, grown)
    huge = per_thread_scratch(1, SCRATCH_KEPT_BYTES // 4 + 1, np.float32, "a test workspace")
    assert not np.shares_memory(huge, grown)
    other = []
    worker = threading.Thread(
        target=lambda: other.append(per_thread_scratch(2, 1000, np.float32, "a test workspace")))
    worker.start()
    worker.join()
    assert not np.shares_memory(other[0], grown)
