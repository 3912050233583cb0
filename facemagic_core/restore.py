"""Face restoration: GFPGAN 1.4, CodeFormer, GPEN-BFR and RestoreFormer++ (ONNX) on the swapped faces.

Pipeline place: after the generator, before paste-back, in crop space. :func:`restore_swap`
re-aligns every swapped face to the FFHQ template at the restorer's size
(:func:`facemagic_core.pipeline.realign_swap`: the swapped crop laid over its target
surroundings), restores the whole batch, mixes it with the unrestored crop by ``weight``
(visibility) and returns :class:`~facemagic_core.blend.FaceCrops` that
:func:`~facemagic_core.pipeline.blend_swap` pastes back with ``finished=``. Only swapped faces
are restored; nothing outside the face mask changes.

The ONNX files (as facefusion hosts them, see MODELS.md and the registry in hub.py):

- image input ``input`` ``(1 or B, 3, S, S)`` RGB in [-1, 1], S = 512 for GFPGAN, CodeFormer
  and RestoreFormer++, 256 / 512 / 1024 / 2048 for GPEN-BFR; output the same layout, range
  and size (the first output);
- CodeFormer only: a float64 ``weight`` input of shape ``(1,)``, CodeFormer's fidelity ``w``
  (0: the most restoration, 1: the closest to the input face).

A file whose batch axis is a fixed 1 is called once per face, a dynamic one once per chunk
of ``max_batch`` faces. With ``runtime="torch"`` (the default on a CUDA device, where the
graph converts) the graph runs in torch through :class:`~facemagic_core.onnx_graph.OnnxGraphModule`,
batched on the device, after it was checked against onnxruntime on one input at load.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .blend import FaceCrops
from .errors import BadInputError, ModelIntegrityError
from .runtime import ProviderSpec, create_session

if TYPE_CHECKING:
    import onnxruntime

    from .generators.base import SwapOutput
    from .onnx_graph import OnnxGraphModule
    from .pipeline import SwapBatch

logger = logging.getLogger(__name__)

#: Face restorers of the registry (hub.MODELS), by name.
RestorerName = Literal[
    "gfpgan_1.4",
    "codeformer",
    "gpen_bfr_256",
    "gpen_bfr_512",
    "gpen_bfr_1024",
    "gpen_bfr_2048",
    "restoreformer_plus_plus",
]
RESTORER_NAMES: tuple[str, ...] = get_args(RestorerName)

#: Where a restorer runs: onnxruntime, torch (the graph converted), or torch when the device is a GPU and it converts.
RestorerRuntime = Literal["auto", "onnxruntime", "torch"]
RESTORER_RUNTIMES: tuple[str, ...] = get_args(RestorerRuntime)

#: CodeFormer's fidelity when none is given (CodeFormer's own inference default).
DEFAULT_FIDELITY = 0.5
#: Faces per call of a dynamic-batch restorer.
DEFAULT_MAX_BATCH = 4
#: Largest difference (in [-1, 1] units) between the torch conversion and onnxruntime that is accepted.
TORCH_TOLERANCE = 1e-3

_NUMPY_TYPES: dict[str, Any] = {"tensor(float)": np.float32, "tensor(float16)": np.float16}


@dataclass(frozen=True)
class RestorerSignature:
    """What a restorer's session takes and gives."""

    image_input: str
    image_type: Any  # numpy float type of the image input
    weight_input: str | None  # CodeFormer's fidelity input (float64), else None
    output: str
    input_size: int
    fixed_batch: bool


def read_restorer_signature(session: onnxruntime.InferenceSession, *, where: str) -> RestorerSignature:
    """The image input (rank 4, 3 channels, square), the optional ``weight`` input and the image output."""
    inputs = list(session.get_inputs())
    images = [item for item in inputs if len(item.shape) == 4 and item.shape[1] in (3, "3")]
    others = [item for item in inputs if item not in images]
    weights = [item for item in others if item.name == "weight" or item.type == "tensor(double)"]
    outputs = [item for item in session.get_outputs() if len(item.shape) == 4]
    described = ", ".join(f"{item.name} {item.shape} {item.type}" for item in inputs)
    if len(images) != 1 or len(others) != len(weights) or len(weights) > 1 or not outputs:
        raise BadInputError(
            f"this ONNX file is not a face restorer: expected an image input (1, 3, S, S) and optionally a float64 "
            f"'weight', and an image output; got inputs {described}",
            where=where,
            fix="use gfpgan_1.4, codeformer, gpen_bfr_* or restoreformer_plus_plus (see 'facemagic models list')",
        )
    image = images[0]
    height, width = image.shape[2], image.shape[3]
    if not (isinstance(height, int) and height == width and height >= 16):
        raise BadInputError(
            f"the restorer's image input is not a fixed square size: {image.shape}",
            where=where,
            fix="use a restorer exported at a fixed size (facefusion's files are)",
        )
    return RestorerSignature(
        image_input=image.name,
        image_type=_NUMPY_TYPES.get(image.type, np.float32),
        weight_input=weights[0].name if weights else None,
        output=outputs[0].name,
        input_size=int(height),
        fixed_batch=isinstance(image.shape[0], int),
    )


