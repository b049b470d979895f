"""fastconv-train: train LeNet-5 on MNIST or Fashion-MNIST with fastconv.

Usage (also ``python -m fastconv.train``)::

    fastconv-train --dataset fashion-mnist --epochs 5

Defaults: SGD, lr 0.03 annealed per epoch along a cosine over ``--epochs``, momentum
0.9, batch 64 (89-90% test accuracy on Fashion-MNIST after 5 epochs).

Prints a progress bar per epoch (on a terminal) and one line per epoch::

    Epoch 3: train loss 0.3012 acc 89.10% | test loss 0.3120 acc 88.70% (8870/10000) | 12.3 s, 4870 img/s

"s" and "img/s" are the epoch's training time and throughput (the test pass is not
counted). ``--checkpoint PATH`` writes the whole run state (model, optimiser,
learning-rate scheduler, epoch, position in the epoch, shuffling RNG state, history)
atomically after every epoch and on Ctrl-C; ``--resume PATH`` continues from it and
gives the same results as an uninterrupted run. Same seed and thread count: identical
results run to run.

Data-parallel over MPI: ``mpirun -n N fastconv-train ...`` (``--distributed``). Every
rank draws the same global batches of ``--batch-size`` images (which N must divide),
trains on its contiguous shard of each, and the gradients are averaged across ranks
by one Allreduce per step (:mod:`fastconv.distributed`); the test set is sharded the
same way. Rank 0 alone prints and writes files. Results equal the one-process run's up
to float rounding; a checkpoint resumes with any number of ranks that divides the batch.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import signal
import sys
import time
import traceback
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

import fastconv
from fastconv import _startup, data, distributed, nn, optim, viz
from fastconv._blas import single_threaded_blas
from fastconv._checkpoint import (  # noqa: F401  (re-exported: the trainer's checkpoints)
    CHECKPOINT_FORMAT,
    RunState,
    Scheduler,
    load_checkpoint,
    run_signature,
    save_checkpoint,
)
from fastconv.distributed import AnyCommunicator
from fastconv.models import LeNet5
from fastconv.weights import save_model

__all__ = ["main", "train", "train_step", "test", "build_parser"]

class _DefaultsOnceFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to a flag's help unless the help already states its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        help_text = action.help or ""
        if "(default" in help_text or action.default is argparse.SUPPRESS:
            return help_text
        return f"{help_text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The command line of fastconv-train (``--help`` lists every flag and default).

    Returns
    -------
    argparse.ArgumentParser

    Examples
    --------
    >>> from fastconv.train import build_parser
    >>> args = build_parser().parse_args(["--dataset", "fashion-mnist", "--epochs", "2"])
    >>> args.dataset, args.epochs, args.batch_size, args.optimizer, args.lr
    ('fashion-mnist', 2, 64, 'sgd', None)
    """
    parser = argparse.ArgumentParser(
        prog="fastconv-train",
        description="Train LeNet-5 on MNIST-format data with fastconv.",
        formatter_class=_DefaultsOnceFormatter,
    )
    add = parser.add_argument
    add("--dataset", choices=["mnist", "fashion-mnist"], default="mnist",
        help="which dataset to train and test on")
    add("--data-dir", default=None,
        help="folder with the four IDX files (default: $FASTCONV_DATA, the user cache, "
             "the system folders, then a download)")
    add("--model", choices=["modern", "classic"], default="modern",
        help="LeNet-5 variant: modern (ReLU, max pooling) or classic (LeCun et al. 1998: "
             "scaled tanh, trainable average subsampling)")
    add("--epochs", type=int, default=5, help="total epochs (a resumed run included)")
    add("--batch-size", type=int, default=64,
        help="images per training step (under MPI: the global batch, split across the ranks)")
    add("--test-batch-size", type=int, default=1000, help="images per evaluation batch")
    add("--optimizer", choices=["sgd", "adam"], default="sgd", help="optimisation algorithm")
    add("--lr", type=float, default=None,
        help="learning rate (default: 0.03 for sgd, 0.001 for adam)")
    add("--momentum", type=float, default=0.9, help="SGD momentum")
    add("--scheduler", choices=["none", "cosine"], default="cosine",
        help="learning rate per epoch: constant, or cosine annealing from --lr at epoch 1 "
             "towards 0 over --epochs")
    add("--seed", type=int, default=1, help="seed of the initial weights and the shuffling")
    add("--threads", type=int, default=None,
        help="kernel threads (default: fastconv's, see fastconv.show_config(); under MPI, "
             "unless FASTCONV_NUM_THREADS or OMP_NUM_THREADS is set, the rank's CPUs divided "
             "among the node's ranks that share them)")
    add("--limit", type=int, default=None,
        help="use the first N training images (default: all)")
    add("--test-limit", type=int, default=None, help="use the first N test images (default: all)")
    add("--dry-run", action="store_true",
        help="one training batch and one test batch, to check the setup (default: off)")
    add("--save", metavar="PATH", default=None,
        help="write the trained weights and their metadata (.npz, for fastconv-predict) at "
             "the end (default: not written)")
    add("--checkpoint", metavar="PATH", default=None,
        help="write the run state after every epoch and on Ctrl-C (default: not written)")
    add("--resume", metavar="PATH", default=None,
        help="continue the run saved in this checkpoint (default: a new run)")
    add("--log-json", metavar="PATH", default=None,
        help="append one JSON object per epoch to this file (default: no log)")
    add("--plot", metavar="PATH", default=None,
        help="write a PNG of the loss and accuracy curves (needs matplotlib) (default: no plot)")
    add("--plot-features", metavar="PATH", default=None,
        help="write a PNG of the first convolution's filters and the C1 and C3 feature maps "
             "of a few test images, labelled with true and predicted classes (needs "
             "matplotlib) (default: no plot)")
    add("--no-progress", action="store_true", help="no progress bar (default: a bar on a terminal)")
    add("--distributed", choices=["auto", "mpi", "off"], default="auto",
        help="data-parallel training over MPI (mpi4py), one rank per process: auto = when "
             "started by mpirun/mpiexec/srun (OMPI_COMM_WORLD_SIZE, PMI_SIZE or PMIX_RANK "
             "set), mpi = always, off = never")
    return parser


