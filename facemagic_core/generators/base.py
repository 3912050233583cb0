"""What the pipeline and the ComfyUI nodes use to swap: the SwapModel protocol and its torch runner.

Layout of :meth:`SwapModel.swap` (B faces, K = ``model.num_blocks``, D = 512):

- ``crops``: ``(B, 3, S, S)`` float RGB in [0, 1], aligned with ``model.template`` at ``S = model.input_size``;
- ``source``: ``(B, K, D)`` L2-normalised identity per block (``(B, D)`` and ``(B, 1, D)`` are
  broadcast to every block);
- ``target``: ``(B, D)`` L2-normalised identity of each target face;
- ``strength``: ``(B, K)`` in [0, 1] (``(B,)`` and ``(B, 1)`` are broadcast);
- returns :class:`SwapOutput`: float32 images in [0, 1] (and a soft mask when the model has
  one) on the device of ``crops``.

:func:`swap_woven` runs a model on crops N times its size: the crop is split into N*N
interleaved sub-images ``crop[..., i::N, j::N]``, swapped as one batch, and woven back.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from ..align import TemplateName
from ..errors import BadInputError, IncompatibleIdentityError, OutOfMemoryError
from ..images import check_images
from ..runtime import resolve_device, resolve_dtype
from ..types import EMBEDDING_DIM
from .config import GeneratorConfig
from .network import SwapGenerator

logger = logging.getLogger(__name__)

#: Faces per forward call of a torch generator before any out-of-memory halving.
DEFAULT_CHUNK_SIZE = 32


@dataclass(frozen=True, eq=False)
class SwapOutput:
    """Result of a swap: ``images (B, 3, S, S)`` in [0, 1]; ``mask (B, 1, S, S)`` in [0, 1] or None."""

    images: Tensor
    mask: Tensor | None = None


@runtime_checkable
class SwapModel(Protocol):
    """A face swapper as the pipeline sees it (a native torch module or an ONNX model)."""

    name: str  # registry name or file name, for messages
    input_size: int  # side S of the aligned crops
    template: TemplateName  # alignment template of the crops
    embedding_model: str  # recogniser whose embeddings the identities must come from
    num_blocks: int  # identity injection points K (1 for ONNX swappers)
    device: torch.device  # where the model runs
    dtype: torch.dtype  # compute dtype

    def swap(self, crops: Tensor, source: Tensor, target: Tensor, strength: Tensor) -> SwapOutput: ...


# ---------------------------------------------------------------------------------------------
# Input checks shared by every SwapModel


@dataclass(frozen=True, eq=False)
class SwapInputs:
    """Checked swap inputs, float32 on the crops' device: source (B, K, D), target (B, D), strength (B, K)."""

    crops: Tensor
    source: Tensor
    target: Tensor
    strength: Tensor


def _as_float_tensor(value: object, *, what: str, device: torch.device) -> Tensor:
    if isinstance(value, Tensor):
        tensor = value
    else:
        try:
            tensor = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError) as error:
            raise BadInputError(f"{what} must be a tensor, got {type(value).__name__}", where=what) from error
    if not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64)):
        raise BadInputError(f"{what} must hold floats, got {tensor.dtype}", where=what)
    tensor = tensor.to(device=device, dtype=torch.float32)
    if not bool(torch.isfinite(tensor).all()):
        raise BadInputError(f"{what} contains NaN or infinite values", where=what, fix="re-extract the identity")
    return tensor


