"""Putting swapped faces back into their frames: masks, colour matching, paste-back.

Pipeline order: :func:`create_face_mask` (in crop space) → :func:`match_colour` (swapped
crop towards the target crop) → :func:`paste_back` (batched, in torch, on the frames'
device) or :func:`poisson_blend` (OpenCV, CPU, slow). :func:`paste_back_reference` is the
baseline the benchmark compares with: insightface's numpy/OpenCV paste-back, one face at a
time over the whole frame.

Tensors: frames ``(N, 3, H, W)``, crops ``(B, 3, S, S)`` and masks ``(B, 1, S, S)`` in
[0, 1]; ``matrices`` ``(B, 2, 3)`` map *image* pixels to *crop* pixels (what
:func:`facemagic_core.align.align_faces` returns); ``image_index`` ``(B,)`` says which
frame each face belongs to. Inputs are never modified.

Sizes in masks are fractions of the face size, which in an aligned crop is the crop side
``S`` by default: the ArcFace template puts the eyes 0.31 S apart and the face (brows to
chin) across the whole crop. Pass ``face_size`` in crop pixels for templates with more
margin (FFHQ-style crops).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Literal, get_args

import cv2
import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from .align import covered_regions, invert_affine, region_groups, warp_affine
from .errors import BadInputError
from .images import float_to_bytes, is_byte_frames
from .types import Device

logger = logging.getLogger(__name__)

#: Face mask shapes: the whole crop (with a margin), an ellipse over the face, the convex hull of the landmarks.
MaskKind = Literal["box", "ellipse", "hull"]
MASK_KINDS: tuple[str, ...] = get_args(MaskKind)

#: Colour matching of the swapped face to the target: none, per-channel mean/std in RGB, the same in CIE Lab.
ColourMethod = Literal["none", "mean_std", "lab"]
COLOUR_METHODS: tuple[str, ...] = get_args(ColourMethod)

#: The ellipse mask as fractions of the crop side: centre x, centre y, half width, half height. It covers brows to
#: chin and cheek to cheek in an ArcFace-aligned crop (eyes at y = 0.46, mouth corners at y = 0.82 of the side).
ELLIPSE = (0.5, 0.53, 0.40, 0.46)

#: Standard deviation ratios used by colour matching are clamped to this range, so that a flat (e.g. dark) face
#: region is not stretched into noise.
STD_RATIO_RANGE = (0.25, 4.0)

_SNAP = 1e-4  # mask values this close to 0 or 1 become exactly 0 or 1


# --------------------------------------------------------------------------------------------------------------
# Mask building blocks (torch, batched)


def gaussian_blur(masks: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur of ``(B, C, H, W)`` with a kernel truncated at ``radius`` (sigma = radius / 3).

    Zero padding: values beyond the image count as 0. ``radius <= 0`` returns a copy.
    """
    if radius <= 0:
        return masks.clone()
    sigma = radius / 3.0
    offsets = torch.arange(-radius, radius + 1, device=masks.device, dtype=masks.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma * sigma))
    kernel = kernel / kernel.sum()
    channels = masks.shape[1]
    horizontal = kernel.reshape(1, 1, 1, -1).repeat(channels, 1, 1, 1)
    vertical = kernel.reshape(1, 1, -1, 1).repeat(channels, 1, 1, 1)
    out = F.conv2d(masks, horizontal, padding=(0, radius), groups=channels)
    return F.conv2d(out, vertical, padding=(radius, 0), groups=channels)


def _pixel_grid(size: int, device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    coords = torch.arange(size, device=device, dtype=dtype)
    ys, xs = torch.meshgrid(coords, coords, indexing="ij")
    return xs, ys


def _box_shape(size: int, batch: int, inset: int, device: torch.device) -> torch.Tensor:
    """The crop minus ``inset`` pixels on every side: ``(B, 1, S, S)`` of 0 and 1."""
    mask = torch.zeros((batch, 1, size, size), device=device)
    if inset < size - inset:
        mask[:, :, inset : size - inset, inset : size - inset] = 1.0
    return mask


def _ellipse_shape(size: int, batch: int, shrink: float, device: torch.device) -> torch.Tensor:
    """The :data:`ELLIPSE` with both half axes ``shrink`` pixels shorter: ``(B, 1, S, S)`` of 0 and 1.

    Shortening the half axes moves the outline inwards by ``shrink`` at the axes and by very
    nearly that everywhere else for this near-circular ellipse (within 0.05 * shrink), as a
    disc-shaped erosion would; a square minimum filter would cut 1.4 * shrink at the diagonals.
    """
    centre_x, centre_y, half_w, half_h = ELLIPSE
    axis_x, axis_y = half_w * size - shrink, half_h * size - shrink
    if axis_x <= 0 or axis_y <= 0:
        return torch.zeros((batch, 1, size, size), device=device)
    xs, ys = _pixel_grid(size, device, torch.float32)
    # Pixel centres at integers: the crop spans [-0.5, size - 0.5].
    inside = ((xs - (centre_x * size - 0.5)) / axis_x) ** 2 + ((ys - (centre_y * size - 0.5)) / axis_y) ** 2 <= 1.0
    return inside.to(torch.float32).expand(batch, 1, size, size).clone()


def convex_hulls(landmarks: npt.ArrayLike | torch.Tensor) -> list[npt.NDArray[np.float64]]:
    """Per face, the convex hull ``(K, 2)`` of its landmarks, counter-clockwise in the algebraic sense (area > 0)."""
    if isinstance(landmarks, torch.Tensor):
        points = landmarks.detach().to("cpu", torch.float32).numpy()
    else:
        points = np.asarray(landmarks, dtype=np.float32)
    hulls = []
    for face in points:
        hull = cv2.convexHull(np.ascontiguousarray(face)).reshape(-1, 2).astype(np.float64)
        x, y = hull[:, 0], hull[:, 1]
        area = 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))
        hulls.append(hull[::-1].copy() if area < 0 else hull)
    return hulls


