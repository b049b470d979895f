"""Data-parallel training over MPI: a communicator and a distributed optimiser.

Synchronous data parallelism. Every rank (one process per rank, started by
``mpirun``) holds the whole model and the whole dataset:

1. ``broadcast_parameters(model, comm)`` gives every rank rank 0's weights;
2. every step, all ranks draw the same global batch (the same shuffling seed),
   each rank computes the loss and gradients of its contiguous shard of it
   (:func:`shard_bounds`);
3. ``DistributedOptimizer.step()`` packs all the parameters' gradients into one
   contiguous buffer (allocated once), sums it across ranks with one
   buffer-based ``Allreduce`` (no pickling), divides by the number of ranks,
   unpacks it and runs the wrapped optimiser's step: the same update on every
   rank, so the weights stay identical everywhere.

MPI comes from mpi4py (``pip install "fastconv[mpi]"``) over an MPI library
such as Open MPI (``apt-get install openmpi-bin libopenmpi-dev``). Importing
this module does not import mpi4py: :class:`Communicator` does, when made.
:class:`SingleProcess` has the same methods for one process without MPI (every
collective is the identity), so one code path serves both.

A user's own loop, run as ``mpirun -n 4 python loop.py``::

    from fastconv import distributed, nn, optim
    from fastconv.models import LeNet5

    comm = distributed.Communicator()
    model, loss_fn = LeNet5(rng=0), nn.CrossEntropyLoss()
    opt = distributed.DistributedOptimizer(optim.SGD(model.parameters(), lr=0.03), comm)
    distributed.broadcast_parameters(model, comm)
    for xb, yb in batches:                       # the same global batches on every rank
        lo, hi = distributed.shard_bounds(len(yb), comm.rank, comm.size)
        loss = loss_fn(model(xb[lo:hi]), yb[lo:hi])
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()                               # allreduce, average, update

Examples
--------
>>> import numpy as np
>>> from fastconv import distributed, nn, optim
>>> comm = distributed.SingleProcess()           # Communicator() under mpirun
>>> net = nn.Linear(3, 2, rng=0)
>>> opt = distributed.DistributedOptimizer(optim.SGD(net.parameters(), lr=0.1), comm)
>>> distributed.broadcast_parameters(net, comm)
>>> opt.zero_grad()
>>> _ = net.backward(net(np.ones((4, 3), np.float32)))
>>> opt.step()
>>> opt.nbytes                                   # the one buffer: 6 weights + 2 biases
32
"""

from __future__ import annotations

import importlib
import os
import sys
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NoReturn, TypeAlias

import numpy as np
from numpy.typing import NDArray

from fastconv import optim
from fastconv._config import available_cpus

if TYPE_CHECKING:  # annotations only
    from fastconv.nn.module import Module, Parameter

__all__ = [
    "Communicator",
    "SingleProcess",
    "DistributedOptimizer",
    "broadcast_parameters",
    "shard_bounds",
    "launched_by_mpi",
    "default_threads",
    "check_same",
    "INSTALL_HINT",
]

#: How to get MPI for fastconv.
INSTALL_HINT = ('pip install "fastconv[mpi]" (mpi4py), over an MPI library such as Open MPI: '
                "apt-get install openmpi-bin libopenmpi-dev")

# Set in every process an MPI launcher starts: Open MPI's mpirun, MPICH's (Hydra)
# mpiexec and PMI-2 launchers, PMIx launchers (Open MPI 5, Slurm's srun --mpi=pmix).
_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK")
_RANK_VARIABLES = ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK")


def launched_by_mpi(environ: Mapping[str, str] | None = None) -> bool:
    """Whether this process was started by an MPI launcher (mpirun, mpiexec, srun).

    Parameters
    ----------
    environ : mapping, optional
        The environment to look at (default: ``os.environ``).

    Returns
    -------
    bool
        True when one of ``OMPI_COMM_WORLD_SIZE`` (Open MPI), ``PMI_SIZE``
        (MPICH, PMI-2) or ``PMIX_RANK`` (PMIx) is set.

    Examples
    --------
    >>> from fastconv.distributed import launched_by_mpi
    >>> launched_by_mpi({"OMPI_COMM_WORLD_SIZE": "4"}), launched_by_mpi({})
    (True, False)
    """
    environ = os.environ if environ is None else environ
    return any(name in environ for name in _SIZE_VARIABLES)


def launcher_rank(environ: Mapping[str, str] | None = None) -> int:
    """This process's rank as the launcher's environment gives it (0 when absent): for
    messages printed before MPI is initialised (or when mpi4py is missing)."""
    environ = os.environ if environ is None else environ
    for name in _RANK_VARIABLES:
        if environ.get(name, "").isdigit():
            return int(environ[name])
    return 0


