"""IMAGE and MASK conversion between ComfyUI and facemagic_core, done here and only here.

ComfyUI: ``IMAGE`` is ``[B, H, W, C]`` float in [0, 1] (C = 3, sometimes 1 or 4), ``MASK`` is
``[B, H, W]`` float in [0, 1]. facemagic_core: images ``(B, 3, H, W)`` float32 RGB in [0, 1],
masks ``(B, 1, H, W)``. Grey images are repeated to RGB and an alpha channel is dropped (both
logged); nothing is modified in place.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from facemagic_core.errors import BadInputError

logger = logging.getLogger(__name__)


def as_image_batch(images: torch.Tensor, *, where: str = "image") -> torch.Tensor:
    """A ComfyUI ``IMAGE`` as ``[B, H, W, C]`` (a view, no copy), or ``BadInputError`` for anything else."""
    if not isinstance(images, torch.Tensor):
        raise BadInputError(
            f"expected an IMAGE tensor, got {type(images).__name__}",
            where=where,
            fix="connect an IMAGE output (Load Image, VAE Decode...) to this input",
        )
    if images.ndim == 3:  # one image without a batch dimension
        images = images.unsqueeze(0)
    if images.ndim != 4:
        raise BadInputError(f"expected an IMAGE of shape [B, H, W, C], got {tuple(images.shape)}", where=where)
    if images.shape[0] == 0:
        raise BadInputError("the image batch is empty", where=where, fix="connect a batch with at least one image")
    return images


def images_to_core(images: torch.Tensor, *, where: str = "image") -> torch.Tensor:
    """ComfyUI ``IMAGE [B, H, W, C]`` -> core ``(B, 3, H, W)`` float32 RGB (same device), a new tensor."""
    return images_as_core_view(images, where=where).contiguous()


def images_as_core_view(images: torch.Tensor, *, where: str = "image") -> torch.Tensor:
    """ComfyUI ``IMAGE [B, H, W, C]`` -> core ``(B, 3, H, W)`` float32 RGB without copying a float32 IMAGE.

    The result shares memory with ``images`` (its strides are the IMAGE's): for handing a whole frame batch to
    a core function that reads it chunk by chunk. Never modify it in place.
    """
    images = as_image_batch(images, where=where)
    channels = int(images.shape[-1])
    if channels == 4:
        logger.info("%s: RGBA images, the alpha channel is dropped", where)
        images = images[..., :3]
    elif channels == 2:
        logger.info("%s: grey + alpha images, the alpha channel is dropped and grey repeated to RGB", where)
        images = images[..., :1].expand(-1, -1, -1, 3)
    elif channels == 1:
        logger.info("%s: grey images, repeated to RGB", where)
        images = images.expand(-1, -1, -1, 3)
    elif channels != 3:
        raise BadInputError(
            f"expected 1, 3 or 4 colour channels, got {channels} (shape {tuple(images.shape)})",
            where=where,
            fix="connect an RGB IMAGE",
        )
    if not images.is_floating_point():
        images = images.float() / 255.0
    return images.permute(0, 3, 1, 2).to(torch.float32)


def images_to_comfy(images: torch.Tensor, *, owned: bool = False) -> torch.Tensor:
    """Core ``(B, 3, H, W)`` -> ComfyUI ``IMAGE [B, H, W, 3]`` float32 on the CPU, clamped to [0, 1].

    ``owned``: ``images`` is a result nobody else holds; it is clamped in place, and a CPU float32 batch whose
    memory is laid out as ``[B, H, W, 3]`` already (what core returns for a view from
    :func:`images_as_core_view`) is returned without a copy, so a long frame batch is not held twice.
    """
    comfy = images.detach().permute(0, 2, 3, 1).to(device="cpu", dtype=torch.float32)
    if owned:
        return comfy.clamp_(0, 1).contiguous()
    return comfy.clamp(0, 1).contiguous()


def masks_to_core(masks: torch.Tensor, *, size: tuple[int, int] | None = None, where: str = "mask") -> torch.Tensor:
    """ComfyUI ``MASK [B, H, W]`` (or ``[H, W]``) -> core ``(B, 1, H, W)`` float32.

    With ``size`` ``(H, W)``, a mask of another size is stretched to it (bilinear), as ComfyUI's own nodes do:
    masks often come at other sizes (Load Image gives 64 x 64 for a picture without alpha).
    """
    if not isinstance(masks, torch.Tensor):
        raise BadInputError(f"expected a MASK tensor, got {type(masks).__name__}", where=where)
    if masks.ndim == 2:
        masks = masks.unsqueeze(0)
    if masks.ndim != 3:
        raise BadInputError(f"expected a MASK of shape [B, H, W], got {tuple(masks.shape)}", where=where)
    core = masks.unsqueeze(1).to(torch.float32)
    if size is not None and tuple(core.shape[-2:]) != tuple(size):
        logger.info("%s: %s masks stretched to the frames' %s", where, tuple(core.shape[-2:]), tuple(size))
        return F.interpolate(core, size=size, mode="bilinear", align_corners=False).clamp_(0, 1)
    return core.contiguous()


def masks_to_comfy(masks: torch.Tensor) -> torch.Tensor:
    """Core ``(B, 1, H, W)`` or ``(B, H, W)`` -> ComfyUI ``MASK [B, H, W]`` float32 on the CPU."""
    if masks.ndim == 4:
        masks = masks[:, 0]
    return masks.detach().to(device="cpu", dtype=torch.float32).clamp(0, 1).contiguous()
