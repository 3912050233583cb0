"""Convert inswapper-layout ONNX files into the native :class:`InswapperGenerator`, and back.

A converted module runs batched, in half precision on GPU, and gains per-block identities
and strengths. Conversion walks the graph instead of trusting initializer names:

- every ``Conv`` node, in graph order (the convolutions form one chain, so the order is
  forced by the data flow), gives its weight and bias to the module's convolutions in
  forward order;
- every ``Gemm`` (or ``MatMul`` + ``Add``) whose weight is constant is a style linear; it is
  assigned to the block whose convolution output it modulates, found by following the data
  flow from the linear forward to the ``Mul``/``Add`` it feeds and from there back to the
  nearest ``Conv`` (graph order is the fallback);
- ``emap`` is the graph's last initializer (a ``(512, 512)`` matrix no node uses).

Shapes are checked against a module built on the meta device. A converted module is
trusted only after :func:`compare_with_onnxruntime` agrees with onnxruntime on a random
input (:func:`convert_checked`); otherwise the caller runs the ONNX file instead.

Converting and checking the public 553 MB file takes about 15 s on a CPU, so a verified
conversion is cached beside the ONNX file (:func:`save_conversion`, ``<file>.native.safetensors``,
keyed by the ONNX file's sha256) and read back by :func:`load_conversion` on later loads.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import FaceMagicError
from ..files import atomic_path
from .config import GeneratorConfig
from .inswapper import InswapperBlock, InswapperGenerator
from .network import export_module_onnx, load_state, read_state_dict
from .onnx_swapper import read_emap, read_signature

if TYPE_CHECKING:
    import onnx
    import onnxruntime

logger = logging.getLogger(__name__)

#: Largest output difference (image values in [0, 1]) accepted from a conversion, by weight precision.
MAX_DIFFERENCE = {"fp32": 5e-3, "fp16": 5e-2}
#: Largest mean output difference accepted, by weight precision.
MAX_MEAN_DIFFERENCE = {"fp32": 5e-4, "fp16": 5e-3}
_PASS_THROUGH = {"Cast", "Identity"}
#: Name of a cached conversion: the ONNX file's name plus this suffix, in the same folder.
CACHE_SUFFIX = ".native.safetensors"
#: Layout version of cached conversions; a cache of another version (or of another source file) is not used.
CACHE_VERSION = "1"


class ConversionError(FaceMagicError):
    """An ONNX file does not have the inswapper layout (the caller falls back to onnxruntime)."""


@dataclass(frozen=True)
class _Linear:
    node: onnx.NodeProto
    weight: npt.NDArray[np.float32]  # torch layout (out, in)
    bias: npt.NDArray[np.float32]
    position: int  # index of the node in the graph


class _Graph:
    """Index of an ONNX graph: constants by name, producers and consumers of every tensor."""

    def __init__(self, model: onnx.ModelProto) -> None:
        from onnx import numpy_helper

        self.nodes = list(model.graph.node)
        self.initializers = {item.name: item for item in model.graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.nodes:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self._to_array = numpy_helper.to_array

    def is_constant(self, name: str) -> bool:
        """Whether ``name`` is an initializer, a Constant node's output, or a Cast/Identity of one."""
        if name in self.initializers:
            return True
        node = self.producer.get(name)
        if node is None:
            return False
        if node.op_type == "Constant":
            return True
        return node.op_type in _PASS_THROUGH and bool(node.input) and self.is_constant(node.input[0])

    def constant(self, name: str) -> npt.NDArray[np.float32] | None:
        """The value of ``name`` when it is constant (initializer, Constant node, or a Cast/Identity of one)."""
        if name in self.initializers:
            return np.array(self._to_array(self.initializers[name]), dtype=np.float32)
        node = self.producer.get(name)
        if node is None:
            return None
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    return np.array(self._to_array(attribute.t), dtype=np.float32)
            return None
        if node.op_type in _PASS_THROUGH and node.input:
            return self.constant(node.input[0])
        return None

    def nearest_conv_before(self, name: str, limit: int = 16) -> onnx.NodeProto | None:
        """The closest ``Conv`` node upstream of tensor ``name`` (breadth first)."""
        queue, seen = deque([(name, 0)]), {name}
        while queue:
            tensor, depth = queue.popleft()
            node = self.producer.get(tensor)
            if node is None or depth > limit:
                continue
            if node.op_type == "Conv":
                return node
            for parent in node.input:
                if parent and parent not in seen and not self.is_constant(parent):
                    seen.add(parent)
                    queue.append((parent, depth + 1))
        return None

    def modulated_conv(self, linear: onnx.NodeProto, limit: int = 8) -> onnx.NodeProto | None:
        """The ``Conv`` whose (normalised) output the style linear ``linear`` multiplies or shifts."""
        queue, seen = deque([(linear.output[0], 0)]), {linear.output[0]}
        while queue:
            tensor, depth = queue.popleft()
            for node in self.consumers.get(tensor, []):
                if node.op_type in ("Mul", "Add"):
                    for other in node.input:
                        if other != tensor and not self.is_constant(other):
                            conv = self.nearest_conv_before(other)
                            if conv is not None:
                                return conv
                if depth < limit:
                    for out in node.output:
                        if out not in seen:
                            seen.add(out)
                            queue.append((out, depth + 1))
        return None


