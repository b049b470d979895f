"""Optimisers and learning-rate schedules, with PyTorch's update rules.

In order of complexity: SGD (momentum, dampening, Nesterov, weight decay), Adam;
then StepLR and CosineAnnealingLR. Every one has ``state_dict()`` /
``load_state_dict()`` so a checkpoint can resume a run exactly.

Examples
--------
>>> import numpy as np
>>> from fastconv import nn, optim
>>> net = nn.Linear(2, 1, rng=0)
>>> opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
>>> sched = optim.StepLR(opt, step_size=1, gamma=0.5)
>>> x = np.ones((4, 2), np.float32)
>>> for epoch in range(2):
...     y = net(x)  # loss: the mean of y ** 2
...     opt.zero_grad()
...     grad_x = net.backward(2 * y / len(y))
...     opt.step()
...     sched.step()
>>> opt.lr
0.025
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from fastconv import _config
from fastconv._kernels import _optim

if TYPE_CHECKING:  # annotations only: optim does not depend on nn at run time
    from fastconv.nn.module import Parameter

__all__ = ["Optimizer", "SGD", "Adam", "StepLR", "CosineAnnealingLR", "cosine_annealing"]


class Optimizer:
    """Base class: holds the parameters, the learning rate and per-parameter state.

    A subclass implements :meth:`step`, updating each ``p.data`` in place from
    ``p.grad`` and keeping what it needs across steps in ``self.state[i]``.

    Parameters
    ----------
    params : iterable of Parameter
        Typically ``model.parameters()``; must not be empty.
    lr : float >= 0
        Learning rate (schedulers change ``self.lr`` between epochs).

    Attributes
    ----------
    params : list of Parameter
    lr : float
    state : list of dict
        One dict per parameter (e.g. SGD's ``"momentum_buffer"``).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import Parameter
    >>> from fastconv.optim import Optimizer
    >>> class SignSGD(Optimizer):
    ...     def step(self):
    ...         for p in self.params:
    ...             p.data -= self.lr * np.sign(p.grad)
    >>> p = Parameter(np.array([1.0, 1.0]))
    >>> p.grad[:] = [0.3, -2.0]
    >>> opt = SignSGD([p], lr=0.5)
    >>> opt.step(); p.data
    array([0.5, 1.5])
    >>> opt.zero_grad(); p.grad
    array([0., 0.])
    """

    params: list[Parameter]
    state: list[dict[str, Any]]

    def __init__(self, params: Iterable[Parameter], lr: float) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("params is empty: the optimiser has nothing to update")
        if not (isinstance(lr, (int, float)) and lr >= 0):
            raise ValueError(f"lr must be a number >= 0, got {lr!r}")
        self.lr = float(lr)
        self.state = [dict() for _ in self.params]

    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero."""
        for p in self.params:
            p.grad.fill(0)

    def step(self) -> None:
        """Update every parameter from its gradient (defined by each optimiser)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """Learning rate and per-parameter state (copies).

        Returns
        -------
        dict
            ``{"lr": float, "state": [dict per parameter]}``; arrays are copied.
        """
        return {
            "lr": self.lr,
            "state": [{k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in s.items()}
                      for s in self.state],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what state_dict returned; refuses state for other parameters.

        Raises
        ------
        ValueError
            The number of parameters or an array's shape differs.
        """
        if len(state["state"]) != len(self.params):
            raise ValueError(
                f"optimiser state has {len(state['state'])} parameters, this optimiser "
                f"has {len(self.params)}"
            )
        for s, p in zip(state["state"], self.params):
            for value in s.values():
                if isinstance(value, np.ndarray) and value.shape != p.data.shape:
                    raise ValueError(f"optimiser state of shape {value.shape} does not fit "
                                     f"a parameter of shape {p.data.shape}")
        self.lr = float(state["lr"])
        self.state = [{k: (np.array(v, dtype=p.data.dtype) if isinstance(v, np.ndarray) else v)
                       for k, v in s.items()} for s, p in zip(state["state"], self.params)]


class SGD(Optimizer):
    """Stochastic gradient descent, PyTorch's form.

    g = grad + weight_decay * p; with momentum, d = momentum * d + (1 - dampening) * g
    (d = g on the first step), then g = g + momentum * d (Nesterov) or g = d;
    finally p -= lr * g.

    Parameters
    ----------
    params : iterable of Parameter
    lr : float >= 0
    momentum : float >= 0, default 0
    dampening : float, default 0
    nesterov : bool, default False
        Needs momentum > 0 and dampening 0.
    weight_decay : float >= 0, default 0
        L2 penalty added to the gradient.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import Parameter
    >>> from fastconv.optim import SGD
    >>> p = Parameter(np.array([1.0, -2.0]))
    >>> p.grad[:] = 0.5
    >>> opt = SGD([p], lr=0.1)
    >>> opt.step(); p.data
    array([ 0.95, -2.05])
    >>> opt = SGD([p], lr=0.1, momentum=0.9)
    >>> opt.step(); opt.step(); p.data  # steps of 0.05, then 0.095
    array([ 0.805, -2.195])
    """

    def __init__(self, params: Iterable[Parameter], lr: float, momentum: float = 0.0,
                 dampening: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        if momentum < 0 or weight_decay < 0:
            raise ValueError(f"momentum and weight_decay must be >= 0, got {momentum}, {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov needs momentum > 0 and dampening 0")
        self.momentum = float(momentum)
        self.dampening = float(dampening)
        self.nesterov = bool(nesterov)
        self.weight_decay = float(weight_decay)

    def step(self) -> None:
        """Update every parameter from its gradient."""
        lr, momentum, dampening = self.lr, self.momentum, self.dampening
        scratch = self.__dict__.setdefault("_scratch", {})  # lr * g per parameter, reused
        plain_rule = not (self.weight_decay or dampening or self.nesterov)
        by_kernel: dict[Any, _KernelBatch] = {}  # the kernel's parameters, by dtype
        for i, (p, state) in enumerate(zip(self.params, self.state)):
            g = p.grad
            if plain_rule and _sgd_kernel_takes(p.data, g, state.get("momentum_buffer")):
                batch = by_kernel.get(p.data.dtype)
                if batch is None:
                    batch = by_kernel[p.data.dtype] = _KernelBatch()
                batch.add(p.data, g, state, momentum)
                continue
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            if momentum:
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = np.array(g, copy=True)
                else:
                    buf *= momentum
                    if dampening:
                        buf += (1 - dampening) * g
                    else:  # (1 - 0) * g is g: no temporary
                        buf += g
                g = g + momentum * buf if self.nesterov else buf
            if g.dtype != p.data.dtype:
                p.data -= (lr * g).astype(p.data.dtype, copy=False)
                continue
            # lr * g rounded to g's dtype as before, into a buffer kept across steps
            step = scratch.get(i)
            if step is None or step.shape != g.shape or step.dtype != g.dtype:
                step = scratch[i] = np.empty_like(g)
            np.multiply(g, lr, out=step)
            p.data -= step
        for batch in by_kernel.values():
            batch.run(momentum, lr)


#: elements (of all the parameters of one call) per thread of SGD's update (its arrays are
#: mostly out of cache after the backward pass: LeNet-5's step, in a training step, 84 us
#: on one thread, 67 on two, where the same step with the arrays in cache takes 34)
UPDATE_PER_THREAD = 1 << 14


def _sgd_kernel_takes(data: NDArray[Any], g: NDArray[Any], buf: NDArray[Any] | None) -> bool:
    """Whether SGD's kernel updates this parameter: one float dtype, C-contiguous arrays
    of one shape (else the NumPy rule, whose result the kernel matches bit for bit)."""
    return (data.dtype in (np.float32, np.float64) and g.dtype == data.dtype
            and data.flags.c_contiguous and g.flags.c_contiguous and g.shape == data.shape
            and (buf is None or (buf.dtype == data.dtype and buf.flags.c_contiguous
                                 and buf.shape == data.shape)))


class _KernelBatch:
    """The parameters of one dtype that SGD's kernel updates, in one call: one pass per
    parameter (p -= lr * buf, buf = buf * momentum + g, a copy of g on the first step;
    or p -= lr * g without momentum) instead of NumPy's four calls, every parameter's
    blocks shared by the threads (a thread per UPDATE_PER_THREAD elements in all)."""

    def __init__(self) -> None:
        self.params: list[NDArray[Any]] = []
        self.grads: list[NDArray[Any]] = []
        self.buffers: list[NDArray[Any] | None] = []
        self.elements = 0

    def add(self, data: NDArray[Any], g: NDArray[Any], state: dict[str, Any],
            momentum: float) -> None:
        buf = state.get("momentum_buffer") if momentum else None
        if momentum and buf is None:  # the first step: the buffer is g, p -= lr * g
            g = state["momentum_buffer"] = np.array(g, copy=True)
        self.params.append(data.reshape(-1))
        self.grads.append(g.reshape(-1))
        self.buffers.append(None if buf is None else buf.reshape(-1))
        self.elements += data.size

    def run(self, momentum: float, lr: float) -> None:
        n_threads = _config.threads_for(self.elements, UPDATE_PER_THREAD)
        _optim.sgd_update_many(self.params, self.grads, self.buffers, momentum, lr, n_threads)


class Adam(Optimizer):
    """Adam (Kingma and Ba), PyTorch's form: bias corrections folded into the step size.

    m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps).

    Parameters
    ----------
    params : iterable of Parameter
    lr : float >= 0, default 1e-3
    betas : (float, float), default (0.9, 0.999)
        b1 and b2, each in [0, 1).
    eps : float >= 0, default 1e-8
    weight_decay : float >= 0, default 0
        L2 penalty added to the gradient (not AdamW's decoupled decay).

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import Parameter
    >>> from fastconv.optim import Adam
    >>> p = Parameter(np.array([1.0, -2.0]))
    >>> p.grad[:] = [0.5, -3.0]
    >>> opt = Adam([p], lr=0.1)
    >>> opt.step(); p.data.round(6)  # the first step is lr * sign(grad)
    array([ 0.9, -1.9])
    >>> opt.state[0]["step"]
    1
    """

    def __init__(self, params: Iterable[Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must lie in [0, 1), got {betas}")
        if eps < 0 or weight_decay < 0:
            raise ValueError(f"eps and weight_decay must be >= 0, got {eps}, {weight_decay}")
        self.betas = (float(b1), float(b2))
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)

    def step(self) -> None:
        """Update every parameter from its gradient."""
        b1, b2 = self.betas
        for p, state in zip(self.params, self.state):
            g = p.grad
            if self.weight_decay:
                g = g + self.weight_decay * p.data
            if "step" not in state:
                state["step"] = 0
                state["exp_avg"] = np.zeros_like(p.data)
                state["exp_avg_sq"] = np.zeros_like(p.data)
            state["step"] += 1
            t = state["step"]
            m, v = state["exp_avg"], state["exp_avg_sq"]
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            denom = np.sqrt(v) / math.sqrt(1 - b2**t) + self.eps
            p.data -= ((self.lr / (1 - b1**t)) * m / denom).astype(p.data.dtype, copy=False)


class _Scheduler:
    """Base class: sets ``optimizer.lr`` from the epoch count on each ``step()``."""

    def __init__(self, optimizer: Optimizer) -> None:
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0

    def lr_at(self, epoch: int) -> float:
        """The learning rate after ``epoch`` calls of :meth:`step`."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance one epoch and update the optimiser's learning rate."""
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def get_last_lr(self) -> float:
        """The optimiser's current learning rate (a float, not PyTorch's list)."""
        return self.optimizer.lr

    def state_dict(self) -> dict[str, Any]:
        """``{"base_lr": float, "last_epoch": int}``."""
        return {"base_lr": self.base_lr, "last_epoch": self.last_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what state_dict returned and set the optimiser's learning rate."""
        self.base_lr = float(state["base_lr"])
        self.last_epoch = int(state["last_epoch"])
        self.optimizer.lr = self.lr_at(self.last_epoch)


class StepLR(_Scheduler):
    """lr = base_lr * gamma ** (epoch // step_size).

    ``base_lr`` is the optimiser's learning rate when the scheduler is made;
    ``epoch`` counts the calls of ``step()``, one per epoch.

    Parameters
    ----------
    optimizer : Optimizer
    step_size : int >= 1
        Epochs between decays.
    gamma : float, default 0.1
        Factor of each decay.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import Parameter
    >>> from fastconv.optim import SGD, StepLR
    >>> opt = SGD([Parameter(np.zeros(1))], lr=1.0)
    >>> sched = StepLR(opt, step_size=2, gamma=0.5)
    >>> lrs = []
    >>> for epoch in range(5):
    ...     sched.step()
    ...     lrs.append(opt.lr)
    >>> lrs
    [1.0, 0.5, 0.5, 0.25, 0.25]
    """

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(optimizer)
        if step_size < 1:
            raise ValueError(f"step_size must be >= 1, got {step_size}")
        self.step_size = int(step_size)
        self.gamma = float(gamma)

    def lr_at(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(_Scheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2.

    Parameters
    ----------
    optimizer : Optimizer
    T_max : int >= 1
        Epochs from base_lr down to eta_min (the cosine goes back up after).
    eta_min : float, default 0
        Smallest learning rate.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import Parameter
    >>> from fastconv.optim import SGD, CosineAnnealingLR
    >>> opt = SGD([Parameter(np.zeros(1))], lr=1.0)
    >>> sched = CosineAnnealingLR(opt, T_max=4)
    >>> lrs = []
    >>> for epoch in range(4):
    ...     sched.step()
    ...     lrs.append(round(opt.lr, 4))
    >>> lrs
    [0.8536, 0.5, 0.1464, 0.0]
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:
        super().__init__(optimizer)
        if T_max < 1:
            raise ValueError(f"T_max must be >= 1, got {T_max}")
        self.T_max = int(T_max)
        self.eta_min = float(eta_min)

    def lr_at(self, epoch: int) -> float:
        return cosine_annealing(self.base_lr, epoch, self.T_max, self.eta_min)


def cosine_annealing(base_lr: float, epoch: float, T_max: float, eta_min: float = 0.0) -> float:
    """eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2.

    The schedule of :class:`CosineAnnealingLR` as a plain function of the epoch
    (fastconv-train uses it to set each epoch's learning rate directly).

    Parameters
    ----------
    base_lr : float
        Learning rate at epoch 0.
    epoch : float
        Epochs done.
    T_max : float
        Epoch at which the rate reaches eta_min.
    eta_min : float, default 0

    Returns
    -------
    float

    Examples
    --------
    >>> from fastconv.optim import cosine_annealing
    >>> [round(cosine_annealing(0.1, epoch, 4), 4) for epoch in range(5)]
    [0.1, 0.0854, 0.05, 0.0146, 0.0]
    """
    return eta_min + (base_lr - eta_min) * (1 + math.cos(math.pi * epoch / T_max)) / 2
