"""Frozen, differentiable teachers for the training losses: an ArcFace recogniser and a landmark model.

Both are the ONNX files the analyzer runs (``w600k_r50.onnx``, ``2d106det.onnx``...)
converted into torch modules by :class:`~.onnx_graph.OnnxGraphModule`, so that the identity
and landmark losses can send gradients back into the generator. Every conversion is
checked against onnxruntime on a random input when it is loaded (:func:`load_recognizer`,
:func:`load_landmark_model`); a mismatch raises ``ModelIntegrityError``.

Pre-processing follows insightface's runners exactly (they are the reference the analyzer
uses): pixels are RGB 0..255, minus ``input_mean``, divided by ``input_std``, where a graph
whose first nodes are named ``Sub``/``Mul`` (``_minus``/``_mul`` in mxnet exports) normalises
itself (mean 0, std 1) and the others get 127.5 / 127.5 (recognisers) or 127.5 / 128
(landmark models).

The same losses also take the permissively licensed torch teachers: dlib's ResNet recogniser
(:class:`~facemagic_core.dlib_resnet.DlibRecognizer`, ``dlib_resnet_v1``) and face-api's 68-point
landmark network (:class:`~facemagic_core.landmarks68.Landmarker68`, ``faceapi_landmark68``);
:func:`load_identity_teacher` and :func:`load_landmark_teacher` pick the right one by name.

Teachers take crops of the *generator*: :meth:`RecognizerTeacher.embed_crops` and
:meth:`LandmarkTeacher.locate_crops` warp a ``(B, 3, S, S)`` crop aligned with the
generator's template to the teacher's own framing (antialiased when it shrinks), in torch.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Protocol, Self, TypeVar

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..align import estimate_similarity, face_template, warp_affine
from ..errors import BadInputError, ModelIntegrityError
from ..types import EMBEDDING_DIM
from .onnx_graph import OnnxGraphModule, check_against_onnxruntime

logger = logging.getLogger(__name__)

#: Largest |torch - onnxruntime| accepted at load time, relative to the largest output value.
CONVERSION_TOLERANCE = 1e-3
#: insightface shows a landmark model 1.5 face boxes; an ArcFace-aligned crop is taken as one box.
LANDMARK_FRAMING = 1.5
#: Below this scale a crop is first shrunk with an antialiased resize before the affine warp.
ANTIALIAS_BELOW = 0.75


class IdentityTeacher(Protocol):
    """What the identity losses need: L2-normalised embeddings of generator crops, differentiably."""

    def embed_crops(self, crops: Tensor, *, template: str) -> Tensor: ...

    def to(self, device: torch.device) -> IdentityTeacher: ...


class LandmarkTeacherLike(Protocol):
    """What the landmark loss needs: landmarks of generator crops in a fixed unit, differentiably."""

    def locate_crops(self, crops: Tensor, *, template: str) -> Tensor: ...

    def to(self, device: torch.device) -> LandmarkTeacherLike: ...


def _normalises_itself(model: onnx.ModelProto) -> bool:
    """insightface's rule: a Sub and a Mul node among the first eight nodes."""
    names = [node.name for node in model.graph.node[:8]]
    has_sub = any(name.startswith(("Sub", "_minus")) for name in names)
    has_mul = any(name.startswith(("Mul", "_mul")) for name in names)
    return has_sub and has_mul


def _input_side(graph: OnnxGraphModule, default: int) -> int:
    shape = graph.input_shapes[0] if graph.input_shapes else ()
    if len(shape) == 4 and isinstance(shape[2], int) and shape[2] > 0:
        return int(shape[2])
    return default


def _fixed_batch(graph: OnnxGraphModule) -> int | None:
    shape = graph.input_shapes[0] if graph.input_shapes else ()
    return int(shape[0]) if shape and isinstance(shape[0], int) and shape[0] > 0 else None


