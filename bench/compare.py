"""Compare fastconv with PyTorch CPU in one process and print a ratio table.

Usage::

    python bench/compare.py [--threads N] [--repeat R] [--dtype float32|float64]
                            [--cases SUBSTR[,SUBSTR...]] [--algorithm auto|direct|im2col|winograd]
                            [--inner-ms MS] [--no-torch] [--quick]

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
"""

from __future__ import annotations

import argparse
import gc
import math
import statistics
import sys
import time
import traceback

import numpy as np

import workloads
from cases import ALL_CASES, select


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


def measure(timed, repeat: int, target: float) -> tuple[float, float | None]:
    """Median seconds per call of fastconv and of torch (``None`` without torch), interleaved."""
    fc_loops = inner_loops(timed.fastconv, target)
    th_loops = inner_loops(timed.torch, target) if timed.torch is not None else 0
    fc_times, th_times = [], []
    for r in range(repeat):
        order = ("fc", "th") if r % 2 == 0 else ("th", "fc")
        for who in order:
            if who == "fc":
                fc_times.append(time_per_call(timed.fastconv, fc_loops))
            elif timed.torch is not None:
                th_times.append(time_per_call(timed.torch, th_loops))
    return statistics.median(fc_times), (statistics.median(th_times) if th_times else None)


def geomean(values):
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


# ---------------------------------------------------------------------------------------
# table
# ---------------------------------------------------------------------------------------

CELL = 9  # width of one number column


def _num(value, fmt) -> str:
    return "-" if value is None else format(value, fmt)


def _mode_header(mode: str, unit: str) -> tuple[str, str]:
    names = ["fc ms", "torch ms", "ratio", unit]
    cells = " ".join(f"{n:>{CELL}}" for n in names)
    title = f" {mode} ".center(len(cells), "-")
    return title, cells


def _mode_cells(fc: float | None, th: float | None, work: float) -> str:
    ratio = fc / th if (fc is not None and th is not None and th > 0) else None
    rate = work / fc / 1e9 if fc else None
    cells = [
        _num(None if fc is None else fc * 1e3, ".3f"),
        _num(None if th is None else th * 1e3, ".3f"),
        _num(ratio, ".2f"),
        _num(rate, ".1f"),
    ]
    return " ".join(f"{c:>{CELL}}" for c in cells)


def run_kind(kind: str, cases, args, rng, errors) -> dict[str, list[float | None]]:
    """Time and print one table (one op kind); return the ratios per mode, in case order."""
    name_w = max(len("case"), *(len(c.name) for c in cases))
    desc_w = max(len("shape"), *(len(c.describe()) for c in cases))
    first = workloads.workload(cases[0], dtype=args.dtype, algorithm=args.algorithm)
    modes = [m for m, _, _ in first.modes]
    heads = [_mode_header(m, first.unit) for m in modes]
    lead = " " * (name_w + desc_w + 2)
    print()
    print(f"{kind} (ms per call, medians; ratio = fastconv / torch)")
    print(lead + " | ".join(h[0] for h in heads))
    print(f"{'case':<{name_w}} {'shape':<{desc_w}} " + " | ".join(h[1] for h in heads))
    ratios: dict[str, list[float | None]] = {m: [] for m in modes}
    for case in cases:
        wl = workloads.workload(case, dtype=args.dtype, algorithm=args.algorithm)
        cells = []
        for timed in wl.bind(rng, with_torch=not args.no_torch):
            try:
                fc, th = measure(timed, args.repeat, args.inner_ms / 1e3)
            except Exception as exc:  # keep going: report the failure after the table
                errors.append(f"{case.name} {timed.mode}: {exc!r}\n{traceback.format_exc()}")
                fc, th = None, None
            cells.append(_mode_cells(fc, th, timed.work))
            ratios[timed.mode].append(fc / th if (fc and th) else None)
        print(f"{case.name:<{name_w}} {case.describe():<{desc_w}} " + " | ".join(cells), flush=True)
    return ratios


def plot_ratios(path: str, rows, title: str) -> None:
    """Horizontal bars of fastconv / torch time per case and mode (below 1: fastconv faster)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install matplotlib") from None
    modes = list(dict.fromkeys(mode for _, ratios in rows for mode in ratios))
    height = 0.8 / max(len(modes), 1)
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) * max(len(modes), 1) + 1.5))
    for m, mode in enumerate(modes):
        ys = [i + (m - (len(modes) - 1) / 2) * height for i in range(len(rows))]
        values = [ratios.get(mode) or 0.0 for _, ratios in rows]
        ax.barh(ys, values, height=height, label=mode)
        for y, value in zip(ys, values):
            if value:
                ax.text(value, y, f" {value:.2f}", va="center", fontsize=8)
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_yticks(range(len(rows)), [name for name, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("time ratio fastconv / torch (below 1: fastconv faster)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
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
    parser.add_argument("--cases", default=None,
                        help="only cases whose name contains one of these comma-separated substrings")
    parser.add_argument("--algorithm", choices=workloads.ALGORITHMS, default="auto",
                        help="fastconv algorithm")
    parser.add_argument("--inner-ms", type=float, default=None,
                        help="length of one timed inner loop in ms (default: 40, or 0 with --quick)")
    parser.add_argument("--no-torch", action="store_true", help="time fastconv only")
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 3 repetitions of single calls")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    parser.add_argument("--plot", metavar="PATH", default=None,
                        help="also write a PNG bar chart of the ratios per case (needs matplotlib)")
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 3 if args.quick else 25
    if args.inner_ms is None:
        args.inner_ms = 0.0 if args.quick else 40.0
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")

    threads = workloads.set_threads(args.threads)
    if not workloads.HAVE_TORCH:
        args.no_torch = True
    cases = select(ALL_CASES, args.cases)
    if not cases:
        parser.error(f"no case name contains {args.cases!r}; cases: {', '.join(c.name for c in ALL_CASES)}")

    v = workloads.versions()
    torch_text = "not used" if args.no_torch and workloads.HAVE_TORCH else v["torch"]
    print(
        f"fastconv {v['fastconv']} ({v['fastconv_path']}) | threads {threads} | dtype {args.dtype} | "
        f"algorithm {args.algorithm} | torch {torch_text} | numpy {v['numpy']} | "
        f"repeat {args.repeat}, inner loop ~{args.inner_ms:g} ms"
    )

    rng = np.random.default_rng(args.seed)
    errors: list[str] = []
    all_ratios: dict[str, list[float | None]] = {}
    start = time.perf_counter()
    kinds = list(dict.fromkeys(c.kind for c in cases))
    plot_rows: list[tuple[str, dict[str, float | None]]] = []
    for kind in kinds:
        kind_cases = [c for c in cases if c.kind == kind]
        ratios = run_kind(kind, kind_cases, args, rng, errors)
        for i, case in enumerate(kind_cases):
            plot_rows.append((case.name, {mode: r[i] for mode, r in ratios.items()}))
        if len(kinds) > 1:
            print(_geomean_line(f"{kind} cases", ratios))
        for mode, r in ratios.items():
            all_ratios.setdefault(mode, []).extend(r)

    print()
    print(_geomean_line("all cases" if len(kinds) > 1 else "cases", all_ratios))
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


if __name__ == "__main__":
    sys.exit(main())
