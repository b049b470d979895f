"""fastconv-train: train LeNet-5 on MNIST or Fashion-MNIST with fastconv.

Usage (also ``python -m fastconv.train``)::

    fastconv-train --dataset fashion-mnist --epochs 5

Defaults: SGD, lr 0.03 annealed per epoch along a cosine over ``--epochs``, momentum
0.9, batch 64 (89-90% test accuracy on Fashion-MNIST after 5 epochs).

Prints a progress bar per epoch (on a terminal) and one line per epoch::

    Epoch 3: train loss 0.3012 acc 89.10% | test loss 0.3120 acc 88.70% (8870/10000) | 12.3 s, 4870 img/s

"s" and "img/s" are the epoch's training time and throughput (the test pass is not
counted). ``--checkpoint PATH`` writes the whole run state (model, optimiser,
learning-rate scheduler, epoch, position in the epoch, shuffling RNG state, history) atomically after every epoch and
on Ctrl-C; ``--resume PATH`` continues from it and gives the same results as an
uninterrupted run. Same seed and thread count: identical results run to run.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import Any, Literal, TypeAlias

import numpy as np
from numpy.typing import NDArray

import fastconv
from fastconv import data, nn, optim
from fastconv._blas import single_threaded_blas
from fastconv.models import LeNet5

__all__ = ["main", "train", "train_step", "test", "build_parser"]

#: The learning-rate schedulers a checkpoint can hold.
Scheduler: TypeAlias = "optim.StepLR | optim.CosineAnnealingLR"

#: Version of the checkpoint layout. 2: the learning-rate scheduler's state is saved
#: (``meta["scheduler"]``); format 1 (no scheduler state) is refused.
CHECKPOINT_FORMAT = 2


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
        help="kernel threads (default: fastconv's, see fastconv.show_config())")
    add("--limit", type=int, default=None,
        help="use the first N training images (default: all)")
    add("--test-limit", type=int, default=None, help="use the first N test images (default: all)")
    add("--dry-run", action="store_true",
        help="one training batch and one test batch, to check the setup (default: off)")
    add("--save", metavar="PATH", default=None,
        help="write the trained weights (.npz) at the end (default: not written)")
    add("--checkpoint", metavar="PATH", default=None,
        help="write the run state after every epoch and on Ctrl-C (default: not written)")
    add("--resume", metavar="PATH", default=None,
        help="continue the run saved in this checkpoint (default: a new run)")
    add("--log-json", metavar="PATH", default=None,
        help="append one JSON object per epoch to this file (default: no log)")
    add("--plot", metavar="PATH", default=None,
        help="write a PNG of the loss and accuracy curves (needs matplotlib) (default: no plot)")
    add("--no-progress", action="store_true", help="no progress bar (default: a bar on a terminal)")
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


class RunState:
    """Everything a checkpoint holds besides model and optimiser: where the run is."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.epoch = 1          # the epoch in progress (1-based)
        self.batch = 0          # next batch of that epoch
        self.epoch_rng_state = rng.bit_generator.state  # shuffling RNG at the epoch's start
        self.sums: dict[str, float] = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
        self.history: list[dict[str, Any]] = []

    def as_meta(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "batch": self.batch, "epoch_rng_state": self.epoch_rng_state,
                "sums": self.sums, "history": self.history}

    def load_meta(self, meta: Mapping[str, Any]) -> None:
        self.epoch, self.batch = int(meta["epoch"]), int(meta["batch"])
        self.epoch_rng_state = meta["epoch_rng_state"]
        self.sums = dict(meta["sums"])
        self.history = list(meta["history"])


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
               xb: NDArray[Any], yb: NDArray[Any]) -> tuple[float, NDArray[Any]]:
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
    model.backward(loss_fn.backward())
    opt.step()
    return loss, logits


