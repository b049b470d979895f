"""ONNX Runtime as a second forward-only anchor of ``compare.py``.

Each case becomes a one-node ONNX model (Conv, ConvTranspose, MaxPool or AveragePool with
the weights as initializers) and the LeNet-5 inference case a small graph of the same
network; ONNX Runtime runs it on the CPU with the same thread count as fastconv, graph
optimisations on. Everything here is optional: without ``onnx`` and ``onnxruntime``
(``pip install onnx onnxruntime``) ``HAVE_ORT`` is False and ``compare.py`` leaves the
columns out.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cases import pair

try:
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper
except ImportError:  # both optional
    onnx = ort = None

HAVE_ORT = ort is not None
#: the opset the models declare (Conv, ConvTranspose and the pools are unchanged since 11-19)
OPSET = 17

_ELEM = {np.dtype(np.float32): 1, np.dtype(np.float64): 11}  # TensorProto FLOAT, DOUBLE


def version() -> str:
    return ort.__version__ if HAVE_ORT else "not installed"


def _model(nodes, inputs: dict[str, np.ndarray], initializers: dict[str, np.ndarray],
           output: str, out_shape, dtype: np.dtype) -> bytes:
    elem = _ELEM[np.dtype(dtype)]
    graph = helper.make_graph(
        nodes, "fastconv_anchor",
        [helper.make_tensor_value_info(name, elem, list(v.shape)) for name, v in inputs.items()],
        [helper.make_tensor_value_info(output, elem, list(out_shape))],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(v), name)
                     for name, v in initializers.items() if v is not None],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by every onnxruntime of the last years
    onnx.checker.check_model(model)
    return model.SerializeToString()


def _session(model: bytes, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # ORT's workers otherwise spin after each run, taking the cores that fastconv and
    # torch are timed on next (interleaved): they sleep between runs instead
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _runner(model: bytes, feeds: dict[str, np.ndarray], threads: int) -> Callable[[], object]:
    session = _session(model, threads)
    return lambda: session.run(None, feeds)


def _conv_node(case, has_bias: bool, transposed: bool):
    inputs = ["x", "w"] + (["b"] if has_bias else [])
    attrs = dict(kernel_shape=list(pair(case.kernel)), strides=list(pair(case.stride)),
                 group=case.groups)
    if transposed:
        ph, pw = pair(case.padding)
        attrs.update(pads=[ph, pw, ph, pw], output_padding=list(pair(case.output_padding)))
        return helper.make_node("ConvTranspose", inputs, ["y"], **attrs)
    (pt, pb), (pl, pr) = case.pads
    attrs.update(pads=[pt, pl, pb, pr], dilations=list(pair(case.dilation)))
    return helper.make_node("Conv", inputs, ["y"], **attrs)


def conv_forward(case, inputs: dict[str, np.ndarray], threads: int) -> Callable[[], object]:
    """The forward of a conv2d or conv_transpose2d case over ``inputs`` ("x", "w", "b")."""
    x, w, b = inputs["x"], inputs["w"], inputs.get("b")
    node = _conv_node(case, b is not None, case.kind == "conv_transpose2d")
    model = _model([node], {"x": x}, {"w": w, "b": b}, "y", case.y_shape, x.dtype)
    return _runner(model, {"x": x}, threads)


def pool_forward(case, inputs: dict[str, np.ndarray], threads: int) -> Callable[[], object]:
    """The forward of a pooling case: MaxPool, or AveragePool counting the padding in the
    divisor as torch's avg_pool2d does by default."""
    x = inputs["x"]
    ph, pw = pair(case.padding)
    attrs = dict(kernel_shape=list(pair(case.kernel)),
                 strides=list(pair(case.kernel if case.stride is None else case.stride)),
                 pads=[ph, pw, ph, pw])
    if case.op == "max":
        node = helper.make_node("MaxPool", ["x"], ["y"], **attrs)
    else:
        node = helper.make_node("AveragePool", ["x"], ["y"], count_include_pad=1, **attrs)
    model = _model([node], {"x": x}, {}, "y", case.y_shape, x.dtype)
    return _runner(model, {"x": x}, threads)


def lenet5_forward(state: dict[str, np.ndarray], x: np.ndarray,
                   threads: int) -> Callable[[], object]:
    """fastconv's modern LeNet-5 (``fastconv.models.LeNet5("modern")``: conv 5x5 pad 2,
    max pool 2, ReLU, conv 5x5, max pool 2, ReLU, three linear layers with ReLU between)
    as an ONNX graph with the weights of ``state`` (its ``state_dict()``), over ``x``."""
    n = x.shape[0]
    nodes = [
        helper.make_node("Conv", ["x", "0.weight", "0.bias"], ["c1"], kernel_shape=[5, 5],
                         pads=[2, 2, 2, 2]),
        helper.make_node("MaxPool", ["c1"], ["s2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Relu", ["s2"], ["r2"]),
        helper.make_node("Conv", ["r2", "3.weight", "3.bias"], ["c3"], kernel_shape=[5, 5]),
        helper.make_node("MaxPool", ["c3"], ["s4"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Relu", ["s4"], ["r4"]),
        helper.make_node("Flatten", ["r4"], ["f"], axis=1),
    ]
    previous = "f"
    for i, layer in enumerate(("7", "9", "11")):
        out = "logits" if layer == "11" else f"h{i}"
        nodes.append(helper.make_node("Gemm", [previous, f"{layer}.weight", f"{layer}.bias"],
                                      [out + ("" if layer == "11" else "_lin")], transB=1))
        if layer != "11":
            nodes.append(helper.make_node("Relu", [out + "_lin"], [out]))
        previous = out
    model = _model(nodes, {"x": x}, dict(state), "logits", (n, 10), x.dtype)
    return _runner(model, {"x": x}, threads)