def shard_bounds(n: int, rank: int, size: int) -> tuple[int, int]:
    """The contiguous slice ``[lo, hi)`` of ``n`` items that ``rank`` of ``size`` takes.

    Shards differ in length by at most one, the longer ones last; when ``size``
    divides ``n`` they are equal. With fewer items than ranks, some shards are empty.

    Parameters
    ----------
    n : int
        Items to split (e.g. the images of one global batch), >= 0.
    rank : int
        0 <= rank < size.
    size : int
        Number of ranks, >= 1.

    Returns
    -------
    (int, int)
        ``lo = rank * n // size`` and ``hi = (rank + 1) * n // size``.

    Raises
    ------
    ValueError
        ``n`` below 0, ``size`` below 1, or ``rank`` outside ``[0, size)``.

    Examples
    --------
    >>> from fastconv.distributed import shard_bounds
    >>> [shard_bounds(64, r, 2) for r in range(2)]
    [(0, 32), (32, 64)]
    >>> [shard_bounds(4, r, 3) for r in range(3)]   # a short last batch
    [(0, 1), (1, 2), (2, 4)]
    """
    if n < 0 or size < 1 or not 0 <= rank < size:
        raise ValueError(f"need n >= 0, size >= 1 and 0 <= rank < size, got n={n}, "
                         f"rank={rank}, size={size}")
    return rank * n // size, (rank + 1) * n // size


# ------------------------------------------------------------------ communicators


class SingleProcess:
    """A communicator of one process, without MPI: every collective is the identity.

    It has the methods of :class:`Communicator`, so code written for MPI runs
    unchanged (and bit for bit as plain code) in a single process.

    Attributes
    ----------
    rank, size : int
        0 and 1.
    local_rank, local_size : int
        0 and 1 (ranks on this node).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.distributed import SingleProcess
    >>> comm = SingleProcess()
    >>> comm.rank, comm.size, comm.allgather("x")
    (0, 1, ['x'])
    >>> comm.allreduce_sum(np.array([1.5, 2.0]))
    array([1.5, 2. ])
    """

    rank = 0
    size = 1
    local_rank = 0
    local_size = 1

    def bcast_array(self, array: NDArray[Any], root: int = 0) -> None:
        """Broadcast ``array`` in place from ``root`` (here: nothing to do)."""

    def allreduce_sum(self, buffer: NDArray[Any]) -> NDArray[Any]:
        """Sum ``buffer`` over the ranks in place and return it (here: unchanged)."""
        return buffer

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (here: ``flag``)."""
        return bool(flag)

    def allgather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order (here: ``[value]``)."""
        return [value]

    def node_allgather(self, value: Any) -> list[Any]:
        """The ``value`` of every rank on this node, in local rank order."""
        return [value]

    def bcast(self, value: Any, root: int = 0) -> Any:
        """``root``'s ``value`` on every rank (here: ``value``)."""
        return value

    def barrier(self) -> None:
        """Wait until every rank gets here (here: return at once)."""

    def abort(self, code: int = 1) -> NoReturn:
        """End the whole job with exit status ``code`` (here: raise SystemExit)."""
        raise SystemExit(code)


def _import_mpi() -> Any:
    """mpi4py's MPI module (initialises MPI), or ImportError saying how to install it."""
    try:
        return importlib.import_module("mpi4py.MPI")
    except ImportError as exc:
        raise ImportError(f"fastconv.distributed needs mpi4py ({exc}): {INSTALL_HINT}") from None


