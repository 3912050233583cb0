"""Tiny ONNX models with the real signatures of the finishing models: face restorers, XSeg, BiSeNet.

Each computes a known function, so tests can assert exact numbers:

- restorer: ``output = 0.5 * input + 0.3 * weight`` (in [-1, 1] units; ``weight`` is CodeFormer's
  float64 fidelity input, present only with ``fidelity=True``);
- XSeg: visibility ``sigmoid(40 * (threshold - green))``, so green things are "in front of the face";
- BiSeNet: class logits from the ImageNet-normalised colour: red pixels are skin (1), green ones
  nose (10), blue ones background (0); every other class has logit -10.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_restorer(path: Path, *, size: int = 64, fidelity: bool = False, batch: int | str = 1) -> Path:
    """A restorer: input ``input`` (batch, 3, size, size) float; with ``fidelity`` a float64 ``weight`` (1,)."""
    eye = (0.5 * np.eye(3, dtype=np.float32)).reshape(3, 3, 1, 1)
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])]
    nodes = [helper.make_node("Conv", ["input", "half"], ["scaled"], kernel_shape=[1, 1])]
    initializers = [numpy_helper.from_array(eye, "half")]
    last = "scaled"
    if fidelity:
        inputs.append(helper.make_tensor_value_info("weight", TensorProto.DOUBLE, [1]))
        initializers.append(numpy_helper.from_array(np.array([0.3], dtype=np.float32), "gain"))
        nodes += [
            helper.make_node("Cast", ["weight"], ["weight_float"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["weight_float", "gain"], ["shift"]),
            helper.make_node("Add", ["scaled", "shift"], ["output"]),
        ]
        last = "output"
    else:
        nodes.append(helper.make_node("Identity", ["scaled"], ["output"]))
        last = "output"
    outputs = [helper.make_tensor_value_info(last, TensorProto.FLOAT, [batch, 3, size, size])]
    return _save(helper.make_graph(nodes, "tiny_restorer", inputs, outputs, initializers), path)


def write_xseg(path: Path, *, size: int = 256, threshold: float = 0.5) -> Path:
    """XSeg's signature: ``input`` (1, size, size, 3) NHWC in [0, 1] -> (1, size, size, 1) visibility.

    Visibility is ``sigmoid(40 * (threshold - green))``: pixels greener than ``threshold`` are occluders."""
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, size, size, 3])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, size, size, 1])]
    initializers = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "green"),
        numpy_helper.from_array(np.array(threshold, dtype=np.float32), "half"),
        numpy_helper.from_array(np.array(40.0, dtype=np.float32), "gain"),
    ]
    nodes = [
        helper.make_node("Gather", ["input", "green"], ["g"], axis=3),
        helper.make_node("Sub", ["half", "g"], ["centred"]),
        helper.make_node("Mul", ["centred", "gain"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["output"]),
    ]
    return _save(helper.make_graph(nodes, "tiny_xseg", inputs, outputs, initializers), path)


def write_bisenet(path: Path, *, size: int = 512) -> Path:
    """BiSeNet's signature: ``input`` (1, 3, size, size) ImageNet-normalised -> (1, 19, size, size) logits."""
    weights = np.zeros((19, 3, 1, 1), dtype=np.float32)
    bias = np.full((19,), -10.0, dtype=np.float32)
    for cls, channel in ((1, 0), (10, 1), (0, 2)):  # red -> skin, green -> nose, blue -> background
        weights[cls, channel] = 1.0
        bias[cls] = 0.0
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, size, size])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 19, size, size])]
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["output"], kernel_shape=[1, 1])]
    initializers = [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(bias, "b")]
    return _save(helper.make_graph(nodes, "tiny_bisenet", inputs, outputs, initializers), path)
