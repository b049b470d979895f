"""A Sequential's eval-mode forward compiled for one input shape: its layers' kernels
bound once, so that a call is a loop over bound kernel calls.

At batch 1 a layer's call spends more in Python (checks, plans, allocations, a BLAS
thread switch) than in its kernel: LeNet-5's forward is 12 such calls. In eval mode a
:class:`~fastconv.nn.Sequential` asks each layer for a :class:`Step` (its
``_compiled(shape, dtype)``) and runs them as a :class:`Program`: the same kernels on
the same threads as the layers' own calls, so the same bits, with the checks, plans,
workspaces and intermediate arrays done once per input shape.

A program stays bound to the model as it was built. It is rebuilt when a module it
runs has an attribute set or any model switches between train and eval
(:data:`EDITS`), when the input's shape or dtype changes or the thread count
does. A step whose layer can change under it without an attribute set on the layer
(a Parameter given a new array, an options dict edited in place) checks that on each
call and gives up (:class:`Stale`): the call then runs the layers. Weights changed in
place are read as they are: nothing is computed from their values ahead of a call.

A compiled forward keeps nothing in the layers for backward; the Sequential keeps its
input and, if backward is called, runs the layers on it first (the same outputs).
Programs are per thread: a model called from several threads at once (Dask's threaded
scheduler) gives each thread its own buffers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from fastconv import _config
from fastconv._blas import single_threaded_blas
from fastconv.nn._cache import NeedsForward

if TYPE_CHECKING:
    from fastconv.nn.module import Module, Sequential

#: [count]: how many times a module that some program runs had an attribute set, or any
#: model switched between train and eval (nn.Module counts them); programs built before
#: an edit are rebuilt
EDITS = [0]

#: intermediate outputs a program keeps from call to call, in bytes at most; a program
#: whose intermediates are larger allocates them per call (as the layers would)
KEPT_BYTES = 4 << 20


def immutable(value: Any) -> bool:
    """Whether ``value`` cannot change in place: None, a bool, int, float or str, or a
    tuple of such (a layer's options as a step may keep them)."""
    return (value is None or type(value) in (bool, int, float, str)
            or (type(value) is tuple and all(immutable(v) for v in value)))


class Stale(Exception):
    """Raised by a step whose layer changed under it: the call runs the layers instead."""


@dataclass(frozen=True)
class Step:
    """One layer's forward for a fixed input shape and dtype.

    ``run(x, out)`` writes the output (``shape``) into ``out``; with ``in_place`` it may
    be given ``out is x`` (element-wise layers); with ``view`` it is ``run(x)`` and
    returns its output, a view of x (or x itself), writing nothing. ``uses_blas``: its
    kernel calls BLAS, which must then be held single-threaded.
    """

    shape: tuple[int, ...]
    run: Callable[..., Any]
    in_place: bool = False
    view: bool = False
    uses_blas: bool = False


# how a program step gets its output
_INTO_BUFFER, _INTO_NEW, _IN_PLACE, _VIEW = range(4)


class Program:
    """Steps chained over one input shape and dtype; ``program(x)`` is the last output.

    Intermediate outputs go to arrays allocated once (or per call when they would hold
    more than KEPT_BYTES); the output returned is a new array on every call. An
    element-wise step writes over its input when that input is one of the program's own
    arrays, never over the caller's x.
    """

    def __init__(self, steps: list[Step], dtype: np.dtype[Any]) -> None:
        self.dtype = dtype
        self.uses_blas = any(step.uses_blas for step in steps)
        modes = self._modes(steps)
        kept = sum(int(np.prod(step.shape)) * dtype.itemsize
                   for step, mode in zip(steps, modes) if mode == _INTO_BUFFER)
        if kept > KEPT_BYTES:
            modes = [_INTO_NEW if mode == _INTO_BUFFER else mode for mode in modes]
        # (run, mode, its output array, or the shape of one made per call)
        self._ops: list[tuple[Callable[..., Any], int, Any]] = [(step.run, mode,
                      np.empty(step.shape, dtype) if mode == _INTO_BUFFER else step.shape)
                     for step, mode in zip(steps, modes)]

    @staticmethod
    def _modes(steps: list[Step]) -> list[int]:
        """Each step's mode: in place only over the program's own arrays; the array that
        is returned (the last one written) new on every call."""
        modes, owned = [], False  # owned: the current array is one of the program's
        for step in steps:
            if step.view:
                modes.append(_VIEW)
            elif step.in_place and owned:
                modes.append(_IN_PLACE)
            else:
                modes.append(_INTO_BUFFER)
                owned = True
        written = [i for i, mode in enumerate(modes) if mode == _INTO_BUFFER]
        if written:
            modes[written[-1]] = _INTO_NEW
        return modes

    def __call__(self, x: NDArray[Any]) -> NDArray[Any]:
        if self.uses_blas:
            with single_threaded_blas():
                return self._run(x)
        return self._run(x)

    def _run(self, h: NDArray[Any]) -> NDArray[Any]:
        for run, mode, target in self._ops:
            if mode == _VIEW:
                h = run(h)
            elif mode == _IN_PLACE:
                run(h, h)
            else:
                out = np.empty(target, self.dtype) if mode == _INTO_NEW else target
                run(h, out)
                h = out
        return h


def flat_layers(seq: Sequential) -> Iterator[Module]:
    """The layers a Sequential runs, nested Sequentials opened."""
    from fastconv.nn.module import Sequential

    for layer in seq._modules.values():
        if isinstance(layer, Sequential) and type(layer).forward is Sequential.forward:
            yield from flat_layers(layer)
        else:
            yield layer


def build(seq: Sequential, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Program | None:
    """The program of ``seq`` for inputs of ``shape`` and ``dtype``, or None when a layer
    has no step (or refuses this shape: its own call will then say why)."""
    if 0 in shape:
        return None
    steps = []
    for layer in flat_layers(seq):
        if layer.training:
            return None
        try:
            step = layer._compiled(shape, dtype)
        except (ValueError, TypeError):
            return None
        if step is None:
            return None
        steps.append(step)
        shape = step.shape
    if not steps:
        return None
    for module in seq.modules():  # from now on, an attribute set on them is an edit
        object.__setattr__(module, "_in_program", True)
    return Program(steps, dtype)


def parameter_check(*params: Any) -> Callable[[], bool]:
    """A test that each Parameter (None skipped) still holds the array it holds now:
    a step bound to the arrays calls it first (a Parameter can be given a new array)."""
    pairs = tuple((p, p.data) for p in params if p is not None)
    if len(pairs) == 1:
        (param, array), = pairs
        return lambda: param.data is array
    return lambda: all(param.data is array for param, array in pairs)


class State:
    """What a Sequential keeps between calls for its compiled forwards."""

    def __init__(self) -> None:
        self.local = threading.local()  # .key, .program: this thread's program
        self.replay: NDArray[Any] | None = None  # the input of the last compiled forward
        self.layers_saved = False  # a layered forward since: the layers hold its inputs


def _state(seq: Sequential) -> State:
    state = seq.__dict__.get("_inference")
    if state is None:
        state = State()
        object.__setattr__(seq, "_inference", state)  # not a parameter or a submodule
    return state


def run(seq: Sequential, x: Any) -> NDArray[Any] | None:
    """``seq``'s eval-mode forward of ``x`` by its program, or None when it has none for
    this input (not a C-contiguous float32/float64 array, a layer without a step)."""
    if not (type(x) is np.ndarray and (x.dtype == np.float32 or x.dtype == np.float64)
            and x.flags.c_contiguous):
        return None
    state = _state(seq)
    local = state.local
    key = (x.shape, x.dtype, _config.effective_n_threads(), EDITS[0])
    if getattr(local, "key", None) != key:
        local.program = build(seq, x.shape, x.dtype)
        local.key = key
    program: Program | None = local.program
    if program is None:
        return None
    try:
        y = program(x)
    except Stale:
        local.key = local.program = None  # rebuilt on the next call
        return None
    if state.layers_saved:  # what they hold is not this forward's: backward replays
        for layer in flat_layers(seq):
            if isinstance(layer, NeedsForward):
                object.__setattr__(layer, "_saved", None)
        state.layers_saved = False
    state.replay = x
    return y


def ran_layers(seq: Sequential) -> None:
    """Note that ``seq`` ran its layers one by one: they hold what backward needs."""
    state = _state(seq)
    state.replay = None
    state.layers_saved = True


def take_replay(seq: Sequential) -> NDArray[Any] | None:
    """The input of ``seq``'s last forward when that one was compiled (its layers kept
    nothing), once; else None."""
    state = seq.__dict__.get("_inference")
    if state is None or state.replay is None:
        return None
    x, state.replay = state.replay, None
    return x
