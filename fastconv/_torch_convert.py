"""fastconv.torch.convert: swap a model's torch.nn convolution and pooling layers for
fastconv.torch's, in place, keeping their parameters, buffers and settings."""

from __future__ import annotations

import copy
import dataclasses
import inspect
from typing import Any

import torch

from fastconv import _torch_conv, _torch_pool

#: torch.nn layer -> the fastconv.torch layer that takes its place (exact types only:
#: a subclass may compute something else in its forward)
LAYERS: dict[type, type] = {
    torch.nn.Conv1d: _torch_conv.Conv1d,
    torch.nn.Conv2d: _torch_conv.Conv2d,
    torch.nn.ConvTranspose1d: _torch_conv.ConvTranspose1d,
    torch.nn.ConvTranspose2d: _torch_conv.ConvTranspose2d,
    torch.nn.MaxPool1d: _torch_pool.MaxPool1d,
    torch.nn.MaxPool2d: _torch_pool.MaxPool2d,
    torch.nn.AvgPool1d: _torch_pool.AvgPool1d,
    torch.nn.AvgPool2d: _torch_pool.AvgPool2d,
    torch.nn.AdaptiveAvgPool2d: _torch_pool.AdaptiveAvgPool2d,
    torch.nn.LPPool2d: _torch_pool.LPPool2d,
    torch.nn.MaxUnpool2d: _torch_pool.MaxUnpool2d,
}

_OURS = frozenset(LAYERS.values())
# torch.nn's modules of these families that fastconv has no layer for get a row too.
_FAMILIES = ("torch.nn.modules.conv", "torch.nn.modules.pooling")
_DTYPES = (torch.float32, torch.float64)
# Hooks a swap would lose (a forward hook, weight_norm's pre-hook, state_dict hooks).
_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
          "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
          "_load_state_dict_post_hooks")


@dataclasses.dataclass
class ConvertReport:
    """What :func:`convert` swapped and what it left on PyTorch, and why.

    Attributes
    ----------
    model : torch.nn.Module
        The converted model: the one given (``inplace=True``) or its copy; a
        different module only when the model itself was a layer that was swapped.
    swapped : list of (str, str)
        (qualified name, torch.nn type name) of each module replaced by its
        fastconv.torch namesake; the root is named ``""``.
    left : list of (str, str, str)
        (qualified name, type name, reason) of each convolution or pooling module
        left as it was.

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> report = fct.convert(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3),
    ...                                          torch.nn.AdaptiveMaxPool2d(1)))
    >>> report.swapped
    [('0', 'Conv2d')]
    >>> report.left
    [('1', 'AdaptiveMaxPool2d', 'no fastconv.torch counterpart')]
    """

    model: Any
    swapped: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    left: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        rows = [(name or "(model)", kind, "fastconv.torch." + kind)
                for name, kind in self.swapped]
        rows += [(name or "(model)", kind, "left: " + why) for name, kind, why in self.left]
        head = (f"fastconv.torch.convert: {len(self.swapped)} swapped, "
                f"{len(self.left)} left on torch")
        if not rows:
            return head
        rows.insert(0, ("module", "torch.nn type", "now"))
        widths = [max(len(row[i]) for row in rows) for i in range(2)]
        lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c}" for a, b, c in rows]
        lines.insert(1, "-" * max(map(len, lines)))
        return "\n".join([head, *lines])


def _tensor_problems(tensors: list[Any]) -> list[str]:
    """Why fastconv cannot compute with these tensors (floating ones only): each
    unsupported dtype and device, once."""
    problems = []
    for t in tensors:
        if t is None or not t.is_floating_point():
            continue
        if t.dtype not in _DTYPES:
            problems.append(f"dtype {t.dtype}")
        if t.device.type != "cpu":
            problems.append(f"device {t.device}")
    return list(dict.fromkeys(problems))


def _own_tensors(module: Any) -> list[Any]:
    return [*module._parameters.values(), *module._buffers.values()]


def _why_left(module: Any, model_problems: list[str]) -> str | None:
    """Why ``module`` stays as it is, or None when it can be swapped."""
    kind = type(module)
    if kind in _OURS:
        return "already a fastconv.torch layer"
    if kind not in LAYERS:
        base = next((c for c in LAYERS if isinstance(module, c)), None)
        if base is not None:
            return (f"a subclass of torch.nn.{base.__name__} (its forward may differ); "
                    "only exact types are swapped")
        return "no fastconv.torch counterpart"
    hooks = [name.strip("_") for name in _HOOKS if getattr(module, name, None)]
    if hooks:
        return f"has hooks ({', '.join(hooks)}) that a swap would drop"
    own = _own_tensors(module)
    problems = _tensor_problems(own)
    if problems:
        return (f"{' and '.join(problems)}: fastconv computes in float32 or float64 on "
                "the CPU")
    floats = {t.dtype for t in own if t is not None and t.is_floating_point()}
    if len(floats) > 1:
        return f"mixed dtypes {sorted(map(str, floats))}: fastconv takes one dtype per call"
    if kind is torch.nn.LPPool2d and not _even(module.norm_type):
        return (f"norm_type {module.norm_type}: PyTorch sums x^p, fastconv |x|^p; they agree "
                "only for an even p (or inputs >= 0)")
    if not floats and model_problems:
        return (f"no parameters, and the model holds tensors of {', '.join(model_problems)}: "
                "its input may be one fastconv cannot take")
    return None


def _even(p: Any) -> bool:
    return float(p).is_integer() and int(p) % 2 == 0