# --- data -------------------------------------------------------------------------


def prepare(images: NDArray[np.uint8], dataset: str) -> NDArray[np.float32]:
    """uint8 (N, 28, 28) -> normalised float32 (N, 1, 28, 28)."""
    return data.to_float(images, *data.NORMALIZATION[dataset])


def load_split(args: argparse.Namespace, split: str,
               limit: int | None) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Images (prepared) and labels of one split of ``args.dataset``, the first ``limit``."""
    images, labels = data.load_dataset(args.dataset, split, data_dir=args.data_dir)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    return prepare(images, args.dataset), labels.astype(np.int64)


# --- training -----------------------------------------------------------------------


class StopRequested:
    """Ctrl-C sets a flag checked between batches; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None  # the SIGINT handler to restore

    def __enter__(self) -> StopRequested:
        def handler(signum: int, frame: FrameType | None) -> None:
            self.requested = True
            signal.signal(signal.SIGINT, self._previous)  # the next Ctrl-C is the default one

        try:
            self._previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: no handler, Ctrl-C behaves as usual
            self._previous = None
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def progress_bar(total: int, epoch: int, enabled: bool) -> Any:
    """A tqdm bar for one epoch, or None when disabled or tqdm is missing."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=f"Epoch {epoch}", unit="batch", leave=False, disable=None)


def train_step(model: nn.Module, loss_fn: nn.CrossEntropyLoss, opt: optim.Optimizer,
               xb: NDArray[Any], yb: NDArray[Any],
               grad_scale: float = 1.0) -> tuple[float, NDArray[Any]]:
    """One training step on one batch: forward, loss, backward, optimiser update.

    This is the whole per-batch work of :func:`train` (which adds only the batch
    gathering and the running sums), so benchmarks time exactly what the trainer runs.

    Parameters
    ----------
    model : Module
        Maps (B, ...) to logits (B, classes), in training mode.
    loss_fn : CrossEntropyLoss
    opt : Optimizer
        Over ``model.parameters()``; steps once.
    xb : ndarray, shape (B, ...)
        The batch's inputs.
    yb : ndarray of int, shape (B,)
        The batch's class indices.
    grad_scale : float, default 1
        Multiplies the gradient of the loss: a rank of a data-parallel run passes
        ``len(shard) * ranks / len(global batch)``, 1 unless its shard is not an even
        share of the batch.

    Returns
    -------
    loss : float
        The batch's mean loss, before the update.
    logits : ndarray, shape (B, classes)
        The model's output, before the update.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn, optim
    >>> from fastconv.train import train_step
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, rng=0))
    >>> opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    >>> x, y = np.ones((6, 1, 2, 2), np.float32), np.arange(6) % 3
    >>> loss, logits = train_step(model, nn.CrossEntropyLoss(), opt, x, y)
    >>> logits.shape, bool(loss > 0)
    ((6, 3), True)
    """
    logits = model(xb)
    loss = loss_fn(logits, yb)
    opt.zero_grad()
    model.backward(loss_fn.backward(grad_scale))
    opt.step()
    return loss, logits


def shard_step(model: nn.Module, loss_fn: nn.CrossEntropyLoss, opt: optim.Optimizer,
               xb: NDArray[Any], yb: NDArray[Any],
               comm: AnyCommunicator) -> tuple[float, int, int]:
    """One training step of this rank on its contiguous shard of the global batch.

    Each rank's mean gradient is weighted by its shard's share of the batch, so the
    ranks' average (taken by a :class:`~fastconv.distributed.DistributedOptimizer`)
    is the mean gradient of the whole batch, even for a last batch that the ranks do
    not divide; a rank whose shard is empty (fewer images than ranks) contributes a
    zero gradient. With one process this is :func:`train_step` on the whole batch.

    Parameters
    ----------
    model, loss_fn, opt
        As for :func:`train_step`; ``opt`` reduces gradients across ranks when
        ``comm`` has several.
    xb : ndarray, shape (B, ...)
        The global batch (the same on every rank).
    yb : ndarray of int, shape (B,)
    comm : Communicator or SingleProcess

    Returns
    -------
    loss_sum : float
        The batch's summed loss (mean loss times images), over all ranks.
    correct : int
        Images of the batch classified right, over all ranks.
    seen : int
        Images of the batch (B).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn, optim
    >>> from fastconv.distributed import SingleProcess
    >>> from fastconv.train import shard_step
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, rng=0))
    >>> opt = optim.SGD(model.parameters(), lr=0.1)
    >>> x, y = np.ones((6, 1, 2, 2), np.float32), np.arange(6) % 3
    >>> loss_sum, correct, seen = shard_step(model, nn.CrossEntropyLoss(), opt, x, y,
    ...                                      SingleProcess())
    >>> seen, 0 <= correct <= seen
    (6, True)
    """
    lo, hi = distributed.shard_bounds(len(yb), comm.rank, comm.size)
    xs, ys = xb[lo:hi], yb[lo:hi]
    if len(ys):
        scale = len(ys) * comm.size / len(yb)  # exactly 1 when the ranks divide the batch
        loss, logits = train_step(model, loss_fn, opt, xs, ys, scale)
        correct = int((logits.argmax(axis=1) == ys).sum())
    else:  # the step is collective: this rank still reduces (zero) gradients
        opt.zero_grad()
        opt.step()
        loss, correct = 0.0, 0
    totals = comm.allreduce_sum(np.array([loss * len(ys), correct, len(ys)], np.float64))
    return float(totals[0]), int(totals[1]), int(totals[2])


def train(model: nn.Module, loss_fn: nn.CrossEntropyLoss, opt: optim.Optimizer,
          x: NDArray[Any], y: NDArray[Any], args: argparse.Namespace, rng: np.random.Generator,
          state: RunState, stop: StopRequested, n_batches: int | None = None,
          comm: AnyCommunicator | None = None) -> bool:
    """Run (the rest of) one epoch; returns True when it completed, False when stopped.

    The epoch's order is the permutation drawn from ``rng`` reset to
    ``state.epoch_rng_state``, so a resumed epoch visits the same batches; it
    starts at batch ``state.batch`` and adds loss, correct count, images and
    seconds into ``state.sums``. With several ranks, every rank draws the same
    batches and trains on its shard of each (:func:`shard_step`); the sums are the
    whole batches', the same on every rank.

    Parameters
    ----------
    model : Module
        Maps (B, ...) to logits (B, classes); put in training mode.
    loss_fn : CrossEntropyLoss
    opt : Optimizer
        Steps once per batch.
    x : ndarray, shape (N, ...)
        Training inputs (prepared images, float32 (N, 1, 28, 28) for LeNet-5).
    y : ndarray of int, shape (N,)
        Class indices.
    args : argparse.Namespace
        Parsed flags; uses ``batch_size`` and ``no_progress``.
    rng : numpy.random.Generator
        The run's shuffling generator.
    state : RunState
        Position in the run, updated batch by batch.
    stop : StopRequested
        Checked before every batch.
    n_batches : int, optional
        Batches in the epoch (default: ceil(N / batch_size); 1 for ``--dry-run``).
    comm : Communicator or SingleProcess, optional
        The ranks of a data-parallel run (default: this process alone). A stop
        requested on any rank stops every rank before the same batch.

    Returns
    -------
    bool
        True when the epoch completed, False when a stop was requested.

    Examples
    --------
    A cheap epoch of a tiny model on synthetic data:

    >>> import numpy as np
    >>> from fastconv import nn, optim
    >>> from fastconv.train import RunState, StopRequested, build_parser, train
    >>> args = build_parser().parse_args(["--batch-size", "4", "--no-progress"])
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, rng=0))
    >>> opt = optim.SGD(model.parameters(), lr=0.1)
    >>> x, y = np.ones((10, 1, 2, 2), np.float32), np.arange(10) % 3
    >>> rng = np.random.default_rng(0)
    >>> state = RunState(rng)
    >>> train(model, nn.CrossEntropyLoss(), opt, x, y, args, rng, state, StopRequested())
    True
    >>> state.batch, state.sums["seen"]
    (3, 10)
    """
    rng.bit_generator.state = state.epoch_rng_state
    # The whole permutation is drawn (the generator ends the epoch where an uninterrupted
    # epoch leaves it); a resumed epoch skips the batches already trained.
    epoch = data.batches(x, y, args.batch_size, rng=rng, start=state.batch)
    total = n_batches if n_batches is not None else state.batch + len(epoch)
    comm = distributed.SingleProcess() if comm is None else comm
    bar = progress_bar(total, state.epoch, not args.no_progress and comm.rank == 0)
    if bar is not None:
        bar.update(state.batch)
    model.train()
    try:
        for xb, yb in epoch:
            if state.batch >= total:
                break
            if comm.any(stop.requested):
                return False
            start = time.perf_counter()
            loss_sum, correct, seen = shard_step(model, loss_fn, opt, xb, yb, comm)
            state.sums["loss"] += loss_sum
            state.sums["correct"] += correct
            state.sums["seen"] += seen
            state.sums["seconds"] += time.perf_counter() - start
            state.batch += 1
            if bar is not None:
                bar.set_postfix(loss=f"{state.sums['loss'] / state.sums['seen']:.4f}", refresh=False)
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return True


def test(model: nn.Module, loss_fn: nn.CrossEntropyLoss, x: NDArray[Any], y: NDArray[Any],
         batch_size: int, n_batches: int | None = None,
         comm: AnyCommunicator | None = None) -> tuple[float, int, int]:
    """Mean loss, number correct and number of test images, in eval mode.

    The model is put back in training mode at the end. With several ranks, each
    evaluates its contiguous shard of the images and the sums are reduced: every
    rank returns the totals.

    Parameters
    ----------
    model : Module
    loss_fn : CrossEntropyLoss
    x : ndarray, shape (N, ...)
    y : ndarray of int, shape (N,)
    batch_size : int
    n_batches : int, optional
        Evaluate only the first batches (of each rank's shard; default: all of them).
    comm : Communicator or SingleProcess, optional
        The ranks sharing the work (default: this process alone).

    Returns
    -------
    loss : float
        Mean loss over the images seen.
    correct : int
        Images whose largest logit is at their label.
    seen : int
        Images evaluated.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> from fastconv.train import test
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, rng=0))
    >>> x, y = np.ones((10, 1, 2, 2), np.float32), np.arange(10) % 3
    >>> loss, correct, seen = test(model, nn.CrossEntropyLoss(), x, y, batch_size=4)
    >>> seen, 0 <= correct <= seen, loss > 0
    (10, True, True)
    """
    comm = distributed.SingleProcess() if comm is None else comm
    lo, hi = distributed.shard_bounds(len(x), comm.rank, comm.size)
    x, y = x[lo:hi], y[lo:hi]
    model.eval()
    loss_sum, correct, seen = 0.0, 0, 0
    stops = range(0, len(x), batch_size)
    for start in stops[:n_batches] if n_batches is not None else stops:
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        logits = model(xb)
        loss_sum += loss_fn(logits, yb) * len(yb)
        correct += int((logits.argmax(axis=1) == yb).sum())
        seen += len(yb)
    model.train()
    totals = comm.allreduce_sum(np.array([loss_sum, correct, seen], np.float64))
    loss_sum, correct, seen = float(totals[0]), int(totals[1]), int(totals[2])
    return loss_sum / max(seen, 1), correct, seen


# --- reporting ----------------------------------------------------------------------


def epoch_line(record: Mapping[str, Any]) -> str:
    """The line printed after each epoch."""
    return (
        f"Epoch {record['epoch']}: train loss {record['train_loss']:.4f} "
        f"acc {100 * record['train_acc']:.2f}% | test loss {record['test_loss']:.4f} "
        f"acc {100 * record['test_acc']:.2f}% ({record['test_correct']}/{record['test_total']}) "
        f"| {record['seconds']:.1f} s, {record['images_per_s']:.0f} img/s"
    )


def append_json(path: str, record: Mapping[str, Any]) -> None:
    """Append the epoch's record to ``path`` as one JSON line."""
    keys = ("epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds", "images_per_s")
    with open(path, "a") as f:
        f.write(json.dumps({k: record[k] for k in keys}) + "\n")


