"""face-api's 68-point face landmark network as a torch module, and a batched landmarker around it.

The network (``face_landmark_68_model`` of @vladmandic/face-api, MIT; tfjs weights, uint8
quantised) takes a 112 x 112 RGB face crop and returns the 68 points of the iBUG 300-W markup
(jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67; dlib's order) as fractions of the
crop side. Layout (``(B, 3, 112, 112)`` in [0, 1])::

    x * 255 - (122.782, 117.001, 104.298), / 255
    4 dense blocks (32, 64, 128, 256 channels), each halving the size:
        a = relu(conv0(x))            (stride 2; a plain 3x3 convolution in the first block,
        b = sep1(a)                    depthwise-separable 3x3 convolutions otherwise)
        c = sep2(relu(a + b))
        d = sep3(relu(a + b + c))
        out = relu(a + b + c + d)                                             -> 256 x 7 x 7
    7x7 average pool, fully connected 256 -> 136 = (x, y) of 68 points in [0, 1]

TensorFlow's "same" padding is kept exactly: a stride-2 3x3 convolution of an even-sized input
pads one row and column at the bottom and right only.

:class:`Landmarker68` feeds it face crops framed from the five detector landmarks (a
similarity fit, so the crop is upright) and maps the points back to the image. It works on
batches, on the images' device, and is differentiable (it serves as the landmark teacher of
training, :meth:`locate_crops`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .align import estimate_similarity, face_template, invert_affine, transform_points, warp_affine
from .errors import BadInputError, ModelIntegrityError
from .tfjs import find_manifest, read_tfjs_weights
from .types import Face

logger = logging.getLogger(__name__)

#: Registry name of the model.
MODEL_NAME = "faceapi_landmark68"
TFJS_MODEL_NAME = "face_landmark_68_model"
INPUT_SIZE = 112
NUM_POINTS = 68
MEAN_RGB = (122.782, 117.001, 104.298)
DENSE_CHANNELS = (32, 64, 128, 256)

#: How a face is framed for the network: the ArcFace 112 template, scaled by this factor about the crop
#: centre and moved down by ``FRAMING_SHIFT`` of the side (negative: up). Chosen on 60 CelebA photos (YuNet
#: landmarks) among 22 framings as the one whose 68 points agree best with dlib's own 68-point shape
#: predictor: median error 0.07 of the inter-ocular distance over points 17-67, 0.04 of the face size for
#: the five detector points.
FRAMING_SCALE = 0.95
FRAMING_SHIFT = -0.10

#: 68-point indices of the five points of ``Face.landmarks_5`` (eye centres are means of the six eye points).
LEFT_EYE = tuple(range(36, 42))
RIGHT_EYE = tuple(range(42, 48))
NOSE_TIP = 30
MOUTH_LEFT, MOUTH_RIGHT = 48, 54


def five_points(landmarks_68: Tensor) -> Tensor:
    """``(B, 5, 2)``: eye centres, nose tip and mouth corners of ``(B, 68, 2)`` landmarks (``Face.landmarks_5``)."""
    return torch.stack(
        [
            landmarks_68[:, list(LEFT_EYE)].mean(dim=1),
            landmarks_68[:, list(RIGHT_EYE)].mean(dim=1),
            landmarks_68[:, NOSE_TIP],
            landmarks_68[:, MOUTH_LEFT],
            landmarks_68[:, MOUTH_RIGHT],
        ],
        dim=1,
    )


def _same_pad(x: Tensor, stride: int) -> Tensor:
    """TensorFlow's "same" padding for a 3x3 kernel: 1 on every side at stride 1; at stride 2 (even size) 0 before,
    1 after."""
    if stride == 1:
        return F.pad(x, (1, 1, 1, 1))
    total_h = max(3 - (x.shape[2] % 2 or 2), 0)
    total_w = max(3 - (x.shape[3] % 2 or 2), 0)
    return F.pad(x, (total_w // 2, total_w - total_w // 2, total_h // 2, total_h - total_h // 2))


class SeparableConv(nn.Module):
    """Depthwise 3x3 (no bias) then pointwise 1x1 convolution with a bias, TensorFlow "same" padding."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, stride=stride, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.pointwise(self.depthwise(_same_pad(x, self.stride)))
        return out


