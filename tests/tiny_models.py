"""Tiny ONNX models with the input/output signatures of the real insightface models.

They are built with ``onnx.helper`` in milliseconds and are small (well under 1 MB), so tests
can run insightface's own ``model_zoo`` runners end to end without the real weights:

- :func:`write_detector` — SCRFD (det_10g): input ``1x3x?x?``; nine rank-2 outputs, scores
  ``(K, 1)``, boxes ``(K, 4)``, keypoints ``(K, 10)`` for strides 8, 16, 32 in that order,
  ``K = (H / s) * (W / s) * 2`` (two anchors per cell). It is a deterministic "bright cell
  detector": a stride-32 cell whose mean brightness is above mid-grey scores high (a white
  32x32 square gives ~1.0, 220 grey ~0.99, 200 grey ~0.8), everything else ~0; each hit is a
  128 px box centred on the cell's anchor point (its top-left corner) with five plausible
  landmarks (:data:`DETECTOR_LANDMARK_OFFSETS`).
- :func:`write_random_detector` — the same signature with random heads at all three strides (scores,
  boxes and keypoints that depend on the picture everywhere), for comparing runtimes and NMS.
- :func:`write_landmarks_106` — 2d106det: ``1x3x192x192 -> 1x212``.
- :func:`write_landmarks_3d68` — 1k3d68: ``1x3x192x192 -> 1x3309``; the last 68 points are
  insightface's mean face shape plus a small input-dependent term, so the pose it yields is
  near frontal.
- :func:`write_genderage` — genderage: ``1x3x96x96 -> 1x3``.
- :func:`write_arcface` — ArcFace recogniser: ``Nx3x112x112 -> Nx512`` (dynamic batch).
- :func:`write_pack` — a buffalo_l-like folder with the five files under their real names.

And :func:`tiny_facemagic_config`, the tiny native generator (32 px crops, three Style Mix Blocks)
that the pipeline and command-line tests swap with.

Node names never start with ``Sub``/``Mul`` unless asked (insightface reads such names as
"the graph normalises its input itself").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facemagic_core.generators import GeneratorConfig

OPSET = 13
IR_VERSION = 8

#: Landmark offsets of the tiny detector from the anchor point, in units of the stride (32 px):
#: left eye, right eye, nose, left mouth corner, right mouth corner (image left/right).
DETECTOR_LANDMARK_OFFSETS = np.array(
    [[-0.70, -0.45], [0.70, -0.45], [0.0, 0.25], [-0.55, 0.85], [0.55, 0.85]], dtype=np.float32
)
#: Half the box side of a tiny-detector hit, in units of the stride.
DETECTOR_BOX_HALF = 2.0
#: The stride whose cells the tiny detector scores.
DETECTOR_STRIDE = 32

PACK_FILES = {
    "detector": "det_10g.onnx",
    "landmarks_106": "2d106det.onnx",
    "landmarks_3d68": "1k3d68.onnx",
    "genderage": "genderage.onnx",
    "recognizer": "w600k_r50.onnx",
}


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name)


def write_detector(path: Path, *, gain: float = 20.0, offset: float = 10.0) -> Path:
    """An SCRFD-like detector (see the module docstring); score = sigmoid(gain * cell mean - offset)."""
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = []
    score_names, box_names, landmark_names = [], [], []
    for stride in (8, 16, 32):
        active = stride == DETECTOR_STRIDE
        score_w = np.full((2, 3, stride, stride), gain / (3 * stride * stride) if active else 0.0)
        score_b = np.full((2,), -offset if active else -30.0)
        box_w = np.zeros((8, 3, stride, stride))
        box_b = np.full((8,), DETECTOR_BOX_HALF)
        landmark_w = np.zeros((20, 3, stride, stride))
        landmark_b = np.tile(DETECTOR_LANDMARK_OFFSETS.reshape(-1), 2)
        for kind, weight, bias, width, out in (
            ("score", score_w, score_b, 1, score_names),
            ("box", box_w, box_b, 4, box_names),
            ("landmark", landmark_w, landmark_b, 10, landmark_names),
        ):
            prefix = f"{kind}{stride}"
            inits += [_init(f"{prefix}_w", weight), _init(f"{prefix}_b", bias)]
            inits.append(numpy_helper.from_array(np.array([-1, width], dtype=np.int64), f"{prefix}_shape"))
            nodes.append(
                helper.make_node(
                    "Conv",
                    ["input.1", f"{prefix}_w", f"{prefix}_b"],
                    [f"{prefix}_conv"],
                    name=f"conv_{prefix}",
                    kernel_shape=[stride, stride],
                    strides=[stride, stride],
                )
            )
            source = f"{prefix}_conv"
            if kind == "score":
                nodes.append(helper.make_node("Sigmoid", [source], [f"{prefix}_sig"], name=f"sigmoid_{prefix}"))
                source = f"{prefix}_sig"
            nodes.append(
                helper.make_node("Transpose", [source], [f"{prefix}_t"], name=f"transpose_{prefix}", perm=[0, 2, 3, 1])
            )
            nodes.append(
                helper.make_node("Reshape", [f"{prefix}_t", f"{prefix}_shape"], [prefix], name=f"reshape_{prefix}")
            )
            out.append(helper.make_tensor_value_info(prefix, TensorProto.FLOAT, [f"n{prefix}", width]))
    graph = helper.make_graph(
        nodes,
        "tiny_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])],
        score_names + box_names + landmark_names,
        initializer=inits,
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)


def write_random_detector(
    path: Path, *, seed: int = 5, score_gain: float = 3.0, score_bias: float = -1.5, batched_outputs: bool = False
) -> Path:
    """An SCRFD-like detector with random heads at every stride (det_10g's signature: input ``1x3x?x?``, nine
    rank-2 outputs, scores ``(K, 1)`` then boxes ``(K, 4)`` then keypoints ``(K, 10)`` for strides 8, 16, 32).

    Each stride-``s`` cell is read by an ``s x s`` convolution with random weights: the score is
    ``sigmoid(score_gain * conv + score_bias)`` (on noise about a third of the anchors score above 0.5), box
    distances are ``1 + 2 * sigmoid(conv)`` strides (boxes of neighbouring anchors overlap, so NMS has work),
    keypoint offsets ``conv`` strides. Unlike :func:`write_detector` every output depends on the picture.
    ``batched_outputs=True`` gives the other SCRFD export: rank-3 outputs ``(1, K, C)`` (a reshape to
    ``(1, -1, C)``), which insightface reads as "batched".
    """
    rng = np.random.default_rng(seed)
    nodes: list[onnx.NodeProto] = []
    inits: list[onnx.TensorProto] = [_init("two", np.array(2.0)), _init("one", np.array(1.0))]
    outputs = {"score": [], "box": [], "landmark": []}  # type: dict[str, list[onnx.ValueInfoProto]]
    for stride in (8, 16, 32):
        for kind, channels, width in (("score", 2, 1), ("box", 8, 4), ("landmark", 20, 10)):
            prefix = f"{kind}{stride}"
            weight = rng.normal(0.0, 1.0 / np.sqrt(3 * stride * stride), (channels, 3, stride, stride))
            bias = rng.normal(0.0, 0.3, channels)
            if kind == "score":
                weight, bias = weight * score_gain, bias + score_bias
            inits += [_init(f"{prefix}_w", weight), _init(f"{prefix}_b", bias)]
            shape = [1, -1, width] if batched_outputs else [-1, width]
            inits.append(numpy_helper.from_array(np.array(shape, dtype=np.int64), f"{prefix}_shape"))
            nodes.append(
                helper.make_node(
                    "Conv",
                    ["input.1", f"{prefix}_w", f"{prefix}_b"],
                    [f"{prefix}_conv"],
                    name=f"conv_{prefix}",
                    kernel_shape=[stride, stride],
                    strides=[stride, stride],
                )
            )
            source = f"{prefix}_conv"
            if kind in ("score", "box"):
                nodes.append(helper.make_node("Sigmoid", [source], [f"{prefix}_sig"], name=f"sigmoid_{prefix}"))
                source = f"{prefix}_sig"
            if kind == "box":
                nodes.append(helper.make_node("Mul", [source, "two"], [f"{prefix}_twice"], name=f"scale_{prefix}"))
                nodes.append(helper.make_node("Add", [f"{prefix}_twice", "one"], [f"{prefix}_d"], name=f"add_{prefix}"))
                source = f"{prefix}_d"
            nodes.append(
                helper.make_node("Transpose", [source], [f"{prefix}_t"], name=f"transpose_{prefix}", perm=[0, 2, 3, 1])
            )
            nodes.append(
                helper.make_node("Reshape", [f"{prefix}_t", f"{prefix}_shape"], [prefix], name=f"reshape_{prefix}")
            )
            dims: list[int | str] = [1, f"n{prefix}", width] if batched_outputs else [f"n{prefix}", width]
            outputs[kind].append(helper.make_tensor_value_info(prefix, TensorProto.FLOAT, dims))
    graph = helper.make_graph(
        nodes,
        "tiny_random_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "?", "?"])],
        outputs["score"] + outputs["box"] + outputs["landmark"],
        initializer=inits,
    )
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)]), path)


def _conv_head(
    rng: np.random.Generator,
    input_size: int,
    outputs: int,
    *,
    batch: int | str = 1,
    activation: str | None = None,
    out_scale: float = 1.0,
    bias: np.ndarray | None = None,
    weight_scale: float = 0.5,
    normalise_in_graph: bool = False,
    name: str = "tiny",
) -> onnx.ModelProto:
    """input (batch,3,S,S) -> Conv(3->8, kernel S/4) -> Relu -> Flatten -> Gemm -> [activation] -> (batch, outputs)."""
    kernel = input_size // 4
    cells = 4
    nodes: list[onnx.NodeProto] = []
    source = "data"
    inits = []
    if normalise_in_graph:  # mxnet-style: the graph takes raw 0..255 pixels and normalises them itself
        inits += [_init("mean_value", np.array(127.5)), _init("scale_value", np.array(1 / 127.5))]
        nodes.append(helper.make_node("Sub", [source, "mean_value"], ["centred"], name="Sub_0"))
        nodes.append(helper.make_node("Mul", ["centred", "scale_value"], ["scaled"], name="Mul_1"))
        source = "scaled"
    conv_w = rng.normal(0.0, 1.0 / np.sqrt(3 * kernel * kernel), (8, 3, kernel, kernel))
    gemm_w = rng.normal(0.0, weight_scale / np.sqrt(8 * cells * cells), (8 * cells * cells, outputs))
    gemm_b = rng.normal(0.0, 0.1, outputs) if bias is None else bias
    inits += [
        _init("conv_w", conv_w),
        _init("conv_b", np.zeros(8)),
        _init("fc_w", gemm_w),
        _init("fc_b", gemm_b),
    ]
    nodes += [
        helper.make_node(
            "Conv",
            [source, "conv_w", "conv_b"],
            ["feat"],
            name="conv_0",
            kernel_shape=[kernel] * 2,
            strides=[kernel] * 2,
        ),
        helper.make_node("Relu", ["feat"], ["feat_relu"], name="relu_0"),
        helper.make_node("Flatten", ["feat_relu"], ["flat"], name="flatten_0", axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["fc"], name="fc_0"),
    ]
    output = "fc"
    if activation is not None:
        nodes.append(helper.make_node(activation, [output], ["activated"], name="activation_0"))
        output = "activated"
    if out_scale != 1.0:
        inits.append(_init("out_scale", np.array(out_scale)))
        nodes.append(helper.make_node("Mul", [output, "out_scale"], ["output"], name="scale_output"))
        output = "output"
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [batch, 3, input_size, input_size])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, [batch, outputs])],
        initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def write_landmarks_106(path: Path, *, seed: int = 1) -> Path:
    """A 2d106det-like model: ``1x3x192x192 -> 1x212`` values in (-0.8, 0.8) (crop-normalised x, y pairs)."""
    rng = np.random.default_rng(seed)
    bias = rng.uniform(-0.6, 0.6, 212)
    model = _conv_head(rng, 192, 212, activation="Tanh", out_scale=0.8, bias=np.arctanh(bias / 0.8), name="tiny_2d106")
    return _save(model, path)


def write_landmarks_3d68(
    path: Path, *, seed: int = 2, rotation_degrees: tuple[float, float, float] = (0, 0, 0)
) -> Path:
    """A 1k3d68-like model: ``1x3x192x192 -> 1x3309``; its last 68 points are insightface's mean face.

    ``rotation_degrees`` turns that face about the x, y and z axes (in that order) before it is
    written, so that the pose insightface computes from it is not frontal.
    """
    from insightface.data import get_object

    rng = np.random.default_rng(seed)
    mean_shape = np.asarray(get_object("meanshape_68.pkl"), dtype=np.float64)  # (68, 3), y down, about [-0.6, 0.6]
    ax, ay, az = np.radians(rotation_degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    shape = mean_shape @ (rz @ ry @ rx).T
    bias = rng.normal(0.0, 0.1, 3309)
    bias[-68 * 3 :] = (shape * 0.6).reshape(-1)
    model = _conv_head(rng, 192, 3309, bias=bias, weight_scale=0.01, name="tiny_1k3d68")
    return _save(model, path)


def write_genderage(path: Path, *, seed: int = 3) -> Path:
    """A genderage-like model: ``1x3x96x96 -> 1x3``."""
    return _save(_conv_head(np.random.default_rng(seed), 96, 3, name="tiny_genderage"), path)


def write_arcface(path: Path, *, seed: int = 4, normalise_in_graph: bool = False, batch: int | str = "None") -> Path:
    """An ArcFace-like recogniser: ``Nx3x112x112 -> Nx512`` (``batch`` 1 gives a fixed-batch file).

    ``normalise_in_graph=True`` makes an mxnet-style file whose first nodes are ``Sub``/``Mul``:
    it takes raw 0..255 pixels, and insightface then uses mean 0 and std 1.
    """
    model = _conv_head(
        np.random.default_rng(seed), 112, 512, batch=batch, normalise_in_graph=normalise_in_graph, name="tiny_arcface"
    )
    return _save(model, path)


def write_pack(directory: Path, *, with_genderage: bool = True) -> Path:
    """A buffalo_l-like pack folder: det_10g, 2d106det, 1k3d68, genderage and w600k_r50 ``.onnx`` files."""
    directory = Path(directory)
    write_detector(directory / PACK_FILES["detector"])
    write_landmarks_106(directory / PACK_FILES["landmarks_106"])
    write_landmarks_3d68(directory / PACK_FILES["landmarks_3d68"])
    if with_genderage:
        write_genderage(directory / PACK_FILES["genderage"])
    write_arcface(directory / PACK_FILES["recognizer"])
    return directory


def bright_cell_image(cells: list[tuple[int, int, int]], size: int = 640) -> np.ndarray:
    """A black ``size`` x ``size`` RGB uint8 picture with grey squares the tiny detector finds.

    ``cells`` holds ``(column, row, grey level)``: the 32 px cell ``[32 * row, 32 * row + 32) x
    [32 * column, ...)`` gets that grey level; the detector reports a face centred at
    ``(32 * column, 32 * row)`` scoring about ``sigmoid(20 * (grey - 127.5) / 128 - 10)``.
    """
    image = np.zeros((size, size, 3), dtype=np.uint8)
    for column, row, grey in cells:
        image[32 * row : 32 * row + 32, 32 * column : 32 * column + 32] = grey
    return image


def expected_detection(column: int, row: int) -> tuple[np.ndarray, np.ndarray]:
    """The box ``(4,)`` and landmarks ``(5, 2)`` the tiny detector reports for the cell at ``(column, row)``."""
    centre = np.array([DETECTOR_STRIDE * column, DETECTOR_STRIDE * row], dtype=np.float32)
    half = DETECTOR_BOX_HALF * DETECTOR_STRIDE
    box = np.array([centre[0] - half, centre[1] - half, centre[0] + half, centre[1] + half], dtype=np.float32)
    return box, centre + DETECTOR_LANDMARK_OFFSETS * DETECTOR_STRIDE


def tiny_facemagic_config() -> GeneratorConfig:
    """A tiny random FaceMagic network: 32 px crops, three Style Mix Blocks (one per scale), soft mask head."""
    return GeneratorConfig(
        image_size=32, channels=8, max_channels=16, style_hidden=16, num_downsamples=2, blocks_per_scale=(1, 1, 1)
    )
