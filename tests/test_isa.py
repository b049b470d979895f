"""Instruction-set variants of the kernels (fastconv._dispatch).

Every variant built here and runnable on this CPU is checked, not only the one in use:
its results match the float64 references, agree with the baseline's within rounding
(FMA rounds differently), and are bit-identical for 1, 2 and 3 threads. Child
processes check that ``FASTCONV_ISA`` picks the variant, and that asking for one the
CPU cannot run warns and falls back instead of crashing.
"""

import os
import subprocess
import sys
import tempfile
import types

import numpy as np
import pytest

import fastconv
import reference
import reference_ops
from fastconv import _dispatch, _plan, functional as F
from test_threads import assert_identical, every_op_calls

RUNNABLE = [isa for isa in _dispatch.ISAS if _dispatch.built(isa) and _dispatch.cpu_supports(isa)]


def use_variant(monkeypatch, isa):
    """Point every fastconv module that holds a dispatched kernel module at the ``isa``
    variant (and forget plans, whose SIMD padding depends on the variant)."""
    modules = _dispatch.load(isa)
    for holder in [m for name, m in sys.modules.items() if name.startswith("fastconv.")]:
        for name, module in modules.items():
            if isinstance(getattr(holder, name, None), types.ModuleType):
                monkeypatch.setattr(holder, name, module)
    _plan.clear_cache()
    return modules


@pytest.fixture(params=RUNNABLE)
def isa(request, monkeypatch):
    """Run fastconv on one instruction-set variant of the kernels."""
    use_variant(monkeypatch, request.param)
    yield request.param
    _plan.clear_cache()


def test_the_variant_in_use_is_the_best_runnable_one():
    assert _dispatch.ISA in RUNNABLE
    suffix = _dispatch.SUFFIX[_dispatch.ISA]
    for name in _dispatch.DISPATCHED:
        assert getattr(_dispatch, name).__name__ == f"fastconv._kernels.{name}{suffix}"
    if _dispatch.REQUESTED == "auto":
        assert _dispatch.ISA == RUNNABLE[0]


def test_baseline_is_always_built():
    assert "baseline" in RUNNABLE


def ops(rng, dtype):
    """(name, fastconv call, float64 reference) of conv and pooling forward and backward."""
    x = rng.standard_normal((3, 6, 13, 12)).astype(dtype)
    w = rng.standard_normal((8, 3, 3, 3)).astype(dtype)
    b = rng.standard_normal(8).astype(dtype)
    conv = dict(stride=(2, 1), padding=1, dilation=(1, 2), groups=2)
    y = reference.conv2d_ref(x, w, b, **conv)
    gy = rng.standard_normal(y.shape).astype(dtype)
    w5 = rng.standard_normal((4, 6, 5, 5)).astype(dtype)
    wt = rng.standard_normal((6, 2, 3, 3)).astype(dtype)
    z = np.abs(x) + 0.5
    cases = []
    for algorithm in ("direct", "im2col"):
        cases += [
            (f"conv2d-{algorithm}", lambda a=algorithm: F.conv2d(x, w, b, **conv, algorithm=a),
             lambda: reference.conv2d_ref(x, w, b, **conv)),
            (f"conv2d_backward-{algorithm}",
             lambda a=algorithm: F.conv2d_backward(gy, x, w, **conv, algorithm=a),
             lambda: reference.conv2d_backward_ref(gy, x, w, **conv)),
        ]
    cases += [
        ("conv2d-5x5", lambda: F.conv2d(x, w5, padding=2, algorithm="direct"),
         lambda: reference.conv2d_ref(x, w5, padding=2)),
        ("conv_transpose2d", lambda: F.conv_transpose2d(x, wt, stride=2, padding=1, groups=2),
         lambda: reference_ops.conv_transpose2d_ref(x, wt, stride=2, padding=1, groups=2)),
        ("max_pool2d", lambda: F.max_pool2d(x, 3, 2, 1),
         lambda: reference_ops.max_pool2d_ref(x, 3, 2, 1)[0]),
        ("avg_pool2d", lambda: F.avg_pool2d(x, 3, 2, 1, count_include_pad=False),
         lambda: reference_ops.avg_pool2d_ref(x, 3, 2, 1, count_include_pad=False)),
        ("lp_pool2d", lambda: F.lp_pool2d(z, 2.0, 3, 2), lambda: reference_ops.lp_pool2d_ref(z, 2.0, 3, 2)),
        ("adaptive_avg_pool2d", lambda: F.adaptive_avg_pool2d(x, (5, 4)),
         lambda: reference_ops.adaptive_avg_pool2d_ref(x, (5, 4))),
    ]
    return cases


def flat(result):
    return result if isinstance(result, tuple) else (result,)


def test_variant_matches_the_reference(isa, dtype, rng, assert_close):
    for name, call, ref in ops(rng, dtype):
        for got, expected in zip(flat(call()), flat(ref())):
            assert_close(got, expected, err_msg=f"{isa} {name}:")


def test_variant_agrees_with_the_baseline(isa, dtype, monkeypatch):
    got = {name: call() for name, call, _ in ops(np.random.default_rng(3), dtype)}
    use_variant(monkeypatch, "baseline")
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    for name, call, _ in ops(np.random.default_rng(3), dtype):
        for g, e in zip(flat(got[name]), flat(call())):
            assert g.dtype == e.dtype and g.shape == e.shape, name
            scale = max(1.0, float(np.max(np.abs(e))))
            np.testing.assert_allclose(g, e, rtol=0, atol=rtol * scale, err_msg=f"{isa} {name}")