class PlainConv(nn.Module):
    """A 3x3 convolution with a bias, TensorFlow "same" padding (the first layer of the network)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride=stride)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.conv(_same_pad(x, self.stride))
        return out


class DenseBlock(nn.Module):
    """face-api's ``denseBlock4`` (see the module docstring)."""

    def __init__(self, in_channels: int, channels: int, *, first: bool) -> None:
        super().__init__()
        self.conv0: nn.Module = (
            PlainConv(in_channels, channels, 2) if first else SeparableConv(in_channels, channels, 2)
        )
        self.conv1 = SeparableConv(channels, channels, 1)
        self.conv2 = SeparableConv(channels, channels, 1)
        self.conv3 = SeparableConv(channels, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        a = F.relu(self.conv0(x))
        b = self.conv1(a)
        c = self.conv2(F.relu(a + b))
        d = self.conv3(F.relu(a + b + c))
        return F.relu(a + b + c + d)


class FaceLandmark68Net(nn.Module):
    """``(B, 3, 112, 112)`` RGB crops in [0, 1] -> ``(B, 68, 2)`` points as fractions of the crop side."""

    mean: Tensor

    def __init__(self) -> None:
        super().__init__()
        blocks = []
        channels = 3
        for number, width in enumerate(DENSE_CHANNELS):
            blocks.append(DenseBlock(channels, width, first=number == 0))
            channels = width
        self.dense = nn.ModuleList(blocks)
        self.fc = nn.Linear(channels, 2 * NUM_POINTS)
        self.register_buffer("mean", torch.tensor(MEAN_RGB).reshape(1, 3, 1, 1), persistent=False)

    def forward(self, crops: Tensor) -> Tensor:
        x = (crops * 255.0 - self.mean.to(crops.dtype)) / 255.0
        for block in self.dense:
            x = block(x)
        x = F.avg_pool2d(x, 7, 2).flatten(1)
        out: Tensor = self.fc(x).reshape(-1, NUM_POINTS, 2)
        return out

    def load_tfjs(self, weights: Mapping[str, np.ndarray]) -> FaceLandmark68Net:
        """Set the weights from face-api's tfjs tensors (``dense{i}/conv{j}/...``, ``fc/weights``, ``fc/bias``)."""

        def put(parameter: Tensor, value: np.ndarray, name: str) -> None:
            if tuple(parameter.shape) != value.shape:
                raise ModelIntegrityError(
                    f"weight {name} has shape {value.shape}, the landmark network needs {tuple(parameter.shape)}",
                    fix="give face-api's face_landmark_68_model files",
                )
            parameter.copy_(torch.from_numpy(np.ascontiguousarray(value)))

        try:
            with torch.no_grad():
                for number, block in enumerate(self.dense):
                    for j in range(4):
                        prefix = f"dense{number}/conv{j}"
                        layer = getattr(block, f"conv{j}")
                        if isinstance(layer, PlainConv):
                            put(layer.conv.weight, weights[f"{prefix}/filters"].transpose(3, 2, 0, 1), prefix)
                            put(layer.conv.bias, weights[f"{prefix}/bias"], prefix)  # type: ignore[arg-type]
                        else:
                            put(layer.depthwise.weight, weights[f"{prefix}/depthwise_filter"].transpose(2, 3, 0, 1),
                                prefix)  # fmt: skip
                            put(layer.pointwise.weight, weights[f"{prefix}/pointwise_filter"].transpose(3, 2, 0, 1),
                                prefix)  # fmt: skip
                            put(layer.pointwise.bias, weights[f"{prefix}/bias"], prefix)  # type: ignore[arg-type]
                put(self.fc.weight, weights["fc/weights"].T, "fc/weights")
                put(self.fc.bias, weights["fc/bias"], "fc/bias")
        except KeyError as error:
            raise ModelIntegrityError(
                f"the tfjs weights have no {error.args[0]!r}: they are not face-api's 68-point landmark model",
                fix="give the folder of face_landmark_68_model-weights_manifest.json",
            ) from error
        return self


def load_landmark68_net(path: str | Path, *, device: torch.device | str = "cpu") -> FaceLandmark68Net:
    """The network from a tfjs manifest (or its folder); frozen, in eval mode."""
    manifest = find_manifest(Path(path), TFJS_MODEL_NAME)
    network = FaceLandmark68Net().load_tfjs(read_tfjs_weights(manifest))
    logger.info("face-api 68-point landmark network loaded from %s (%s)", manifest, device)
    return network.to(device).eval().requires_grad_(False)


def framing_points(size: int = INPUT_SIZE) -> np.ndarray:
    """Where the five landmarks sit in the network's input crop (see :data:`FRAMING_SCALE`)."""
    unit = face_template("arcface", 112).astype(np.float64) / 112.0
    centre = np.array([0.5, 0.5])
    points = (unit - centre) * FRAMING_SCALE + centre + np.array([0.0, FRAMING_SHIFT])
    framed: np.ndarray = (points * size - 0.5).astype(np.float32)
    return framed


class Landmarker68:
    """68 face landmarks for detected faces, in batches, on the device of the network.

    ``locate(images, faces)`` returns ``(B, 68, 2)`` image pixels; ``locate_crops(crops, template=...)``
    returns points of aligned generator crops as fractions of the crop side (differentiable).
    """

    input_size = INPUT_SIZE
    name = MODEL_NAME

    def __init__(self, network: FaceLandmark68Net) -> None:
        self.network = network

    @classmethod
    def from_file(cls, path: str | Path, *, device: torch.device | str = "cpu") -> Landmarker68:
        return cls(load_landmark68_net(path, device=device))

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device: torch.device | str) -> Landmarker68:
        self.network = self.network.to(device)
        return self

    def train(self, mode: bool = True) -> Landmarker68:  # frozen: always eval
        self.network.eval()
        return self

    def _run(self, crops: Tensor) -> Tensor:
        """Points ``(B, 68, 2)`` in pixels of the ``INPUT_SIZE`` crops."""
        out: Tensor = self.network(crops.to(device=self.device, dtype=torch.float32)) * INPUT_SIZE - 0.5
        return out

    def _from_points(self, images: Tensor, points: Tensor, image_index: Tensor) -> Tensor:
        matrices = estimate_similarity(points.double(), framing_points()).to(images.device, torch.float32)
        crops = warp_affine(images, matrices, (INPUT_SIZE, INPUT_SIZE), image_index=image_index)
        located = self._run(crops).to(images.device)
        return transform_points(located, invert_affine(matrices))

    def locate(self, images: Tensor, faces: Sequence[Face]) -> Tensor:
        """The 68 landmarks ``(B, 68, 2)`` (image pixels, float32, on the images' device) of ``faces``."""
        if not faces:
            return images.new_zeros((0, NUM_POINTS, 2))
        if any(not 0 <= face.image_index < images.shape[0] for face in faces):
            raise BadInputError(
                f"a face refers to an image outside the batch of {images.shape[0]}",
                where="68-point landmarks",
                fix="locate faces in the image batch they were detected in",
            )
        image_index = torch.tensor([face.image_index for face in faces], device=images.device)
        points = torch.from_numpy(np.stack([np.asarray(face.landmarks_5, np.float32) for face in faces]))
        with torch.no_grad():
            return self._from_points(images, points.to(images.device), image_index)

    def locate_crops(self, crops: Tensor, *, template: str) -> Tensor:
        """Landmarks ``(B, 68, 2)`` of crops aligned with ``template``, as fractions of the crop side (differentiable).

        The crop's template points are framed like detector landmarks (one pass, no refinement).
        """
        if crops.ndim != 4 or crops.shape[1] != 3:
            raise BadInputError(f"expected (B, 3, S, S) crops, got {tuple(crops.shape)}", where="landmark model")
        from .training.teachers import crop_to_teacher_matrix, warp_for_teacher

        size = int(crops.shape[-1])
        matrix = crop_to_teacher_matrix(template, size, framing_points(), device=crops.device)
        framed = warp_for_teacher(crops, matrix, INPUT_SIZE)
        points = self._run(framed).to(crops.device)
        back = invert_affine(matrix.double()).to(torch.float32).expand(points.shape[0], 2, 3)
        return transform_points(points, back) / float(size)