def crop_to_teacher_matrix(
    template: str, size: int, teacher_points: np.ndarray, *, device: torch.device | None = None
) -> Tensor:
    """The ``(1, 2, 3)`` similarity taking a generator crop (``template``, ``size``) to ``teacher_points``."""
    source = torch.from_numpy(face_template(template, size).astype(np.float64))[None]  # type: ignore[arg-type]
    matrix = estimate_similarity(source, teacher_points.astype(np.float32))
    return matrix.to(device=device, dtype=torch.float32)


def warp_for_teacher(crops: Tensor, matrix: Tensor, out_size: int) -> Tensor:
    """Warp ``(B, 3, S, S)`` crops through one ``(1, 2, 3)`` matrix to ``out_size`` squares, differentiably.

    When the matrix shrinks by more than :data:`ANTIALIAS_BELOW`, the crops are first resized
    with an antialiased bilinear filter to about the final scale (a plain bilinear warp would
    alias), and the matrix is composed with that resize.
    """
    size = crops.shape[-1]
    scale = math.sqrt(abs(float(torch.linalg.det(matrix[0, :, :2].double()))))
    if scale < ANTIALIAS_BELOW:
        resized_side = max(out_size, round(size * scale))
        crops = F.interpolate(crops, size=(resized_side, resized_side), mode="bilinear", antialias=True)
        factor = size / resized_side  # x_S = (x_R + 0.5) * factor - 0.5
        resize = torch.tensor(
            [[factor, 0.0, 0.5 * factor - 0.5], [0.0, factor, 0.5 * factor - 0.5], [0.0, 0.0, 1.0]],
            dtype=torch.float64,
            device=matrix.device,
        )
        matrix = (matrix[0].double() @ resize)[None].to(torch.float32)
    batch_matrix = matrix.to(crops.device).expand(crops.shape[0], 2, 3)
    return warp_affine(crops, batch_matrix, (out_size, out_size))


class OnnxTeacher(nn.Module):
    """An ONNX model as a frozen torch module that takes RGB crops in [0, 1].

    Pixels are scaled to 0..255, minus ``input_mean``, divided by ``input_std`` (insightface's
    rule, see the module docstring). A graph saved with a batch of 1 runs crop by crop.
    """

    #: Input side when the graph does not declare one.
    default_side = 112

    def __init__(self, graph: OnnxGraphModule, *, input_mean: float, input_std: float, name: str) -> None:
        super().__init__()
        self.graph = graph
        self.input_mean = float(input_mean)
        self.input_std = float(input_std)
        self.input_size = _input_side(graph, self.default_side)
        self.fixed_batch = _fixed_batch(graph)
        self.name = name
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Self:  # a teacher is always in eval mode
        return super().train(False)

    def run_graph(self, crops: Tensor) -> Tensor:
        """The graph's first output for every crop, flattened: ``(B, -1)``."""
        pixels = (crops * 255.0 - self.input_mean) / self.input_std
        if self.fixed_batch == 1 and pixels.shape[0] != 1:
            return torch.cat([self.graph(pixels[i : i + 1])[0].reshape(1, -1) for i in range(pixels.shape[0])])
        output: Tensor = self.graph(pixels)[0]
        return output.reshape(crops.shape[0], -1)


class RecognizerTeacher(OnnxTeacher):
    """ArcFace recogniser as a frozen torch module: aligned crops -> raw embeddings ``(B, D)``.

    ``forward`` takes ``(B, 3, input_size, input_size)`` RGB crops in [0, 1] aligned to the
    ArcFace template (what the analyzer feeds the ONNX file) and returns what the file returns.
    """

    default_side = 112

    def forward(self, crops: Tensor) -> Tensor:
        return self.run_graph(crops)

    def embed_crops(self, crops: Tensor, *, template: str) -> Tensor:
        """L2-normalised embeddings ``(B, D)`` of generator crops aligned with ``template`` (any size)."""
        size = int(crops.shape[-1])
        points = face_template("arcface", self.input_size)
        matrix = crop_to_teacher_matrix(template, size, points, device=crops.device)
        aligned = warp_for_teacher(crops, matrix, self.input_size)
        return F.normalize(self(aligned).float(), dim=-1)


