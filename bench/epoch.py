"""Whole training epochs: ``fastconv-train`` against ``bench/lenet_torch.py``, same settings.

Usage::

    python bench/epoch.py [--dataset fashion-mnist] [--epochs 1] [--repeat 3]
                          [--threads N] [--limit N]

Each repetition runs both trainers once, one after the other, as separate processes (the
order flips every repetition): the same network (modern LeNet-5), data, batch size (64),
optimiser (SGD with momentum, lr 0.03, cosine schedule), seed and thread count. Both print
one line per epoch ending in ``| S s, R img/s``, where S counts the same work in both
(forward, loss, backward, update, batch gathering; not the test pass). The table shows
every repetition's training seconds (summed over the epochs), the medians and their
ratio fastconv / torch; the issue's target is 0.45 or less.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
EPOCH_LINE = re.compile(r"^Epoch \d+: .*\| ([\d.]+) s, \d+ img/s", re.MULTILINE)


def trainers(args) -> dict[str, list[str]]:
    """The two command lines, with the shared settings."""
    shared = ["--dataset", args.dataset, "--epochs", str(args.epochs),
              "--threads", str(args.threads)]
    if args.limit:
        shared += ["--limit", str(args.limit)]
    return {"fastconv": [sys.executable, "-m", "fastconv.train", *shared],
            "torch": [sys.executable, os.path.join(HERE, "lenet_torch.py"), *shared]}


def epoch_seconds(command: list[str]) -> float:
    """Training seconds over all epochs of one run (its per-epoch lines summed)."""
    # run from bench/: from the repository root, ``-m fastconv.train`` would import the
    # source tree (no compiled kernels) instead of the installed package
    out = subprocess.run(command, capture_output=True, text=True, timeout=3600, cwd=HERE)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({out.returncode}):\n"
                         f"{out.stdout[-2000:]}{out.stderr[-2000:]}")
    seconds = [float(s) for s in EPOCH_LINE.findall(out.stdout)]
    if not seconds:
        raise SystemExit(f"no epoch line in the output of {' '.join(command)}:\n{out.stdout}")
    return sum(seconds)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", choices=["mnist", "fashion-mnist"], default="fashion-mnist")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each trainer")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--limit", type=int, default=None, help="train on the first N images")
    args = parser.parse_args(argv)
    for name in ("epochs", "repeat", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    commands = trainers(args)
    print(f"{args.dataset}, {args.epochs} epoch(s), {args.threads} threads, "
          f"{args.repeat} runs each (the order flips every run)")
    print(f"{'run':>4} {'fastconv s':>11} {'torch s':>9} {'ratio':>7}")
    times: dict[str, list[float]] = {"fastconv": [], "torch": []}
    for r in range(args.repeat):
        order = list(commands) if r % 2 == 0 else list(commands)[::-1]
        for who in order:
            times[who].append(epoch_seconds(commands[who]))
        fc, th = times["fastconv"][-1], times["torch"][-1]
        print(f"{r + 1:>4} {fc:>11.2f} {th:>9.2f} {fc / th:>7.2f}", flush=True)
    fc, th = statistics.median(times["fastconv"]), statistics.median(times["torch"])
    print(f"medians: fastconv {fc:.2f} s, torch {th:.2f} s, ratio {fc / th:.2f} (target <= 0.45)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