def plot_history(path: str, history: Sequence[Mapping[str, Any]]) -> None:
    """PNG of loss and accuracy per epoch (train and test)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install 'fastconv[plot]'") from None
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    ax_loss.plot(epochs, [r["test_loss"] for r in history], "s-", label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    ax_acc.plot(epochs, [100 * r["train_acc"] for r in history], "o-", label="train")
    ax_acc.plot(epochs, [100 * r["test_acc"] for r in history], "s-", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# --- main ---------------------------------------------------------------------------


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse sizes below 1 (exits with the usage) and fill in the default ``lr``."""
    for name in ("epochs", "batch_size", "test_batch_size", "threads", "limit", "test_limit"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.lr is None:
        args.lr = 0.03 if args.optimizer == "sgd" else 0.001
    if args.lr <= 0:
        parser.error(f"--lr must be > 0, got {args.lr}")
    if (args.plot or args.plot_features) and importlib.util.find_spec("matplotlib") is None:
        parser.error(f"--plot and --plot-features need matplotlib: {viz.PLOT_HINT}")


def make_optimizer(args: argparse.Namespace, model: nn.Module) -> optim.Optimizer:
    """SGD with ``--momentum`` or Adam, at ``--lr``."""
    if args.optimizer == "sgd":
        return optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    return optim.Adam(model.parameters(), lr=args.lr)


def make_scheduler(args: argparse.Namespace, opt: optim.Optimizer) -> Scheduler | None:
    """The ``--scheduler``: cosine annealing over ``--epochs``, stepped once per epoch,
    or None (``none``: the rate stays ``--lr``).

    Parameters
    ----------
    args : argparse.Namespace
        Parsed and checked flags; uses ``scheduler`` and ``epochs``.
    opt : Optimizer
        The optimiser whose ``lr`` the scheduler sets.

    Returns
    -------
    CosineAnnealingLR or None

    Examples
    --------
    >>> from fastconv.models import LeNet5
    >>> from fastconv.train import build_parser, make_optimizer, make_scheduler
    >>> args = build_parser().parse_args(["--lr", "0.1", "--epochs", "4"])
    >>> opt = make_optimizer(args, LeNet5(rng=0))
    >>> scheduler = make_scheduler(args, opt)
    >>> rates = [opt.lr]
    >>> for epoch in (2, 3, 4):
    ...     scheduler.step()
    ...     rates.append(round(opt.lr, 4))
    >>> rates
    [0.1, 0.0854, 0.05, 0.0146]
    """
    if args.scheduler == "cosine":
        return optim.CosineAnnealingLR(opt, T_max=args.epochs)
    return None


def _count(n: int, noun: str) -> str:
    """'1 thread', '2 threads'."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def main(argv: Sequence[str] | None = None) -> int:
    """Run fastconv-train; returns the process exit status.

    Under an MPI launcher (``mpirun -n N fastconv-train ...``) every rank runs this;
    rank 0 alone prints and writes files. A rank that fails unexpectedly ends the
    whole job (MPI_Abort) rather than leave the others waiting.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``); see :func:`build_parser`.

    Returns
    -------
    int
        0 on success, 2 when the data or a checkpoint cannot be read or the ranks
        disagree, 130 when interrupted (Ctrl-C). Bad flags exit through argparse
        (status 2).

    Examples
    --------
    ``main`` loads a dataset and trains, so only its argument handling runs here:

    >>> from fastconv.train import build_parser
    >>> args = build_parser().parse_args(["--lr", "0.1", "--epochs", "4", "--dry-run"])
    >>> args.dry_run, args.lr, args.scheduler
    (True, 0.1, 'cosine')

    A real run (reads or downloads Fashion-MNIST, then trains for 5 epochs):

    >>> from fastconv.train import main
    >>> main(["--dataset", "fashion-mnist", "--epochs", "5"])  # doctest: +SKIP
    0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    try:
        comm = _startup.connect(args.distributed)
    except ImportError as exc:
        if distributed.launcher_rank() == 0:
            print(f"fastconv-train: {exc}", file=sys.stderr)
        return 2
    if isinstance(comm, distributed.SingleProcess):
        return _run(args, comm)
    try:
        return _run(args, comm)
    except BaseException as exc:  # the other ranks would wait for this one forever
        print(f"fastconv-train: rank {comm.rank} failed, ending the job:", file=sys.stderr)
        traceback.print_exc()
        comm.abort(130 if isinstance(exc, KeyboardInterrupt) else 1)


