"""The machine probes (fastconv.machine_limits, _kernels/_probe.pyx): the kernels compute
what they claim, and the limits they report are plausible and validated."""

import numpy as np
import pytest

import fastconv
from fastconv import _dispatch, _machine


@pytest.mark.parametrize("n_bytes", [0, 1, 7, 4096, 100_003])
@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_copy_slices_copies_every_byte(n_bytes, n_threads):
    rng = np.random.default_rng(n_bytes)
    src = rng.integers(0, 256, n_bytes + 16, dtype=np.uint8)
    dst = np.zeros_like(src)
    _dispatch._probe.copy_slices(src[:n_bytes], dst[:n_bytes], n_threads)
    np.testing.assert_array_equal(dst[:n_bytes], src[:n_bytes])
    assert not dst[n_bytes:].any()  # nothing written past the end


def test_copy_slices_rejects_bad_arguments():
    src = np.zeros(8, np.uint8)
    with pytest.raises(ValueError, match="dst must have 8 bytes"):
        _dispatch._probe.copy_slices(src, np.zeros(7, np.uint8), 1)
    with pytest.raises(ValueError, match="n_threads must be >= 1"):
        _dispatch._probe.copy_slices(src, np.zeros(8, np.uint8), 0)


def _chains_reference(rounds: int, seed: float) -> float:
    """The FMA probe's result in float64: every lane of chain j starts at seed + j and
    runs acc = acc * 0.999 + 1e-4; lanes per chain from flops_per_round."""
    lanes_times_chains = _dispatch._probe.flops_per_round() // 2
    chains = 12
    lanes = lanes_times_chains // chains
    acc = np.float64(seed) + np.arange(chains, dtype=np.float64)
    m, c = np.float64(np.float32(0.999)), np.float64(np.float32(1e-4))
    for _ in range(rounds):
        acc = acc * m + c
    return float(acc.sum() * lanes)


@pytest.mark.parametrize("rounds", [0, 1, 50, 2000])
def test_fma_rounds_computes_the_chains(rounds):
    # two threads: seeds 0 and 1, summed
    expected = _chains_reference(rounds, 0.0) + _chains_reference(rounds, 1.0)
    got = _dispatch._probe.fma_rounds(rounds, 2)
    assert got == pytest.approx(expected, rel=1e-4)


def test_fma_rounds_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n_threads"):
        _dispatch._probe.fma_rounds(10, 0)
    with pytest.raises(ValueError, match="rounds"):
        _dispatch._probe.fma_rounds(-1, 1)


def test_machine_limits_are_plausible():
    limits = fastconv.machine_limits(1)
    assert limits.threads == 1
    assert limits.isa == _dispatch.ISA
    # any CPU this runs on: at least a scalar multiply-add per ns, less than 100 TFLOP/s
    assert 0.5 < limits.fma_gflops < 1e5
    assert 0.1 < limits.copy_gbs < 1e4
    assert fastconv.machine_limits(1) is limits  # measured once per process


def test_machine_limits_refresh_measures_again():
    first = fastconv.machine_limits(1)
    again = fastconv.machine_limits(1, refresh=True)
    assert again is not first and again.threads == 1


def test_machine_limits_default_is_the_thread_setting():
    with fastconv.threads(1):
        assert fastconv.machine_limits().threads == 1


@pytest.mark.parametrize("bad, error", [(0, ValueError), (-2, ValueError), ("2", TypeError),
                                        (2.0, TypeError), (True, TypeError)])
def test_machine_limits_rejects_bad_thread_counts(bad, error):
    with pytest.raises(error, match="n_threads"):
        fastconv.machine_limits(bad)


def test_show_config_reports_the_limits():
    import io
    out = io.StringIO()
    fastconv.show_config(out)
    line = next(l for l in out.getvalue().splitlines() if l.strip().startswith("machine:"))
    limits = _machine.machine_limits()
    assert f"{limits.fma_gflops:.0f} GFLOP/s" in line and f"{limits.copy_gbs:.1f} GB/s" in line