def test_max_pool_indices_identical_across_variants(monkeypatch, rng):
    x = rng.standard_normal((2, 3, 15, 14)).astype(np.float32)
    results = []
    for isa in RUNNABLE:
        use_variant(monkeypatch, isa)
        results.append(F.max_pool2d(x, 3, 2, 1, return_indices=True))
    for y, idx in results[1:]:
        assert np.array_equal(y, results[0][0]) and np.array_equal(idx, results[0][1])


@pytest.mark.parametrize("width", [5, 9, 16, 17, 30])
def test_col2im_stride_2_vectors_bit_identical_across_variants(monkeypatch, width):
    """col2im's stride-2 rows, in SIMD vectors in the AVX2 variant and in the scalar loop
    in the baseline, add every column's taps in the same order: in float64, where both
    variants' products are BLAS's dgemm, transposed convolutions and strided input
    gradients come out the same bit for bit."""
    rng = np.random.default_rng(width)
    x = rng.standard_normal((2, 5, 6, width))
    cases = [
        (rng.standard_normal((5, 3, 4, 4)), dict(stride=2, padding=1)),
        (rng.standard_normal((5, 3, 3, 3)), dict(stride=2, padding=1, output_padding=1)),
        (rng.standard_normal((5, 3, 3, 5)), dict(stride=2, padding=(0, 2), dilation=(1, 2))),
    ]
    results = []
    for isa in RUNNABLE:
        use_variant(monkeypatch, isa)
        results.append([F.conv_transpose2d(x, w, **conv, algorithm="im2col")
                        for w, conv in cases])
        # the same col2im as conv2d's input gradient: of a 4x4 s2 p1 over y's shape
        results[-1].append(F.conv2d_backward(x, results[-1][0], cases[0][0], stride=2,
                                             padding=1, algorithm="im2col")[0])
    for other in results[1:]:
        for got, expected in zip(other, results[0]):
            np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("op", ["conv2d", "conv2d_backward", "conv_transpose2d_backward",
                                "max_pool2d", "avg_pool2d_backward", "lp_pool2d_backward"])
def test_variant_bit_identical_for_1_2_and_3_threads(isa, op):
    for case, call in every_op_calls(np.random.default_rng(11))[op]:
        with fastconv.threads(1):
            expected = call()
        for n in (2, 3):
            with fastconv.threads(n):
                assert_identical(call(), expected, f"{isa} {op} case {case}: {n} threads vs 1")


# --------------------------------------------------------------------------- #
# FASTCONV_ISA, read at import by a child process
# --------------------------------------------------------------------------- #

CHILD = """
import warnings
warnings.simplefilter("always")
import fastconv, numpy as np
from fastconv import _dispatch, functional
y = fastconv.conv2d(np.ones((1, 2, 5, 5)), np.ones((3, 2, 3, 3)), algorithm="direct")
assert (y == 18).all(), y
print(_dispatch.ISA, _dispatch._conv_direct.__name__, _dispatch._pool.__name__)
"""


def child(isa):
    env = {k: v for k, v in os.environ.items() if k != "FASTCONV_ISA"}
    if isa is not None:
        env["FASTCONV_ISA"] = isa
    root = os.path.dirname(os.path.dirname(os.path.abspath(fastconv.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True,
                          timeout=120, cwd=tempfile.gettempdir())  # `-c` puts the cwd on sys.path


def test_fastconv_isa_baseline():
    proc = child("baseline")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["baseline", "fastconv._kernels._conv_direct",
                                   "fastconv._kernels._pool"]
    assert "Warning" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("value", [None, "auto", "AVX2", " avx2 "])
def test_fastconv_isa_auto_or_avx2(value):
    proc = child(value)
    assert proc.returncode == 0, proc.stderr
    if "avx2" in RUNNABLE:
        assert proc.stdout.split() == ["avx2", "fastconv._kernels._conv_direct_avx2",
                                       "fastconv._kernels._pool_avx2"]
        assert "Warning" not in proc.stderr, proc.stderr
    else:  # never an illegal instruction: the baseline, with a warning when avx2 was asked for
        assert proc.stdout.split()[0] == "baseline"
        asked = value is not None and value.strip().lower() == "avx2"
        assert ("RuntimeWarning" in proc.stderr) == asked, proc.stderr


def test_fastconv_isa_bad_value():
    proc = child("sse9")
    assert proc.returncode != 0
    assert "FASTCONV_ISA" in proc.stderr and "'sse9'" in proc.stderr, proc.stderr


def test_avx2_on_a_cpu_without_it_falls_back(monkeypatch):
    # What a CPU without AVX2 sees: FASTCONV_ISA=avx2 warns and keeps the baseline.
    monkeypatch.setenv("FASTCONV_ISA", "avx2")
    monkeypatch.setattr(_dispatch._cpu, "cpu_has_avx2_fma", lambda: False)
    with pytest.warns(RuntimeWarning, match="lacks AVX2"):
        isa, modules = _dispatch._choose()
    assert isa == "baseline"
    assert modules["_conv_direct"].__name__ == "fastconv._kernels._conv_direct"
    with pytest.raises(RuntimeError):
        _dispatch.load("avx2")


def test_show_config_reports_the_variant(capsys):
    fastconv.show_config()
    line = next(t for t in capsys.readouterr().out.splitlines() if "kernels ISA" in t)
    assert f"{_dispatch.ISA} in use" in line and "baseline" in line