def _attribute(node: onnx.NodeProto, name: str, default: Any) -> Any:
    import onnx

    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _linears(graph: _Graph) -> list[_Linear]:
    """Every Gemm / MatMul(+Add) with a constant 2-D weight, in graph order."""
    found: list[_Linear] = []
    for position, node in enumerate(graph.nodes):
        if node.op_type == "Gemm" and len(node.input) >= 2:
            weight = graph.constant(node.input[1])
            if weight is None or weight.ndim != 2:
                continue
            if _attribute(node, "transA", 0) or _attribute(node, "alpha", 1.0) != 1.0:
                raise ConversionError(f"unsupported Gemm attributes in node {node.name!r}")
            weight = weight if _attribute(node, "transB", 0) else weight.T
            bias = graph.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if bias is not None:
                bias = bias.reshape(-1) * float(_attribute(node, "beta", 1.0))
            found.append(_Linear(node, np.ascontiguousarray(weight), _bias_or_zero(bias, weight), position))
        elif node.op_type == "MatMul":
            weight = graph.constant(node.input[1])
            if weight is None or weight.ndim != 2:
                continue
            bias = None
            for consumer in graph.consumers.get(node.output[0], []):
                if consumer.op_type == "Add":
                    others = [graph.constant(name) for name in consumer.input if name != node.output[0]]
                    if others and others[0] is not None:
                        bias = others[0].reshape(-1)
            found.append(_Linear(node, np.ascontiguousarray(weight.T), _bias_or_zero(bias, weight.T), position))
    return found