def check_swap_inputs(
    model: SwapModel, crops: object, source: object, target: object, strength: object, *, input_size: int | None = None
) -> SwapInputs:
    """Validate and broadcast the inputs of ``model.swap``; every problem is a FaceMagicError that says how to fix it.

    Crops must be ``input_size`` pixels (default ``model.input_size``), identities ``model.id_dim``
    numbers (512 when the model does not say), with ``model.num_blocks`` rows or one.
    """
    name, num_blocks = model.name, int(model.num_blocks)
    id_dim = int(getattr(model, "id_dim", EMBEDDING_DIM))
    input_size = model.input_size if input_size is None else input_size
    images = check_images(crops, where="crops")
    batch, _, height, width = images.shape
    if height != input_size or width != input_size:
        raise BadInputError(
            f"{name} takes {input_size}x{input_size} crops, got {width}x{height}",
            where="crops",
            fix=f"align the faces at {input_size} px (the generator's input_size)",
        )
    device = images.device
    source_t = _as_float_tensor(source, what="source identity", device=device)
    target_t = _as_float_tensor(target, what="target identity", device=device)
    for what, tensor in (("source identity", source_t), ("target identity", target_t)):
        if tensor.shape[-1] != id_dim:
            raise IncompatibleIdentityError(
                f"{what} has {tensor.shape[-1]} numbers per embedding but {name} takes {id_dim}",
                where=f"{what}, shape {tuple(tensor.shape)}",
                fix=(
                    f"extract the identity with the recogniser {name} was made for (a {id_dim}-d ArcFace model); "
                    "do not pass images or other features as identities"
                ),
            )
    if source_t.ndim == 2:
        source_t = source_t.unsqueeze(1)
    if source_t.ndim != 3 or source_t.shape[0] != batch:
        raise BadInputError(
            f"source identity must be (B, K, {id_dim}) with B = {batch} crops, got {tuple(source_t.shape)}",
            where="source identity",
            fix="give one identity row per crop (repeat a single identity over the batch)",
        )
    if source_t.shape[1] == 1 and num_blocks > 1:
        source_t = source_t.expand(-1, num_blocks, -1)
    if source_t.shape[1] != num_blocks:
        raise IncompatibleIdentityError(
            f"the identity has {source_t.shape[1]} block rows but {name} has {num_blocks} injection blocks",
            where="source identity",
            fix=f"pass identity.for_blocks({num_blocks}) (Identity.for_blocks maps any number of rows to the blocks)",
        )
    if target_t.ndim != 2 or target_t.shape[0] != batch:
        raise BadInputError(
            f"target identity must be (B, {id_dim}) with B = {batch}, got {tuple(target_t.shape)}",
            where="target identity",
            fix="embed every target face (FaceAnalyzer.embed_faces) and stack the embeddings",
        )
    strength_t = _as_float_tensor(strength, what="strength", device=device)
    if strength_t.ndim == 0:
        strength_t = strength_t.expand(batch)
    if strength_t.ndim == 1:
        strength_t = strength_t.unsqueeze(1)
    if strength_t.ndim != 2 or strength_t.shape[0] not in (1, batch) or strength_t.shape[1] not in (1, num_blocks):
        raise BadInputError(
            f"strength must be (B, {num_blocks}), (B, 1) or (B,) with B = {batch}, got {tuple(strength_t.shape)}",
            where="strength",
            fix="give one strength per face (and optionally per block)",
        )
    strength_t = strength_t.expand(batch, num_blocks)
    if bool((strength_t < 0).any()) or bool((strength_t > 1).any()):
        raise BadInputError("strength must lie in [0, 1]", where="strength", fix="clamp the strength to [0, 1]")
    return SwapInputs(images, source_t, target_t, strength_t)


def to_model_range(crops: Tensor, value_range: str) -> Tensor:
    """[0, 1] images -> the model's range (new tensor; the input is not modified)."""
    return crops * 2 - 1 if value_range == "minus_one_one" else crops.clone()


# ---------------------------------------------------------------------------------------------
# Torch runner


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is a device out-of-memory error (CUDA's, or a RuntimeError saying so, as others raise)."""
    return isinstance(error, (torch.OutOfMemoryError, OutOfMemoryError)) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error).lower()
    )