def _hull_shape(landmarks: object, size: int, batch: int, shrink: float, device: torch.device) -> torch.Tensor:
    """The convex hull of each face's landmarks, every edge moved ``shrink`` pixels inwards: ``(B, 1, S, S)``.

    A convex polygon shrunk by ``d`` (eroded by a disc of radius ``d``) is the intersection of
    its edges' half-planes, each moved ``d`` inwards: exact, and one comparison per edge.
    """
    if isinstance(landmarks, torch.Tensor):
        points = landmarks.detach().to("cpu", torch.float32).numpy()
    else:
        points = np.asarray(landmarks, dtype=np.float32)
    if points.ndim != 3 or points.shape[0] != batch or points.shape[2] != 2 or points.shape[1] < 3:
        raise BadInputError(
            f"the hull mask needs (B={batch}, N>=3, 2) landmarks in crop pixels, got shape {tuple(points.shape)}",
            where="create_face_mask",
            fix="transform the face's dense landmarks into the crop with align.transform_points",
        )
    if not np.all(np.isfinite(points)):
        raise BadInputError("the landmarks contain NaN or infinite values", where="create_face_mask")
    hulls = convex_hulls(points)
    longest = max(len(h) for h in hulls)
    # Pad every hull to the same vertex count by repeating its last vertex (a zero-length edge accepts every pixel).
    padded = np.stack([np.concatenate([h, np.repeat(h[-1:], longest - len(h), axis=0)]) for h in hulls])
    vertices = torch.from_numpy(padded).to(device=device, dtype=torch.float32)  # (B, K, 2)
    following = torch.roll(vertices, shifts=-1, dims=1)
    xs, ys = _pixel_grid(size, device, torch.float32)
    inside = torch.ones((batch, size, size), dtype=torch.bool, device=device)
    for k in range(longest):  # one half-plane per hull edge, all faces and pixels at once
        start, end = vertices[:, k], following[:, k]
        edge_x, edge_y = (end[:, 0] - start[:, 0])[:, None, None], (end[:, 1] - start[:, 1])[:, None, None]
        length = torch.hypot(edge_x, edge_y)
        # cross / length is the signed distance of each pixel from the edge's line (positive inside)
        cross = edge_x * (ys[None] - start[:, 1, None, None]) - edge_y * (xs[None] - start[:, 0, None, None])
        inside &= (cross >= shrink * length) | (length == 0)  # a padding edge of length 0 accepts every pixel
    areas = [0.5 * float(np.sum(h[:, 0] * np.roll(h[:, 1], -1) - np.roll(h[:, 0], -1) * h[:, 1])) for h in hulls]
    for face, area in enumerate(areas):
        if area < 1.0:
            logger.warning("face %d: its landmarks enclose no area; the hull mask is empty", face)
            inside[face] = False
    return inside.unsqueeze(1).to(torch.float32)