def _run(args: argparse.Namespace, comm: AnyCommunicator) -> int:
    """The run of :func:`main` once the flags are checked, on the ranks of ``comm``;
    returns the exit status, the same on every rank."""
    lead = comm.rank == 0

    def say(*message: Any, error: bool = False) -> None:
        if lead:
            print(*message, file=sys.stderr if error else sys.stdout, flush=True)

    problem = _startup.startup_problem(comm, args)
    if problem is not None:
        say(f"fastconv-train: {problem}", error=True)
        return 2
    _startup.set_threads(comm, args.threads)
    arrays, problem = _startup.load_everywhere(comm, lambda: (
        *load_split(args, "train", args.limit), *load_split(args, "test", args.test_limit)))
    if problem is not None:
        say(f"fastconv-train: {problem}", error=True)
        return 2
    x_train, y_train, x_test, y_test = arrays

    init_seed, shuffle_seed = np.random.SeedSequence(args.seed).spawn(2)
    model = LeNet5(args.model, rng=np.random.default_rng(init_seed))
    loss_fn = nn.CrossEntropyLoss()
    opt = make_optimizer(args, model)
    scheduler = make_scheduler(args, opt)
    rng = np.random.default_rng(shuffle_seed)
    state = RunState(rng)
    if args.resume:
        problem = _startup.resume(comm, args, model, opt, state, scheduler)
        if problem is not None:
            say(f"fastconv-train: {problem}", error=True)
            return 2
        say(f"Resumed from {args.resume}: epoch {state.epoch}, batch {state.batch}")
    step_opt: optim.Optimizer = opt
    per_rank = ""
    if not isinstance(comm, distributed.SingleProcess):
        step_opt = distributed.DistributedOptimizer(opt, comm)
        distributed.broadcast_parameters(model, comm)
        per_rank = f" ({args.batch_size // comm.size} per rank x {comm.size} ranks)"

    say(f"fastconv {fastconv.__version__}: LeNet-5 ({args.model}) on {args.dataset}, "
        f"{len(x_train)} train / {len(x_test)} test images, {args.optimizer} lr {args.lr}, "
        f"batch {args.batch_size}{per_rank}, {_count(fastconv.get_num_threads(), 'thread')}"
        f"{' per rank' if per_rank else ''}")
    train_batches = 1 if args.dry_run else None
    test_batches = 1 if args.dry_run else None
    # fastconv's OpenMP threads are the run's only parallelism: a multi-threaded BLAS
    # under NumPy's matmuls would spin on the same cores between kernels.
    with StopRequested() as stop, single_threaded_blas():
        while state.epoch <= args.epochs:
            finished = train(model, loss_fn, step_opt, x_train, y_train, args, rng, state, stop,
                             train_batches, comm)
            if not finished:
                if args.checkpoint:
                    if lead:
                        save_checkpoint(args.checkpoint, model, opt, state, args, scheduler)
                    say(f"Interrupted: run state saved to {args.checkpoint} "
                        f"(epoch {state.epoch}, batch {state.batch}); continue with --resume")
                else:
                    say("Interrupted (no --checkpoint given: nothing saved)")
                return 130
            test_loss, correct, total = test(model, loss_fn, x_test, y_test,
                                             args.test_batch_size, test_batches, comm)
            sums = state.sums
            record = {
                "epoch": state.epoch,
                "train_loss": sums["loss"] / max(sums["seen"], 1),
                "train_acc": sums["correct"] / max(sums["seen"], 1),
                "test_loss": test_loss,
                "test_acc": correct / max(total, 1),
                "test_correct": correct,
                "test_total": total,
                "seconds": sums["seconds"],
                "images_per_s": sums["seen"] / max(sums["seconds"], 1e-9),
                "lr": opt.lr,
            }
            say(epoch_line(record))
            state.history.append(record)
            if args.log_json and lead:
                append_json(args.log_json, record)
            problem = _startup.weights_problem(comm, model, state.epoch)
            if problem is not None:
                say(f"fastconv-train: {problem}", error=True)
                return 1
            # The next epoch starts from where the shuffling RNG is now.
            state.epoch += 1
            state.batch = 0
            state.epoch_rng_state = rng.bit_generator.state
            state.sums = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
            if scheduler is not None:
                scheduler.step()
            if args.checkpoint and lead:
                save_checkpoint(args.checkpoint, model, opt, state, args, scheduler)
            if args.dry_run:
                break
    if isinstance(step_opt, distributed.DistributedOptimizer) and step_opt.steps:
        say(f"Allreduce: {step_opt.nbytes} bytes of gradients per step, "
            f"{1e3 * step_opt.reduce_seconds / step_opt.steps:.3f} ms per step on rank 0 "
            f"(copies and waiting for the other ranks included)")
    if args.save and lead:
        save_model(args.save, model, dataset=args.dataset)
        print(f"Saved weights to {args.save}")
    if args.plot and lead:
        plot_history(args.plot, state.history)
        print(f"Saved plot to {args.plot}")
    if args.plot_features and lead:
        viz.save_feature_figure(model, x_test, y_test, data.CLASS_NAMES[args.dataset],
                                args.plot_features)
        print(f"Saved filters and feature maps to {args.plot_features}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