class TorchSwapper:
    """A native generator behind the SwapModel protocol: device, dtype, value range, chunks.

    Runs ``chunk_size`` faces per forward call; on a CUDA out-of-memory error the chunk is
    halved and the call retried (down to one face), with a warning. The module is moved to
    ``device``, ``dtype`` and the channels-last layout in place (no second copy of the
    weights): the swapper owns it from then on.
    """

    def __init__(
        self,
        module: SwapGenerator,
        *,
        name: str | None = None,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> None:
        resolved = module.device if device is None else resolve_device(device)
        if dtype is None:
            wanted = module.dtype
        elif isinstance(dtype, torch.dtype):
            wanted = dtype  # an explicit dtype is taken as given (bf16 on the CPU works for these modules)
        else:
            wanted = resolve_dtype(dtype, resolved)
        self.module = module.to(device=resolved, dtype=wanted).eval()
        # NHWC convolutions: ~20 % faster on CPUs (oneDNN) and the layout tensor cores take; results agree to rounding.
        self.channels_last = resolved.type in ("cpu", "cuda")
        if self.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.cfg: GeneratorConfig = module.cfg
        self.name = name or f"{self.cfg.arch} generator"
        self.input_size = self.cfg.image_size
        self.template: TemplateName = self.cfg.template
        self.embedding_model = self.cfg.embedding_model
        self.num_blocks = self.cfg.num_blocks
        self.id_dim = self.cfg.id_dim
        self.device = resolved
        self.dtype = wanted
        self.chunk_size = max(1, int(chunk_size))

    def __repr__(self) -> str:
        return f"TorchSwapper({self.name!r}, {self.cfg.arch}, {self.device}, {self.dtype})"

    def swap(self, crops: Tensor, source: Tensor, target: Tensor, strength: Tensor) -> SwapOutput:
        inputs = check_swap_inputs(self, crops, source, target, strength)
        out_device = inputs.crops.device
        images: list[Tensor] = []
        masks: list[Tensor] = []
        start, total, chunk = 0, inputs.crops.shape[0], self.chunk_size
        while start < total:
            stop = min(start + chunk, total)
            try:
                rgb, mask = self._forward(inputs, start, stop)
            except (torch.OutOfMemoryError, RuntimeError) as error:
                if not is_out_of_memory(error) or chunk == 1:
                    if is_out_of_memory(error):
                        raise BadInputError(
                            f"out of memory on {self.device} even with one face per call",
                            where=self.name,
                            fix="use dtype fp16, free memory held by other models, or run on the CPU",
                        ) from error
                    raise
                chunk = max(1, chunk // 2)
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                logger.warning("%s: out of memory on %s; retrying with %d faces a call", self.name, self.device, chunk)
                continue
            images.append(rgb.to(device=out_device, dtype=torch.float32))
            if mask is not None:
                masks.append(mask.to(device=out_device, dtype=torch.float32))
            start = stop
        return SwapOutput(images=torch.cat(images).clamp_(0, 1), mask=torch.cat(masks).clamp_(0, 1) if masks else None)

    def _forward(self, inputs: SwapInputs, start: int, stop: int) -> tuple[Tensor, Tensor | None]:
        def move(x: Tensor) -> Tensor:
            return x[start:stop].to(device=self.device, dtype=self.dtype)

        image = to_model_range(inputs.crops[start:stop], self.cfg.value_range).to(device=self.device, dtype=self.dtype)
        if self.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            rgb, mask = self.module(
                image, move(inputs.source), move(inputs.target), inputs.strength[start:stop].to(self.device)
            )
        return rgb, mask


# ---------------------------------------------------------------------------------------------
# Woven (interleaved) swapping at N times the model's size


def split_woven(images: Tensor, factor: int) -> Tensor:
    """``(B, C, N*S, N*S)`` -> ``(N*N*B, C, S, S)``: sub-image ``(i, j)`` is ``images[..., i::N, j::N]``.

    Sub-images are ordered ``i`` major, then ``j``, then the batch.
    """
    batch, channels, height, width = images.shape
    size_h, size_w = height // factor, width // factor
    grid = images.reshape(batch, channels, size_h, factor, size_w, factor)
    return grid.permute(3, 5, 0, 1, 2, 4).reshape(factor * factor * batch, channels, size_h, size_w)


def weave_woven(parts: Tensor, factor: int) -> Tensor:
    """Inverse of :func:`split_woven`: ``(N*N*B, C, S, S)`` -> ``(B, C, N*S, N*S)``."""
    total, channels, size_h, size_w = parts.shape
    batch = total // (factor * factor)
    grid = parts.reshape(factor, factor, batch, channels, size_h, size_w)
    return grid.permute(2, 3, 4, 0, 5, 1).reshape(batch, channels, size_h * factor, size_w * factor)


def swap_woven(
    model: SwapModel, crops: Tensor, source: Tensor, target: Tensor, strength: Tensor, *, factor: int
) -> SwapOutput:
    """Swap crops taken at ``factor`` times the model's size (``factor * S``).

    Each crop is split into ``factor**2`` interleaved sub-images at the model's size (every
    one a slightly shifted copy of the face), all swapped in one batch, and woven back, so a
    128 px model fills a 256 or 512 px crop with detail of its own instead of an upscale.
    ``factor=1`` is a plain :meth:`SwapModel.swap`.
    """
    if not isinstance(factor, int) or factor < 1:
        raise BadInputError(f"the weave factor must be a positive int, got {factor!r}", fix="use 1, 2, 3 or 4")
    images = check_images(crops, where="crops")
    size = model.input_size * factor
    if images.shape[2] != size or images.shape[3] != size:
        raise BadInputError(
            f"woven swapping with factor {factor} takes {size}x{size} crops, got {images.shape[3]}x{images.shape[2]}",
            where="crops",
            fix=f"align the faces at {size} px (factor x the model's {model.input_size})",
        )
    if factor == 1:
        return model.swap(images, source, target, strength)
    inputs = check_swap_inputs(model, images, source, target, strength, input_size=size)
    copies = factor * factor

    def repeat(x: Tensor) -> Tensor:  # sub-image order is (i, j, batch): tile the batch N*N times
        return x.repeat(copies, *([1] * (x.ndim - 1)))

    output = model.swap(
        split_woven(images, factor), repeat(inputs.source), repeat(inputs.target), repeat(inputs.strength)
    )
    mask = weave_woven(output.mask, factor) if output.mask is not None else None
    return SwapOutput(images=weave_woven(output.images, factor), mask=mask)