def _bias_or_zero(bias: npt.NDArray[np.float32] | None, weight: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    return bias if bias is not None else np.zeros(weight.shape[0], dtype=np.float32)


def _image_size(model: onnx.ModelProto) -> int:
    for item in model.graph.input:
        dims = item.type.tensor_type.shape.dim
        if len(dims) == 4 and dims[2].dim_value > 0:
            return int(dims[2].dim_value)
    return 128


def _conv_modules(module: InswapperGenerator) -> list[nn.Conv2d]:
    """The module's convolutions in forward order."""
    blocks = [conv for block in _blocks(module) for conv in (block.conv1, block.conv2)]
    head = [module.stem, module.conv1, module.down1, module.down2]
    return [*head, *blocks, module.up1, module.up2, module.conv2, module.to_rgb]


def _linear_modules(module: InswapperGenerator) -> list[nn.Linear]:
    return [linear for block in _blocks(module) for linear in (block.style1, block.style2)]


def _blocks(module: InswapperGenerator) -> list[InswapperBlock]:
    return [cast(InswapperBlock, block) for block in module.blocks]


def _module_name(module: nn.Module, part: nn.Module) -> str:
    return next(str(name) for name, child in module.named_modules() if child is part)


def convert_inswapper_onnx(
    model: onnx.ModelProto, *, latent_renormalize: bool = True, where: str = "onnx model"
) -> InswapperGenerator:
    """A float32 CPU :class:`InswapperGenerator` holding the weights of an inswapper-layout ONNX model.

    Raises :class:`ConversionError` when the graph does not have that layout.
    """
    graph = _Graph(model)
    emap = read_emap(model)
    if emap is None:
        raise ConversionError("the graph stores no emap matrix as its last initializer", where=where)
    convs = [node for node in graph.nodes if node.op_type == "Conv"]
    linears = _linears(graph)
    if len(convs) < 8 or len(linears) < 2 or len(linears) % 2:
        raise ConversionError(f"{len(convs)} Conv, {len(linears)} linear nodes: not the inswapper layout", where=where)
    first = graph.constant(convs[0].input[1])
    if first is None or first.ndim != 4 or first.shape[1:] != (3, 7, 7):
        raise ConversionError("the first convolution is not a 7x7 conv of the RGB input", where=where)
    channels, id_dim = int(first.shape[0]), int(linears[0].weight.shape[1])
    cfg = GeneratorConfig.inswapper_layout(
        channels=channels,
        image_size=_image_size(model),
        num_blocks=len(linears) // 2,
        id_dim=id_dim,
        latent_renormalize=latent_renormalize,
    )
    module = InswapperGenerator(cfg, device="meta")
    conv_modules, linear_modules = _conv_modules(module), _linear_modules(module)
    if len(convs) != len(conv_modules) or len(linears) != len(linear_modules):
        raise ConversionError(
            f"{len(convs)} Conv / {len(linears)} linear nodes, the layout has {len(conv_modules)} / "
            f"{len(linear_modules)}",
            where=where,
        )
    conv_order = {id(node): index for index, node in enumerate(convs)}
    traced = [graph.modulated_conv(linear.node) for linear in linears]
    if all(conv is not None for conv in traced):
        pairs = sorted(zip(traced, linears, strict=True), key=lambda pair: conv_order[id(pair[0])])
        linears = [linear for _, linear in pairs]
    else:
        logger.debug("%s: style linears could not all be traced to their convolutions; using graph order", where)

    state: dict[str, Tensor] = {"emap": torch.from_numpy(emap)}
    for node, conv in zip(convs, conv_modules, strict=True):
        name = _module_name(module, conv)
        weight = graph.constant(node.input[1])
        bias = graph.constant(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        strides = tuple(_attribute(node, "strides", [1, 1]))
        if weight is None or tuple(weight.shape) != tuple(conv.weight.shape) or strides != conv.stride:
            got = None if weight is None else tuple(weight.shape)
            raise ConversionError(
                f"Conv node {node.name!r}: weight {got}, strides {strides}; {name} needs "
                f"{tuple(conv.weight.shape)}, strides {conv.stride}",
                where=where,
            )
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(weight))
        state[f"{name}.bias"] = torch.from_numpy(_bias_or_zero(bias, weight.reshape(weight.shape[0], -1)))
    for linear, target in zip(linears, linear_modules, strict=True):
        name = _module_name(module, target)
        if tuple(linear.weight.shape) != tuple(target.weight.shape):
            raise ConversionError(
                f"linear node {linear.node.name!r}: weight {tuple(linear.weight.shape)}; {name} needs "
                f"{tuple(target.weight.shape)}",
                where=where,
            )
        state[f"{name}.weight"] = torch.from_numpy(linear.weight)
        state[f"{name}.bias"] = torch.from_numpy(np.ascontiguousarray(linear.bias))
    load_state(module, state, where=where)
    return module.eval()


# ---------------------------------------------------------------------------------------------
# Checking a conversion against onnxruntime


def compare_with_onnxruntime(
    module: InswapperGenerator, session: onnxruntime.InferenceSession, *, seed: int = 0
) -> tuple[float, float]:
    """Max and mean absolute output difference on one random crop and latent (module run in fp32)."""
    signature = read_signature(session, where="conversion check")
    size = module.cfg.image_size
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, size, size, generator=generator)
    latent = F.normalize(torch.randn(1, module.cfg.id_dim, generator=generator), dim=-1)
    feeds = {
        signature.image_input: image.numpy().astype(signature.image_type),
        signature.identity_input: latent.numpy().astype(signature.identity_type),
    }
    expected = torch.from_numpy(np.asarray(session.run([signature.image_output], feeds)[0], dtype=np.float32))
    reference = module.float()
    with torch.inference_mode():
        device = reference.device
        got = reference.forward_latent(image.to(device), latent.to(device)).float().cpu()
    difference = (got - expected).abs()
    return float(difference.max()), float(difference.mean())