#: dlib's 68-point mean face (points 17-67, ``get_face_chip_details`` in dlib/image_transforms/interpolation.h),
#: and the points dlib fits its face chip to (no brows, no lower lip).
DLIB_MEAN_FACE_17_67 = np.array(
    [
        [0.000213256, 0.106454], [0.0752622, 0.038915], [0.18113, 0.0187482], [0.29077, 0.0344891],
        [0.393397, 0.0773906], [0.586856, 0.0773906], [0.689483, 0.0344891], [0.799124, 0.0187482],
        [0.904991, 0.038915], [0.98004, 0.106454], [0.490127, 0.203352], [0.490127, 0.307009],
        [0.490127, 0.409805], [0.490127, 0.515625], [0.36688, 0.587326], [0.426036, 0.609345],
        [0.490127, 0.628106], [0.554217, 0.609345], [0.613373, 0.587326], [0.121737, 0.216423],
        [0.187122, 0.178758], [0.265825, 0.179852], [0.334606, 0.231733], [0.260918, 0.245099],
        [0.182743, 0.244077], [0.645647, 0.231733], [0.714428, 0.179852], [0.793132, 0.178758],
        [0.858516, 0.216423], [0.79751, 0.244077], [0.719335, 0.245099], [0.254149, 0.780233],
        [0.340985, 0.745405], [0.428858, 0.727388], [0.490127, 0.742578], [0.551395, 0.727388],
        [0.639268, 0.745405], [0.726104, 0.780233], [0.642159, 0.864805], [0.556721, 0.902192],
        [0.490127, 0.909281], [0.423532, 0.902192], [0.338094, 0.864805], [0.290379, 0.784792],
        [0.428096, 0.778746], [0.490127, 0.785343], [0.552157, 0.778746], [0.689874, 0.784792],
        [0.553364, 0.824182], [0.490127, 0.831803], [0.42689, 0.824182],
    ],
    dtype=np.float64,
)  # fmt: skip
DLIB_CHIP_POINTS = tuple(i for i in range(17, 68) if not (17 <= i <= 26 or 55 <= i <= 59 or 65 <= i <= 67))


def dlib_chip_matrices(landmarks_68: Tensor, size: int = 150, padding: float = 0.25) -> Tensor:
    """Image -> chip ``(B, 2, 3)`` similarity transforms of dlib's ``get_face_chip_details(shape, size, padding)``."""
    mean_face = DLIB_MEAN_FACE_17_67[[i - 17 for i in DLIB_CHIP_POINTS]]
    template = torch.from_numpy((padding + mean_face) / (2 * padding + 1) * size)
    return estimate_similarity(landmarks_68[:, list(DLIB_CHIP_POINTS)].double(), template).to(torch.float32)
