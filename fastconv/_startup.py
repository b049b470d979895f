"""fastconv-train's start on one process or on the ranks of an MPI job.

Every check here is collective and ends the same way on every rank, so a bad
set-up makes all ranks exit with a message from rank 0, never leaves one
waiting for the others:

- the ranks run the same command line and fastconv version (compared with an
  allgather; the per-node data folder and per-rank threads may differ);
- the ranks divide the global batch;
- every rank loads the data (a flag gathered from each), and all hold the same;
- a checkpoint to resume is read once, on rank 0, and broadcast.
"""

from __future__ import annotations

import argparse
import hashlib
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

import fastconv
from fastconv import distributed, nn, optim
from fastconv._checkpoint import RunState, Scheduler, load_checkpoint
from fastconv.distributed import AnyCommunicator

#: Flags that may differ between ranks: per-node data paths and per-rank threads.
PER_RANK_FLAGS = ("data_dir", "threads")


def connect(mode: str) -> AnyCommunicator:
    """The ranks of this run: MPI's for ``--distributed mpi`` (or ``auto`` under an MPI
    launcher), else this process alone.

    Parameters
    ----------
    mode : {"auto", "mpi", "off"}

    Returns
    -------
    Communicator or SingleProcess

    Raises
    ------
    ImportError
        MPI is wanted but mpi4py is missing (the message says how to install it).

    Examples
    --------
    >>> from fastconv._startup import connect
    >>> connect("off").size
    1
    """
    if mode == "off" or (mode == "auto" and not distributed.launched_by_mpi()):
        return distributed.SingleProcess()
    return distributed.Communicator()


def set_threads(comm: AnyCommunicator, threads: int | None) -> None:
    """``--threads`` if given; else, on several ranks and unless FASTCONV_NUM_THREADS or
    OMP_NUM_THREADS is set, the rank's share of its CPUs (collective)."""
    if threads is not None:
        fastconv.set_num_threads(threads)
    elif comm.size > 1 and not any(os.environ.get(v, "").strip()
                                   for v in ("FASTCONV_NUM_THREADS", "OMP_NUM_THREADS")):
        fastconv.set_num_threads(distributed.default_threads(comm))


def startup_problem(comm: AnyCommunicator, args: argparse.Namespace) -> str | None:
    """None when every rank runs the same command and version and the ranks divide the
    global batch, else the message (the same on every rank). Collective."""
    run = {k: v for k, v in vars(args).items() if k not in PER_RANK_FLAGS}
    run["fastconv"] = fastconv.__version__
    problem = distributed.check_same(comm, run, "the arguments or fastconv version")
    if problem is not None:
        problem += ": every rank must run the same command line and fastconv version"
    if problem is None and args.batch_size % comm.size:
        below = args.batch_size - args.batch_size % comm.size
        problem = (f"--batch-size {args.batch_size} is not divisible by the {comm.size} ranks "
                   f"(each rank takes an equal share of every global batch): use a multiple of "
                   f"{comm.size}, e.g. {below or comm.size} or {below + comm.size}")
    return problem


def digest(arrays: Sequence[NDArray[Any]]) -> str:
    """A short hash of the arrays' dtypes, shapes and bytes."""
    h = hashlib.blake2b(digest_size=16)
    for array in arrays:
        h.update(str((array.dtype, array.shape)).encode())
        h.update(np.ascontiguousarray(array).data)
    return h.hexdigest()


def load_everywhere(comm: AnyCommunicator,
                    load: Callable[[], tuple[NDArray[Any], ...]]) -> tuple[Any, str | None]:
    """Every rank calls ``load``; (its arrays, None) when all succeeded and hold the same
    data, else (None, the message). Collective."""
    try:
        arrays, error = load(), None
    except (FileNotFoundError, ValueError) as exc:
        arrays, error = None, str(exc)
    failed = [(rank, e) for rank, e in enumerate(comm.allgather(error)) if e is not None]
    if failed and comm.size == 1:
        return None, failed[0][1]
    if failed:
        ranks = ", ".join(str(rank) for rank, _ in failed)
        return None, f"the data could not be loaded on rank {ranks}:\n" + "\n".join(
            f"  rank {rank}: {e}" for rank, e in failed)
    if comm.size > 1 and arrays is not None:
        problem = distributed.check_same(comm, digest(arrays), "the data loaded (other files?)")
        if problem is not None:
            return None, problem
    return arrays, None


def resume(comm: AnyCommunicator, args: argparse.Namespace, model: nn.Module,
           opt: optim.Optimizer, state: RunState, scheduler: Scheduler | None) -> str | None:
    """Load ``args.resume`` on every rank (read once, on rank 0, and broadcast); None, or
    the message when it cannot be read or does not fit this run. Collective."""
    content, problem = None, None
    if comm.rank == 0:
        try:
            with open(args.resume, "rb") as f:
                content = f.read()
        except OSError as exc:
            problem = f"cannot read checkpoint {args.resume}: {exc}"
    content, problem = comm.bcast((content, problem))
    if problem is None:
        try:
            load_checkpoint(args.resume, model, opt, state, args, scheduler, content)
        except (OSError, ValueError) as exc:
            problem = str(exc)
    return problem


def weights_problem(comm: AnyCommunicator, model: nn.Module, epoch: int) -> str | None:
    """A cheap guard after each epoch: None when every rank holds the same weights."""
    if comm.size == 1:
        return None
    return distributed.check_same(comm, digest([p.data for p in model.parameters()]),
                                  f"their weights after epoch {epoch}")