def onnx_weight_precision(model: onnx.ModelProto) -> str:
    """``"fp16"`` when the convolution weights are stored in half precision, else ``"fp32"``."""
    import onnx

    half = sum(1 for item in model.graph.initializer if item.data_type == onnx.TensorProto.FLOAT16)
    return "fp16" if half > len(model.graph.initializer) // 2 else "fp32"


def convert_checked(
    model: onnx.ModelProto,
    session: onnxruntime.InferenceSession,
    *,
    latent_renormalize: bool = True,
    where: str = "onnx model",
    device: torch.device | None = None,
) -> tuple[InswapperGenerator | None, str]:
    """Convert and check against onnxruntime; returns ``(module, "")`` or ``(None, why it was refused)``.

    The check runs in fp32 on ``device`` (CPU by default). Tolerances: :data:`MAX_DIFFERENCE`
    and :data:`MAX_MEAN_DIFFERENCE` for the file's weight precision.
    """
    try:
        module = convert_inswapper_onnx(model, latent_renormalize=latent_renormalize, where=where)
    except ConversionError as error:
        return None, f"the graph does not have the inswapper layout ({error})"
    if device is not None:
        module = module.to(device)
    precision = onnx_weight_precision(model)
    worst, mean = compare_with_onnxruntime(module, session)
    if not (worst <= MAX_DIFFERENCE[precision] and mean <= MAX_MEAN_DIFFERENCE[precision]):
        return None, (
            f"the converted module differs from onnxruntime by up to {worst:.3g} (mean {mean:.3g}; "
            f"accepted for {precision} weights: {MAX_DIFFERENCE[precision]:g} / {MAX_MEAN_DIFFERENCE[precision]:g})"
        )
    logger.info("%s converted to a native module (max difference to onnxruntime %.2g, mean %.2g)", where, worst, mean)
    return module, ""


# ---------------------------------------------------------------------------------------------
# The cache of verified conversions


def conversion_cache_path(source: Path) -> Path:
    """Where the verified conversion of the ONNX file ``source`` is cached: ``<file name>.native.safetensors``."""
    return source.with_name(source.name + CACHE_SUFFIX)


def tensors_sha256(state: dict[str, Tensor]) -> str:
    """One sha256 over the names, dtypes, shapes and bytes of every tensor of ``state``, in name order."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)  # a view: no copy of the bytes
    return digest.hexdigest()


def save_conversion(module: InswapperGenerator, source: Path, source_sha256: str) -> Path | None:
    """Cache a *verified* conversion of ``source`` beside it, atomically; None when that folder cannot be written.

    The file holds the state dict (a tensor whose values are all exact in fp16, such as the
    weights of an fp16 ONNX file, is stored in fp16; the rest in fp32) and, as metadata, the
    config, :data:`CACHE_VERSION` and the sha256 of ``source``.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    state = {}
    for name, tensor in module.state_dict().items():
        value = tensor.detach().to("cpu", torch.float32)
        half = value.half()
        state[name] = (half if torch.equal(half.float(), value) else value).contiguous()
    metadata = {
        "format": "pt",
        "cache_version": CACHE_VERSION,
        "source_sha256": source_sha256,
        "tensors_sha256": tensors_sha256(state),
        "config": module.cfg.to_json(),
    }
    path = conversion_cache_path(source)
    try:
        with atomic_path(path) as temporary:
            save_file(state, str(temporary), metadata=metadata)
    except (OSError, SafetensorError) as error:
        logger.info("%s: the conversion could not be cached (%s); it runs again on the next load", source, error)
        return None
    logger.info("%s: verified conversion cached in %s", source, path.name)
    return path