def train(model: nn.Module, loss_fn: nn.CrossEntropyLoss, opt: optim.Optimizer,
          x: NDArray[Any], y: NDArray[Any], args: argparse.Namespace, rng: np.random.Generator,
          state: RunState, stop: StopRequested, n_batches: int | None = None) -> bool:
    """Run (the rest of) one epoch; returns True when it completed, False when stopped.

    The epoch's order is the permutation drawn from ``rng`` reset to
    ``state.epoch_rng_state``, so a resumed epoch visits the same batches; it
    starts at batch ``state.batch`` and adds loss, correct count, images and
    seconds into ``state.sums``.

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
    bar = progress_bar(total, state.epoch, not args.no_progress)
    if bar is not None:
        bar.update(state.batch)
    model.train()
    try:
        for xb, yb in epoch:
            if state.batch >= total:
                break
            if stop.requested:
                return False
            start = time.perf_counter()
            loss, logits = train_step(model, loss_fn, opt, xb, yb)
            state.sums["loss"] += loss * len(yb)
            state.sums["correct"] += int((logits.argmax(axis=1) == yb).sum())
            state.sums["seen"] += len(yb)
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
         batch_size: int, n_batches: int | None = None) -> tuple[float, int, int]:
    """Mean loss, number correct and number of test images, in eval mode.

    The model is put back in training mode at the end.

    Parameters
    ----------
    model : Module
    loss_fn : CrossEntropyLoss
    x : ndarray, shape (N, ...)
    y : ndarray of int, shape (N,)
    batch_size : int
    n_batches : int, optional
        Evaluate only the first batches (default: all of them).

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
    return loss_sum / max(seen, 1), correct, seen


# --- checkpoints --------------------------------------------------------------------


def run_signature(args: argparse.Namespace) -> dict[str, Any]:
    """What a checkpoint must share with the run that resumes it."""
    signature = {"dataset": args.dataset, "model": args.model, "optimizer": args.optimizer,
                 "batch_size": args.batch_size, "limit": args.limit, "seed": args.seed,
                 "scheduler": args.scheduler}
    if args.scheduler == "cosine":  # the schedule spans the run's epochs
        signature["epochs"] = args.epochs
    return signature