class Communicator:
    """The ranks of an MPI job (mpi4py), with the collectives data parallelism needs.

    Array collectives (``bcast_array``, ``allreduce_sum``) are mpi4py's
    buffer-based uppercase calls on contiguous NumPy arrays, without pickling;
    ``allgather``/``bcast`` of Python objects (pickled) are for small start-up
    checks.

    Parameters
    ----------
    comm : mpi4py.MPI.Intracomm, optional
        The communicator to wrap (default: ``MPI.COMM_WORLD``).

    Attributes
    ----------
    rank, size : int
        This process's rank and the number of ranks.
    local_rank, local_size : int
        Its rank among the ranks of its node (shared memory), and their number.
    comm : mpi4py.MPI.Intracomm
        The wrapped communicator.

    Raises
    ------
    ImportError
        mpi4py is not installed (the message says how to install it).

    Examples
    --------
    Under ``mpirun -n 2 python script.py``:

    >>> import numpy as np
    >>> from fastconv.distributed import Communicator
    >>> comm = Communicator()                                 # doctest: +SKIP
    >>> comm.allreduce_sum(np.full(3, comm.rank + 1.0))       # doctest: +SKIP
    array([3., 3., 3.])
    """

    rank: int
    size: int
    local_rank: int
    local_size: int

    def __init__(self, comm: Any = None) -> None:
        self._mpi = _import_mpi()
        self.comm = self._mpi.COMM_WORLD if comm is None else comm
        self.rank = int(self.comm.Get_rank())
        self.size = int(self.comm.Get_size())
        self._node = self.comm.Split_type(self._mpi.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank = int(self._node.Get_rank())
        self.local_size = int(self._node.Get_size())

    def bcast_array(self, array: NDArray[Any], root: int = 0) -> None:
        """Broadcast ``array`` (C-contiguous, same shape and dtype everywhere) in place
        from ``root``."""
        _check_contiguous(array, "array")
        self.comm.Bcast(array, root=root)

    def allreduce_sum(self, buffer: NDArray[Any]) -> NDArray[Any]:
        """Sum ``buffer`` (C-contiguous) element-wise over the ranks, in place; returns it."""
        _check_contiguous(buffer, "buffer")
        self.comm.Allreduce(self._mpi.IN_PLACE, buffer, op=self._mpi.SUM)
        return buffer

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (collective: every rank must call it)."""
        return bool(self.allreduce_sum(np.array([int(bool(flag))], np.int32))[0])

    def allgather(self, value: Any) -> list[Any]:
        """Every rank's (picklable) ``value``, in rank order."""
        return list(self.comm.allgather(value))

    def node_allgather(self, value: Any) -> list[Any]:
        """The ``value`` of every rank on this node, in local rank order."""
        return list(self._node.allgather(value))

    def bcast(self, value: Any, root: int = 0) -> Any:
        """``root``'s (picklable) ``value`` on every rank."""
        return self.comm.bcast(value, root=root)

    def barrier(self) -> None:
        """Wait until every rank gets here."""
        self.comm.Barrier()

    def abort(self, code: int = 1) -> NoReturn:
        """End every rank of the job (MPI_Abort) with exit status ``code``."""
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)
        os._exit(code)  # not reached: Abort does not return


#: Either kind of communicator.
AnyCommunicator: TypeAlias = "Communicator | SingleProcess"


def _check_contiguous(array: NDArray[Any], name: str) -> None:
    if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
        raise ValueError(f"{name} must be a C-contiguous NumPy array")