def _arguments(module: Any) -> dict[str, Any]:
    """The constructor arguments of a torch.nn layer, read back from its attributes
    (torch.nn's layers keep each under its own name; bias is whether there is one)."""
    arguments = {}
    for name in inspect.signature(type(module)).parameters:
        if name in ("device", "dtype"):
            continue
        arguments[name] = module.bias is not None if name == "bias" else getattr(module, name)
    return arguments


def _swap(module: Any) -> Any:
    """The fastconv.torch layer holding ``module``'s parameters and buffers (the same
    objects) and settings. Its own parameters are made on the meta device, so the
    swap draws no random numbers and allocates nothing."""
    ours = LAYERS[type(module)]
    arguments = _arguments(module)
    if "device" in inspect.signature(ours).parameters:
        weight = module.weight
        new = ours(**arguments, device="meta", dtype=weight.dtype)
    else:
        new = ours(**arguments)
    for name, parameter in module._parameters.items():
        new.register_parameter(name, parameter)
    for name, buffer in module._buffers.items():
        new.register_buffer(name, buffer,
                            persistent=name not in module._non_persistent_buffers_set)
    if list(new._parameters) != list(module._parameters):
        raise ValueError(f"its parameters {list(module._parameters)} are not the layer's "
                         f"{list(new._parameters)}")
    new.train(module.training)
    return new


def _convert_children(parent: Any, prefix: str, done: dict[int, Any], report: ConvertReport,
                      model_problems: list[str]) -> None:
    """Swap, in ``parent._modules``, each child that can be; recurse into the others.
    ``done`` maps each module seen to what replaces it (itself if nothing), so a
    module shared by several parents is converted once and replaced everywhere."""
    for name, child in list(parent._modules.items()):
        if child is None:
            continue
        if id(child) not in done:
            qualified = f"{prefix}{name}"
            done[id(child)] = _convert_one(child, qualified, done, report, model_problems)
        parent._modules[name] = done[id(child)]


def _convert_one(module: Any, name: str, done: dict[int, Any], report: ConvertReport,
                 model_problems: list[str]) -> Any:
    """What takes ``module``'s place (itself when left), its children converted."""
    kind = type(module)
    if kind in LAYERS or kind.__module__ in _FAMILIES or kind in _OURS or any(
        isinstance(module, base) for base in LAYERS
    ):
        why = _why_left(module, model_problems)
        if why is None:
            try:
                new = _swap(module)
            except (AttributeError, TypeError, ValueError) as exc:
                why = f"fastconv.torch.{kind.__name__} refuses its settings: {exc}"
            else:
                report.swapped.append((name, kind.__name__))
                return new
        report.left.append((name, kind.__name__, why))
    _convert_children(module, f"{name}." if name else "", done, report, model_problems)
    return module


def convert(model: Any, inplace: bool = True) -> ConvertReport:
    """Run a PyTorch model's convolution and pooling layers on fastconv.

    Walks the module tree and replaces each ``torch.nn`` layer of a type below by
    its fastconv.torch namesake, in its parent: ``Conv1d``, ``Conv2d``,
    ``ConvTranspose1d``, ``ConvTranspose2d``, ``MaxPool1d``, ``MaxPool2d``,
    ``AvgPool1d``, ``AvgPool2d``, ``AdaptiveAvgPool2d``, ``LPPool2d``,
    ``MaxUnpool2d``. The new layer holds the same Parameter and buffer objects
    (so ``requires_grad``, ``state_dict`` keys and an optimizer built before the
    swap stay valid), every constructor argument and the train/eval mode; no random
    numbers are drawn.

    A layer is left as it is, with the reason in the report, when fastconv cannot
    compute it as PyTorch does: parameters not float32/float64 or not on the CPU
    (for a layer without parameters: when the model holds such tensors); a
    subclass of these types (only exact types are swapped: a subclass's forward
    may differ); a module with hooks; an ``LPPool2d`` whose ``norm_type`` is not
    an even integer (PyTorch sums x^p, fastconv |x|^p); settings the fastconv
    layer refuses. Layers that are already fastconv.torch's, and torch.nn
    convolution and pooling layers fastconv has no counterpart for (``Conv3d``,
    ``AdaptiveMaxPool2d``, ...), are listed as left too. A module shared by
    several parents is replaced everywhere; references to it held outside the
    module tree (plain lists, closures) are not updated. Convolutions with a
    ``padding_mode`` other than zeros are swapped: the fastconv layer pads with
    torch.nn.functional.pad, as torch.nn's does, then convolves.

    Parameters
    ----------
    model : torch.nn.Module
    inplace : bool, default True
        Convert ``model`` itself; False converts a deep copy and leaves ``model``
        as it was.

    Returns
    -------
    report : ConvertReport
        ``report.model`` is the converted model (a new module only when ``model``
        itself is a layer that was swapped); ``report.swapped`` and
        ``report.left`` list the modules by qualified name; ``print(report)``
        shows them as a table.

    Examples
    --------
    >>> import torch, fastconv.torch as fct
    >>> model = torch.nn.Sequential(
    ...     torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
    ...     torch.nn.Conv3d(8, 8, 3))
    >>> report = fct.convert(model)
    >>> model[0]
    Conv2d(3, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
    >>> type(model[0]).__module__
    'fastconv.torch'
    >>> print(report)
    fastconv.torch.convert: 2 swapped, 1 left on torch
    module  torch.nn type  now
    ----------------------------------------------------------
    0       Conv2d         fastconv.torch.Conv2d
    2       MaxPool2d      fastconv.torch.MaxPool2d
    3       Conv3d         left: no fastconv.torch counterpart
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not inplace:
        model = copy.deepcopy(model)
    report = ConvertReport(model)
    problems = _tensor_problems([*model.parameters(), *model.buffers()])
    report.model = _convert_one(model, "", {}, report, problems)
    return report

