"""Run an ONNX graph as a differentiable torch module (the frozen teachers of training).

:class:`OnnxGraphModule` reads an ``onnx.ModelProto`` once: its initializers become buffers
(so ``.to(device, dtype)`` moves them and nothing is trained), and ``forward`` runs the
nodes in graph order with torch operations, so gradients flow from the outputs back to the
inputs. It covers the operators of insightface's recognisers (iresnet: Conv,
BatchNormalization, PRelu, Add, Flatten, Gemm) and landmark models (mxnet exports: Sub/Mul
normalisation, Conv, BatchNormalization, PRelu/Relu, pooling, Reshape, Transpose, Gemm), and
the small shape arithmetic exporters emit (Shape, Gather, Concat, Unsqueeze...). An operator
outside :data:`SUPPORTED_OPS` is reported when the module is built, never half-way through
training.

A converter library (onnx2torch) was the other option; it imports torchvision at import
time, which has no CPU wheel matching the torch this package pins, so the interpreter here
is self-contained. Every conversion is checked against onnxruntime on the same input
(:func:`check_against_onnxruntime`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import Tensor, nn

from .errors import BadInputError, ModelIntegrityError

logger = logging.getLogger(__name__)

Attributes = Mapping[str, Any]
OpFunction = Callable[[list[Tensor | None], Attributes], list[Tensor]]


@dataclass(frozen=True)
class GraphNode:
    """One ONNX node: its operator, input and output value names, decoded attributes."""

    op_type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attributes: Mapping[str, Any]


def _attribute_value(attribute: onnx.AttributeProto) -> Any:
    value = onnx.helper.get_attribute_value(attribute)
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value).copy()
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [item.decode("utf-8") for item in value]
    return value


#: Version of the JSON layout :meth:`OnnxGraphModule.describe` writes.
GRAPH_FORMAT = "onnx-graph-1"


def _encode_attribute(value: Any) -> Any:
    """A node attribute as JSON data (arrays become ``{"array": ..., "dtype": ..., "shape": ...}``)."""
    if isinstance(value, np.ndarray):
        return {"array": value.reshape(-1).tolist(), "dtype": str(value.dtype), "shape": list(value.shape)}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list | tuple):
        return [_encode_attribute(item) for item in value]
    return value


def _decode_attribute(value: Any) -> Any:
    if isinstance(value, dict) and "array" in value:
        return np.asarray(value["array"], dtype=np.dtype(value["dtype"])).reshape(value["shape"])
    if isinstance(value, list):
        return [_decode_attribute(item) for item in value]
    return value


# ---------------------------------------------------------------------------------------------
# Operators (inputs: tensors in node order, None for an omitted optional input)


def _need(inputs: list[Tensor | None], index: int, op: str) -> Tensor:
    value = inputs[index] if index < len(inputs) else None
    if value is None:
        raise ModelIntegrityError(f"the ONNX {op} node lacks its input {index}", where="teacher model graph")
    return value


def _pads_for_torch(pads: Sequence[int]) -> list[int]:
    """ONNX pads ``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]`` -> F.pad order (last axis first)."""
    half = len(pads) // 2
    order: list[int] = []
    for axis in reversed(range(half)):
        order += [int(pads[axis]), int(pads[axis + half])]
    return order


def _symmetric_padding(pads: Sequence[int], dims: int) -> tuple[list[int], list[int] | None]:
    """(padding for the torch op, explicit F.pad list or None) for ONNX ``pads``."""
    pads = list(pads) if pads else [0] * (2 * dims)
    begins, ends = pads[:dims], pads[dims:]
    if begins == ends:
        return begins, None
    return [0] * dims, _pads_for_torch(pads)


def _check_auto_pad(attributes: Attributes, op: str) -> None:
    auto_pad = attributes.get("auto_pad", "NOTSET")
    if auto_pad not in ("NOTSET", "VALID"):
        raise ModelIntegrityError(
            f"the ONNX {op} node uses auto_pad={auto_pad}, which the teacher converter does not support",
            where="teacher model graph",
            fix="export the model with explicit pads",
        )


def _conv(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    _check_auto_pad(attributes, "Conv")
    x, weight = _need(inputs, 0, "Conv"), _need(inputs, 1, "Conv")
    bias = inputs[2] if len(inputs) > 2 else None
    dims = weight.ndim - 2
    padding, explicit = _symmetric_padding(attributes.get("pads", []), dims)
    if explicit is not None:
        x = F.pad(x, explicit)
    strides = list(attributes.get("strides", [1] * dims))
    dilations = list(attributes.get("dilations", [1] * dims))
    groups = int(attributes.get("group", 1))
    convolve = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[dims]
    return [convolve(x, weight, bias, strides, padding, dilations, groups)]


def _conv_transpose(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    _check_auto_pad(attributes, "ConvTranspose")
    x, weight = _need(inputs, 0, "ConvTranspose"), _need(inputs, 1, "ConvTranspose")
    bias = inputs[2] if len(inputs) > 2 else None
    dims = weight.ndim - 2
    pads = list(attributes.get("pads", [0] * (2 * dims)))
    if pads[:dims] != pads[dims:] or "output_shape" in attributes:
        raise ModelIntegrityError("asymmetric ConvTranspose padding is not supported", where="teacher model graph")
    convolve = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[dims]
    return [
        convolve(
            x,
            weight,
            bias,
            list(attributes.get("strides", [1] * dims)),
            pads[:dims],
            list(attributes.get("output_padding", [0] * dims)),
            int(attributes.get("group", 1)),
            list(attributes.get("dilations", [1] * dims)),
        )
    ]


def _batch_norm(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    x = _need(inputs, 0, "BatchNormalization")
    scale, bias, mean, var = (_need(inputs, i, "BatchNormalization") for i in range(1, 5))
    epsilon = float(attributes.get("epsilon", 1e-5))
    return [F.batch_norm(x, mean, var, scale, bias, training=False, momentum=0.0, eps=epsilon)]


def _prelu(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    x, slope = _need(inputs, 0, "PRelu"), _need(inputs, 1, "PRelu")
    return [torch.where(x >= 0, x, x * slope)]


def _gemm(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    a, b = _need(inputs, 0, "Gemm"), _need(inputs, 1, "Gemm")
    if int(attributes.get("transA", 0)):
        a = a.transpose(0, 1)
    if int(attributes.get("transB", 0)):
        b = b.transpose(0, 1)
    out = float(attributes.get("alpha", 1.0)) * (a @ b)
    c = inputs[2] if len(inputs) > 2 else None
    if c is not None:
        out = out + float(attributes.get("beta", 1.0)) * c
    return [out]


def _pool(kind: str) -> OpFunction:
    def run(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
        _check_auto_pad(attributes, kind)
        x = _need(inputs, 0, kind)
        kernel = list(attributes["kernel_shape"])
        dims = len(kernel)
        strides = list(attributes.get("strides", [1] * dims))
        ceil_mode = bool(attributes.get("ceil_mode", 0))
        padding, explicit = _symmetric_padding(attributes.get("pads", []), dims)
        if kind == "MaxPool":
            if explicit is not None:
                x = F.pad(x, explicit, value=-math.inf)
            pool = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}[dims]
            dilations = list(attributes.get("dilations", [1] * dims))
            return [pool(x, kernel, strides, padding, dilations, ceil_mode)]
        if explicit is not None:
            x = F.pad(x, explicit)
        include_pad = bool(attributes.get("count_include_pad", 0))
        average = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}[dims]
        return [average(x, kernel, strides, padding, ceil_mode, include_pad)]

    return run


def _reshape(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    x, shape_tensor = _need(inputs, 0, "Reshape"), _need(inputs, 1, "Reshape")
    shape = [int(v) for v in shape_tensor.tolist()]
    if not int(attributes.get("allowzero", 0)):
        shape = [x.shape[i] if v == 0 else v for i, v in enumerate(shape)]
    return [x.reshape(shape)]


def _flatten(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    x = _need(inputs, 0, "Flatten")
    axis = int(attributes.get("axis", 1))
    axis = axis + x.ndim if axis < 0 else axis
    outer = int(np.prod(x.shape[:axis])) if axis else 1
    return [x.reshape(outer, -1)]


def _transpose(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    x = _need(inputs, 0, "Transpose")
    perm = attributes.get("perm") or list(reversed(range(x.ndim)))
    return [x.permute(*[int(p) for p in perm])]


def _concat(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    tensors = [t for t in inputs if t is not None]
    return [torch.cat(tensors, dim=int(attributes["axis"]))]


def _axes(inputs: list[Tensor | None], attributes: Attributes) -> list[int] | None:
    if len(inputs) > 1 and inputs[1] is not None:
        return [int(v) for v in inputs[1].tolist()]
    axes = attributes.get("axes")
    return None if axes is None else [int(v) for v in axes]


def _unsqueeze(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    x = _need(inputs, 0, "Unsqueeze")
    axes = _axes(inputs, attributes) or []
    rank = x.ndim + len(axes)
    for axis in sorted(a + rank if a < 0 else a for a in axes):
        x = x.unsqueeze(axis)
    return [x]


def _squeeze(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    x = _need(inputs, 0, "Squeeze")
    axes = _axes(inputs, attributes)
    if axes is None:
        return [x.squeeze()]
    for axis in sorted((a + x.ndim if a < 0 else a for a in axes), reverse=True):
        x = x.squeeze(axis)
    return [x]


def _gather(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    x, index = _need(inputs, 0, "Gather"), _need(inputs, 1, "Gather")
    axis = int(attributes.get("axis", 0))
    axis = axis + x.ndim if axis < 0 else axis
    index = index.long().to(x.device)
    index = torch.where(index < 0, index + x.shape[axis], index)
    if index.ndim == 0:
        return [x.select(axis, int(index))]
    picked = x.index_select(axis, index.reshape(-1))
    return [picked.reshape(*x.shape[:axis], *index.shape, *x.shape[axis + 1 :])]


def _slice(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    x = _need(inputs, 0, "Slice")
    if len(inputs) > 1:
        starts = [int(v) for v in _need(inputs, 1, "Slice").tolist()]
        ends = [int(v) for v in _need(inputs, 2, "Slice").tolist()]
        axes_t = inputs[3] if len(inputs) > 3 else None
        steps_t = inputs[4] if len(inputs) > 4 else None
        axes = [int(v) for v in axes_t.tolist()] if axes_t is not None else list(range(len(starts)))
        steps = [int(v) for v in steps_t.tolist()] if steps_t is not None else [1] * len(starts)
    else:
        starts, ends = list(attributes["starts"]), list(attributes["ends"])
        axes = list(attributes.get("axes", range(len(starts))))
        steps = [1] * len(starts)
    for start, end, axis, step in zip(starts, ends, axes, steps, strict=True):
        axis = axis + x.ndim if axis < 0 else axis
        picked = range(*slice(start, end, step).indices(x.shape[axis]))  # python's clamping is ONNX's
        if step == 1:
            x = x.narrow(axis, picked.start, len(picked))
        else:
            x = x.index_select(axis, torch.tensor(list(picked), dtype=torch.int64, device=x.device))
    return [x]


def _pad(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    x = _need(inputs, 0, "Pad")
    mode = str(attributes.get("mode", "constant"))
    if len(inputs) > 1 and inputs[1] is not None:
        pads = [int(v) for v in inputs[1].tolist()]
        constant = float(inputs[2].item()) if len(inputs) > 2 and inputs[2] is not None else 0.0
    else:
        pads = [int(v) for v in attributes["pads"]]
        constant = float(attributes.get("value", 0.0))
    torch_pads = _pads_for_torch(pads)
    while len(torch_pads) > 2 and torch_pads[-2:] == [0, 0]:
        torch_pads = torch_pads[:-2]  # F.pad's non-constant modes pad only the last axes
    if mode == "constant":
        return [F.pad(x, torch_pads, value=constant)]
    return [F.pad(x, torch_pads, mode={"edge": "replicate"}.get(mode, mode))]


def _clip(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    x = _need(inputs, 0, "Clip")
    low = inputs[1] if len(inputs) > 1 else None
    high = inputs[2] if len(inputs) > 2 else None
    low_value = float(low.item()) if low is not None else attributes.get("min")
    high_value = float(high.item()) if high is not None else attributes.get("max")
    return [x.clamp(low_value, high_value)]


_ONNX_TO_TORCH_DTYPE = {
    1: torch.float32,
    6: torch.int32,
    7: torch.int64,
    9: torch.bool,
    10: torch.float16,
    11: torch.float64,
}


def _cast(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    x = _need(inputs, 0, "Cast")
    dtype = _ONNX_TO_TORCH_DTYPE.get(int(attributes["to"]))
    if dtype is None:
        raise ModelIntegrityError(f"Cast to ONNX type {attributes['to']} is not supported", where="teacher graph")
    if dtype.is_floating_point and x.is_floating_point():
        return [x]  # float casts keep the module's compute dtype (the teacher runs in fp32, bf16 or fp16)
    return [x.to(dtype)]


def _constant(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    if "value" in attributes:
        return [torch.from_numpy(np.asarray(attributes["value"]).copy())]
    for key in ("value_float", "value_int"):
        if key in attributes:
            return [torch.tensor(attributes[key])]
    for key in ("value_floats", "value_ints"):
        if key in attributes:
            return [torch.tensor(list(attributes[key]))]
    raise ModelIntegrityError("a Constant node has no value this converter reads", where="teacher model graph")


def _constant_of_shape(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    shape = [int(v) for v in _need(inputs, 0, "ConstantOfShape").tolist()]
    value = attributes.get("value")
    fill = torch.from_numpy(np.asarray(value).reshape(-1)[:1].copy()) if value is not None else torch.zeros(1)
    return [fill.to(_need(inputs, 0, "ConstantOfShape").device).expand(shape).clone()]


def _expand(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    x, shape = _need(inputs, 0, "Expand"), _need(inputs, 1, "Expand")
    return [x * torch.ones([int(v) for v in shape.tolist()], dtype=x.dtype, device=x.device)]


def _where(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    return [torch.where(_need(inputs, 0, "Where").bool(), _need(inputs, 1, "Where"), _need(inputs, 2, "Where"))]


def _reduce(function: Callable[..., Tensor], op: str) -> OpFunction:
    def run(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
        x = _need(inputs, 0, op)
        axes = _axes(inputs, attributes)
        keep = bool(attributes.get("keepdims", 1))
        dims = list(range(x.ndim)) if axes is None else [a + x.ndim if a < 0 else a for a in axes]
        out = x
        for dim in sorted(dims, reverse=True):
            out = function(out, dim=dim, keepdim=keep)
        return [out]

    return run


def _elementwise(function: Callable[..., Tensor]) -> OpFunction:
    def run(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
        return [function(*[t for t in inputs if t is not None])]

    return run


def _binary(function: Callable[[Tensor, Tensor], Tensor]) -> OpFunction:
    def run(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
        a, b = _need(inputs, 0, "binary"), _need(inputs, 1, "binary")
        if a.is_floating_point() != b.is_floating_point():  # shape arithmetic meets a float constant
            a, b = (a.float(), b.float()) if a.is_floating_point() or b.is_floating_point() else (a, b)
        return [function(a, b)]

    return run


def _softmax(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    return [torch.softmax(_need(inputs, 0, "Softmax"), dim=int(attributes.get("axis", -1)))]


def _leaky_relu(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    return [F.leaky_relu(_need(inputs, 0, "LeakyRelu"), float(attributes.get("alpha", 0.01)))]


def _global_average_pool(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    x = _need(inputs, 0, "GlobalAveragePool")
    return [x.mean(dim=tuple(range(2, x.ndim)), keepdim=True)]


def _shape(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    x = _need(inputs, 0, "Shape")
    return [torch.tensor(list(x.shape), dtype=torch.int64, device=x.device)]


def _identity(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    return [_need(inputs, 0, "Identity")]


def _upsample(inputs: list[Tensor | None], attributes: Attributes) -> list[Tensor]:
    x = _need(inputs, 0, "Resize")
    scales = inputs[2] if len(inputs) > 2 and inputs[2] is not None and inputs[2].numel() else None
    sizes = inputs[3] if len(inputs) > 3 and inputs[3] is not None and inputs[3].numel() else None
    mode = str(attributes.get("mode", "nearest"))
    if mode != "nearest":
        raise ModelIntegrityError(f"Resize mode {mode!r} is not supported", where="teacher model graph")
    if sizes is not None:
        return [F.interpolate(x, size=[int(v) for v in sizes.tolist()[2:]], mode="nearest")]
    if scales is None:
        raise ModelIntegrityError("Resize needs scales or sizes", where="teacher model graph")
    return [F.interpolate(x, scale_factor=[float(v) for v in scales.tolist()[2:]], mode="nearest")]


#: ONNX operator -> torch implementation.
OPS: Mapping[str, OpFunction] = {
    "Add": _binary(torch.add),
    "Sub": _binary(torch.sub),
    "Mul": _binary(torch.mul),
    "Div": _binary(torch.div),
    "Pow": _binary(torch.pow),
    "MatMul": _binary(torch.matmul),
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "BatchNormalization": _batch_norm,
    "PRelu": _prelu,
    "Relu": _elementwise(torch.relu),
    "LeakyRelu": _leaky_relu,
    "Sigmoid": _elementwise(torch.sigmoid),
    "Tanh": _elementwise(torch.tanh),
    "Exp": _elementwise(torch.exp),
    "Sqrt": _elementwise(torch.sqrt),
    "Neg": _elementwise(torch.neg),
    "Gemm": _gemm,
    "MaxPool": _pool("MaxPool"),
    "AveragePool": _pool("AveragePool"),
    "GlobalAveragePool": _global_average_pool,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Concat": _concat,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Gather": _gather,
    "Slice": _slice,
    "Pad": _pad,
    "ReduceMean": _reduce(torch.mean, "ReduceMean"),
    "ReduceSum": _reduce(torch.sum, "ReduceSum"),
    "ReduceMax": _reduce(lambda x, dim, keepdim: torch.amax(x, dim=dim, keepdim=keepdim), "ReduceMax"),
    "ConstantOfShape": _constant_of_shape,
    "Expand": _expand,
    "Where": _where,
    "Equal": _binary(torch.eq),
    "Min": _elementwise(torch.minimum),
    "Max": _elementwise(torch.maximum),
    "Abs": _elementwise(torch.abs),
    "Log": _elementwise(torch.log),
    "Erf": _elementwise(torch.erf),
    "Clip": _clip,
    "Cast": _cast,
    "Constant": _constant,
    "Shape": _shape,
    "Identity": _identity,
    "Dropout": _identity,
    "Softmax": _softmax,
    "Resize": _upsample,
    "Upsample": _upsample,
}
SUPPORTED_OPS: tuple[str, ...] = tuple(sorted(OPS))


class OnnxGraphModule(nn.Module):
    """A frozen torch module that computes what an ONNX graph computes, differentiably.

    ``forward(*inputs)`` takes the graph's (non-initializer) inputs in order and returns its
    outputs as a tuple. Float initializers are buffers in the module's dtype; integer
    initializers (shapes, indices) stay int64. Parameters: none (``requires_grad`` is off for
    everything), so an optimiser never touches a teacher.
    """

    def __init__(self, model: onnx.ModelProto, *, where: str = "ONNX model") -> None:
        super().__init__()
        graph = model.graph
        unsupported = sorted(
            {node.op_type for node in graph.node if node.domain not in ("", "ai.onnx")}
            | {node.op_type for node in graph.node if node.op_type not in OPS}
        )
        if unsupported:
            raise ModelIntegrityError(
                f"the model uses ONNX operators the teacher converter does not support: {', '.join(unsupported)}",
                where=where,
                fix=f"use a recogniser / landmark model built from: {', '.join(SUPPORTED_OPS)}",
            )
        constants: dict[str, Tensor] = {}
        for initializer in graph.initializer:
            array = numpy_helper.to_array(initializer).copy()
            constants[initializer.name] = torch.from_numpy(np.ascontiguousarray(array))
        initializer_names = set(constants)
        nodes = []
        for node in graph.node:
            attributes = {attribute.name: _attribute_value(attribute) for attribute in node.attribute}
            if node.op_type == "Constant":  # a buffer like the initializers, so that it follows .to(device)
                constants[node.output[0]] = _constant([], attributes)[0]
                continue
            nodes.append(GraphNode(node.op_type, node.name, tuple(node.input), tuple(node.output), attributes))
        inputs = [value for value in graph.input if value.name not in initializer_names]
        self._setup(
            nodes=tuple(nodes),
            constants=constants,
            input_names=tuple(value.name for value in inputs),
            output_names=tuple(value.name for value in graph.output),
            input_shapes=tuple(
                tuple(dim.dim_value if dim.HasField("dim_value") else None for dim in value.type.tensor_type.shape.dim)
                for value in inputs
            ),
            where=where,
        )

    def _setup(
        self,
        *,
        nodes: tuple[GraphNode, ...],
        constants: Mapping[str, Tensor],
        input_names: tuple[str, ...],
        output_names: tuple[str, ...],
        input_shapes: tuple[tuple[int | None, ...], ...],
        where: str,
    ) -> None:
        self.where = where
        self._buffer_names: dict[str, str] = {}
        for number, (name, tensor) in enumerate(constants.items()):
            buffer = f"constant_{number}"
            self.register_buffer(buffer, tensor.float() if tensor.is_floating_point() else tensor, persistent=False)
            self._buffer_names[name] = buffer
        self.input_names = input_names
        self.output_names = output_names
        self.input_shapes = input_shapes
        self.nodes = nodes
        self.requires_grad_(False)
        self.eval()

    # -----------------------------------------------------------------------------------------
    # A converted graph as plain data (what the cache of verified conversions stores)

    def constant_tensors(self) -> dict[str, Tensor]:
        """The graph's constants (initializers and Constant nodes) by buffer name, on the CPU."""
        return {buffer: getattr(self, buffer).detach().cpu().contiguous() for buffer in self._buffer_names.values()}

    def describe(self) -> dict[str, Any]:
        """Everything but the constants, as JSON-ready data: :meth:`from_parts` rebuilds the module from it."""
        return {
            "format": GRAPH_FORMAT,
            "nodes": [
                {
                    "op_type": node.op_type,
                    "name": node.name,
                    "inputs": list(node.inputs),
                    "outputs": list(node.outputs),
                    "attributes": {key: _encode_attribute(value) for key, value in node.attributes.items()},
                }
                for node in self.nodes
            ],
            "constants": dict(self._buffer_names),
            "input_names": list(self.input_names),
            "output_names": list(self.output_names),
            "input_shapes": [list(shape) for shape in self.input_shapes],
        }

    @classmethod
    def from_parts(
        cls, description: Mapping[str, Any], tensors: Mapping[str, Tensor], *, where: str = "ONNX model"
    ) -> OnnxGraphModule:
        """The module :meth:`describe` and :meth:`constant_tensors` were taken from; ModelIntegrityError if they
        do not fit together (another format, a missing constant, an operator this version lacks)."""
        try:
            if description.get("format") != GRAPH_FORMAT:
                raise ValueError(f"graph format {description.get('format')!r}, this version reads {GRAPH_FORMAT!r}")
            nodes = tuple(
                GraphNode(
                    str(item["op_type"]),
                    str(item["name"]),
                    tuple(str(name) for name in item["inputs"]),
                    tuple(str(name) for name in item["outputs"]),
                    {key: _decode_attribute(value) for key, value in dict(item["attributes"]).items()},
                )
                for item in description["nodes"]
            )
            missing = sorted({node.op_type for node in nodes} - set(OPS))
            if missing:
                raise ValueError(f"operators {', '.join(missing)} are not supported")
            constants = {str(name): tensors[str(buffer)] for name, buffer in dict(description["constants"]).items()}
            input_names = tuple(str(name) for name in description["input_names"])
            output_names = tuple(str(name) for name in description["output_names"])
            input_shapes = tuple(
                tuple(None if dim is None else int(dim) for dim in shape) for shape in description["input_shapes"]
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ModelIntegrityError(
                f"the stored graph cannot be read ({type(error).__name__}: {error})",
                where=where,
                fix="delete it; it is made again from the ONNX file",
            ) from error
        module = cls.__new__(cls)
        nn.Module.__init__(module)
        module._setup(
            nodes=nodes,
            constants=constants,
            input_names=input_names,
            output_names=output_names,
            input_shapes=input_shapes,
            where=where,
        )
        return module

    @classmethod
    def from_file(cls, path: str | Path) -> OnnxGraphModule:
        """Read an ``.onnx`` file; a missing or damaged file raises a FaceMagicError naming it."""
        file = Path(path)
        if not file.is_file():
            raise BadInputError("the teacher model file does not exist", where=str(file), fix="check the path")
        try:
            model = onnx.load(str(file))
        except Exception as error:  # protobuf raises its own DecodeError and others
            raise ModelIntegrityError(
                f"the ONNX file cannot be read ({type(error).__name__}: {error})",
                where=str(file),
                fix="the file is truncated or not an ONNX model: download it again",
            ) from error
        return cls(model, where=str(file))

    @property
    def compute_dtype(self) -> torch.dtype:
        for tensor in self.buffers():
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.float32

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        if len(inputs) != len(self.input_names):
            raise BadInputError(f"the graph takes {len(self.input_names)} inputs, got {len(inputs)}", where=self.where)
        values: dict[str, Tensor] = {name: getattr(self, buffer) for name, buffer in self._buffer_names.items()}
        values.update(zip(self.input_names, inputs, strict=True))
        for node in self.nodes:
            arguments = [values[name] if name else None for name in node.inputs]
            try:
                results = OPS[node.op_type](arguments, node.attributes)
            except (RuntimeError, ValueError, IndexError, KeyError) as error:
                raise ModelIntegrityError(
                    f"the ONNX node {node.name or node.op_type} ({node.op_type}) failed in torch: {error}",
                    where=self.where,
                    fix="check that the input has the shape the model expects",
                ) from error
            for name, result in zip(node.outputs, results, strict=False):
                if name:
                    values[name] = result
        return tuple(values[name] for name in self.output_names)


def check_against_onnxruntime(module: OnnxGraphModule, path: str | Path, inputs: Sequence[Tensor]) -> float:
    """Largest absolute difference between ``module`` and onnxruntime (CPU) on the same ``inputs``."""
    from .runtime import create_session

    session = create_session(Path(path), providers=["cpu"], what=f"teacher check {Path(path).name}")
    feed = {
        item.name: tensor.detach().to("cpu", torch.float32).numpy()
        for item, tensor in zip(session.get_inputs(), inputs, strict=True)
    }
    expected = session.run(None, feed)
    with torch.no_grad():
        module_device = next((b.device for b in module.buffers()), torch.device("cpu"))
        actual = module(*[tensor.to(module_device, module.compute_dtype) for tensor in inputs])
    difference = 0.0
    for want, got in zip(expected, actual, strict=True):
        difference = max(difference, float(np.abs(np.asarray(want, np.float64) - got.double().cpu().numpy()).max()))
    return difference