def _check_fidelity(fidelity: float) -> float:
    if isinstance(fidelity, bool) or not isinstance(fidelity, int | float) or not math.isfinite(fidelity):
        raise BadInputError(f"the fidelity must be a number from 0 to 1, got {fidelity!r}", where="face restorer")
    if not 0.0 <= float(fidelity) <= 1.0:
        raise BadInputError(f"the fidelity must lie between 0 and 1, got {fidelity}", where="face restorer")
    return float(fidelity)


class FaceRestorer:
    """One face restorer ONNX file, ready to restore batches of FFHQ-aligned crops (see the module docstring)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        providers: list[ProviderSpec] | None = None,
        device: torch.device | str | None = None,
        runtime: RestorerRuntime = "auto",
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        if runtime not in RESTORER_RUNTIMES:
            raise BadInputError(
                f"unknown runtime {runtime!r}", where="face restorer", fix="use auto, onnxruntime or torch"
            )
        self.path = Path(path)
        self.name = name or self.path.stem
        self.session = create_session(self.path, providers=providers, what=f"face restorer {self.name}")
        self.signature = read_restorer_signature(self.session, where=str(self.path))
        self.input_size = self.signature.input_size
        self.has_fidelity = self.signature.weight_input is not None
        self.max_batch = max(1, int(max_batch))
        from .generators.onnx_swapper import torch_device_of

        self.device = torch.device(device) if device is not None else torch_device_of(self.session)
        self.graph: OnnxGraphModule | None = None
        wants_torch = runtime == "torch" or (runtime == "auto" and self.device.type == "cuda")
        if wants_torch:
            self.graph = self._convert(required=runtime == "torch")
        logger.info(
            "face restorer %s: %d px, %s, %s batch, runs in %s on %s",
            self.name,
            self.input_size,
            "with fidelity input" if self.has_fidelity else "no fidelity input",
            "fixed" if self.signature.fixed_batch else "dynamic",
            "torch" if self.graph is not None else "onnxruntime " + self.session.get_providers()[0],
            self.device,
        )

    def __repr__(self) -> str:
        return (
            f"FaceRestorer({self.name!r}, {self.input_size} px, {'torch' if self.graph is not None else 'onnxruntime'})"
        )

    def _convert(self, *, required: bool) -> OnnxGraphModule | None:
        """The graph as a torch module on ``self.device``, checked against onnxruntime; None (or raise) if it fails."""
        from .generators.onnx_swapper import load_onnx_model
        from .onnx_graph import OnnxGraphModule

        try:
            module = OnnxGraphModule(load_onnx_model(self.path), where=str(self.path)).to(self.device)
            probe = torch.rand((1, 3, self.input_size, self.input_size), generator=torch.Generator().manual_seed(0))
            probe = probe * 2 - 1
            expected = self._run_onnxruntime(probe.numpy(), DEFAULT_FIDELITY)
            got = self._run_torch(module, probe.to(self.device), DEFAULT_FIDELITY).cpu().numpy()
            difference = float(np.abs(expected.astype(np.float64) - got).max())
        except (ModelIntegrityError, RuntimeError, ValueError) as error:
            if required:
                raise
            logger.warning("face restorer %s does not convert to torch (%s); it runs in onnxruntime", self.name, error)
            return None
        if not difference <= TORCH_TOLERANCE:
            message = f"the torch conversion of {self.name} differs from onnxruntime by {difference:.2g}"
            if required:
                raise ModelIntegrityError(message, where=str(self.path), fix="use runtime onnxruntime")
            logger.warning("%s; it runs in onnxruntime", message)
            return None
        logger.info("face restorer %s: torch conversion matches onnxruntime within %.2g", self.name, difference)
        return module

    def _feeds(self, images: np.ndarray, fidelity: float) -> dict[str, np.ndarray]:
        feeds = {self.signature.image_input: images.astype(self.signature.image_type)}
        if self.signature.weight_input is not None:
            feeds[self.signature.weight_input] = np.array([fidelity], dtype=np.float64)
        return feeds

    def _run_onnxruntime(self, images: np.ndarray, fidelity: float) -> np.ndarray:
        step = 1 if self.signature.fixed_batch else self.max_batch
        parts = []
        for start in range(0, len(images), step):
            result = self.session.run([self.signature.output], self._feeds(images[start : start + step], fidelity))
            parts.append(np.asarray(result[0], dtype=np.float32))
        return np.concatenate(parts)

    def _run_torch(self, module: OnnxGraphModule, images: Tensor, fidelity: float) -> Tensor:
        names = module.input_names
        with torch.no_grad():
            arguments = []
            for name in names:
                if name == self.signature.weight_input:
                    arguments.append(torch.tensor([fidelity], device=images.device, dtype=torch.float32))
                else:
                    arguments.append(images.to(module.compute_dtype))
            index = module.output_names.index(self.signature.output)
            result: Tensor = module(*arguments)[index]
            return result.float()

    def restore(self, crops: Tensor, *, fidelity: float = DEFAULT_FIDELITY) -> Tensor:
        """Restore ``(B, 3, S, S)`` FFHQ-aligned crops in [0, 1] (S = :attr:`input_size`); same shape and device back.

        ``fidelity`` is CodeFormer's ``w`` (ignored, with a debug note, by the other restorers).
        """
        fidelity = _check_fidelity(fidelity)
        if not isinstance(crops, Tensor) or crops.ndim != 4 or crops.shape[1] != 3:
            got = tuple(crops.shape) if isinstance(crops, Tensor) else type(crops).__name__
            raise BadInputError(f"expected crops (B, 3, S, S), got {got}", where=f"face restorer {self.name}")
        if tuple(crops.shape[2:]) != (self.input_size, self.input_size):
            raise BadInputError(
                f"{self.name} takes {self.input_size} px crops, got {tuple(crops.shape[2:])}",
                where=f"face restorer {self.name}",
                fix=f"re-align the faces at {self.input_size} px (restore_swap does)",
            )
        if crops.shape[0] == 0:
            return crops.clone()
        scaled = crops.detach().float().clamp(0.0, 1.0) * 2 - 1
        if self.graph is not None:
            parts = [
                self._run_torch(self.graph, scaled[start : start + self.max_batch].to(self.device), fidelity)
                for start in range(0, len(scaled), self.max_batch)
            ]
            out = torch.cat(parts).to(crops.device)
        else:
            out = torch.from_numpy(self._run_onnxruntime(scaled.cpu().numpy(), fidelity)).to(crops.device)
        if tuple(out.shape) != tuple(crops.shape):
            raise ModelIntegrityError(
                f"{self.name} returned {tuple(out.shape)} for {tuple(crops.shape)} crops",
                where=str(self.path),
                fix="use the original restorer file",
            )
        if not bool(torch.isfinite(out).all()):
            raise ModelIntegrityError(
                f"{self.name} returned NaN or infinite values", where=str(self.path), fix="use the original file"
            )
        return ((out.clamp(-1.0, 1.0) + 1) / 2).to(crops.dtype)


def load_restorer(
    model: str | os.PathLike[str],
    *,
    model_dir: Path | None = None,
    providers: list[ProviderSpec] | None = None,
    device: torch.device | str | None = None,
    runtime: RestorerRuntime = "auto",
) -> FaceRestorer:
    """A restorer by registry name (:data:`RESTORER_NAMES`, fetched into ``model_dir``) or .onnx path."""
    from .hub import resolve_onnx_model

    path, spec = resolve_onnx_model(
        model, kinds=("restorer",), what="face restorer", names=RESTORER_NAMES, model_dir=model_dir
    )
    if spec is not None:
        return FaceRestorer(path, name=spec.name, providers=providers, device=device, runtime=runtime)
    return FaceRestorer(path, providers=providers, device=device, runtime=runtime)


def restore_swap(
    frames: Tensor,
    batch: SwapBatch,
    swapped: SwapOutput | Tensor,
    restorer: FaceRestorer,
    *,
    weight: float = 1.0,
    fidelity: float = DEFAULT_FIDELITY,
) -> FaceCrops:
    """Restore the swapped faces of ``batch`` in FFHQ crop space; returns crops for ``blend_swap(finished=...)``.

    ``weight`` (visibility) mixes the restored face with the unrestored one: 0 leaves the
    swap as it is, 1 takes the restorer's face. ``fidelity`` is CodeFormer's ``w``.
    """
    from .pipeline import realign_swap

    if isinstance(weight, bool) or not isinstance(weight, int | float) or not 0.0 <= float(weight) <= 1.0:
        raise BadInputError(f"the restore weight must lie between 0 and 1, got {weight!r}", where="restore_swap")
    _check_fidelity(fidelity)
    crops = realign_swap(frames, batch, swapped, template="ffhq", size=restorer.input_size)
    if crops.num_faces == 0 or weight == 0:
        return FaceCrops(crops.images, crops.matrices, "ffhq", label=f"{restorer.name} restored crops")
    restored = restorer.restore(crops.images, fidelity=fidelity)
    images = torch.lerp(crops.images, restored.to(crops.images.device), float(weight))
    return FaceCrops(images, crops.matrices, "ffhq", label=f"{restorer.name} restored crops")


def resize_crops(crops: Tensor, size: int) -> Tensor:
    """``(B, C, S, S)`` crops resized to ``size`` (area when shrinking, bicubic when growing), clamped to [0, 1]."""
    if crops.shape[-1] == size:
        return crops
    mode = "area" if size < crops.shape[-1] else "bicubic"
    resized = F.interpolate(crops, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return resized.clamp(0.0, 1.0)