def default_threads(comm: AnyCommunicator) -> int:
    """Kernel threads for this rank: its CPUs shared among the node's ranks that may
    use the same CPUs.

    ``available_cpus() // k``, at least 1, where k counts the ranks on this node
    whose CPU affinity is this rank's (all of them when the launcher does not bind;
    1 when each rank is bound to its own cores, whose count is then its share).

    Parameters
    ----------
    comm : Communicator or SingleProcess
        Collective: every rank of the node must call it.

    Returns
    -------
    int
        The thread count for this rank's kernels (1 or more).

    Examples
    --------
    >>> from fastconv._config import available_cpus
    >>> from fastconv.distributed import SingleProcess, default_threads
    >>> default_threads(SingleProcess()) == available_cpus()
    True
    """
    try:
        mine: tuple[int, ...] | None = tuple(sorted(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        mine = None
    sharing = sum(1 for cpus in comm.node_allgather(mine) if cpus == mine)
    return max(1, available_cpus() // max(1, sharing))


def check_same(comm: AnyCommunicator, value: Any, what: str) -> str | None:
    """Collective check that every rank holds the same ``value`` as rank 0.

    For start-up checks (the same arguments, version and data on every rank):
    every rank gets the same answer, so all can stop together.

    Parameters
    ----------
    comm : Communicator or SingleProcess
    value : picklable
        Compared with ``==``; for a dict, the message names the entries that differ.
    what : str
        What ``value`` is, for the message.

    Returns
    -------
    str or None
        None when all agree, else "rank 2 differs from rank 0 in WHAT (details)".

    Examples
    --------
    >>> from fastconv.distributed import SingleProcess, check_same
    >>> check_same(SingleProcess(), {"lr": 0.1}, "the arguments") is None
    True
    """
    values = comm.allgather(value)
    odd = [rank for rank, v in enumerate(values) if v != values[0]]
    if not odd:
        return None
    who = f"rank {odd[0]} differs" if len(odd) == 1 else f"ranks {', '.join(map(str, odd))} differ"
    message = f"{who} from rank 0 in {what}"
    first, other = values[0], values[odd[0]]
    if isinstance(first, dict) and isinstance(other, dict):
        keys = sorted(k for k in first.keys() | other.keys() if first.get(k) != other.get(k))
        message += " (" + "; ".join(f"{k}: rank 0 {first.get(k)!r}, rank {odd[0]} "
                                    f"{other.get(k)!r}" for k in keys) + ")"
    return message


# ------------------------------------------------------------------ parameters


def broadcast_parameters(model: Module | Iterable[Parameter], comm: AnyCommunicator,
                         root: int = 0) -> None:
    """Give every rank ``root``'s parameter values (in place), before training.

    Parameters
    ----------
    model : Module or iterable of Parameter
        The same architecture on every rank.
    comm : Communicator or SingleProcess
    root : int, default 0

    Raises
    ------
    ValueError
        A parameter's array is not C-contiguous.

    Examples
    --------
    >>> from fastconv import nn
    >>> from fastconv.distributed import SingleProcess, broadcast_parameters
    >>> net = nn.Linear(2, 2, rng=0)
    >>> before = net.weight.data.copy()
    >>> broadcast_parameters(net, SingleProcess())
    >>> bool((net.weight.data == before).all())
    True
    """
    params = model.parameters() if hasattr(model, "parameters") else model
    for p in params:
        comm.bcast_array(p.data, root=root)


class DistributedOptimizer(optim.Optimizer):
    """Wraps an optimiser so that each ``step()`` first averages the gradients over
    the ranks (one Allreduce of one buffer), then updates identically everywhere.

    Parameters
    ----------
    optimizer : Optimizer
        Any ``fastconv.optim`` optimiser (SGD, Adam, ...), over parameters of one
        dtype. Schedulers, ``lr`` and ``state_dict()`` act on it as before.
    comm : Communicator or SingleProcess, optional
        Default: ``Communicator()`` (``MPI.COMM_WORLD``).

    Attributes
    ----------
    optimizer : Optimizer
        The wrapped optimiser.
    comm : Communicator or SingleProcess
    nbytes : int
        Bytes reduced per step (all the gradients).
    steps : int
        Steps taken.
    reduce_seconds : float
        Time spent packing, reducing and unpacking gradients, over all steps.

    Raises
    ------
    ValueError
        The parameters have more than one dtype.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import Parameter
    >>> from fastconv.optim import SGD
    >>> from fastconv.distributed import DistributedOptimizer, SingleProcess
    >>> p = Parameter(np.array([1.0, -2.0]))
    >>> opt = DistributedOptimizer(SGD([p], lr=0.1), SingleProcess())
    >>> p.grad[:] = 0.5
    >>> opt.step(); p.data
    array([ 0.95, -2.05])
    >>> opt.lr = 0.01; opt.optimizer.lr
    0.01
    """

    def __init__(self, optimizer: optim.Optimizer, comm: AnyCommunicator | None = None) -> None:
        if not isinstance(optimizer, optim.Optimizer):
            raise TypeError(f"optimizer must be a fastconv.optim.Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.optimizer = optimizer
        self.comm: AnyCommunicator = Communicator() if comm is None else comm
        self.params = optimizer.params
        dtypes = {p.data.dtype for p in self.params}
        if len(dtypes) != 1:
            raise ValueError(f"optimizer's parameters must share one dtype, got "
                             f"{sorted(str(d) for d in dtypes)}")
        # One buffer for all the gradients, allocated once; views place each parameter.
        sizes = [p.data.size for p in self.params]
        self._buffer = np.empty(sum(sizes), dtype=dtypes.pop())
        offsets = np.cumsum([0, *sizes])
        self._views = [self._buffer[a:b].reshape(p.data.shape)
                       for a, b, p in zip(offsets[:-1], offsets[1:], self.params)]
        self.nbytes = self._buffer.nbytes
        self.steps = 0
        self.reduce_seconds = 0.0

    # lr and state live in the wrapped optimiser (schedulers and checkpoints use them).
    @property
    def lr(self) -> float:
        return self.optimizer.lr

    @lr.setter
    def lr(self, value: float) -> None:
        self.optimizer.lr = value

    @property
    def state(self) -> list[dict[str, Any]]:
        return self.optimizer.state

    @state.setter
    def state(self, value: list[dict[str, Any]]) -> None:
        self.optimizer.state = value

    def allreduce_gradients(self) -> None:
        """Replace every parameter's gradient by its mean over the ranks (collective)."""
        start = time.perf_counter()
        for view, p in zip(self._views, self.params):
            np.copyto(view, p.grad)
        self.comm.allreduce_sum(self._buffer)
        if self.comm.size > 1:
            np.divide(self._buffer, self.comm.size, out=self._buffer)
        for view, p in zip(self._views, self.params):
            np.copyto(p.grad, view)
        self.reduce_seconds += time.perf_counter() - start

    def step(self) -> None:
        """Average the gradients over the ranks, then the wrapped optimiser's step."""
        self.allreduce_gradients()
        self.optimizer.step()
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        """The wrapped optimiser's ``state_dict()`` (the same on every rank)."""
        return self.optimizer.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """The wrapped optimiser's ``load_state_dict``."""
        self.optimizer.load_state_dict(state)
