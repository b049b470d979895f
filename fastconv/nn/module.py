"""Module, Parameter and the containers: the layer API without an autograd graph.

A layer's ``forward(x)`` keeps what its backward needs; ``backward(grad_out)`` returns
the gradient with respect to its input and adds the gradients of its parameters into
their ``.grad``. Containers call their children in order forward and in reverse order
backward. The canonical step::

    logits = net(x); loss = loss_fn(logits, y)
    opt.zero_grad(); net.backward(loss_fn.backward()); opt.step()
"""

from collections import OrderedDict

import numpy as np

__all__ = ["Parameter", "Module", "Sequential", "Residual"]


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
    """

    def __init__(self, data, dtype=None):
        data = np.asarray(data)
        if dtype is None:
            dtype = data.dtype if data.dtype in (np.float32, np.float64) else np.float32
        self.data = np.array(data, dtype=dtype, order="C")
        self.grad = np.zeros_like(self.data)

    @property
    def shape(self):
        return self.data.shape

    def __repr__(self):
        return f"Parameter(shape={self.data.shape}, dtype={self.data.dtype})"


class Module:
    """Base class of layers and networks.

    Attributes holding a :class:`Parameter` or a :class:`Module` are registered in
    assignment order, which fixes the order of ``parameters()`` and the keys of
    ``state_dict()`` (``"0.weight"``, ``"features.3.bias"``, ...).
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call Module.__init__ first")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    # -- computation -----------------------------------------------------------------

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, x):
        """Compute the output and keep what backward needs."""
        raise NotImplementedError(f"{type(self).__name__} has no forward")

    def backward(self, grad_out):
        """Gradient with respect to the last forward's input; accumulates parameter grads."""
        raise NotImplementedError(f"{type(self).__name__} has no backward")

    # -- parameters --------------------------------------------------------------------

    def named_parameters(self, prefix=""):
        """Yield ``(name, Parameter)`` for this module and its children, depth first."""
        for name, param in self._parameters.items():
            yield prefix + name, param
        for name, module in self._modules.items():
            yield from module.named_parameters(prefix + name + ".")

    def parameters(self):
        """Yield every Parameter once, in registration order."""
        seen = set()
        for _, param in self.named_parameters():
            if id(param) not in seen:
                seen.add(id(param))
                yield param

    def modules(self):
        """Yield this module and all its descendants."""
        yield self
        for module in self._modules.values():
            yield from module.modules()

    def zero_grad(self):
        """Set every parameter's gradient to zero."""
        for param in self.parameters():
            param.grad.fill(0)

    def train(self, mode=True):
        """Training mode (dropout active) for this module and its children; returns self."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        """Evaluation mode (dropout is the identity); returns self."""
        return self.train(False)

    def to(self, dtype):
        """Convert every parameter (and its gradient) to ``dtype`` in place; returns self."""
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dtype}")
        for param in self.parameters():
            param.data = param.data.astype(dtype)
            param.grad = param.grad.astype(dtype)
        return self

    # -- state -------------------------------------------------------------------------

    def state_dict(self):
        """Copies of every parameter's value, keyed by dotted name."""
        return OrderedDict((name, param.data.copy()) for name, param in self.named_parameters())

    def load_state_dict(self, state):
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

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, module in self._modules.items():
            child = repr(module).replace("\n", "\n  ")
            lines.append(f"  ({name}): {child}")
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"


class Sequential(Module):
    """Layers applied in order; backward walks them in reverse.

    Examples
    --------
    >>> from fastconv import nn
    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> len(net), type(net[1]).__name__
    (3, 'ReLU')
    """

    def __init__(self, *layers):
        super().__init__()
        for index, layer in enumerate(layers):
            if not isinstance(layer, Module):
                raise TypeError(f"layer {index} must be a Module, got {type(layer).__name__}")
            setattr(self, str(index), layer)

    def __getitem__(self, index):
        return list(self._modules.values())[index]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def forward(self, x):
        for layer in self._modules.values():
            x = layer(x)
        return x

    def backward(self, grad_out):
        for layer in reversed(self._modules.values()):
            grad_out = layer.backward(grad_out)
        return grad_out


class Residual(Module):
    """y = x + block(x); block's output must have x's shape."""

    def __init__(self, block):
        super().__init__()
        self.block = block

    def forward(self, x):
        y = self.block(x)
        if y.shape != np.shape(x):
            raise ValueError(f"Residual block changed the shape {np.shape(x)} -> {y.shape}")
        return x + y

    def backward(self, grad_out):
        grad_in = self.block.backward(grad_out)
        if grad_in is None:  # the block skips its input gradient
            return grad_out
        return grad_out + grad_in
