"""Argument normalisation and checks shared by the public operations.

Every error names the argument, the value received and what was expected.
"""

import operator

import numpy as np

# Largest value of any size, stride, padding or count (the kernels index with 64 bits).
MAX_INDEX = 2**62

# Largest element count an output or workspace may have: indices are 64-bit and
# byte counts must fit in them too.
MAX_ELEMENTS = 2**62 // 8


def as_index(value, name, minimum):
    """An int >= minimum from a Python or NumPy integer (bool and float refused)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got bool {value!r}")
    try:
        result = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None
    if result < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {result}")
    if result > MAX_INDEX:
        raise ValueError(f"{name} is too large: {result} > 2**62 (sizes are 64-bit)")
    return result


def conv_channels(in_channels, out_channels, groups):
    """Validated (in_channels, out_channels, groups) of a convolution layer."""
    in_channels = as_index(in_channels, "in_channels", 1)
    out_channels = as_index(out_channels, "out_channels", 1)
    groups = as_index(groups, "groups", 1)
    if in_channels % groups or out_channels % groups:
        raise ValueError(f"groups={groups} must divide in_channels={in_channels} and "
                         f"out_channels={out_channels}")
    return in_channels, out_channels, groups


def as_pair(value, name, minimum=1):
    """(h, w) ints >= minimum from an int, a pair of ints, or a 1-tuple (one value for
    both axes, as PyTorch broadcasts it)."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if isinstance(value, (tuple, list, np.ndarray)):
        if len(value) == 1:
            value = value[0]
        elif len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints (h, w), got {value!r}")
        else:
            return (as_index(value[0], name, minimum), as_index(value[1], name, minimum))
    value = as_index(value, name, minimum)
    return (value, value)


def spatial_size(value, dims, name, forms):
    """The last ``dims`` sizes (ints >= 1) of an output-size argument.

    Accepts a sequence of ``dims`` sizes, or of ``dims + 2`` (a full shape whose batch
    and channel entries are ignored), as PyTorch does; for one spatial axis also an
    int. ``forms`` spells the accepted forms for the error message.
    """
    if dims == 1 and not isinstance(value, (str, bytes)) and not hasattr(value, "__len__"):
        return (as_index(value, name, 1),)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise TypeError(f"{name} must be {forms}, got {value!r}")
    if len(value) not in (dims, dims + 2):
        raise ValueError(f"{name} must be {forms}, got {value!r}")
    return tuple(as_index(v, name, 1) for v in tuple(value)[-dims:])


def float_kind(array, name):
    """np.float32 or np.float64: the kernel dtype this operand asks for."""
    dtype = array.dtype
    if dtype.kind == "f":
        if dtype.itemsize <= 4:
            return np.float32
        if dtype.itemsize == 8:
            return np.float64
        raise TypeError(f"{name} has dtype {dtype}; expected float32, float64 or an integer type")
    if dtype.kind in "iub":
        return np.float64
    raise TypeError(
        f"{name} has dtype {dtype}; expected a real array of float32, float64 or integers"
    )


def as_array(value, name):
    """An ndarray view of ``value``, with errors that name the argument.

    Arrays and array-likes go through ``np.asarray``. Any other object with
    ``__dlpack__`` (a CPU ``torch.Tensor``, say) goes through ``np.from_dlpack``: its
    memory is shared, never copied, also for a tensor that requires grad. None, an
    exporter on another device (a GPU tensor), and complex or object data raise
    TypeError; ragged sequences raise ValueError.
    """
    if value is None:
        raise TypeError(f"{name} must be an array, got None")
    if isinstance(value, np.ndarray) or not hasattr(value, "__dlpack__"):
        try:
            array = np.asarray(value)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{name} could not be turned into a numeric array: {exc}") from None
        float_kind(array, name)
        return array

    array = _from_dlpack(value, name)
    float_kind(array, name)
    return array