class LandmarkTeacher(OnnxTeacher):
    """Landmark model (2d106det / 1k3d68 layout) as a frozen torch module.

    ``forward`` takes ``(B, 3, input_size, input_size)`` RGB crops in [0, 1] framed as
    insightface frames them and returns ``(B, N, 2)`` points in pixels of that input.
    """

    default_side = 192

    def forward(self, crops: Tensor) -> Tensor:
        raw = self.run_graph(crops)
        # 1k3d68 gives 1103 (x, y, z) rows, the last 68 are the landmarks; 2d106det 106 (x, y) rows
        width = raw.shape[1]
        points = raw.reshape(raw.shape[0], -1, 3)[:, -68:, :2] if width == 3309 else raw.reshape(raw.shape[0], -1, 2)
        located: Tensor = (points + 1) * float(self.input_size // 2)
        return located

    def teacher_points(self) -> np.ndarray:
        """Where the five ArcFace points sit in this model's input (insightface's framing)."""
        unit = face_template("arcface", 112).astype(np.float64)
        scale = self.input_size / LANDMARK_FRAMING / 112
        return ((unit - 55.5) * scale + (self.input_size - 1) / 2).astype(np.float32)

    def locate_crops(self, crops: Tensor, *, template: str) -> Tensor:
        """Landmarks ``(B, N, 2)`` of generator crops, in units of the model's input side (0..1)."""
        size = int(crops.shape[-1])
        matrix = crop_to_teacher_matrix(template, size, self.teacher_points(), device=crops.device)
        framed = warp_for_teacher(crops, matrix, self.input_size)
        points: Tensor = self(framed).float() / float(self.input_size)
        return points


def _load_graph(path: Path, what: str) -> tuple[onnx.ModelProto, OnnxGraphModule]:
    file = Path(path)
    if not file.is_file():
        raise BadInputError(
            f"the {what} model file does not exist",
            where=str(file),
            fix="download it with 'facemagic models download' or give the path of the .onnx file",
        )
    try:
        model = onnx.load(str(file))
    except Exception as error:  # protobuf's DecodeError and friends
        raise ModelIntegrityError(
            f"the {what} model cannot be read ({type(error).__name__}: {error})",
            where=str(file),
            fix="the file is truncated or not an ONNX model: download it again",
        ) from error
    return model, OnnxGraphModule(model, where=str(file))


def _check(teacher: OnnxTeacher, path: Path, seed: int) -> float:
    generator = torch.Generator().manual_seed(seed)
    side = teacher.input_size
    sample = torch.rand(teacher.fixed_batch or 2, 3, side, side, generator=generator)
    pixels = (sample * 255.0 - teacher.input_mean) / teacher.input_std
    difference = check_against_onnxruntime(teacher.graph, path, [pixels])
    with torch.no_grad():
        reference = float(torch.stack([out.abs().max() for out in teacher.graph(pixels)]).max())
    if not difference <= CONVERSION_TOLERANCE * max(1.0, reference):
        raise ModelIntegrityError(
            f"the torch conversion of the teacher differs from onnxruntime by {difference:.3g}",
            where=str(path),
            fix="report this model; training with it would optimise against wrong numbers",
        )
    return difference


TeacherT = TypeVar("TeacherT", bound=OnnxTeacher)


def _load_teacher(
    kind: type[TeacherT],
    path: str | Path,
    *,
    what: str,
    input_std: float,
    seed: int,
    device: torch.device | str,
    check: bool,
    name: str | None,
) -> TeacherT:
    """Convert ``path`` to a frozen ``kind`` teacher and, with ``check``, compare it with onnxruntime."""
    file = Path(path)
    model, graph = _load_graph(file, what)
    mean, std = (0.0, 1.0) if _normalises_itself(model) else (127.5, input_std)
    teacher = kind(graph, input_mean=mean, input_std=std, name=name or file.stem)
    if check:
        difference = _check(teacher, file, seed)
        logger.info("%s teacher %s matches onnxruntime (max difference %.2g)", what, file.name, difference)
    return teacher.to(device)


def load_recognizer(
    path: str | Path, *, device: torch.device | str = "cpu", check: bool = True, name: str | None = None
) -> RecognizerTeacher:
    """The recogniser ONNX file as a frozen :class:`RecognizerTeacher`, checked against onnxruntime."""
    return _load_teacher(
        RecognizerTeacher, path, what="recogniser", input_std=127.5, seed=0, device=device, check=check, name=name
    )


def load_landmark_model(
    path: str | Path, *, device: torch.device | str = "cpu", check: bool = True, name: str | None = None
) -> LandmarkTeacher:
    """The landmark ONNX file as a frozen :class:`LandmarkTeacher`, checked against onnxruntime."""
    return _load_teacher(
        LandmarkTeacher, path, what="landmark", input_std=128.0, seed=1, device=device, check=check, name=name
    )


def resolve_teacher_file(name_or_path: str, model_dir: Path) -> Path:
    """A registry name (``arcface_w600k_r50``), ``pack/file`` (``buffalo_l/2d106det.onnx``) or a file path."""
    from ..hub import MODELS, ensure_model

    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        return candidate
    if name_or_path in MODELS:
        return ensure_model(name_or_path, model_dir)
    head, _, rest = name_or_path.partition("/")
    if rest and head in MODELS and MODELS[head].is_pack:
        return ensure_model(head, model_dir) / rest
    if (model_dir / name_or_path).is_file():
        return model_dir / name_or_path
    raise BadInputError(
        f"no teacher model called {name_or_path!r}",
        where=str(model_dir),
        fix="give a registry name (arcface_w600k_r50), pack/file (buffalo_l/2d106det.onnx) or an .onnx path",
    )


#: Teacher names that are torch models of their own, not ONNX files.
TORCH_RECOGNIZERS = ("dlib_resnet_v1",)
TORCH_LANDMARK_MODELS = ("faceapi_landmark68",)


def load_identity_teacher(name_or_path: str, model_dir: Path, *, device: torch.device | str = "cpu") -> IdentityTeacher:
    """The identity teacher ``name_or_path``: ``dlib_resnet_v1`` (or a dlib ``.dat`` / tfjs manifest), else an
    ONNX recogniser (registry name, pack/file or path) converted and checked by :func:`load_recognizer`."""
    from ..dlib_resnet import load_dlib_recognizer

    candidate = Path(name_or_path).expanduser()
    if name_or_path in TORCH_RECOGNIZERS or candidate.suffix in (".dat", ".json"):
        from ..hub import resolve_dlib_recognizer

        path = candidate if candidate.suffix in (".dat", ".json") else resolve_dlib_recognizer(model_dir)
        return load_dlib_recognizer(path, device=device)
    return load_recognizer(resolve_teacher_file(name_or_path, model_dir), device=device, name=name_or_path)


def load_landmark_teacher(
    name_or_path: str, model_dir: Path, *, device: torch.device | str = "cpu"
) -> LandmarkTeacherLike:
    """The landmark teacher: ``faceapi_landmark68`` (or a tfjs manifest / its folder), else an ONNX landmark model."""
    from ..landmarks68 import Landmarker68

    candidate = Path(name_or_path).expanduser()
    if name_or_path in TORCH_LANDMARK_MODELS or candidate.suffix == ".json":
        from ..hub import ensure_model

        path = candidate if candidate.suffix == ".json" else ensure_model("faceapi_landmark68", model_dir)
        return Landmarker68.from_file(path, device=device)
    return load_landmark_model(resolve_teacher_file(name_or_path, model_dir), device=device, name=name_or_path)


__all__ = [
    "EMBEDDING_DIM",
    "IdentityTeacher",
    "LandmarkTeacher",
    "LandmarkTeacherLike",
    "OnnxTeacher",
    "RecognizerTeacher",
    "load_identity_teacher",
    "load_landmark_model",
    "load_landmark_teacher",
    "load_recognizer",
    "resolve_teacher_file",
    "warp_for_teacher",
]