def create_face_mask(
    kind: MaskKind,
    size: int,
    batch: int,
    *,
    landmarks: npt.ArrayLike | torch.Tensor | None = None,
    erosion: float = 0.05,
    feather: float = 0.1,
    external: torch.Tensor | None = None,
    box_margin: float = 0.0,
    face_size: float | None = None,
    device: Device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Soft face masks ``(B, 1, S, S)`` in [0, 1], in crop space, on ``device``.

    - ``kind``: ``"box"`` (the crop minus ``box_margin`` on each side), ``"ellipse"`` (see
      :data:`ELLIPSE`) or ``"hull"`` (convex hull of ``landmarks``, ``(B, N, 2)`` in crop
      pixels; give 68 or 106 points: 5 points only cover eyes to mouth).
    - ``erosion``: the outline moves inwards by this fraction of the face size, the same
      distance in every direction (box and hull exactly, the ellipse by shortening its half axes).
    - ``feather``: width of the soft edge as a fraction of the face size (a Gaussian of radius
      ``feather * face_size / 2``). The hard shape is kept that radius (+1 px) away from the
      crop border, so the mask is exactly 0 on the crop's outer pixels and the pasted crop
      leaves no seam.
    - ``external``: an optional ``(B, 1, S, S)`` (or ``(1, 1, S, S)``) mask, e.g. from an
      occlusion or face-parsing model, combined by minimum (facefusion's convention) after
      feathering; it is used as given (not eroded or blurred).
    - ``face_size``: the face size in crop pixels; default ``S`` (see the module docstring).

    Defaults: erosion 0.05 hides the last ring of the generator's output, where swap models
    are least accurate; feather 0.1 gives a soft edge about as wide as insightface's blur
    relative to the face (its kernel is 2 * face_size / 20 + 1).
    """
    if kind not in MASK_KINDS:
        raise BadInputError(
            f"unknown mask kind {kind!r}", where="create_face_mask", fix=f"use one of {', '.join(MASK_KINDS)}"
        )
    if not isinstance(size, int) or size < 8:
        raise BadInputError(f"the crop size must be an integer of at least 8, got {size!r}", where="create_face_mask")
    if not isinstance(batch, int) or batch < 0:
        raise BadInputError(f"the batch size must be a non-negative integer, got {batch!r}", where="create_face_mask")
    for name, value, high in (("erosion", erosion, 0.5), ("feather", feather, 1.0), ("box_margin", box_margin, 0.5)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= high):
            raise BadInputError(f"{name} must be between 0 and {high}, got {value!r}", where="create_face_mask")
    scale = float(size if face_size is None else face_size)
    if not (math.isfinite(scale) and scale > 0):
        raise BadInputError(f"face_size must be positive, got {face_size!r}", where="create_face_mask")
    target_device = torch.device(device) if device is not None else torch.device("cpu")
    if batch == 0:
        return torch.zeros((0, 1, size, size), device=target_device, dtype=dtype)

    # The hard shape is shrunk by the erosion, kept one blur radius (+1 px) inside the crop, then feathered: the
    # result is exactly 0 on the crop's outer pixels (no seam), and every bit of erosion shrinks the mask.
    radius = min(round(feather * scale / 2), (size - 3) // 2)
    border = radius + 1
    shrink = erosion * scale
    if kind == "box":
        shape = _box_shape(size, batch, max(round(box_margin * size), border) + round(shrink), target_device)
    elif kind == "ellipse":
        shape = _ellipse_shape(size, batch, shrink, target_device)
    else:
        if landmarks is None:
            raise BadInputError(
                "the hull mask needs landmarks", where="create_face_mask", fix="pass landmarks in crop pixels"
            )
        shape = _hull_shape(landmarks, size, batch, shrink, target_device)
    shape[:, :, :border, :] = 0.0
    shape[:, :, size - border :, :] = 0.0
    shape[:, :, :, :border] = 0.0
    shape[:, :, :, size - border :] = 0.0
    mask = gaussian_blur(shape, radius)

    if external is not None:
        if not isinstance(external, torch.Tensor) or external.ndim != 4 or external.shape[1:] != (1, size, size):
            got = tuple(external.shape) if isinstance(external, torch.Tensor) else type(external).__name__
            raise BadInputError(
                f"the external mask must be (B, 1, {size}, {size}), got {got}",
                where="create_face_mask",
                fix="resize the mask to the crop size (it is in crop space, like the face mask)",
            )
        if external.shape[0] not in (1, batch):
            raise BadInputError(
                f"the external mask has {external.shape[0]} masks for {batch} faces", where="create_face_mask"
            )
        mask = torch.minimum(mask, external.to(device=target_device, dtype=mask.dtype))
    # Snap the Gaussian's numerical tails: the core is exactly 1 (the crop is pasted as is), the outside exactly 0.
    mask = mask.clamp(0.0, 1.0)
    mask = torch.where(mask >= 1.0 - _SNAP, torch.ones_like(mask), torch.where(mask <= _SNAP, 0.0, mask))
    return mask.to(dtype)


# --------------------------------------------------------------------------------------------------------------
# Colour


_SRGB_TO_XYZ = (
    (0.4124564, 0.3575761, 0.1804375),
    (0.2126729, 0.7151522, 0.0721750),
    (0.0193339, 0.1191920, 0.9503041),
)
_D65_WHITE = (0.95047, 1.0, 1.08883)
_LAB_DELTA = 6.0 / 29.0


def rgb_to_lab(images: torch.Tensor) -> torch.Tensor:
    """sRGB ``(B, 3, H, W)`` in [0, 1] → CIE Lab (D65): L in [0, 100], a and b about [-128, 127]."""
    rgb = images.clamp(0.0, 1.0)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    matrix = torch.tensor(_SRGB_TO_XYZ, device=images.device, dtype=images.dtype)
    xyz = torch.einsum("ij,bjhw->bihw", matrix, linear)
    white = torch.tensor(_D65_WHITE, device=images.device, dtype=images.dtype).reshape(1, 3, 1, 1)
    t = xyz / white
    f = torch.where(t > _LAB_DELTA**3, t.clamp_min(1e-12) ** (1.0 / 3.0), t / (3 * _LAB_DELTA**2) + 4.0 / 29.0)
    lightness = 116.0 * f[:, 1:2] - 16.0
    a = 500.0 * (f[:, 0:1] - f[:, 1:2])
    b = 200.0 * (f[:, 1:2] - f[:, 2:3])
    return torch.cat([lightness, a, b], dim=1)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """CIE Lab (D65) ``(B, 3, H, W)`` → sRGB in [0, 1] (clamped); the inverse of :func:`rgb_to_lab`."""
    fy = (lab[:, 0:1] + 16.0) / 116.0
    fx = fy + lab[:, 1:2] / 500.0
    fz = fy - lab[:, 2:3] / 200.0
    f = torch.cat([fx, fy, fz], dim=1)
    t = torch.where(f > _LAB_DELTA, f**3, 3 * _LAB_DELTA**2 * (f - 4.0 / 29.0))
    white = torch.tensor(_D65_WHITE, device=lab.device, dtype=lab.dtype).reshape(1, 3, 1, 1)
    matrix = torch.linalg.inv(torch.tensor(_SRGB_TO_XYZ, dtype=torch.float64)).to(device=lab.device, dtype=lab.dtype)
    linear = torch.einsum("ij,bjhw->bihw", matrix, t * white).clamp(0.0, 1.0)
    return torch.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear.clamp_min(1e-12) ** (1 / 2.4) - 0.055).clamp(
        0.0, 1.0
    )


def _masked_statistics(values: torch.Tensor, weights: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Weighted per-channel mean and standard deviation ``(B, C, 1, 1)`` and the weight sum ``(B, 1, 1, 1)``."""
    total = weights.sum(dim=(2, 3), keepdim=True)
    safe = total.clamp_min(1e-6)
    mean = (values * weights).sum(dim=(2, 3), keepdim=True) / safe
    variance = (((values - mean) ** 2) * weights).sum(dim=(2, 3), keepdim=True) / safe
    return mean, variance.clamp_min(0.0).sqrt(), total


def match_colour(
    swapped: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, method: ColourMethod = "mean_std"
) -> torch.Tensor:
    """Shift the swapped crops' colours towards the target crops' (Reinhard-style statistics transfer).

    Per face and channel, the mean and standard deviation inside ``mask`` (``(B, 1, S, S)``
    weights) are measured on both crops; the swapped crop is mapped ``(x - mean_s) / std_s *
    std_t + mean_t`` (the std ratio clamped to :data:`STD_RATIO_RANGE`), in RGB for
    ``"mean_std"`` and in CIE Lab for ``"lab"`` (which moves lightness and tint separately).
    The whole crop is mapped; the paste-back mask decides what is seen. Faces with an empty
    mask are returned unchanged. Returns a new tensor in ``swapped``'s dtype, clamped to [0, 1].
    """
    if method not in COLOUR_METHODS:
        raise BadInputError(
            f"unknown colour matching method {method!r}",
            where="match_colour",
            fix=f"use one of {', '.join(COLOUR_METHODS)}",
        )
    for name, tensor, channels in (("swapped", swapped, 3), ("target", target, 3), ("mask", mask, 1)):
        if not isinstance(tensor, torch.Tensor) or tensor.ndim != 4 or tensor.shape[1] != channels:
            got = tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__
            raise BadInputError(f"expected {name} of shape (B, {channels}, S, S), got {got}", where="match_colour")
    if swapped.shape != target.shape or mask.shape[0] != swapped.shape[0] or mask.shape[2:] != swapped.shape[2:]:
        raise BadInputError(
            f"swapped {tuple(swapped.shape)}, target {tuple(target.shape)} and mask {tuple(mask.shape)} do not match",
            where="match_colour",
        )
    if method == "none":
        return swapped.clone()
    compute = torch.float64 if swapped.dtype == torch.float64 else torch.float32
    source = swapped.to(compute)
    reference = target.to(device=swapped.device, dtype=compute)
    weights = mask.to(device=swapped.device, dtype=compute).clamp(0.0, 1.0)
    if method == "lab":
        source, reference = rgb_to_lab(source), rgb_to_lab(reference)
    mean_s, std_s, total = _masked_statistics(source, weights)
    mean_t, std_t, _ = _masked_statistics(reference, weights)
    ratio = (std_t / std_s.clamp_min(1e-6)).clamp(*STD_RATIO_RANGE)
    mapped = (source - mean_s) * ratio + mean_t
    if method == "lab":
        mapped = lab_to_rgb(mapped)
    mapped = torch.where(total > 1e-6, mapped, swapped.to(compute))
    return mapped.clamp(0.0, 1.0).to(swapped.dtype)


# --------------------------------------------------------------------------------------------------------------
# Paste-back


def _check_faces(
    frames: torch.Tensor,
    crops: torch.Tensor,
    masks: torch.Tensor,
    matrices: torch.Tensor,
    image_index: torch.Tensor | npt.ArrayLike,
    *,
    where: str,
    allow_bytes: bool = False,
) -> torch.Tensor:
    """Validate the paste-back inputs (``allow_bytes``: uint8 frames too); return ``image_index`` as a CPU long
    tensor."""
    # Shape and dtype only: scanning whole frames for NaN costs more than the paste itself, and the pipeline
    # checked the frames (check_images) when they came in.
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3 or frames.shape[0] == 0:
        got = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise BadInputError(f"expected frames of shape (N, 3, H, W), got {got}", where=where)
    if not frames.is_floating_point() and not (allow_bytes and frames.dtype == torch.uint8):
        raise BadInputError(
            f"expected float frames in [0, 1], got {frames.dtype}", where=where, fix="convert with frames.float() / 255"
        )
    if (
        not isinstance(crops, torch.Tensor)
        or crops.ndim != 4
        or crops.shape[1] != 3
        or crops.shape[2] != crops.shape[3]
    ):
        got = tuple(crops.shape) if isinstance(crops, torch.Tensor) else type(crops).__name__
        raise BadInputError(f"expected square crops (B, 3, S, S), got {got}", where=where)
    batch, size = int(crops.shape[0]), int(crops.shape[2])
    if not isinstance(masks, torch.Tensor) or tuple(masks.shape) != (batch, 1, size, size):
        got = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise BadInputError(
            f"expected masks of shape ({batch}, 1, {size}, {size}), got {got}",
            where=where,
            fix="build them with create_face_mask(kind, size, batch)",
        )
    if not isinstance(matrices, torch.Tensor) or tuple(matrices.shape) != (batch, 2, 3):
        got = tuple(matrices.shape) if isinstance(matrices, torch.Tensor) else type(matrices).__name__
        raise BadInputError(f"expected ({batch}, 2, 3) image -> crop matrices, got {got}", where=where)
    index = torch.as_tensor(image_index).detach().to("cpu").reshape(-1)
    if index.numel() != batch:
        raise BadInputError(f"expected {batch} frame indices (one per face), got {index.numel()}", where=where)
    if index.is_floating_point() and not bool((index == index.round()).all()):
        raise BadInputError("frame indices must be whole numbers", where=where)
    index = index.long()
    if batch and (int(index.min()) < 0 or int(index.max()) >= frames.shape[0]):
        raise BadInputError(
            f"a face refers to a frame outside the batch of {frames.shape[0]}",
            where=where,
            fix="pass image_index values between 0 and the number of frames - 1",
        )
    for name, tensor in (("crops", crops), ("masks", masks), ("matrices", matrices)):
        if not tensor.is_floating_point() or not bool(torch.isfinite(tensor).all()):
            raise BadInputError(f"the {name} must be finite float values", where=where)
    return index


def face_regions(matrices: torch.Tensor, size: int, height: int, width: int) -> torch.Tensor:
    """Integer frame regions ``(B, 4)`` = x0, y0, x1, y1 (end exclusive, clipped) covered by each ``size`` px
    crop (:func:`align.covered_regions` of a square crop)."""
    return covered_regions(matrices, (size, size), height, width)


@dataclass(frozen=True, eq=False)
class FaceCrops:
    """Face crops in a crop space of their own, and where they came from in the frames.

    What the restorer and the ``crops`` input of the Blend node hand back: ``images``
    ``(F, 3, S, S)`` in [0, 1] and ``matrices`` ``(F, 2, 3)`` frame -> crop pixels, one per
    face of a swap, in the swap's face order.
    """

    images: torch.Tensor  # (F, 3, S, S) float in [0, 1]
    matrices: torch.Tensor  # (F, 2, 3) float32 frame -> crop
    template: str  # the alignment the crops follow ("ffhq", "arcface", ...), for messages
    label: str = "crops"  # what they are, for messages ("restored crops", "crops input")

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    @property
    def num_faces(self) -> int:
        return int(self.images.shape[0])

    def to(self, device: torch.device | str) -> FaceCrops:
        return FaceCrops(self.images.to(device), self.matrices.to(device), self.template, self.label)


def compose_affine(first: torch.Tensor, then: torch.Tensor) -> torch.Tensor:
    """``(B, 2, 3)`` matrices that apply ``first`` and then ``then`` (``then ∘ first``), in float64 on the CPU."""
    a = first.detach().to("cpu", torch.float64)
    b = then.detach().to("cpu", torch.float64)
    if a.ndim != 3 or a.shape[1:] != (2, 3) or b.shape != a.shape:
        raise BadInputError(
            f"expected two (B, 2, 3) matrix batches of one size, got {tuple(a.shape)} and {tuple(b.shape)}",
            where="compose_affine",
        )
    linear = b[:, :, :2] @ a[:, :, :2]
    translation = (b[:, :, :2] @ a[:, :, 2:]).squeeze(2) + b[:, :, 2]
    return torch.cat([linear, translation.unsqueeze(2)], dim=2)


def resize_matrices(matrices: torch.Tensor, from_size: int, to_size: int) -> torch.Tensor:
    """Image -> crop matrices for the same crops resized from ``from_size`` to ``to_size`` pixels (float64, CPU).

    A resize maps the crop's outer edges onto each other (pixel centres at integers, edges at
    -0.5 and S - 0.5, as ``F.interpolate(align_corners=False)``, ``cv2.resize`` and PIL do):
    ``x' = k (x + 0.5) - 0.5`` with ``k = to_size / from_size``.
    """
    if from_size < 1 or to_size < 1:
        raise BadInputError(f"crop sizes must be positive, got {from_size} and {to_size}", where="resize_matrices")
    k = to_size / from_size
    scale = torch.tensor([[k, 0.0, 0.5 * k - 0.5], [0.0, k, 0.5 * k - 0.5]], dtype=torch.float64)
    scales = scale.unsqueeze(0).expand(matrices.shape[0], 2, 3)
    return compose_affine(matrices, scales)


def warp_crops(crops: torch.Tensor, from_matrices: torch.Tensor, to_matrices: torch.Tensor, size: int) -> torch.Tensor:
    """Crops ``(B, C, S, S)`` taken with ``from_matrices`` (image -> crop) as seen through ``to_matrices``.

    Returns ``(B, C, size, size)`` on the crops' device and dtype; what the first crop does not
    cover is 0 (bilinear sampling with a zero border, as :func:`align.warp_affine`).
    """
    crop_to_crop = compose_affine(invert_affine(from_matrices.detach().to("cpu", torch.float64)), to_matrices)
    compute = torch.float64 if crops.dtype == torch.float64 else torch.float32
    warped = warp_affine(crops.to(compute), crop_to_crop.to(device=crops.device, dtype=compute), (size, size))
    return warped.to(crops.dtype)


def crop_coverage(size: int, batch: int, *, feather: int, device: Device | None = None) -> torch.Tensor:
    """``(B, 1, S, S)`` weights of a crop pasted over a wider view: 1 inside, a ``feather`` px ramp to 0 at the edge.

    The ramp is linear in the distance to the nearest crop edge (0 on the outermost pixels), so
    a swapped crop laid over its surroundings leaves no seam.
    """
    target = torch.device(device) if device is not None else torch.device("cpu")
    coords = torch.arange(size, device=target, dtype=torch.float32)
    distance = torch.minimum(coords, size - 1 - coords)
    ramp = (distance / max(int(feather), 1)).clamp(0.0, 1.0)
    weights = torch.minimum(ramp[:, None], ramp[None, :])
    return weights.expand(batch, 1, size, size).clone()


def paste_back(
    frames: torch.Tensor,
    crops: torch.Tensor,
    masks: torch.Tensor,
    matrices: torch.Tensor,
    image_index: torch.Tensor | npt.ArrayLike,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite the crops into copies of their frames; returns ``(frames (N, 3, H, W), masks (N, H, W))``.

    Each face is warped back (crop and mask together, with :func:`align.warp_affine`) into
    a region of the frame just large enough for it, all faces in one batch; only those
    regions are read and written. Faces of the same frame are composited in batch order
    (a later face covers an earlier one). ``frame = frame + m * (crop - frame)`` where the
    mask ``m`` is strictly between 0 and 1, the crop where ``m >= 1`` and the frame's own
    values, bit for bit, where ``m <= 0``. The returned frame mask is the maximum of the
    face masks. Output dtype and device are the frames'; the compositing runs in float32
    (float64 for float64 frames). Byte frames (``uint8``) are composited region by region in
    float and rounded back (half up); their mask comes back as bytes too (0..255).
    """
    index = _check_faces(frames, crops, masks, matrices, image_index, where="paste_back", allow_bytes=True)
    num_frames, _, height, width = (int(n) for n in frames.shape)
    batch, size = int(crops.shape[0]), int(crops.shape[2])
    device = frames.device
    compute = torch.float64 if frames.dtype == torch.float64 else torch.float32
    as_bytes = is_byte_frames(frames)
    output = frames.detach().clone()  # in the frames' own memory layout (channels-last frames stay so)
    mask_dtype = torch.uint8 if as_bytes else compute
    frame_masks = torch.zeros((num_frames * height * width,), device=device, dtype=mask_dtype)
    if batch == 0:
        return output, frame_masks.reshape(num_frames, height, width).to(frames.dtype)

    regions = face_regions(matrices, size, height, width)  # (B, 4) CPU
    region_h = int((regions[:, 3] - regions[:, 1]).clamp_min(0).max())
    region_w = int((regions[:, 2] - regions[:, 0]).clamp_min(0).max())
    if region_h == 0 or region_w == 0:
        logger.debug("paste_back: every face lies outside its frame")
        return output, frame_masks.reshape(num_frames, height, width).to(frames.dtype)

    # crop -> region matrices: crop -> frame, then shift the region's corner to (0, 0).
    # (B x 6 numbers: done on the CPU in float64, which every device can then take in its compute dtype.)
    crop_to_frame = invert_affine(matrices.detach().to("cpu", torch.float64))
    shift = torch.zeros_like(crop_to_frame)
    shift[:, 0, 2] = regions[:, 0].to(shift.dtype)
    shift[:, 1, 2] = regions[:, 1].to(shift.dtype)
    crop_to_region = (crop_to_frame - shift).to(device=device, dtype=compute)
    stacked = torch.cat([crops.to(device=device, dtype=compute), masks.to(device=device, dtype=compute)], dim=1)

    # Composite face by face, in batch order (a later face of a frame covers an earlier one), each into its own
    # region of its frame through views: a few elementwise operations on the region, no gathers or scatters.
    # Faces are warped back a group at a time (all at once unless their regions are large: 4K close-ups).
    planes = frame_masks.view(num_frames, height, width)
    corners = regions.tolist()
    for start, stop, group_h, group_w in region_groups(regions):
        warped = warp_affine(stacked[start:stop], crop_to_region[start:stop], (group_h, group_w))  # (G, 4, h, w)
        for face in range(start, stop):
            _composite(output, planes, warped[face - start], corners[face], int(index[face]), as_bytes, compute)
    logger.debug("pasted %d faces into %d frames (regions up to %dx%d)", batch, num_frames, region_w, region_h)
    return output, frame_masks.reshape(num_frames, height, width).to(frames.dtype)


def _composite(
    output: torch.Tensor,
    planes: torch.Tensor,
    warped: torch.Tensor,
    corner: list[int],
    frame: int,
    as_bytes: bool,
    compute: torch.dtype,
) -> None:
    """Blend one warped face ``(C + 1, h, w)`` (colour, then weight) into its region of ``output[frame]`` in place, and
    raise the frame mask ``planes[frame]`` to its weight there."""
    x0, y0, x1, y1 = corner
    rows, cols = y1 - y0, x1 - x0
    channels = int(output.shape[1])
    if rows > 0 and cols > 0:
        weight = warped[channels, :rows, :cols].clamp(0.0, 1.0)  # (h, w)
        colour = warped[:channels, :rows, :cols]  # (C, h, w)
        region = output[frame, :, y0:y1, x0:x1]  # a view into the output frame
        if as_bytes:
            # lerp is exact at its ends, so where the weight is 0 the byte comes back as it was.
            region.copy_(region.to(compute).lerp_(colour * 255.0, weight).add_(0.5).clamp_(0.0, 255.0))
            weight = float_to_bytes(weight)
        elif region.dtype == compute:
            # One pass: lerp gives the frame's own values exactly where the weight is 0 and the crop's exactly
            # where it is 1 (torch.lerp computes from the nearer end).
            region.lerp_(colour, weight)
        else:
            original = region.to(compute)
            blended = (original + weight * (colour - original)).to(output.dtype)
            region.copy_(torch.where(weight >= 1.0, colour.to(output.dtype), torch.where(weight > 0, blended, region)))
        torch.maximum(planes[frame, y0:y1, x0:x1], weight, out=planes[frame, y0:y1, x0:x1])  # frame mask = max


def poisson_blend(
    frames: torch.Tensor,
    crops: torch.Tensor,
    masks: torch.Tensor,
    matrices: torch.Tensor,
    image_index: torch.Tensor | npt.ArrayLike,
    *,
    threshold: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Seamless (Poisson) cloning of each face into its frame with ``cv2.seamlessClone``.

    Slow and CPU-only: one OpenCV call per face on 8-bit images, then the result is moved
    back to the frames' device. The face region is the mask above ``threshold``; pixels
    outside it keep the frame's exact values. Returns ``(frames, masks (N, H, W))`` like
    :func:`paste_back` (the masks are 0/1).
    """
    index = _check_faces(frames, crops, masks, matrices, image_index, where="poisson_blend")
    num_frames, _, height, width = (int(n) for n in frames.shape)
    if crops.shape[0] == 0:
        return frames.detach().clone(), frames.new_zeros((num_frames, height, width))
    regions = face_regions(matrices, int(crops.shape[2]), height, width)
    inverse = invert_affine(matrices.detach().to("cpu", torch.float64)).numpy()
    work = {n: np.ascontiguousarray(_to_bgr_uint8(frames[n])) for n in sorted(set(index.tolist()))}
    region_mask = np.zeros((num_frames, height, width), dtype=bool)
    for face in range(int(crops.shape[0])):
        x0, y0, x1, y1 = (int(v) for v in regions[face])
        if x1 - x0 < 3 or y1 - y0 < 3:
            continue
        frame = int(index[face])
        # Everything happens inside the face's region of the frame: crop -> region matrix.
        shifted = inverse[face].copy()
        shifted[:, 2] -= (x0, y0)
        size = (x1 - x0, y1 - y0)
        source = cv2.warpAffine(_to_bgr_uint8(crops[face]), shifted, size, flags=cv2.INTER_LINEAR)
        soft = cv2.warpAffine(
            masks[face, 0].detach().to("cpu", torch.float32).numpy(), shifted, size, flags=cv2.INTER_LINEAR
        )
        binary = (soft > threshold).astype(np.uint8) * 255
        binary[0, :] = binary[-1, :] = 0  # seamlessClone needs a frame of destination pixels around the mask
        binary[:, 0] = binary[:, -1] = 0
        if not binary.any():
            continue
        x, y, w, h = cv2.boundingRect(binary)
        centre = (x + w // 2, y + h // 2)  # the patch is placed by its mask's bounding box centre
        destination = np.ascontiguousarray(work[frame][y0:y1, x0:x1])
        # seamlessClone writes into the mask it is given (OpenCV 5): hand it a copy, binary marks the region below.
        cloned = cv2.seamlessClone(source, destination, binary.copy(), centre, cv2.NORMAL_CLONE)
        work[frame][y0:y1, x0:x1] = np.asarray(cloned, dtype=np.uint8)
        region_mask[frame, y0:y1, x0:x1] |= binary > 0
    output = frames.detach().clone()
    for frame, image in work.items():
        cloned_frame = _from_bgr_uint8(image).to(device=frames.device, dtype=frames.dtype)
        selected = torch.from_numpy(region_mask[frame]).to(frames.device)
        output[frame] = torch.where(selected[None], cloned_frame, frames[frame])
    return output, torch.from_numpy(region_mask).to(device=frames.device, dtype=frames.dtype)


def _to_bgr_uint8(image: torch.Tensor) -> npt.NDArray[np.uint8]:
    scaled = image.detach().to("cpu", torch.float32).clamp(0, 1).mul(255).round().to(torch.uint8)
    return np.ascontiguousarray(scaled.permute(1, 2, 0).numpy()[:, :, ::-1])


def _from_bgr_uint8(image: npt.NDArray[np.uint8]) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1])).permute(2, 0, 1).float().div(255.0)


def paste_back_reference(
    frame_bgr: npt.NDArray[np.uint8], crop_bgr: npt.NDArray[np.uint8], matrix: npt.ArrayLike
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.float32]]:
    """The benchmark baseline: insightface's paste-back of one face, in numpy/OpenCV over the whole frame.

    As insightface's inswapper does it (see MODELS.md): warp the crop and a white square back
    with the inverse of ``matrix`` (image -> crop), threshold the warped white at 20, erode
    it with a ``k x k`` square, ``k = max(face_size // 10, 10)`` where ``face_size`` is the
    square root of the thresholded region's box area, Gaussian-blur it with a kernel of
    ``2 * max(face_size // 20, 5) + 1``, and blend; the result is truncated to uint8 as
    insightface does. Returns the new frame and the float mask ``(H, W)`` in [0, 1].
    """
    frame = np.asarray(frame_bgr)
    crop = np.asarray(crop_bgr)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise BadInputError("expected an (H, W, 3) uint8 BGR frame", where="paste_back_reference")
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3:
        raise BadInputError("expected an (S, S, 3) uint8 BGR crop", where="paste_back_reference")
    height, width = frame.shape[:2]
    inverse = cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64).reshape(2, 3))
    warped = cv2.warpAffine(crop, inverse, (width, height), borderValue=(0, 0, 0))
    white = np.full(crop.shape[:2], 255, dtype=np.uint8)
    region = cv2.warpAffine(white, inverse, (width, height), borderValue=0)
    region = np.where(region > 20, 255, 0).astype(np.uint8)
    ys, xs = np.nonzero(region)
    if ys.size == 0:
        return frame.copy(), np.zeros((height, width), dtype=np.float32)
    face_size = int(math.sqrt(float(ys.max() - ys.min()) * float(xs.max() - xs.min())))
    k = max(face_size // 10, 10)
    region = cv2.erode(region, np.ones((k, k), dtype=np.uint8), iterations=1)
    k = max(face_size // 20, 5)
    mask = cv2.GaussianBlur(region, (2 * k + 1, 2 * k + 1), 0).astype(np.float32) / 255.0
    blended = mask[:, :, None] * warped.astype(np.float32) + (1.0 - mask[:, :, None]) * frame.astype(np.float32)
    return np.clip(blended, 0, 255).astype(np.uint8), mask
