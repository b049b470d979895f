"""Module, Parameter and the containers: the layer API without an autograd graph.

A layer's ``forward(x)`` keeps what its backward needs; ``backward(grad_out)`` returns
the gradient with respect to its input and adds the gradients of its parameters into
their ``.grad``. Containers call their children in order forward and in reverse order
backward. The canonical step::

    logits = net(x); loss = loss_fn(logits, y)
    opt.zero_grad(); net.backward(loss_fn.backward()); opt.step()

Examples
--------
>>> import numpy as np
>>> from fastconv import nn, optim
>>> net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, rng=0))
>>> loss_fn = nn.CrossEntropyLoss()
>>> opt = optim.SGD(net.parameters(), lr=0.1)
>>> x, y = np.ones((2, 1, 2, 2), np.float32), np.array([0, 2])
>>> loss = loss_fn(net(x), y)
>>> opt.zero_grad(); grad_x = net.backward(loss_fn.backward()); opt.step()
>>> grad_x.shape, net[1].weight.grad.shape
((2, 1, 2, 2), (3, 4))
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from fastconv._blas import single_threaded_blas
from fastconv.nn import _program
from fastconv.nn._cache import TRANSIENT_STATE
from fastconv.nn._program import EDITS, Step

__all__ = ["Parameter", "Module", "Sequential", "Residual"]

_M = TypeVar("_M", bound="Module")



class Parameter:
    """A trainable array and its gradient.

    Parameters
    ----------
    data : array_like
        Initial value (copied into a C-contiguous float array).
    dtype : numpy dtype, optional
        Defaults to the dtype of ``data`` when it is float32/float64, else float32.

    Attributes
    ----------
    data : ndarray
        The value; optimisers update it in place.
    grad : ndarray
        Same shape and dtype; ``backward`` adds into it, ``zero_grad`` clears it.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import Parameter
    >>> p = Parameter([[1, 2], [3, 4]])
    >>> p
    Parameter(shape=(2, 2), dtype=float32)
    >>> p.grad
    array([[0., 0.],
           [0., 0.]], dtype=float32)
    >>> Parameter(np.zeros(3)).data.dtype
    dtype('float64')
    """

    data: NDArray[Any]
    grad: NDArray[Any]

    def __init__(self, data: ArrayLike, dtype: DTypeLike | None = None) -> None:
        data = np.asarray(data)
        if dtype is None:
            dtype = data.dtype if data.dtype in (np.float32, np.float64) else np.float32
        self.data = np.array(data, dtype=dtype, order="C")
        self.grad = np.zeros_like(self.data)


    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of ``data`` (and of ``grad``)."""
        return self.data.shape

    def __repr__(self) -> str:
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class of layers and networks.

    Attributes holding a :class:`Parameter` or a :class:`Module` are registered in
    assignment order, which fixes the order of ``parameters()`` and the keys of
    ``state_dict()`` (``"0.weight"``, ``"features.3.bias"``, ...).

    A subclass calls ``Module.__init__`` first, then defines ``forward`` (keeping
    what backward needs) and ``backward(grad_out)``, which returns the gradient
    with respect to forward's input and adds its parameters' gradients into
    their ``.grad``. Calling a module calls its ``forward``.

    Attributes
    ----------
    training : bool
        True (the default) in training mode, False after :meth:`eval`.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.nn import Module, Parameter
    >>> class Scale(Module):
    ...     def __init__(self, n):
    ...         super().__init__()
    ...         self.weight = Parameter(np.ones(n))
    ...     def forward(self, x):
    ...         self.x = x
    ...         return x * self.weight.data
    ...     def backward(self, grad_out):
    ...         self.weight.grad += (grad_out * self.x).sum(axis=0)
    ...         return grad_out * self.weight.data
    >>> layer = Scale(3)
    >>> layer(np.full((2, 3), 2.0))
    array([[2., 2., 2.],
           [2., 2., 2.]])
    >>> grad_x = layer.backward(np.ones((2, 3)))
    >>> layer.weight.grad  # summed over the batch of 2
    array([4., 4., 4.])
    >>> list(layer.state_dict())
    ['weight']
    """

    _parameters: OrderedDict[str, Parameter]
    _modules: OrderedDict[str, Module]
    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call Module.__init__ first")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)
        if "_in_program" in self.__dict__:  # (modules being built are in none)
            EDITS[0] += 1  # compiled forwards bound to the model as it was: rebuilt

    def __getstate__(self) -> dict[str, Any]:
        # what one call leaves for the next (inputs kept for backward, compiled
        # forwards) is not part of the model: copies and pickles start without it
        return {key: value for key, value in self.__dict__.items()
                if key not in TRANSIENT_STATE}

    # -- computation -----------------------------------------------------------------

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    # Subclasses choose their own signatures (a loss takes logits and targets), so
    # the base class types them loosely; concrete layers annotate theirs.
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """Compute the output and keep what backward needs."""
        raise NotImplementedError(f"{type(self).__name__} has no forward")

    def backward(self, grad_out: Any) -> Any:
        """Gradient with respect to the last forward's input; accumulates parameter grads."""
        raise NotImplementedError(f"{type(self).__name__} has no backward")

    #: whether :meth:`_forward_with_next` and :meth:`_backward_with_next` may run this
    #: layer and the next as one
    _fuses_with_next = False

    def _forward_with_next(self, layer: Module, x: Any) -> Any:
        """``layer(self(x))`` in one pass, each layer keeping what its backward needs, or
        None where this pair does not fuse (nothing run). A Sequential asks a layer whose
        ``_fuses_with_next`` is true."""
        return None

    def _backward_with_next(self, layer: Module, grad_out: Any) -> tuple[bool, Any]:
        """``(True, self.backward(layer.backward(grad_out)))`` computed in one pass, or
        ``(False, None)`` where this pair does not fuse (nothing run)."""
        return False, None

    def _compiled(self, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Step | None:
        """This layer's eval-mode forward for C-contiguous inputs of ``shape`` and
        ``dtype`` as a :class:`fastconv.nn._program.Step`, or None where it has none
        (then a Sequential holding it runs its layers one by one)."""
        return None

    # -- parameters --------------------------------------------------------------------

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Yield ``(name, Parameter)`` for this module and its children, depth first."""
        for name, param in self._parameters.items():
            yield prefix + name, param
        for name, module in self._modules.items():
            yield from module.named_parameters(prefix + name + ".")

    def parameters(self) -> Iterator[Parameter]:
        """Yield every Parameter once, in registration order."""
        seen = set()
        for _, param in self.named_parameters():
            if id(param) not in seen:
                seen.add(id(param))
                yield param

    def modules(self) -> Iterator[Module]:
        """Yield this module and all its descendants."""
        yield self
        for module in self._modules.values():
            yield from module.modules()

    def zero_grad(self) -> None:
        """Set every parameter's gradient to zero."""
        for param in self.parameters():
            param.grad.fill(0)

    def train(self: _M, mode: bool = True) -> _M:
        """Training mode (dropout active) for this module and its children; returns self."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        EDITS[0] += 1
        return self

    def eval(self: _M) -> _M:
        """Evaluation mode (dropout is the identity); returns self."""
        return self.train(False)

    def to(self: _M, dtype: DTypeLike) -> _M:
        """Convert every parameter (and its gradient) to ``dtype`` in place; returns self."""
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        for param in self.parameters():
            param.data = param.data.astype(dtype)
            param.grad = param.grad.astype(dtype)
        return self

    # -- state -------------------------------------------------------------------------

    def state_dict(self) -> OrderedDict[str, NDArray[Any]]:
        """Copies of every parameter's value, keyed by dotted name."""
        return OrderedDict((name, param.data.copy()) for name, param in self.named_parameters())

    def load_state_dict(self, state: Mapping[str, ArrayLike]) -> None:
        """Load parameter values from ``state``: all of them or, on any mismatch, none.

        Raises
        ------
        ValueError
            When keys are missing or unexpected, or a shape differs; nothing is
            changed then.
        """
        params = OrderedDict(self.named_parameters())
        missing = [k for k in params if k not in state]
        unexpected = [k for k in state if k not in params]
        if missing or unexpected:
            raise ValueError(
                f"state does not match {type(self).__name__}: missing keys {missing}, "
                f"unexpected keys {unexpected}"
            )
        values = {}
        for name, param in params.items():
            value = np.asarray(state[name])
            if value.shape != param.data.shape:
                raise ValueError(
                    f"state['{name}'] has shape {value.shape}, the model's parameter has "
                    f"{param.data.shape}; nothing was loaded"
                )
            values[name] = value
        for name, param in params.items():
            param.data[...] = values[name]

    def extra_repr(self) -> str:
        """Text shown between the parentheses of ``repr(module)``."""
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, module in self._modules.items():
            child = repr(module).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child}")
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"


