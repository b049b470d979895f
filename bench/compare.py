"""Compare fastconv with PyTorch CPU in one process and print a ratio table.

Usage::

    python bench/compare.py [--threads N] [--repeat R] [--dtype float32|float64]
                            [--suite default|networks|all] [--cases SUBSTR[,SUBSTR...]]
                            [--algorithm auto|direct|im2col|winograd]
                            [--inner-ms MS] [--no-torch] [--no-memory] [--quick]
                            [--scaling [N,N,...]] [--plot PATH]

Method: both libraries run with the same number of threads (default: fastconv's own setting)
in one process.  For every case and mode each callable is first warmed up and its inner loop
is sized to last about ``--inner-ms`` milliseconds; then ``R`` repetitions alternate one
fastconv timing and one torch timing (the order flips every repetition, so drift in clock
speed or cache state hits both alike).  The table shows medians of the per-call time,
``ratio = fastconv / torch`` (below 1: fastconv is faster) and fastconv's rate
(GFLOP/s: see ``cases.py`` for how work is counted), followed by the geometric mean of the
ratios per mode.  Without PyTorch the torch columns read ``-``.

The cases come from ``cases.py`` and the timed code from ``workloads.py``: a new op kind added
there appears here as its own table.

Suites (``--suite``): ``default`` times the cases whose results are compared across versions
(``cases.ALL_CASES``); ``networks`` times layer shapes of well-known networks (LeNet-5,
AlexNet, VGG-16, ResNet-18/50, MobileNet-v2, ResNeXt-50, Inception, DCGAN and U-Net decoders,
ResNet's pooling), all named ``net-...``, at batch 1 and 8, a few of them in float64 whatever
``--dtype`` says (``cases.NETWORK_CASES``); ``all`` times both.  ``--cases`` filters the suite.

Geometric means: after each table (when several op kinds are timed) the geometric mean of its
ratios per mode; at the end the mean over every case timed, and one over the conv2d and
conv_transpose2d cases together ("conv and transposed conv only"), which leaves out pooling
(memory-bound), the training step and the denormal cases.

Train step: the "train step" table times one whole LeNet-5 training step (batch 64: forward,
cross-entropy loss, backward, SGD update with momentum) as ``fastconv-train`` runs it, against
the same network in PyTorch (``lenet_torch.py``); its rate column is fastconv's images per
second, and a line below it gives both libraries' images per second.

Machine limits: before the tables, ``fastconv.machine_limits`` measures this machine's
float32 FMA peak and copy bandwidth at the run's thread count (small probes shipped in the
package).  Each mode's ``% peak`` column is fastconv's GFLOP/s as a share of the FMA peak
(float64 cases: of half of it; Winograd cases are credited with the direct definition's
work, so they can pass 100%), and ``% copy`` a pooling case's GB/s as a share of the copy
bandwidth.  At the end, two lines hold the forwards to the issue's targets: the GEMM-bound
forwards of large layers (``cases.near_limit_class``) against 70% of the peak, pooling
forwards against 60% of the bandwidth.

Memory (``peak MB``, ``kept MB``; ``--no-memory`` leaves them out): after a case's timings,
one more fastconv call of its ``fwd+bwd`` mode (``step`` for a training step) runs under
``tracemalloc``.  NumPy reports its array allocations to ``tracemalloc``, and fastconv's
kernels allocate their outputs and workspaces as NumPy arrays, so ``peak MB`` is the most
memory allocated during the call and alive at one time: outputs, workspaces and temporaries,
not the inputs (allocated before).  ``kept MB`` is what the call left allocated (its outputs,
and in a training step the activations the layers cache).  Memory freed during the call that
was allocated before it (a previous step's caches) is not subtracted.  This is not RSS: memory
that C code allocates without NumPy is not seen (fastconv's kernels allocate none).  PyTorch's
allocations are invisible to ``tracemalloc``, so torch's memory is not reported.
``RSS MB`` is the peak growth of the process's resident set during one more such call
(Linux: the high-water mark is reset before the call, see ``rss_growth``): every page the
call touched for the first time, whoever allocated it; freed memory that the allocator
reuses costs nothing here, so it can be below ``peak MB``.

Thread scaling (``--scaling 1,2,4``): instead of the comparison, fastconv alone is timed per
case and mode at each thread count (interleaved like the comparison: the order of the counts
flips every repetition), and the table shows medians and the speedup over the first count.
Below it: the geometric mean speedup over the "large" cases (``cases.is_large``: every conv2d
case but LeNet's, transposed convolutions, pooling) and over all the cases timed.

``--plot PATH``: one compact PNG of the ratios: a row per case, grouped by op kind, one bar
per mode (fwd and fwd+bwd; "step" for the train step) on a log axis centred on 1.0, each
bar's value at its end; beside it a panel of each mode's share of the machine's limit
(``% peak`` / ``% copy``) with the 60% and 70% targets dashed.
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import time
import traceback
import tracemalloc
from contextlib import nullcontext
from typing import NamedTuple

import numpy as np

import onnx_anchor
import workloads
from cases import SUITES, is_large, near_limit_class, select

#: op kinds that the "conv and transposed conv only" geometric mean covers
CONV_KINDS = ("conv2d", "conv_transpose2d")


def time_per_call(fn, loops: int) -> float:
    """Seconds per call of ``fn`` over ``loops`` back-to-back calls, garbage collector paused."""
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        return (time.perf_counter() - start) / loops
    finally:
        if gc_was_enabled:
            gc.enable()


def inner_loops(fn, target: float) -> int:
    """Warm ``fn`` up and return how many calls make an inner loop of about ``target`` seconds."""
    fn()  # warm-up: allocations, first touch of the pages, lazy initialisation
    once = time_per_call(fn, 1)
    if once >= target:
        return 1
    if once * 4 < target:  # one call is too short to trust: measure a few more
        once = time_per_call(fn, max(2, int(target / 4 / once)))
    return max(1, round(target / max(once, 1e-9)))


def measure(timed, repeat: int, target: float) -> tuple[float, float | None, float | None]:
    """Median seconds per call of fastconv, of torch and of ONNX Runtime (``None`` for an
    anchor the mode lacks), interleaved: each repetition times each library once, and the
    order reverses every repetition."""
    with _fastconv_context(timed):
        fc_loops = inner_loops(timed.fastconv, target)
    anchors = {"th": getattr(timed, "torch", None), "ox": getattr(timed, "onnx", None)}
    anchors = {who: fn for who, fn in anchors.items() if fn is not None}
    loops = {who: inner_loops(fn, target) for who, fn in anchors.items()}
    times: dict[str, list[float]] = {"fc": [], "th": [], "ox": []}
    for r in range(repeat):
        order = ["fc", *anchors]
        for who in (order if r % 2 == 0 else order[::-1]):
            if who == "fc":
                with _fastconv_context(timed):
                    times["fc"].append(time_per_call(timed.fastconv, fc_loops))
            else:
                times[who].append(time_per_call(anchors[who], loops[who]))
    th, ox = (statistics.median(times[w]) if times[w] else None for w in ("th", "ox"))
    return statistics.median(times["fc"]), th, ox


def _fastconv_context(timed):
    """The context a workload asks to hold around its fastconv calls (single-threaded BLAS
    for a training step, as the trainer holds it), else nothing."""
    make = getattr(timed, "fastconv_context", None)
    context = make() if make is not None else None
    return context if context is not None else nullcontext()


def traced_memory(timed) -> tuple[float, float]:
    """``(peak, kept)`` bytes that one fastconv call of ``timed`` allocates (via tracemalloc).

    ``peak``: the most bytes allocated during the call and alive at one time; ``kept``: the
    bytes it allocated that are still alive when it returns (its result included).
    """
    gc.collect()
    with _fastconv_context(timed):
        tracemalloc.start()
        try:
            result = timed.fastconv()
            kept, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    del result
    return float(peak), float(kept)


def _status_kb(field: str) -> int:
    """A ``kB`` field of /proc/self/status (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def rss_growth(timed) -> float | None:
    """Peak resident-set growth (bytes) of one fastconv call of ``timed``, or None where
    it cannot be read (not Linux).

    The kernel's high-water mark of the resident set is reset to the current size
    (``5`` written to /proc/self/clear_refs) just before the call and read just after:
    the growth counts every page the call touched first, whoever allocated it.
    """
    gc.collect()
    try:
        with _fastconv_context(timed):
            before = _status_kb("VmRSS")
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            result = timed.fastconv()
            peak = _status_kb("VmHWM")
    except OSError:
        return None
    del result
    return float(max(0, peak - before) * 1024)


def geomean(values):
    """Geometric mean of the positive finite ``values`` (None and failures skipped), or None."""
    values = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if not values:
        return None
    return math.exp(sum(math.log(v) for v in values) / len(values))


def _geomean_line(label: str, ratios: dict[str, list[float | None]]) -> str:
    parts = []
    for mode, values in ratios.items():
        n = sum(v is not None for v in values)
        parts.append(f"{mode} {_num(geomean(values), '.2f')} ({n} {label})")
    return "geometric mean of ratios fastconv / torch: " + ", ".join(parts)


def conv_only_line(ratios_by_kind: dict[str, dict[str, list[float | None]]]) -> str | None:
    """The geometric mean per mode over the conv2d and conv_transpose2d cases together,
    e.g. ``conv and transposed conv only: fwd 0.52, fwd+bwd 0.61 (10 cases)``; None when
    no such case was timed."""
    pooled: dict[str, list[float | None]] = {}
    for kind in CONV_KINDS:
        for mode, values in ratios_by_kind.get(kind, {}).items():
            pooled.setdefault(mode, []).extend(values)
    if not pooled:
        return None
    n_cases = max(len(values) for values in pooled.values())
    means = ", ".join(f"{mode} {_num(geomean(values), '.2f')}" for mode, values in pooled.items())
    return f"conv and transposed conv only: {means} ({n_cases} cases)"


def onnx_line(ratios_by_kind: dict[str, list[float | None]]) -> str:
    """Geometric means of fastconv / ONNX Runtime forward times, per op kind and over all."""
    every = [r for values in ratios_by_kind.values() for r in values]
    parts = [f"{kind} {_num(geomean(values), '.2f')}" for kind, values in ratios_by_kind.items()]
    return (f"fastconv / onnxruntime, forward: {', '.join(parts)}; all {_num(geomean(every), '.2f')} "
            f"({sum(r is not None for r in every)} cases)")


def limits_again_line(limits, threads: int) -> str | None:
    """The limits measured again after the run, where they moved by more than 15%: the
    shares above used the first measurement (a busy neighbour on a shared machine can
    halve one)."""
    if limits is None:
        return None
    again = workloads.machine_limits(threads, refresh=True)
    moved = [f"{name} {new:.{digits}f} {unit} (was {old:.{digits}f})"
             for name, old, new, unit, digits in (
                 ("FMA peak", limits.fma_gflops, again.fma_gflops, "GFLOP/s", 0),
                 ("copy bandwidth", limits.copy_gbs, again.copy_gbs, "GB/s", 1))
             if abs(new / old - 1) > 0.15]
    if not moved:
        return None
    return "machine limits measured again after the run: " + ", ".join(moved)


def limits_line(limits) -> str:
    """The header line of the machine's limits (or why there are none)."""
    if limits is None:
        return "machine limits: not measured (this fastconv has no machine_limits)"
    return (f"machine limits ({limits.threads} threads, {limits.isa} kernels): float32 FMA peak "
            f"{limits.fma_gflops:.0f} GFLOP/s, copy bandwidth {limits.copy_gbs:.1f} GB/s; "
            f"'% peak' and '% copy' are each case's rate as a share of them")


#: the share of the machine's limit each class of forward is held to
NEAR_LIMIT_TARGETS = {"fma": ("GEMM-bound forwards of large layers", "FMA peak", 0.70),
                      "copy": ("pooling forwards", "copy bandwidth", 0.60)}


def near_limit_lines(rows) -> list[str]:
    """Per class of ``cases.near_limit_class``: how many forwards reach the target share
    of the machine's limit, the median and the lowest share (with its case)."""
    lines = []
    for cls, (what, limit, target) in NEAR_LIMIT_TARGETS.items():
        shares = [(f, case.name) for case, f in rows if near_limit_class(case) == cls
                  and f is not None]
        if not shares:
            continue
        low, low_name = min(shares)
        reached = sum(f >= target for f, _ in shares)
        median = statistics.median(f for f, _ in shares)
        lines.append(f"{what}: {reached} of {len(shares)} at >= {target:.0%} of the {limit}; "
                     f"median {median:.0%}, lowest {low:.0%} ({low_name})")
    return lines


def case_dtype(case, run_dtype: str) -> str:
    """The dtype ``case`` is timed in: its own where it fixes one, else the run's."""
    return getattr(case, "dtype", None) or run_dtype


# ---------------------------------------------------------------------------------------
# table
# ---------------------------------------------------------------------------------------

CELL = 9  # width of one number column


def _num(value, fmt) -> str:
    return "-" if value is None else format(value, fmt)


#: the column after the rate: the rate as a share of the machine's limit (unit -> title)
LIMIT_COLUMN = {"GFLOP/s": "% peak", "GB/s": "% copy"}


def _mode_header(mode: str, unit: str, with_onnx: bool = False) -> tuple[str, str]:
    names = ["fc ms", "torch ms", "ratio", *(["ort ms", "fc/ort"] if with_onnx else []), unit,
             *([LIMIT_COLUMN[unit]] if unit in LIMIT_COLUMN else [])]
    cells = " ".join(f"{n:>{CELL}}" for n in names)
    title = f" {mode} ".center(len(cells), "-")
    return title, cells


def limit_fraction(rate: float | None, unit: str, dtype: str, limits) -> float | None:
    """``rate`` as a fraction of what the machine can do (``fastconv.machine_limits``):
    GFLOP/s of the FMA peak (float64: half the float32 peak, half the lanes per vector),
    GB/s of the copy bandwidth; None for other units or without limits."""
    if rate is None or limits is None:
        return None
    if unit == "GFLOP/s":
        return rate / (limits.fma_gflops / (2 if dtype == "float64" else 1))
    if unit == "GB/s":
        return rate / limits.copy_gbs
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if (a is not None and b is not None and b > 0) else None


def _mode_cells(fc: float | None, th: float | None, work: float, unit: str = "GFLOP/s",
                fraction: float | None = None, onnx: tuple[float | None] | None = None) -> str:
    """One mode's cells; ``onnx``: a 1-tuple of ONNX Runtime's time where the mode has the
    ORT columns (None: it has not)."""
    rate = workloads.rate(work, fc, unit) if fc else None
    cells = [
        _num(None if fc is None else fc * 1e3, ".3f"),
        _num(None if th is None else th * 1e3, ".3f"),
        _num(_ratio(fc, th), ".2f"),
    ]
    if onnx is not None:
        (ox,) = onnx
        cells += [_num(None if ox is None else ox * 1e3, ".3f"), _num(_ratio(fc, ox), ".2f")]
    cells.append(_num(rate, ".1f"))
    if unit in LIMIT_COLUMN:
        cells.append(_num(None if fraction is None else fraction * 100, ".0f"))
    return " ".join(f"{c:>{CELL}}" for c in cells)


#: table titles of op kinds whose name is not already a good title
KIND_TITLES = {"train_step": "train step"}


def _memory_header(mode: str) -> tuple[str, str]:
    cells = " ".join(f"{n:>{CELL}}" for n in ("peak MB", "kept MB", "RSS MB"))
    return f" {mode} memory ".center(len(cells), "-"), cells


def _memory_cells(timed, errors, case) -> str:
    try:
        peak, kept = traced_memory(timed)
        rss = rss_growth(timed)
        values = [_num(peak / 2**20, ".2f"), _num(kept / 2**20, ".2f"),
                  _num(None if rss is None else rss / 2**20, ".2f")]
    except Exception as exc:
        errors.append(f"{case.name} {timed.mode} memory: {exc!r}\n{traceback.format_exc()}")
        values = ["-", "-", "-"]
    return " ".join(f"{v:>{CELL}}" for v in values)


def _train_step_line(case, timed, fc, th) -> str:
    """Images per second of both libraries, and the issue's target for the step."""
    fc_rate = workloads.rate(timed.work, fc, "img/s") if fc else None
    th_rate = workloads.rate(timed.work, th, "img/s") if th else None
    return (f"  {case.name}: fastconv {_num(fc_rate, '.0f')} img/s, torch "
            f"{_num(th_rate, '.0f')} img/s, step time fastconv / torch "
            f"{_num(_ratio(fc, th), '.2f')} (target <= 0.40)")


def _small_call_line(case, fc, th, ox) -> str:
    """A batch-1 forward against its targets: half of torch's time, 1.2x ONNX Runtime's."""
    return (f"  {case.name}: fastconv {_num(None if fc is None else fc * 1e6, '.1f')} us, "
            f"fastconv / torch {_num(_ratio(fc, th), '.2f')} (target <= 0.50), "
            f"fastconv / onnxruntime {_num(_ratio(fc, ox), '.2f')} (target <= 1.20)")


def run_kind(kind: str, cases, args, rng, errors) -> dict[str, list[float | None]]:
    """Time and print one table (one op kind); return the ratios per mode, in case order."""
    name_w = max(len("case"), *(len(c.name) for c in cases))
    desc_w = max(len("shape"), *(len(c.describe()) for c in cases))
    first = workloads.workload(cases[0], dtype=case_dtype(cases[0], args.dtype),
                               algorithm=args.algorithm)
    modes = [m for m, _, _ in first.modes]
    with_onnx = args.with_onnx and type(first).onnx_forward is not workloads.Workload.onnx_forward
    heads = [_mode_header(m, first.unit, with_onnx and m == "fwd") for m in modes]
    if not args.no_memory:
        heads.append(_memory_header(first.memory_mode))
    lead = " " * (name_w + desc_w + 2)
    print()
    print(f"{KIND_TITLES.get(kind, kind)} (ms per call, medians; ratio = fastconv / torch)")
    print(lead + " | ".join(h[0] for h in heads))
    print(f"{'case':<{name_w}} {'shape':<{desc_w}} " + " | ".join(h[1] for h in heads))
    ratios: dict[str, list[float | None]] = {m: [] for m in modes}
    notes = []
    for case in cases:
        wl = workloads.workload(case, dtype=case_dtype(case, args.dtype), algorithm=args.algorithm)
        cells = []
        memory = " ".join(f"{'-':>{CELL}}" for _ in range(2))
        for timed in wl.bind(rng, with_torch=not args.no_torch, with_onnx=with_onnx):
            try:
                fc, th, ox = measure(timed, args.repeat, args.inner_ms / 1e3)
            except Exception as exc:  # keep going: report the failure after the table
                errors.append(f"{case.name} {timed.mode}: {exc!r}\n{traceback.format_exc()}")
                fc, th, ox = None, None, None
            rate = workloads.rate(timed.work, fc, timed.unit) if fc else None
            fraction = limit_fraction(rate, timed.unit, case_dtype(case, args.dtype), args.limits)
            has_onnx = with_onnx and timed.mode == "fwd"
            cells.append(_mode_cells(fc, th, timed.work, timed.unit, fraction,
                                     (ox,) if has_onnx else None))
            if has_onnx:
                args.onnx_ratios.setdefault(kind, []).append(_ratio(fc, ox))
            if timed.mode == "fwd" and near_limit_class(case):
                args.near_limit.append((case, fraction))
            ratios[timed.mode].append(_ratio(fc, th))
            args.shares.setdefault(case.name, {})[timed.mode] = fraction
            if not args.no_memory and timed.mode == wl.memory_mode:
                memory = _memory_cells(timed, errors, case)
            if case.kind == "train_step":
                notes.append(_train_step_line(case, timed, fc, th))
            if case.kind == "inference" and case.batch == 1:
                notes.append(_small_call_line(case, fc, th, ox if has_onnx else None))
        if not args.no_memory:
            cells.append(memory)
        print(f"{case.name:<{name_w}} {case.describe():<{desc_w}} " + " | ".join(cells), flush=True)
        if wl.onnx_unavailable:
            notes.append(f"  {case.name}: no ONNX Runtime time ({wl.onnx_unavailable})")
    for note in notes:
        print(note)
    return ratios


# ---------------------------------------------------------------------------------------
# thread scaling
# ---------------------------------------------------------------------------------------


def parse_counts(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]`` (distinct, in the given order, each at least 1)."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--scaling expects comma-separated thread counts, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise ValueError(f"--scaling expects thread counts of at least 1, got {text!r}")
    return list(dict.fromkeys(counts))


def measure_threads(timed, counts, repeat: int, target: float) -> dict[int, float]:
    """Median seconds per fastconv call at each thread count, interleaved.

    Every repetition times each count once; the order of the counts flips every
    repetition so that drift hits all counts alike.  fastconv's thread setting is
    restored afterwards.
    """
    before = workloads.fastconv.get_num_threads()
    try:
        loops = {}
        for n in counts:
            workloads.fastconv.set_num_threads(n)
            with _fastconv_context(timed):
                loops[n] = inner_loops(timed.fastconv, target)
        times: dict[int, list[float]] = {n: [] for n in counts}
        for r in range(repeat):
            for n in (counts if r % 2 == 0 else counts[::-1]):
                workloads.fastconv.set_num_threads(n)
                with _fastconv_context(timed):
                    times[n].append(time_per_call(timed.fastconv, loops[n]))
    finally:
        workloads.fastconv.set_num_threads(before)
    return {n: statistics.median(t) for n, t in times.items()}


def run_scaling(cases, counts, args, rng, errors) -> None:
    """Time fastconv alone at each thread count; print ms, speedups and their geomeans."""
    base = counts[0]
    name_w = max(len("case"), *(len(c.name) for c in cases))
    mode_w = max(len("mode"), *(len(m) for c in cases
                                for m, _, _ in workloads.WORKLOADS[c.kind].modes))
    ms_cells = " ".join(f"{f'{n}T ms':>{CELL}}" for n in counts)
    up_cells = " ".join(f"{f'{n}T x':>{CELL}}" for n in counts[1:])
    print()
    print(f"thread scaling of fastconv (ms per call, medians; nT x = time at {base} "
          f"thread{'s' if base > 1 else ''} / time at n threads)")
    sep = " | " if len(counts) > 1 else ""
    print(f"{'case':<{name_w}} {'mode':<{mode_w}} {ms_cells}{sep}{up_cells}")
    speedups: dict[tuple[str, bool], dict[int, list[float]]] = {}
    for case in cases:
        wl = workloads.workload(case, dtype=case_dtype(case, args.dtype), algorithm=args.algorithm)
        for timed in wl.bind(rng, with_torch=False):
            try:
                t = measure_threads(timed, counts, args.repeat, args.inner_ms / 1e3)
            except Exception as exc:
                errors.append(f"{case.name} {timed.mode} scaling: {exc!r}\n{traceback.format_exc()}")
                t = {}
            ups = {n: t[base] / t[n] for n in counts[1:] if t.get(n) and t.get(base)}
            for group in ((timed.mode, False), (timed.mode, True)):
                if group[1] and not is_large(case):
                    continue
                for n, up in ups.items():
                    speedups.setdefault(group, {}).setdefault(n, []).append(up)
            ms = " ".join(f"{_num(t[n] * 1e3 if n in t else None, '.3f'):>{CELL}}" for n in counts)
            xs = " ".join(f"{_num(ups.get(n), '.2f'):>{CELL}}" for n in counts[1:])
            print(f"{case.name:<{name_w}} {timed.mode:<{mode_w}} {ms}{sep}{xs}", flush=True)
    if len(counts) < 2:
        return
    for large, label in ((True, "large cases (cases.is_large)"), (False, "all cases")):
        parts = []
        for (mode, is_large_group), per_n in speedups.items():
            if is_large_group != large:
                continue
            n_cases = len(next(iter(per_n.values())))
            text = ", ".join(f"{n}T {_num(geomean(v), '.2f')}x" for n, v in per_n.items())
            parts.append(f"{mode} {text} ({n_cases} cases)")
        if parts:
            print(f"geometric mean speedup over {base}T, {label}: " + "; ".join(parts))
    if base == 1 and 2 in counts:
        print("target (issue): 2 threads >= 1.70x one thread on the large cases")


class PlotRow(NamedTuple):
    """One case of the chart: its op kind's title, its name, its ratio per mode and its
    rate per mode as a share of the machine's limit (``limit_fraction``; None: no limit)."""

    group: str
    name: str
    ratios: dict[str, float | None]
    shares: dict[str, float | None] = {}


#: chart geometry (inches): width, height of one case row, and room for title and x axis
PLOT_WIDTH = 10.0
PLOT_ROW_HEIGHT = 0.23
PLOT_MARGINS = 0.85
PLOT_DPI = 120
#: the share panel's axis ends here (%): Winograd's effective rates pass 100%
SHARE_AXIS_MAX = 150
#: bar colours of the usual modes; others (the denormal modes) take spares in order of appearance
MODE_COLOURS = {"fwd": "tab:blue", "fwd+bwd": "tab:orange", "step": "tab:green"}
SPARE_COLOURS = ("tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")


def _mode_colours(modes) -> dict[str, str]:
    """A colour per mode: ``MODE_COLOURS`` where named, spares for the rest."""
    spares = iter(SPARE_COLOURS)
    return {m: MODE_COLOURS.get(m) or next(spares, "black") for m in modes}


def _octaves(rows) -> int:
    """Half-width of the log2 x axis: the largest deviation from 1.0, with room for the
    values printed at the bars' ends, at least 1 (1/2..2) and at most 7 (1/128..128)."""
    logs = [abs(math.log2(v)) for row in rows for v in row.ratios.values() if v and v > 0]
    widest = max(logs, default=0.0)
    return int(min(7, max(1, math.ceil(widest + 0.5))))


def _ratio_tick(exponent: int) -> str:
    """Tick label of ``2 ** exponent``: ``1/4``, ``1``, ``4``."""
    return f"{2 ** exponent}" if exponent >= 0 else f"1/{2 ** -exponent}"


def _row_spans(rows, colours) -> list[tuple[float, float]]:
    """``(top, span)`` of each case row in bar-pair units: two bars fill one unit, so every
    bar is as thick as every other and a row of three modes (denormal) gets 1.5 units."""
    spans, top = [], 0.0
    for row in rows:
        span = max(2, sum(m in row.ratios for m in colours)) / 2
        spans.append((top, span))
        top += span
    return spans


def _draw_bars(ax, rows, spans, colours, octaves) -> None:
    """Bars from 1.0 to each ratio, stacked per case, with the value at each end."""
    lo, hi = 2.0 ** -octaves, 2.0 ** octaves
    for row, (top, span) in zip(rows, spans):
        modes = [m for m in colours if m in row.ratios]
        for m, mode in enumerate(modes):
            value = row.ratios[mode]
            if not value or value <= 0:
                continue
            bar_y = top + span / 2 + (m - (len(modes) - 1) / 2) * 0.42
            end = min(max(value, lo), hi)  # clipped bars still show their true value
            ax.barh(bar_y, end - 1.0, left=1.0, height=0.38, color=colours[mode])
            faster = value < 1.0  # the bar grows leftwards: its value goes left of its end
            ax.text(end, bar_y, f"{value:.2f} " if faster else f" {value:.2f}",
                    ha="right" if faster else "left", va="center", fontsize=6)


def _draw_shares(ax, rows, spans, colours) -> None:
    """Bars of each mode's share of the machine's limit (%), the value at each end, and
    the targets of the forwards held to it (70% of the FMA peak, 60% of the bandwidth)."""
    for row, (top, span) in zip(rows, spans):
        modes = [m for m in colours if m in row.ratios]
        for m, mode in enumerate(modes):
            value = row.shares.get(mode)
            if value is None:
                continue
            bar_y = top + span / 2 + (m - (len(modes) - 1) / 2) * 0.42
            percent = 100 * value
            ax.barh(bar_y, min(percent, SHARE_AXIS_MAX), height=0.38, color=colours[mode])
            ax.text(min(percent, SHARE_AXIS_MAX), bar_y, f" {percent:.0f}", ha="left",
                    va="center", fontsize=6)
    for _, _, target in NEAR_LIMIT_TARGETS.values():
        ax.axvline(100 * target, color="0.35", linewidth=0.6, linestyle="--")
    ax.set_xlim(0, SHARE_AXIS_MAX + 25)
    ax.set_xticks(range(0, SHARE_AXIS_MAX + 1, 50), [f"{t}%" for t in range(0, SHARE_AXIS_MAX + 1, 50)],
                  fontsize=7)
    ax.grid(True, axis="x", alpha=0.3)
    ax.tick_params(axis="y", length=0)
    ax.set_xlabel("share of the machine's limit: FMA peak (conv)\nor copy bandwidth (pooling); "
                  "dashed: 60%, 70%", fontsize=7)


def _draw_groups(axes, rows, spans) -> None:
    """A thin line between op kinds on every axes, and each kind's title right of the last."""
    for i, (row, (top, _)) in enumerate(zip(rows, spans)):
        if i > 0 and row.group == rows[i - 1].group:
            continue
        if i > 0:
            for ax in axes:
                ax.axhline(top, color="0.55", linewidth=0.6)
        last = axes[-1]
        last.text(1.01, top + 0.08, row.group, transform=last.get_yaxis_transform(),
                  ha="left", va="top", fontsize=7, style="italic", color="0.3")


def _draw_header(ax, title: str, colours) -> None:
    """The title on the left above the axes and the mode legend on the right, in rows of
    at most three modes so that the two never meet."""
    import matplotlib.patches as patches

    ax.set_title(title, fontsize=8, loc="left")
    handles = [patches.Patch(color=c) for c in colours.values()]
    ax.legend(handles, list(colours), loc="lower right", bbox_to_anchor=(1.0, 1.0),
              ncol=min(3, len(colours)), fontsize=7, frameon=False, borderaxespad=0.2,
              handlelength=1.2, columnspacing=1.0)


def plot_ratios(path: str, rows: list[PlotRow], title: str) -> None:
    """Write one compact PNG: per case, a horizontal bar of fastconv / torch time per mode on
    a log axis centred on 1.0 (left of 1: fastconv faster), cases grouped by op kind; beside
    it a panel of each mode's share of the machine's limit."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from None
    colours = _mode_colours(dict.fromkeys(m for row in rows for m in row.ratios))
    spans = _row_spans(rows, colours)
    octaves = _octaves(rows)
    total = sum(span for _, span in spans)
    header = 0.15 * ((len(colours) - 1) // 3)  # extra legend rows
    # laid out at the dpi it is saved at: text measured at another dpi can overflow the edge
    fig, (ax, share_ax) = plt.subplots(
        1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 1]}, dpi=PLOT_DPI,
        figsize=(PLOT_WIDTH, PLOT_ROW_HEIGHT * total + PLOT_MARGINS + header))
    ax.set_xscale("log", base=2)
    ax.set_xlim(2.0 ** -octaves, 2.0 ** octaves)
    ax.set_ylim(total, 0)  # first case on top
    exponents = range(-octaves, octaves + 1)
    ax.set_xticks([2.0 ** e for e in exponents], [_ratio_tick(e) for e in exponents], fontsize=7)
    ax.minorticks_off()
    ax.set_yticks([top + span / 2 for top, span in spans], [row.name for row in rows], fontsize=7)
    ax.tick_params(axis="y", length=0)
    ax.grid(True, axis="x", alpha=0.3)
    ax.axvline(1.0, color="black", linewidth=0.8)
    _draw_bars(ax, rows, spans, colours, octaves)
    _draw_shares(share_ax, rows, spans, colours)
    _draw_groups((ax, share_ax), rows, spans)
    ax.set_xlabel("time ratio fastconv / torch (log scale; left of 1: fastconv faster)", fontsize=7)
    _draw_header(ax, title, colours)
    fig.tight_layout(pad=0.4)
    fig.savefig(path, dpi=PLOT_DPI)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description="Time fastconv against PyTorch CPU, interleaved in one process, and print ratios.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for both libraries (default: fastconv.get_num_threads())")
    parser.add_argument("--repeat", type=int, default=None,
                        help="timed repetitions per library, case and mode (default: 25, or 3 with --quick)")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--suite", choices=tuple(SUITES), default="default",
                        help="which cases: 'default' (the cases compared across versions), "
                             "'networks' (layer shapes of well-known networks, named net-...; "
                             "batch 1 and 8, a few fixed to float64) or 'all' (both)")
    parser.add_argument("--cases", default=None,
                        help="only cases of the suite whose name contains one of these "
                             "comma-separated substrings")
    parser.add_argument("--algorithm", choices=workloads.ALGORITHMS, default="auto",
                        help="fastconv algorithm")
    parser.add_argument("--inner-ms", type=float, default=None,
                        help="length of one timed inner loop in ms (default: 40, or 0 with --quick)")
    parser.add_argument("--no-torch", action="store_true", help="time fastconv only")
    parser.add_argument("--no-onnx", action="store_true",
                        help="leave out ONNX Runtime, the second forward anchor (used when "
                             "onnx and onnxruntime are installed)")
    parser.add_argument("--no-memory", action="store_true",
                        help="leave out the peak MB / kept MB columns (fastconv's memory of one "
                             "fwd+bwd call, or one training step, traced with tracemalloc: "
                             "NumPy allocations, outputs and workspaces, not RSS; torch's memory "
                             "is not measured)")
    parser.add_argument("--scaling", metavar="N,N,...", nargs="?", const="1,2", default=None,
                        help="instead of the comparison, time fastconv alone at these thread counts "
                             "(interleaved medians) and print the speedups over the first count, "
                             "with geometric means over the large cases (alone: 1,2)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 3 repetitions of single calls")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.add_argument("--plot", metavar="PATH", default=None,
                        help="also write one compact PNG chart of the ratios: a bar per case and "
                             "mode on a log axis centred on 1, grouped by op kind (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 3 if args.quick else 25
    if args.inner_ms is None:
        args.inner_ms = 0.0 if args.quick else 40.0
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")

    if args.scaling is not None:
        try:
            args.scaling = parse_counts(args.scaling)
        except ValueError as exc:
            parser.error(str(exc))
        if args.plot:
            parser.error("--plot draws fastconv / torch ratios: not with --scaling")

    threads = workloads.set_threads(args.threads)
    if not workloads.HAVE_TORCH:
        args.no_torch = True
    suite = SUITES[args.suite]
    cases = select(suite, args.cases)
    if not cases:
        parser.error(f"no case of suite {args.suite!r} contains {args.cases!r}; "
                     f"cases: {', '.join(c.name for c in suite)}")

    args.with_onnx = onnx_anchor.HAVE_ORT and not (args.no_onnx or args.no_torch)
    v = workloads.versions()
    torch_text = "not used" if args.no_torch and workloads.HAVE_TORCH else v["torch"]
    onnx_text = onnx_anchor.version() if args.with_onnx or not onnx_anchor.HAVE_ORT else "not used"
    print(
        f"fastconv {v['fastconv']} ({v['fastconv_path']}) | suite {args.suite} | threads {threads} | "
        f"dtype {args.dtype} | "
        f"algorithm {args.algorithm} | torch {torch_text} | onnxruntime {onnx_text} | "
        f"numpy {v['numpy']} | repeat {args.repeat}, inner loop ~{args.inner_ms:g} ms"
    )

    rng = np.random.default_rng(args.seed)
    errors: list[str] = []
    if args.scaling is not None:
        return _scaling_main(cases, args, rng, errors)
    args.limits = workloads.machine_limits(threads)
    args.near_limit = []
    args.onnx_ratios = {}
    args.shares = {}  # case name -> mode -> share of the machine's limit, for the chart
    print(limits_line(args.limits))
    all_ratios: dict[str, list[float | None]] = {}
    ratios_by_kind: dict[str, dict[str, list[float | None]]] = {}
    start = time.perf_counter()
    kinds = list(dict.fromkeys(c.kind for c in cases))
    plot_rows: list[PlotRow] = []
    for kind in kinds:
        kind_cases = [c for c in cases if c.kind == kind]
        ratios = run_kind(kind, kind_cases, args, rng, errors)
        ratios_by_kind[kind] = ratios
        for i, case in enumerate(kind_cases):
            plot_rows.append(PlotRow(KIND_TITLES.get(kind, kind), case.name,
                                     {mode: r[i] for mode, r in ratios.items()},
                                     args.shares.get(case.name, {})))
        if len(kinds) > 1:
            print(_geomean_line(f"{kind} cases", ratios))
        for mode, r in ratios.items():
            all_ratios.setdefault(mode, []).extend(r)

    print()
    print(_geomean_line("all cases" if len(kinds) > 1 else "cases", all_ratios))
    conv_line = conv_only_line(ratios_by_kind)
    if conv_line:
        print(conv_line)
    if args.onnx_ratios:
        print(onnx_line(args.onnx_ratios))
    for line in near_limit_lines(args.near_limit):
        print(line)
    again_line = limits_again_line(args.limits, threads)
    if again_line:
        print(again_line)
    print(f"[{time.perf_counter() - start:.1f} s]")
    if args.plot:
        if args.no_torch:
            parser.error("--plot draws fastconv / torch ratios: it needs torch")
        plot_ratios(args.plot, plot_rows, f"fastconv {v['fastconv']} vs torch {v['torch']}, "
                                          f"{threads} threads, {args.dtype}")
        print(f"wrote {args.plot}")
    for err in errors:
        print(f"\nERROR {err}", file=sys.stderr)
    return 1 if errors else 0


def _scaling_main(cases, args, rng, errors) -> int:
    start = time.perf_counter()
    run_scaling(cases, args.scaling, args, rng, errors)
    print(f"[{time.perf_counter() - start:.1f} s]")
    for err in errors:
        print(f"\nERROR {err}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
