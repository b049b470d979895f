"""Throughput of data-parallel training over MPI: 1 rank x T threads vs R ranks x T/R threads.

Usage (needs mpirun and mpi4py, and Fashion-MNIST or ``--dataset mnist`` with its files)::

    python bench/distributed.py [--limit 12000] [--epochs 1] [--batch-size 64] [--repeat 5]
                                [--cpus 2] [--data-dir DIR] [--json PATH]

A script, not a timed test. It runs ``fastconv-train`` on LeNet-5 (``--limit`` training
images, ``--epochs``, batch ``--batch-size``) three ways on ``--cpus`` cores:

- one process, ``--cpus`` kernel threads (no MPI);
- ``mpirun -n cpus``, one thread per rank, Open MPI binding each rank to a core (its
  default for up to 2 ranks);
- the same with ``--bind-to none``.

and reads the trainer's images/s (training only, the test pass excluded) and, for the
MPI runs, its "Allreduce:" line (ms per step on rank 0, copies and waiting included).
The three run in turn ``--repeat`` times; the table gives each one's median (and range).
Then it times the reduction alone: ``mpirun -n cpus`` of this script's ``--allreduce``
mode, which runs :meth:`DistributedOptimizer.allreduce_gradients` on LeNet-5's 61,706
gradients (246,824 bytes) ``--reps`` times after a barrier and reports the median.
Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mpirun(n: int, *extra: str) -> list[str]:
    command = [shutil.which("mpirun") or "mpirun", "--oversubscribe", "-n", str(n), *extra]
    if os.geteuid() == 0:
        command.insert(1, "--allow-run-as-root")
    return command


def environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FASTCONV_NUM_THREADS",
                                                           "OMP_NUM_THREADS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    return env


def train_run(label: str, launcher: list[str], threads: int, args: argparse.Namespace) -> dict:
    """One fastconv-train run; its images/s and allreduce time from the log and output."""
    with tempfile.TemporaryDirectory() as folder:
        log = os.path.join(folder, "log.jsonl")
        command = [*launcher, sys.executable, "-m", "fastconv.train", "--dataset", args.dataset,
                   "--limit", str(args.limit), "--test-limit", "1000", "--epochs",
                   str(args.epochs), "--batch-size", str(args.batch_size), "--threads",
                   str(threads), "--no-progress", "--log-json", log]
        if args.data_dir:
            command += ["--data-dir", args.data_dir]
        start = time.perf_counter()
        out = subprocess.run(command, capture_output=True, text=True, env=environment(),
                             timeout=3600)
        wall = time.perf_counter() - start
        if out.returncode:
            raise SystemExit(f"{label} failed:\n{out.stdout}\n{out.stderr}")
        with open(log) as f:
            records = [json.loads(line) for line in f]
    images = args.limit * args.epochs
    seconds = sum(r["seconds"] for r in records)
    match = re.search(r"Allreduce: (\d+) bytes of gradients per step, ([\d.]+) ms", out.stdout)
    return {"label": label, "images_per_s": images / seconds, "train_seconds": seconds,
            "wall_seconds": wall, "test_acc": records[-1]["test_acc"],
            "allreduce_bytes": int(match.group(1)) if match else None,
            "allreduce_ms_in_run": float(match.group(2)) if match else None}


def median_run(runs: list[dict]) -> dict:
    """The run of median images/s, with the range over all of them."""
    ordered = sorted(runs, key=lambda r: r["images_per_s"])
    middle = dict(ordered[len(ordered) // 2])
    middle["range"] = (ordered[0]["images_per_s"], ordered[-1]["images_per_s"])
    middle["all_images_per_s"] = [r["images_per_s"] for r in runs]
    return middle


def allreduce_worker(reps: int) -> None:
    """Under mpirun: time DistributedOptimizer.allreduce_gradients on LeNet-5's gradients."""
    import numpy as np

    from fastconv import distributed, optim
    from fastconv.models import LeNet5

    comm = distributed.Communicator()
    model = LeNet5(rng=0)
    opt = distributed.DistributedOptimizer(optim.SGD(model.parameters(), lr=0.01), comm)
    for p in model.parameters():
        p.grad[...] = comm.rank + 1.0
    times = []
    for _ in range(reps):
        comm.barrier()
        start = time.perf_counter()
        opt.allreduce_gradients()
        times.append(time.perf_counter() - start)
    buffer = np.ones(opt.nbytes // 4, np.float32)
    raw = []
    for _ in range(reps):
        comm.barrier()
        start = time.perf_counter()
        comm.allreduce_sum(buffer)
        raw.append(time.perf_counter() - start)
    if comm.rank == 0:
        print(json.dumps({"ranks": comm.size, "bytes": opt.nbytes,
                          "median_ms": 1e3 * float(np.median(times)),
                          "median_ms_allreduce_only": 1e3 * float(np.median(raw))}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist", help="(default: fashion-mnist)")
    parser.add_argument("--data-dir", default=None, help="(default: fastconv's search)")
    parser.add_argument("--limit", type=int, default=12000, help="training images (default: 12000)")
    parser.add_argument("--epochs", type=int, default=1, help="(default: 1)")
    parser.add_argument("--batch-size", type=int, default=64, help="global batch (default: 64)")
    parser.add_argument("--cpus", type=int, default=2, help="cores to use (default: 2)")
    parser.add_argument("--repeat", type=int, default=5,
                        help="runs of each configuration, in turn (default: 5)")
    parser.add_argument("--reps", type=int, default=200,
                        help="allreduce timings (default: 200)")
    parser.add_argument("--json", default=None, help="also write the results here")
    parser.add_argument("--allreduce", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.allreduce:
        allreduce_worker(args.reps)
        return

    n = args.cpus
    configurations = [
        (f"1 process x {n} threads", [], n),
        (f"{n} ranks x 1 thread (bound to cores)", mpirun(n), 1),
        (f"{n} ranks x 1 thread (--bind-to none)", mpirun(n, "--bind-to", "none"), 1),
    ]
    rounds = [[train_run(label, launcher, threads, args)
               for label, launcher, threads in configurations] for _ in range(args.repeat)]
    runs = [median_run([r[i] for r in rounds]) for i in range(len(configurations))]
    micro = subprocess.run([*mpirun(n), sys.executable, os.path.abspath(__file__), "--allreduce",
                            "--reps", str(args.reps)], capture_output=True, text=True,
                           env=environment(), timeout=600)
    if micro.returncode:
        raise SystemExit(f"allreduce timing failed:\n{micro.stdout}\n{micro.stderr}")
    reduce = json.loads(micro.stdout.strip().splitlines()[-1])

    print(f"LeNet-5 on {args.dataset}: {args.limit} images x {args.epochs} epoch(s), "
          f"global batch {args.batch_size}, {n} cores")
    print(f"{'configuration':40s} {'img/s (median)':>14s} {'range':>13s} {'vs 1 proc':>9s} "
          f"{'test acc':>9s} {'allreduce ms/step':>18s}")
    for run in runs:
        in_run = run["allreduce_ms_in_run"]
        low, high = run["range"]
        print(f"{run['label']:40s} {run['images_per_s']:14.0f} {f'{low:.0f}-{high:.0f}':>13s} "
              f"{run['images_per_s'] / runs[0]['images_per_s']:9.2f} "
              f"{100 * run['test_acc']:8.2f}% "
              f"{'-' if in_run is None else f'{in_run:.3f}':>18s}")
    step_ms = 1e3 * args.batch_size / runs[1]["images_per_s"]
    print(f"Allreduce alone ({reduce['ranks']} ranks, {reduce['bytes']} bytes): "
          f"{reduce['median_ms']:.3f} ms with packing, {reduce['median_ms_allreduce_only']:.3f} "
          f"ms MPI_Allreduce only (median of {args.reps}); a step of the bound run takes "
          f"{step_ms:.1f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": runs, "allreduce": reduce, "args": vars(args)}, f, indent=1)


if __name__ == "__main__":
    main()
