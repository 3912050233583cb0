"""insightface's analysis models in torch: SCRFD, 2d106det, 1k3d68 (+ pose), genderage, ArcFace.

Each ``.onnx`` file of a pack (buffalo_l, antelopev2...) is converted by the package's graph
interpreter (:class:`~facemagic_core.onnx_graph.OnnxGraphModule`), checked against onnxruntime
on a random input of the model's own signature, and, once verified, cached beside the file
(``<file>.torch.safetensors``: the graph's constants, the graph itself as JSON, the sha256 of
the ONNX file). A later load of the same file reads the cache and needs no onnxruntime at all.
A file whose conversion fails or differs from onnxruntime gives ``None`` and the reason; the
analyzer then runs it through insightface's own runner (onnxruntime), with a warning.

The runners reproduce insightface 2.1's ``model_zoo`` runners on whole batches, on the
device of the converted module:

- :class:`TorchFaceDetector` (``SCRFD``): letterbox to ``det_size`` (bilinear resize, zero
  padding right and bottom), ``(x - 127.5) / 128``, anchor decoding of the 3 strides x 2
  anchors (or 5 x 1) score/box/keypoint outputs, score threshold, and greedy NMS
  (:func:`batched_nms`, insightface's ``+ 1`` box areas) for all frames at once.
- :class:`TorchLandmarks` (``Landmark``): a crop of ``S`` px centred on the box at scale
  ``S / (1.5 * max(w, h))``, the points mapped back to the image; for 1k3d68 also the pose
  (:func:`pose_from_landmarks_3d`, insightface's affine fit to its mean shape).
- :class:`TorchGenderAge` (``Attribute``): the same crop at 96 px; gender argmax, age x 100.
- :class:`TorchRecognizer` (``ArcFaceONNX``): the recogniser interface of
  :mod:`facemagic_core.analysis` (``embed(crops)``), on aligned crops.

Images are ``(B, 3, H, W)`` float32 RGB pixel values 0..255 (whole numbers, the uint8 values
the ONNX runners read) on the runner's device. Which runtime a model uses is chosen by
:func:`choose_runtime` (``"auto"``: torch on an accelerator, onnxruntime on a CPU).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .align import invert_affine, warp_affine
from .errors import BadInputError, FaceMagicError, ModelIntegrityError, OutOfMemoryError
from .files import atomic_path
from .onnx_graph import OnnxGraphModule

logger = logging.getLogger(__name__)

#: Where an analysis model runs: converted to torch, through onnxruntime, or chosen by device ("auto").
ModelRuntime = Literal["torch", "onnxruntime", "auto"]
MODEL_RUNTIMES: tuple[str, ...] = get_args(ModelRuntime)

#: Name of a cached conversion: the ONNX file's name plus this suffix, in the same folder.
CACHE_SUFFIX = ".torch.safetensors"
#: Layout version of cached conversions; a cache of another version (or of another file) is not used.
CACHE_VERSION = "1"
#: A conversion is accepted when every output is within ATOL + RTOL * (largest |value| of that output) of
#: onnxruntime's on the check input (fp32 both sides; differences of a correct conversion are ~1e-6 relative).
CHECK_ATOL = 1e-4
CHECK_RTOL = 1e-3
#: Side used for the check (and the batching probe) where the model's input size is dynamic (SCRFD).
CHECK_SIZE = 128
#: insightface's SCRFD NMS IoU threshold.
NMS_THRESHOLD = 0.4
#: Candidates above the score threshold kept per frame for NMS (the best ones); bounds the IoU matrix.
MAX_CANDIDATES = 4000
#: Frames per detector call and faces per landmark / attribute / recogniser call.
DETECTOR_CHUNK = 8
FACE_CHUNK = 64

Task = Literal["detection", "landmark", "attribute", "recognition", "swapper"]


def choose_runtime(runtime: str, device: torch.device) -> Literal["torch", "onnxruntime"]:
    """The runtime of the analysis models: ``"auto"`` is torch on an accelerator and onnxruntime on a CPU
    (where onnxruntime's convolutions were measured faster; issue 12)."""
    if runtime not in MODEL_RUNTIMES:
        raise BadInputError(
            f"unknown model runtime {runtime!r}", where="face analyzer", fix=f"use one of {', '.join(MODEL_RUNTIMES)}"
        )
    if runtime == "auto":
        return "onnxruntime" if device.type == "cpu" else "torch"
    return "torch" if runtime == "torch" else "onnxruntime"


@contextmanager
def exact_float32(device: torch.device) -> Iterator[None]:
    """On CUDA, convolutions and matrix products without TF32 (which ComfyUI and torch's cuDNN default turn
    on), so fp32 results match onnxruntime's; the previous settings come back afterwards."""
    if device.type != "cuda":
        yield
        return
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    try:
        previous = (cudnn.allow_tf32, matmul.allow_tf32)
        cudnn.allow_tf32, matmul.allow_tf32 = False, False
    except RuntimeError as error:  # a caller that uses torch's newer fp32_precision settings: leave them
        logger.debug("TF32 settings left as they are (%s)", error)
        yield
        return
    try:
        yield
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = previous


@contextmanager
def torch_errors(what: str, where: str) -> Iterator[None]:
    """Out of memory in a torch runner becomes :class:`~facemagic_core.errors.OutOfMemoryError` (chunked callers
    halve the chunk), as :func:`facemagic_core.runtime.onnxruntime_errors` does for onnxruntime."""
    try:
        yield
    except torch.OutOfMemoryError as error:
        raise OutOfMemoryError(
            f"out of memory while torch ran {what} ({str(error).strip().splitlines()[0][:200] if str(error) else ''})",
            where=where,
            fix="process fewer frames at once (--chunk), free memory held by other programs, or use the CPU",
        ) from error


# ---------------------------------------------------------------------------------------------
# What insightface reads from a file


Shape = tuple[int | None, ...]


def _shape(value: Any) -> Shape:
    return tuple(dim.dim_value if dim.HasField("dim_value") else None for dim in value.type.tensor_type.shape.dim)


@dataclass(frozen=True)
class GraphFacts:
    """The signature of an ONNX file, as insightface's router and runners read it (kept with a cache)."""

    input_names: tuple[str, ...]  # graph inputs that are not initializers
    input_shapes: tuple[Shape, ...]  # None for a dynamic dimension
    output_names: tuple[str, ...]
    output_shapes: tuple[Shape, ...]
    first_node_names: tuple[str, ...]  # the first 8 node names (insightface reads the normalisation from them)

    @classmethod
    def from_model(cls, model: Any) -> GraphFacts:
        graph = model.graph
        initializers = {item.name for item in graph.initializer}
        inputs = [value for value in graph.input if value.name not in initializers]
        return cls(
            input_names=tuple(value.name for value in inputs),
            input_shapes=tuple(_shape(value) for value in inputs),
            output_names=tuple(value.name for value in graph.output),
            output_shapes=tuple(_shape(value) for value in graph.output),
            first_node_names=tuple(node.name for node in graph.node[:8]),
        )

    def to_json(self) -> str:
        return json.dumps({key: getattr(self, key) for key in self.__dataclass_fields__})

    @classmethod
    def from_json(cls, text: str) -> GraphFacts:
        data = json.loads(text)

        def shapes(key: str) -> tuple[Shape, ...]:
            return tuple(tuple(None if dim is None else int(dim) for dim in item) for item in data[key])

        return cls(
            input_names=tuple(str(name) for name in data["input_names"]),
            input_shapes=shapes("input_shapes"),
            output_names=tuple(str(name) for name in data["output_names"]),
            output_shapes=shapes("output_shapes"),
            first_node_names=tuple(str(name) for name in data["first_node_names"]),
        )

    @property
    def task(self) -> Task | None:
        """insightface's routing (``ModelRouter.get_model``) by input and output shapes."""
        if len(self.output_names) >= 5:
            return "detection"
        shape = self.input_shapes[0] if self.input_shapes else ()
        if len(shape) != 4:
            return None
        height, width = shape[2], shape[3]
        if height == 192 and width == 192:
            return "landmark"
        if height == 96 and width == 96:
            return "attribute"
        if len(self.input_names) == 2 and height == 128 and width == 128:
            return "swapper"
        if height is not None and height == width and height >= 112 and height % 16 == 0:
            return "recognition"
        return None

    def normalisation(self) -> tuple[float, float]:
        """``(mean, std)`` of the runner's pre-processing, by insightface's rule for this task.

        A graph whose first node names start with Sub/_minus and Mul/_mul normalises its input
        itself (mean 0, std 1); else ArcFace uses 127.5 / 127.5, the other runners 127.5 / 128.
        """
        task = self.task
        if task == "detection":
            return 127.5, 128.0
        names = self.first_node_names
        finds_sub = any(name.startswith(("Sub", "_minus")) for name in names)
        finds_mul = any(name.startswith(("Mul", "_mul")) for name in names)
        if task in ("landmark", "attribute") and any(name == "bn_data" for name in names[:3]):
            finds_sub = finds_mul = True
        if finds_sub and finds_mul:
            return 0.0, 1.0
        return (127.5, 127.5) if task == "recognition" else (127.5, 128.0)


# ---------------------------------------------------------------------------------------------
# Conversion, check against onnxruntime, cache


@dataclass(frozen=True)
class ConvertedGraph:
    """A verified conversion: the module (on its device), the file's signature, the measured difference."""

    module: OnnxGraphModule
    facts: GraphFacts
    difference: float  # worst (|torch - onnxruntime|) / (ATOL + RTOL * scale) over the outputs; <= 1 passes
    source: Path

    @property
    def device(self) -> torch.device:
        return next((buffer.device for buffer in self.module.buffers()), torch.device("cpu"))


def conversion_cache_path(source: Path) -> Path:
    """Where the verified conversion of ``source`` is cached: ``<file name>.torch.safetensors`` beside it."""
    return source.with_name(source.name + CACHE_SUFFIX)


def check_inputs(facts: GraphFacts, *, batch: int = 1, seed: int = 0) -> list[Tensor]:
    """Random inputs of the file's signature (dynamic sizes: ``batch``, :data:`CHECK_SIZE`), values as the
    runner feeds them: pixels 0..255 through the task's normalisation."""
    generator = torch.Generator().manual_seed(seed)
    mean, std = facts.normalisation()
    tensors = []
    for shape in facts.input_shapes:
        dims = [CHECK_SIZE if dim is None else int(dim) for dim in shape]
        if dims and shape[0] in (None, 1):
            dims[0] = batch  # a file that says batch 1 may still take more in torch: the batching probe finds out
        pixels = torch.rand(dims, generator=generator) * 255.0
        tensors.append((pixels - mean) / std)
    return tensors


def _forward(module: OnnxGraphModule, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
    device = next((buffer.device for buffer in module.buffers()), torch.device("cpu"))
    with torch.inference_mode(), exact_float32(device):
        outputs: tuple[Tensor, ...] = module(*[tensor.to(device, torch.float32) for tensor in inputs])
    return outputs


def compare_with_onnxruntime(module: OnnxGraphModule, path: Path, facts: GraphFacts) -> float:
    """The worst output difference to onnxruntime (CPU) on :func:`check_inputs`, in units of the tolerance."""
    from .runtime import create_session

    inputs = check_inputs(facts)
    session = create_session(path, providers=["cpu"], what=f"conversion check of {path.name}")
    feed = {item.name: tensor.numpy() for item, tensor in zip(session.get_inputs(), inputs, strict=True)}
    expected = session.run(None, feed)
    actual = _forward(module, inputs)
    worst = 0.0
    for want, got in zip(expected, actual, strict=True):
        reference = torch.from_numpy(np.asarray(want, dtype=np.float32))
        value = got.detach().to("cpu", torch.float32)
        if tuple(value.shape) != tuple(reference.shape):
            return math.inf
        if not reference.numel():
            continue
        tolerance = CHECK_ATOL + CHECK_RTOL * float(reference.abs().max())
        worst = max(worst, float((value - reference).abs().max()) / tolerance)
    return worst


def _save_cache(converted: ConvertedGraph, source_sha256: str) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    path = conversion_cache_path(converted.source)
    metadata = {
        "format": "pt",
        "cache_version": CACHE_VERSION,
        "source_sha256": source_sha256,
        "graph": json.dumps(converted.module.describe()),
        "facts": converted.facts.to_json(),
        "difference": repr(converted.difference),
    }
    try:
        with atomic_path(path) as temporary:
            save_file(converted.module.constant_tensors(), str(temporary), metadata=metadata)
    except (OSError, SafetensorError) as error:
        logger.info("%s: the conversion could not be cached (%s); it is checked again on the next load", path, error)
        return
    logger.info("%s: verified torch conversion cached in %s", converted.source.name, path.name)


def _load_cache(source: Path, source_sha256: str, where: str) -> ConvertedGraph | None:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = conversion_cache_path(source)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as cached:  # type: ignore[no-untyped-call]
            metadata = cached.metadata() or {}
        if metadata.get("source_sha256") != source_sha256 or metadata.get("cache_version") != CACHE_VERSION:
            logger.info("%s was made from another file or version; converting %s again", path.name, source.name)
            return None
        module = OnnxGraphModule.from_parts(json.loads(metadata["graph"]), load_file(str(path)), where=where)
        facts = GraphFacts.from_json(metadata["facts"])
        difference = float(metadata["difference"])
    except (OSError, SafetensorError, KeyError, TypeError, ValueError, FaceMagicError) as error:
        logger.warning("%s cannot be used (%s); converting %s again", path, error, source.name)
        return None
    logger.info("%s: using the verified torch conversion cached in %s", source.name, path.name)
    return ConvertedGraph(module, facts, difference, source)


def read_facts(path: Path) -> tuple[Any, GraphFacts]:
    """The ONNX model of ``path`` and its signature; ModelIntegrityError for a damaged file."""
    import onnx

    try:
        model = onnx.load(str(path))
    except Exception as error:  # protobuf raises its own DecodeError and others
        raise ModelIntegrityError(
            f"the ONNX file cannot be read ({type(error).__name__}: {error})",
            where=str(path),
            fix="the file is truncated, damaged or not an ONNX model: delete it and download it again",
        ) from error
    return model, GraphFacts.from_model(model)


def convert_model_file(
    path: Path, *, device: torch.device, cache: bool = True
) -> tuple[ConvertedGraph | None, GraphFacts | None, str]:
    """``(conversion, signature, "")`` for a verified conversion of ``path`` on ``device``, or
    ``(None, signature, why not)`` when the interpreter cannot run it or its outputs differ from
    onnxruntime's (the caller runs the file through onnxruntime). A damaged file raises."""
    from .hub import sha256_file

    path = Path(path)
    where = str(path)
    digest = sha256_file(path) if cache else ""
    cached = _load_cache(path, digest, where) if cache else None
    if cached is not None:
        return ConvertedGraph(cached.module.to(device), cached.facts, cached.difference, path), cached.facts, ""
    model, facts = read_facts(path)
    if facts.task not in ("detection", "landmark", "attribute", "recognition"):
        return None, facts, ""
    try:
        module = OnnxGraphModule(model, where=where).to(device)
        difference = compare_with_onnxruntime(module, path, facts)
    except ModelIntegrityError as error:
        return None, facts, f"the graph interpreter cannot run it ({error})"
    if not difference <= 1.0:
        return (
            None,
            facts,
            (
                f"its torch conversion differs from onnxruntime by {difference:.3g} times the tolerance "
                f"({CHECK_ATOL:g} + {CHECK_RTOL:g} x the output's scale) on a random input"
            ),
        )
    converted = ConvertedGraph(module, facts, difference, path)
    logger.info(
        "%s converted to torch on %s (difference to onnxruntime %.2g of the tolerance)", path.name, device, difference
    )
    if cache:
        _save_cache(converted, digest)
    return converted, facts, ""


# ---------------------------------------------------------------------------------------------
# Running a converted graph on batches


class _GraphRunner:
    """A converted graph and whether it takes batches (a graph may reshape with a fixed batch of 1)."""

    def __init__(self, converted: ConvertedGraph) -> None:
        self.converted = converted
        self.module = converted.module
        self.facts = converted.facts
        self.model_file = str(converted.source)
        self.batchable = self._probe_batching()

    @property
    def device(self) -> torch.device:
        return self.converted.device

    def _probe_batching(self) -> bool:
        inputs = check_inputs(self.facts, batch=2, seed=1)
        try:
            together = _forward(self.module, inputs)
        except FaceMagicError:
            return False
        singles = [_forward(self.module, [tensor[i : i + 1] for tensor in inputs]) for i in range(2)]
        for index, output in enumerate(together):
            # Batch-major values are what the runners read (an SCRFD export may reshape to (1, -1, C) and put
            # the frames one after another along its second axis), so values are compared flattened.
            joined = torch.cat([single[index].reshape(-1) for single in singles])
            output = output.reshape(-1)
            if joined.shape != output.shape:
                return False
            tolerance = CHECK_ATOL + CHECK_RTOL * float(joined.abs().max())
            if float((joined - output).abs().max()) > tolerance:
                return False
        return True

    def run(self, batch: Tensor) -> tuple[Tensor, ...]:
        """The graph's outputs for ``(B, ...)`` inputs, the items' outputs concatenated along the first axis."""
        if self.batchable or batch.shape[0] == 1:
            return _forward(self.module, [batch])
        parts = [_forward(self.module, [batch[i : i + 1]]) for i in range(batch.shape[0])]
        return tuple(torch.cat([part[index] for part in parts]) for index in range(len(parts[0])))


# ---------------------------------------------------------------------------------------------
# SCRFD


def box_iou_plus_one(boxes: Tensor) -> Tensor:
    """``(B, K, K)`` IoU of ``(B, K, 4)`` boxes with insightface's pixel-inclusive areas (``x2 - x1 + 1``)."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    width = (torch.minimum(x2[:, :, None], x2[:, None, :]) - torch.maximum(x1[:, :, None], x1[:, None, :]) + 1).clamp(
        min=0
    )
    height = (torch.minimum(y2[:, :, None], y2[:, None, :]) - torch.maximum(y1[:, :, None], y1[:, None, :]) + 1).clamp(
        min=0
    )
    inter = width * height
    return inter / (areas[:, :, None] + areas[:, None, :] - inter)


def batched_nms(boxes: Tensor, scores: Tensor, valid: Tensor, iou_threshold: float = NMS_THRESHOLD) -> Tensor:
    """Greedy non-maximum suppression of every frame at once: ``(B, K)`` bool, True for the boxes kept.

    ``boxes`` ``(B, K, 4)``, ``scores`` ``(B, K)``, ``valid`` ``(B, K)`` (padding and boxes below
    the score threshold are False). The same boxes as insightface's ``SCRFD.nms``: best score
    first (ties in input order), a box is dropped when its IoU with a kept one exceeds the
    threshold. One IoU matrix per frame; the loop runs once per kept box of the fullest frame,
    each step for all frames together.
    """
    batch, count = scores.shape
    keep = torch.zeros_like(valid, dtype=torch.bool)
    if count == 0:
        return keep
    order = torch.sort(torch.where(valid, scores, -torch.inf), dim=1, descending=True, stable=True).indices
    sorted_boxes = boxes.gather(1, order[:, :, None].expand(-1, -1, 4))
    overlaps = box_iou_plus_one(sorted_boxes) > iou_threshold
    remaining = valid.gather(1, order)
    kept_sorted = torch.zeros_like(remaining)
    rows = torch.arange(batch, device=scores.device)
    while bool(remaining.any()):
        present = remaining.any(dim=1)
        first = torch.argmax(remaining.to(torch.uint8), dim=1)  # the best box not yet kept or dropped
        kept_sorted[rows, first] |= present
        remaining &= ~(overlaps[rows, first] & present[:, None])
        remaining[rows, first] = False
    keep.scatter_(1, order, kept_sorted)
    return keep


@dataclass(frozen=True)
class Detections:
    """The faces of one frame, best score first: boxes ``(N, 4)`` x1 y1 x2 y2, scores ``(N,)``,
    landmarks ``(N, 5, 2)`` (on the detector's device)."""

    boxes: Tensor
    scores: Tensor
    landmarks: Tensor


class TorchFaceDetector(_GraphRunner):
    """insightface's ``SCRFD`` runner on batches of frames (see the module docstring)."""

    taskname = "detection"

    def __init__(self, converted: ConvertedGraph, *, nms_threshold: float = NMS_THRESHOLD) -> None:
        outputs = len(converted.facts.output_names)
        self.strides: tuple[int, ...]
        if outputs in (6, 9):
            self.strides, self.num_anchors = (8, 16, 32), 2
        elif outputs in (10, 15):
            self.strides, self.num_anchors = (8, 16, 32, 64, 128), 1
        else:
            raise ModelIntegrityError(
                f"an SCRFD detector has 6, 9, 10 or 15 outputs, this one {outputs}", where=str(converted.source)
            )
        self.use_kps = outputs in (9, 15)
        self.nms_threshold = float(nms_threshold)
        shape = converted.facts.input_shapes[0]
        height, width = shape[2], shape[3]
        self.static_size = (height, width) if height is not None and width is not None else None  # fixed input
        super().__init__(converted)

    def _anchor_centres(self, height: int, width: int, stride: int) -> Tensor:
        ys, xs = torch.meshgrid(
            torch.arange(height // stride, device=self.device),
            torch.arange(width // stride, device=self.device),
            indexing="ij",
        )
        centres = (torch.stack([xs, ys], dim=-1).reshape(-1, 2) * stride).to(torch.float32)
        return centres.repeat_interleave(self.num_anchors, dim=0)

    def letterbox(self, pixels: Tensor, det_size: int) -> tuple[Tensor, float]:
        """``(B, 3, S, S)`` network input and the scale of the frames in it, as ``SCRFD.detect`` makes them."""
        height, width = int(pixels.shape[2]), int(pixels.shape[3])
        target_h, target_w = self.static_size or (det_size, det_size)
        image_ratio = float(height) / width
        if image_ratio > float(target_h) / target_w:
            new_h = target_h
            new_w = int(new_h / image_ratio)
        else:
            new_w = target_w
            new_h = int(new_w * image_ratio)
        scale = float(new_h) / height
        resized = pixels
        if (new_h, new_w) != (height, width):
            resized = F.interpolate(pixels, size=(new_h, new_w), mode="bilinear", align_corners=False)
            resized = resized.round().clamp(0.0, 255.0)  # insightface resizes uint8 pictures
        padded = F.pad(resized, (0, target_w - new_w, 0, target_h - new_h))
        return (padded - 127.5) / 128.0, scale

    def decode(self, outputs: Sequence[Tensor], batch: int, height: int, width: int) -> tuple[Tensor, Tensor, Tensor]:
        """Scores ``(B, N)``, boxes ``(B, N, 4)`` and landmarks ``(B, N, 5, 2)`` in network-input pixels."""
        levels = len(self.strides)
        scores, boxes, points = [], [], []
        for level, stride in enumerate(self.strides):
            centres = self._anchor_centres(height, width, stride)  # (K, 2)
            count = centres.shape[0]
            score = outputs[level].reshape(batch, count, -1)[:, :, 0]
            distance = outputs[level + levels].reshape(batch, count, 4) * stride
            boxes.append(torch.cat([centres - distance[..., :2], centres + distance[..., 2:]], dim=-1))
            scores.append(score)
            if self.use_kps:
                offsets = outputs[level + 2 * levels].reshape(batch, count, -1, 2) * stride
                points.append(centres[None, :, None, :] + offsets)
            else:
                points.append(torch.zeros(batch, count, 5, 2, device=self.device))
        return torch.cat(scores, 1), torch.cat(boxes, 1), torch.cat(points, 1)

    def detect(self, pixels: Tensor, *, det_size: int = 640, threshold: float = 0.5) -> list[Detections]:
        """The faces of each ``(B, 3, H, W)`` frame (RGB 0..255 on the detector's device), in frame pixels."""
        results: list[Detections] = []
        for start in range(0, pixels.shape[0], DETECTOR_CHUNK):
            results += self._detect_chunk(pixels[start : start + DETECTOR_CHUNK], det_size, threshold)
        return results

    def _detect_chunk(self, pixels: Tensor, det_size: int, threshold: float) -> list[Detections]:
        batch = int(pixels.shape[0])
        blob, scale = self.letterbox(pixels.to(self.device, torch.float32), det_size)
        outputs = self.run(blob)
        scores, boxes, points = self.decode(outputs, batch, int(blob.shape[2]), int(blob.shape[3]))
        boxes, points = boxes / scale, points / scale
        valid = scores >= threshold
        most = int(valid.sum(dim=1).max()) if batch else 0
        if most > MAX_CANDIDATES:
            logger.warning(
                "%d face candidates above the score threshold %.2f in one frame; the best %d go to NMS",
                most,
                threshold,
                MAX_CANDIDATES,
            )
        count = min(most, MAX_CANDIDATES)
        order = torch.sort(torch.where(valid, scores, -torch.inf), dim=1, descending=True, stable=True).indices
        order = order[:, :count]
        scores = scores.gather(1, order)
        valid = valid.gather(1, order)
        boxes = boxes.gather(1, order[:, :, None].expand(-1, -1, 4))
        points = points.gather(1, order[:, :, None, None].expand(-1, -1, points.shape[2], 2))
        keep = batched_nms(boxes, scores, valid, self.nms_threshold)
        return [Detections(boxes[i][keep[i]], scores[i][keep[i]], points[i][keep[i]]) for i in range(batch)]


# ---------------------------------------------------------------------------------------------
# Crops centred on a box: landmarks and gender/age


def box_crop_matrices(boxes: Tensor, size: int) -> Tensor:
    """``(F, 2, 3)`` image -> crop matrices of insightface's landmark and attribute runners: the box centre at
    the crop centre, scale ``size / (1.5 * max(w, h))``, no rotation."""
    boxes = boxes.to(torch.float64 if boxes.device.type != "mps" else torch.float32)
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    centre_x, centre_y = (boxes[:, 2] + boxes[:, 0]) / 2, (boxes[:, 3] + boxes[:, 1]) / 2
    scale = size / (torch.maximum(width, height) * 1.5)
    zero = torch.zeros_like(scale)
    return torch.stack(
        [
            torch.stack([scale, zero, size / 2 - centre_x * scale], dim=-1),
            torch.stack([zero, scale, size / 2 - centre_y * scale], dim=-1),
        ],
        dim=1,
    )


class _BoxCropRunner(_GraphRunner):
    """A model that reads a square crop centred on each face box (insightface's Landmark and Attribute)."""

    def __init__(self, converted: ConvertedGraph) -> None:
        super().__init__(converted)
        shape = converted.facts.input_shapes[0]
        self.input_size = int(shape[2])  # type: ignore[arg-type]
        self.input_mean, self.input_std = converted.facts.normalisation()

    def _forward_crops(self, pixels: Tensor, boxes: Tensor, image_index: Tensor) -> tuple[Tensor, Tensor]:
        """The raw model output ``(F, D)`` for every face, and the image -> crop matrices."""
        matrices = box_crop_matrices(boxes.to(self.device), self.input_size)
        outputs, size = [], self.input_size
        for start in range(0, boxes.shape[0], FACE_CHUNK):
            part = slice(start, start + FACE_CHUNK)
            crops = warp_affine(pixels, matrices[part].float(), (size, size), image_index=image_index[part])
            crops = crops.round()  # insightface warps uint8 pictures
            outputs.append(self.run((crops - self.input_mean) / self.input_std)[0].reshape(crops.shape[0], -1))
        return torch.cat(outputs), matrices


def pose_from_landmarks_3d(points: Tensor, mean_shape: Tensor) -> Tensor:
    """``(F, 3)`` pitch, yaw, roll in degrees from ``(F, 68, 3)`` image-space points, as insightface's Landmark
    runner computes them: the least-squares affine map of its 68-point mean shape onto the points, its first
    two rows normalised (and their cross product) as the rotation, then the x-y-z Euler angles."""
    work = points.dtype if points.device.type == "mps" else torch.float64
    homogeneous = torch.cat([mean_shape, torch.ones(mean_shape.shape[0], 1, dtype=mean_shape.dtype)], dim=1)
    solve = torch.linalg.pinv(homogeneous.double()).to(points.device, work)  # (4, 68): X+ of the lstsq fit
    affine = (solve @ points.to(work)).transpose(1, 2)  # (F, 3, 4): P = (X+ Y)^T
    row1, row2 = affine[:, 0, :3], affine[:, 1, :3]
    r1 = row1 / row1.norm(dim=1, keepdim=True)
    r2 = row2 / row2.norm(dim=1, keepdim=True)
    r3 = torch.linalg.cross(r1, r2, dim=1)
    rotation = torch.stack([r1, r2, r3], dim=1)
    sy = torch.sqrt(rotation[:, 0, 0] ** 2 + rotation[:, 1, 0] ** 2)
    singular = sy < 1e-6
    pitch = torch.where(
        singular,
        torch.atan2(-rotation[:, 1, 2], rotation[:, 1, 1]),
        torch.atan2(rotation[:, 2, 1], rotation[:, 2, 2]),
    )
    yaw = torch.atan2(-rotation[:, 2, 0], sy)
    roll = torch.where(singular, torch.zeros_like(sy), torch.atan2(rotation[:, 1, 0], rotation[:, 0, 0]))
    return torch.rad2deg(torch.stack([pitch, yaw, roll], dim=1)).to(torch.float32)


class TorchLandmarks(_BoxCropRunner):
    """insightface's ``Landmark`` runner (2d106det, 1k3d68) on every face at once."""

    def __init__(self, converted: ConvertedGraph) -> None:
        super().__init__(converted)
        width = converted.facts.output_shapes[0][1] if len(converted.facts.output_shapes[0]) > 1 else None
        self.mean_shape: Tensor | None = None
        if width == 3309:
            from insightface.data import get_object

            self.lmk_dim, self.lmk_num = 3, 68
            self.mean_shape = torch.as_tensor(np.asarray(get_object("meanshape_68.pkl"), dtype=np.float64))
        elif width:
            self.lmk_dim, self.lmk_num = 2, int(width) // 2
        else:
            raise ModelIntegrityError("the landmark model's output size is not fixed", where=self.model_file)
        self.taskname = f"landmark_{self.lmk_dim}d_{self.lmk_num}"

    def predict(self, pixels: Tensor, boxes: Tensor, image_index: Tensor) -> tuple[Tensor, Tensor | None]:
        """Points ``(F, N, 2 or 3)`` in image pixels for ``(F, 4)`` boxes of ``pixels[image_index]``, and the
        pose ``(F, 3)`` (pitch, yaw, roll degrees) for a 3D model, else None."""
        if boxes.shape[0] == 0:
            return torch.zeros(0, self.lmk_num, self.lmk_dim, device=self.device), None
        raw, matrices = self._forward_crops(pixels, boxes, image_index)
        prediction = raw.reshape(raw.shape[0], -1, 3 if raw.shape[1] >= 3000 else 2)[:, -self.lmk_num :]
        half = self.input_size // 2
        prediction = prediction.double() if prediction.device.type != "mps" else prediction
        xy = (prediction[..., :2] + 1) * half
        inverse = invert_affine(matrices)
        inverse = inverse.to(xy.dtype)
        moved = xy @ inverse[:, :, :2].transpose(1, 2) + inverse[:, :, 2].unsqueeze(1)
        if prediction.shape[-1] == 2:
            return moved.to(torch.float32), None
        depth_scale = torch.sqrt(inverse[:, 0, 0] ** 2 + inverse[:, 0, 1] ** 2)
        depth = prediction[..., 2:] * half * depth_scale[:, None, None]
        points = torch.cat([moved, depth], dim=-1).to(torch.float32)
        pose = pose_from_landmarks_3d(points, self.mean_shape) if self.mean_shape is not None else None
        return points, pose


class TorchGenderAge(_BoxCropRunner):
    """insightface's ``Attribute`` runner for genderage (class 0 female, 1 male; age = output x 100)."""

    taskname = "genderage"

    def predict(self, pixels: Tensor, boxes: Tensor, image_index: Tensor) -> tuple[Tensor, Tensor]:
        """``(F,)`` gender (0 female, 1 male) and ``(F,)`` age in years, int64, for every face."""
        if boxes.shape[0] == 0:
            empty = torch.zeros(0, dtype=torch.int64, device=self.device)
            return empty, empty
        raw, _ = self._forward_crops(pixels, boxes, image_index)
        return torch.argmax(raw[:, :2], dim=1), torch.round(raw[:, 2] * 100).to(torch.int64)


# ---------------------------------------------------------------------------------------------
# ArcFace


class TorchRecognizer(_GraphRunner):
    """insightface's ``ArcFaceONNX`` as a recogniser object of :mod:`facemagic_core.analysis`.

    ``embed`` takes aligned ``(B, 3, S, S)`` RGB crops in [0, 1] and returns the raw embeddings
    ``(B, D)``, pre-processed as ``get_feat`` does: ``(255 * x - input_mean) / input_std``.
    """

    taskname = "recognition"
    template = "arcface"

    def __init__(self, converted: ConvertedGraph, *, embedding_model: str = "arcface_w600k_r50") -> None:
        super().__init__(converted)
        self.input_size = int(converted.facts.input_shapes[0][2])  # type: ignore[arg-type]
        self.input_mean, self.input_std = converted.facts.normalisation()
        self.embedding_model = embedding_model

    def embed(self, crops: Tensor) -> Tensor:
        pixels = crops.to(self.device, torch.float32) * 255.0
        vectors = [
            self.run((pixels[start : start + FACE_CHUNK] - self.input_mean) / self.input_std)[0]
            for start in range(0, pixels.shape[0], FACE_CHUNK)
        ]
        return torch.cat(vectors).reshape(crops.shape[0], -1)


TorchRunner = TorchFaceDetector | TorchLandmarks | TorchGenderAge | TorchRecognizer


def load_torch_runner(path: Path, *, device: torch.device, cache: bool = True) -> tuple[TorchRunner | None, str]:
    """The torch runner of an insightface model file, or ``(None, why not)`` (the caller falls back to
    onnxruntime; an empty reason means the file is not an analysis model this module runs)."""
    converted, facts, reason = convert_model_file(Path(path), device=device, cache=cache)
    if converted is None or facts is None:
        return None, reason
    task = facts.task
    try:
        if task == "detection":
            runner: TorchRunner = TorchFaceDetector(converted)
        elif task == "landmark":
            runner = TorchLandmarks(converted)
        elif task == "attribute":
            if facts.output_shapes[0][1:] != (3,):
                return None, ""
            runner = TorchGenderAge(converted)
        else:
            runner = TorchRecognizer(converted)
    except ModelIntegrityError as error:
        return None, str(error)
    logger.info(
        "%s runs in torch on %s (float32, %s)", Path(path).name, device, "batched" if runner.batchable else "per item"
    )
    return runner, ""


def describe_runtimes(runners: Mapping[str, object]) -> dict[str, str]:
    """``role -> "torch on cuda:0"`` or ``"onnxruntime (providers)"`` for the runners of an analyzer."""
    described = {}
    for role, runner in runners.items():
        if runner is None:
            continue
        if isinstance(runner, _GraphRunner):
            described[role] = f"torch on {runner.device}"
        elif hasattr(runner, "session"):
            described[role] = f"onnxruntime ({', '.join(runner.session.get_providers())})"
        else:
            described[role] = type(runner).__name__
    return described