class Sequential(Module):
    """Layers applied in order; backward walks them in reverse.

    Parameters
    ----------
    *layers : Module
        Registered as children ``"0"``, ``"1"``, ...; indexing, ``len`` and
        iteration give them back in order.

    Notes
    -----
    ``forward(x)`` returns the last layer's output; ``backward(grad_out)`` takes
    the gradient with respect to that output and returns the one with respect to
    ``x`` (None when the first layer skips its input gradient). Both hold the BLAS
    libraries single-threaded (as every fastconv layer does around its own GEMMs):
    the threads belong to fastconv's kernels.

    In eval mode, for a C-contiguous float32/float64 input, ``forward`` runs the
    layers compiled for the input's shape (:mod:`fastconv.nn._program`): each
    layer's kernel bound once, intermediate arrays reused, the same results bit for
    bit (LeNet-5 at batch 1: 33 us instead of 108). Layers without a compiled form
    (custom modules, :class:`Residual`, ...) make the whole Sequential run layer by
    layer. The compiled forward keeps nothing for backward: a ``backward`` after it
    runs the layers on the same input first.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> len(net), type(net[1]).__name__
    (3, 'ReLU')
    >>> y = net(np.ones((5, 4), np.float32))
    >>> y.shape, net.backward(np.ones_like(y)).shape
    ((5, 2), (5, 4))
    >>> [name for name, _ in net.named_parameters()]
    ['0.weight', '0.bias', '2.weight', '2.bias']

    Every layer's output of one forward pass (the feature maps of a CNN):

    >>> y, acts = net(np.ones((5, 4), np.float32), return_activations=True)
    >>> {name: a.shape for name, a in acts.items()}
    {'0': (5, 3), '1': (5, 3), '2': (5, 2)}
    """

    def __init__(self, *layers: Module) -> None:
        super().__init__()
        for index, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"layer {index} must be a Module, got {type(layer).__name__}")
            setattr(self, str(index), layer)

    def __getitem__(self, index: int) -> Module:
        return list(self._modules.values())[index]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def forward(self, x: Any, return_activations: bool = False) -> Any:
        """The last layer's output; with ``return_activations``, ``(output, activations)``.

        ``activations`` maps each layer's name to its output, in order; a nested
        Sequential adds its own layers' outputs under dotted names (``"3.0"``, ...)
        before its whole output (``"3"``). The arrays are the layers' outputs
        themselves, not copies: nothing is spent when they are not asked for.
        """
        if not self.training and not return_activations:
            y = _program.run(self, x)  # the layers' kernels bound once for x's shape
            if y is not None:
                return y
        _program.ran_layers(self)
        if not return_activations:
            return self._forward_layers(x)
        # BLAS single-threaded once for the whole pass: every layer would set it for
        # its own GEMMs, each switch costing as much as a small layer at batch 1
        with single_threaded_blas():
            activations: OrderedDict[str, Any] = OrderedDict()
            for name, layer in self._modules.items():
                if isinstance(layer, Sequential):
                    x, inner = layer.forward(x, return_activations=True)
                    activations.update((f"{name}.{key}", value) for key, value in inner.items())
                else:
                    x = layer(x)
                activations[name] = x
            return x, activations

    def _forward_layers(self, x: Any) -> Any:
        layers = tuple(self._modules.values())
        with single_threaded_blas():
            i = 0
            while i < len(layers):
                layer = layers[i]
                if layer._fuses_with_next and i + 1 < len(layers):
                    y = layer._forward_with_next(layers[i + 1], x)
                    if y is not None:  # both layers ran as one
                        x = y
                        i += 2
                        continue
                x = layer(x)
                i += 1
            return x

    def backward(self, grad_out: Any) -> Any:
        replay = _program.take_replay(self)
        if replay is not None:  # the last forward was compiled and kept nothing
            self._forward_layers(replay)
        layers = tuple(self._modules.values())
        with single_threaded_blas():
            i = len(layers) - 1
            while i >= 0:
                if i > 0 and layers[i - 1]._fuses_with_next:
                    fused, grad = layers[i - 1]._backward_with_next(layers[i], grad_out)
                    if fused:  # both layers ran as one
                        grad_out = grad
                        i -= 2
                        continue
                grad_out = layers[i].backward(grad_out)
                i -= 1
            return grad_out


class Residual(Module):
    """y = x + block(x); block's output must have x's shape.

    Parameters
    ----------
    block : Module
        Maps an input to an output of the same shape; backward returns
        ``grad_out + block.backward(grad_out)``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv import nn
    >>> res = nn.Residual(nn.Conv2d(2, 2, 3, padding=1, rng=0))
    >>> x = np.ones((1, 2, 4, 4), np.float32)
    >>> y = res(x)
    >>> y.shape, res.backward(np.ones_like(y)).shape
    ((1, 2, 4, 4), (1, 2, 4, 4))
    """

    def __init__(self, block: Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: Any) -> Any:
        y = self.block(x)
        if y.shape != np.shape(x):
            raise ValueError(f"Residual block changed the shape {np.shape(x)} -> {y.shape}")
        return x + y

    def backward(self, grad_out: Any) -> Any:
        grad_in = self.block.backward(grad_out)
        if grad_in is None:  # the block skips its input gradient
            return grad_out
        return grad_out + grad_in