def _from_dlpack(value, name):
    """An ndarray sharing the memory of a DLPack exporter (a CPU tensor, say)."""
    device = getattr(value, "device", None)
    try:
        dl_device = (1, 0)  # an exporter that does not say is taken to be on the CPU
        if hasattr(value, "__dlpack_device__"):
            dl_device = tuple(value.__dlpack_device__())
    except Exception as exc:  # e.g. torch's "meta" tensors, which have no memory at all
        dl_device = (None, str(exc))
    # DLPack device types NumPy can read: CPU, CUDA/ROCm pinned host, CUDA managed memory.
    if dl_device[0] not in (1, 3, 11, 13):
        raise TypeError(
            f"{name} is on device {device if device is not None else dl_device} (DLPack device "
            f"{dl_device}); fastconv computes on the CPU: move it there first "
            "(for a torch.Tensor, x.cpu())"
        )
    is_neg = getattr(value, "is_neg", None)
    if callable(is_neg) and is_neg():
        # A lazily negated view (torch's negative bit) exports its memory without the
        # sign; only a resolved copy holds the values it stands for.
        value = value.resolve_neg()
    try:
        try:
            array = np.from_dlpack(value)
        except BufferError:
            # Exporters that track gradients refuse to share such data; a detached view
            # of the same memory is shared instead (still no copy).
            if not getattr(value, "requires_grad", False) or not hasattr(value, "detach"):
                raise
            array = np.from_dlpack(value.detach())
    except (BufferError, RuntimeError, ValueError, TypeError) as dlpack_exc:
        try:  # what np.asarray takes is still taken (a copy, if the exporter offers one)
            array = np.asarray(value)
        except (RuntimeError, ValueError, TypeError):
            dtype = getattr(value, "dtype", None)
            of_dtype = f" of dtype {dtype}" if dtype is not None else ""
            raise TypeError(
                f"{name} ({type(value).__name__}{of_dtype}) could not be read through DLPack: "
                f"{dlpack_exc}; expected CPU data of float32, float64 or integers"
            ) from None
    return array


def result_dtype(*arrays):
    """float64 if any operand is float64 or integer, else float32."""
    if any(float_kind(a, "array") is np.float64 for a in arrays):  # any byte order
        return np.float64
    return np.float32


def as_contiguous(array, dtype):
    """C-contiguous array of ``dtype``; no copy when the array already is one."""
    return np.ascontiguousarray(array, dtype=dtype)


def check_ndim(array, name, ndim, layout):
    if array.ndim != ndim:
        raise ValueError(
            f"{name} must be {ndim}-D {layout}, got {array.ndim}-D array of shape {array.shape}"
        )


def normalize_padding(padding, in_hw, kernel_hw, stride, dilation):
    """((top, bottom), (left, right)) from any accepted padding form.

    Forms: int, (h, w), ((top, bottom), (left, right)), or a word (any case):
    "valid" (none), "same" (output ceil(in / stride); total padding split with the
    extra on the bottom/right), "full" (dilation * (kernel - 1) on each side).
    """
    if isinstance(padding, str):
        word = padding.lower()
        if word == "valid":
            return ((0, 0), (0, 0))
        if word == "full":
            return tuple((d * (k - 1), d * (k - 1)) for k, d in zip(kernel_hw, dilation))
        if word == "same":
            pads = []
            for size, k, s, d in zip(in_hw, kernel_hw, stride, dilation):
                out = -(-size // s)
                total = max((out - 1) * s + d * (k - 1) + 1 - size, 0)
                pads.append((total // 2, total - total // 2))
            return tuple(pads)
        raise ValueError(
            f"padding must be an int, a pair, a pair of pairs or one of 'valid', 'same', "
            f"'full', got {padding!r}"
        )
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(
        isinstance(p, (tuple, list)) for p in padding
    ):
        pairs = []
        for p in padding:
            if len(p) != 2:
                raise ValueError(
                    f"padding as pairs must be ((top, bottom), (left, right)), got {padding!r}"
                )
            pairs.append((as_index(p[0], "padding", 0), as_index(p[1], "padding", 0)))
        return tuple(pairs)
    ph, pw = as_pair(padding, "padding", minimum=0)
    return ((ph, ph), (pw, pw))


def output_hw(in_hw, kernel_hw, stride, padding, dilation):
    """Output (OH, OW); ValueError when the dilated kernel exceeds the padded input."""
    out = []
    for axis, (size, k, s, (p0, p1), d) in enumerate(
        zip(in_hw, kernel_hw, stride, padding, dilation)
    ):
        span = d * (k - 1) + 1
        padded = size + p0 + p1
        if padded < span:
            which = "height" if axis == 0 else "width"
            raise ValueError(
                f"kernel {which} {k} with dilation {d} spans {span}, larger than the padded "
                f"input {which} {padded} ({size} + padding {p0} + {p1}); "
                "check w, padding and dilation"
            )
        out.append((padded - span) // s + 1)
    return tuple(out)


def check_size(shape, name):
    """ValueError when an array of ``shape`` would overflow 64-bit indexing."""
    count = 1
    for dim in shape:
        count *= int(dim)
    if count > MAX_ELEMENTS:
        raise ValueError(
            f"{name} would have shape {tuple(shape)}: {count} elements is too large "
            "(overflows 64-bit byte offsets)"
        )
    return count