def load_conversion(source: Path, source_sha256: str) -> InswapperGenerator | None:
    """The cached conversion of ``source`` (float32, CPU), or None when there is none for this exact file.

    A cache of another file (sha256), of another cache version, or one that cannot be read
    is not used (the caller converts again and overwrites it).
    """
    from safetensors import SafetensorError, safe_open

    path = conversion_cache_path(source)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as cached:  # type: ignore[no-untyped-call]
            metadata = cached.metadata() or {}
    except (OSError, SafetensorError) as error:
        logger.warning("%s cannot be read (%s); converting %s again", path, error, source.name)
        return None
    if metadata.get("source_sha256") != source_sha256 or metadata.get("cache_version") != CACHE_VERSION:
        logger.info("%s was made from another file or version; converting %s again", path.name, source.name)
        return None
    try:
        cfg = GeneratorConfig.from_json(metadata.get("config", ""))
        module = InswapperGenerator(cfg, device="meta")
        state = read_state_dict(path)
        if metadata.get("tensors_sha256") != tensors_sha256(state):  # metadata alone named the right source
            logger.warning("%s does not hold the tensors it was written with; converting %s again", path, source.name)
            return None
        load_state(module, state, where=str(path))
    except FaceMagicError as error:
        logger.warning("%s cannot be used (%s); converting %s again", path, error, source.name)
        return None
    logger.info("%s: using the verified conversion cached in %s", source, path.name)
    return module.eval()


# ---------------------------------------------------------------------------------------------
# Export in the public signature


class _PublicSignature(nn.Module):
    """``(target (B, 3, S, S) in [0, 1], source latent (B, D)) -> (B, 3, S, S)``: the public file's signature."""

    def __init__(self, generator: InswapperGenerator) -> None:
        super().__init__()
        self.generator = generator

    def forward(self, target: Tensor, source: Tensor) -> Tensor:
        return self.generator.forward_latent(target, source)


def export_inswapper_onnx(
    module: InswapperGenerator,
    path: str | os.PathLike[str],
    *,
    opset: int = 17,
    dynamic_batch: bool = False,
    emap_name: str = "emap",
) -> Path:
    """Export in the public inswapper signature (inputs ``target``, ``source``; output ``output``).

    The module's ``emap`` is appended as the graph's LAST initializer, used by no node, the
    way the public file stores it, so stock runners (insightface, facefusion) load the result.
    """
    import onnx
    from onnx import numpy_helper

    size = module.cfg.image_size
    dtype, device = module.dtype, module.device
    inputs = (
        torch.rand(1, 3, size, size, dtype=dtype, device=device),
        F.normalize(torch.randn(1, module.cfg.id_dim), dim=-1).to(device=device, dtype=dtype),
    )
    axes = {"target": {0: "batch"}, "source": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
    target = Path(path)
    with atomic_path(target) as temporary:
        wrapper = _PublicSignature(module).eval()
        export_module_onnx(wrapper, inputs, temporary, ("target", "source"), ("output",), axes, opset)
        model = onnx.load(str(temporary))
        emap = module.emap.detach().to("cpu", torch.float32).numpy()
        model.graph.initializer.append(numpy_helper.from_array(emap.astype(_numpy_dtype(dtype)), name=emap_name))
        onnx.save(model, str(temporary))
    return target


def _numpy_dtype(dtype: torch.dtype) -> type[np.floating[Any]]:
    return np.float16 if dtype == torch.float16 else np.float32