def save_checkpoint(path: str, model: nn.Module, opt: optim.Optimizer, state: RunState,
                    args: argparse.Namespace, scheduler: Scheduler | None = None) -> None:
    """Write the run state to ``path`` atomically (a temp file, then a rename)."""
    arrays = {f"model/{name}": value for name, value in model.state_dict().items()}
    opt_state = opt.state_dict()
    for i, entry in enumerate(opt_state["state"]):
        for key, value in entry.items():
            if isinstance(value, np.ndarray):
                arrays[f"optim/{i}/{key}"] = value
    scalars = [{k: v for k, v in entry.items() if not isinstance(v, np.ndarray)}
               for entry in opt_state["state"]]
    meta = {"format": CHECKPOINT_FORMAT, "run": run_signature(args), "lr": opt_state["lr"],
            "optim_scalars": scalars,
            "scheduler": scheduler.state_dict() if scheduler is not None else None,
            **state.as_meta()}
    arrays["meta"] = np.array(json.dumps(meta))
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".fastconv-ckpt-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            # (mypy: a ** key could fill savez's allow_pickle; no entry has that name)
            np.savez(f, **arrays)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: str, model: nn.Module, opt: optim.Optimizer, state: RunState,
                    args: argparse.Namespace, scheduler: Scheduler | None = None) -> None:
    """Restore model, optimiser, scheduler and run state; refuses a checkpoint of another
    run or of another format."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"cannot read checkpoint {path}: {exc}") from None
    if "meta" not in arrays:
        raise ValueError(f"{path} is not a fastconv-train checkpoint (no 'meta' entry)")
    try:
        meta = json.loads(str(arrays.pop("meta")))
    except ValueError as exc:
        raise ValueError(f"{path}: the checkpoint's 'meta' entry is not JSON: {exc}") from None
    if isinstance(meta, dict) and meta.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: checkpoint format {meta.get('format')!r} is not supported "
                         f"(this fastconv-train reads format {CHECKPOINT_FORMAT}; format 1 came "
                         f"from an earlier version without scheduler state): start a new run, "
                         f"or finish this one with the version that wrote it")
    required = ("format", "run", "lr", "optim_scalars", "scheduler", "epoch", "batch",
                "epoch_rng_state", "sums", "history")
    if not isinstance(meta, dict) or any(key not in meta for key in required):
        raise ValueError(f"{path}: the checkpoint's 'meta' entry is damaged (expected an object "
                         f"with {', '.join(required)})")
    mismatched = {k: (meta["run"].get(k), v) for k, v in run_signature(args).items()
                  if meta["run"].get(k) != v}
    if mismatched:
        details = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in mismatched.items())
        raise ValueError(f"checkpoint {path} belongs to a different run ({details})")
    model_state = {k[len("model/"):]: v for k, v in arrays.items() if k.startswith("model/")}
    try:
        model.load_state_dict(model_state)
    except ValueError as exc:
        raise ValueError(f"checkpoint {path} does not fit this model: {exc}") from None
    entries = [dict(scalars) for scalars in meta["optim_scalars"]]
    for key, value in arrays.items():
        if key.startswith("optim/"):
            _, i, name = key.split("/", 2)
            entries[int(i)][name] = value
    opt.load_state_dict({"lr": meta["lr"], "state": entries})
    if scheduler is not None:
        if not isinstance(meta["scheduler"], dict):
            raise ValueError(f"checkpoint {path} holds no scheduler state")
        scheduler.load_state_dict(meta["scheduler"])
    state.load_meta(meta)


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run fastconv-train; returns the process exit status.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments (default: ``sys.argv[1:]``); see :func:`build_parser`.

    Returns
    -------
    int
        0 on success, 2 when the data or a checkpoint cannot be read, 130 when
        interrupted (Ctrl-C). Bad flags exit through argparse (status 2).

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
    if args.threads is not None:
        fastconv.set_num_threads(args.threads)
    try:
        x_train, y_train = load_split(args, "train", args.limit)
        x_test, y_test = load_split(args, "test", args.test_limit)
    except (FileNotFoundError, ValueError) as exc:
        print(f"fastconv-train: {exc}", file=sys.stderr)
        return 2

    init_seed, shuffle_seed = np.random.SeedSequence(args.seed).spawn(2)
    model = LeNet5(args.model, rng=np.random.default_rng(init_seed))
    loss_fn = nn.CrossEntropyLoss()
    opt = make_optimizer(args, model)
    scheduler = make_scheduler(args, opt)
    rng = np.random.default_rng(shuffle_seed)
    state = RunState(rng)
    if args.resume:
        try:
            load_checkpoint(args.resume, model, opt, state, args, scheduler)
        except (OSError, ValueError) as exc:
            print(f"fastconv-train: {exc}", file=sys.stderr)
            return 2
        print(f"Resumed from {args.resume}: epoch {state.epoch}, batch {state.batch}")

    print(f"fastconv {fastconv.__version__}: LeNet-5 ({args.model}) on {args.dataset}, "
          f"{len(x_train)} train / {len(x_test)} test images, {args.optimizer} lr {args.lr}, "
          f"batch {args.batch_size}, {fastconv.get_num_threads()} threads")
    train_batches = 1 if args.dry_run else None
    test_batches = 1 if args.dry_run else None
    # fastconv's OpenMP threads are the run's only parallelism: a multi-threaded BLAS
    # under NumPy's matmuls would spin on the same cores between kernels.
    with StopRequested() as stop, single_threaded_blas():
        while state.epoch <= args.epochs:
            finished = train(model, loss_fn, opt, x_train, y_train, args, rng, state, stop,
                             train_batches)
            if not finished:
                if args.checkpoint:
                    save_checkpoint(args.checkpoint, model, opt, state, args, scheduler)
                    print(f"Interrupted: run state saved to {args.checkpoint} "
                          f"(epoch {state.epoch}, batch {state.batch}); continue with --resume")
                else:
                    print("Interrupted (no --checkpoint given: nothing saved)")
                return 130
            test_loss, correct, total = test(model, loss_fn, x_test, y_test,
                                             args.test_batch_size, test_batches)
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
            print(epoch_line(record), flush=True)
            state.history.append(record)
            if args.log_json:
                append_json(args.log_json, record)
            # The next epoch starts from where the shuffling RNG is now.
            state.epoch += 1
            state.batch = 0
            state.epoch_rng_state = rng.bit_generator.state
            state.sums = {"loss": 0.0, "correct": 0, "seen": 0, "seconds": 0.0}
            if scheduler is not None:
                scheduler.step()
            if args.checkpoint:
                save_checkpoint(args.checkpoint, model, opt, state, args, scheduler)
            if args.dry_run:
                break
    if args.save:
        # (mypy: a ** key could fill savez's allow_pickle; no parameter has that name)
        np.savez(args.save, **model.state_dict())  # type: ignore[arg-type]
        print(f"Saved weights to {args.save}")
    if args.plot:
        plot_history(args.plot, state.history)
        print(f"Saved plot to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
