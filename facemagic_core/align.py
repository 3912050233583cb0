"""Face alignment: five-point templates, similarity transforms and batched crop warping in torch.

Conventions (the same as OpenCV's, so that matrices can be handed to ``cv2.warpAffine``):

- points are ``(x, y)`` pixels, pixel centres at integer coordinates;
- an affine matrix is ``(2, 3)`` and maps a point of the *source* image to the *output*
  image: ``[x', y'] = M[:, :2] @ [x, y] + M[:, 2]``; batches are ``(B, 2, 3)``;
- :func:`warp_affine` gives what ``cv2.warpAffine(src, M, (w, h), flags=INTER_LINEAR,
  borderMode=BORDER_CONSTANT, borderValue=0)`` gives, for a whole batch at once, on any
  device and floating dtype; byte frames (``uint8``, 0..255) are sampled region by region
  into float crops in [0, 1], so a whole frame is never converted.

Pipeline order: :func:`face_template` -> :func:`estimate_similarity` -> :func:`warp_affine`
(or all three at once with :func:`align_faces`); :func:`invert_affine` and
:func:`transform_points` take crops and points back to the image.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

from .errors import BadInputError
from .images import check_images, is_byte_frames
from .types import Face, FloatArray

logger = logging.getLogger(__name__)

#: Which five-point layout a crop is aligned to.
TemplateName = Literal["arcface", "ffhq", "dlib"]
TEMPLATE_NAMES: tuple[str, ...] = get_args(TemplateName)

#: ArcFace's 112 px template (insightface's ``arcface_dst``): left eye, right eye, nose tip,
#: left and right mouth corner, image left/right. Every ArcFace recogniser and inswapper-style
#: swapper is trained on crops aligned to it (see ../shared/MODELS.md).
ARCFACE_TEMPLATE_112: FloatArray = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)

#: The five-point template for 512 px FFHQ-style crops, same point order. These are the
#: numbers GFPGAN and CodeFormer (through facexlib's FaceRestoreHelper) align 512 px faces
#: to; facefusion's ``ffhq_512`` template is the same layout divided by 512. Other sizes are
#: the same layout scaled by ``size / 512``.
FFHQ_TEMPLATE_512: FloatArray = np.array(
    [[192.98138, 239.94708], [318.90277, 240.19360], [256.63416, 314.01935], [201.26117, 371.41043],
     [313.08905, 371.15118]],
    dtype=np.float32,
)  # fmt: skip

#: The five points (same order) in dlib's 150 px face chip as its face recogniser sees it
#: (``get_face_chip_details(shape, 150, 0.25)``): dlib maps 33 points of its 68-point mean face to
#: ``(0.25 + p) / 1.5 * 150``; these are the eye centres (means of points 36-41 and 42-47), the
#: nose tip (30) and the mouth corners (48, 54) of that mean face, mapped the same way. Other
#: sizes are the same layout scaled by ``size / 150``.
DLIB_TEMPLATE_150: FloatArray = np.array(
    [[47.5492, 46.5990], [100.4761, 46.5990], [74.0127, 76.5625], [50.4149, 103.0233], [97.6104, 103.0233]],
    dtype=np.float32,
)

#: Below this variance (pixels squared) five landmarks are one point and fix no transform.
_MIN_POINT_SPREAD = 1e-6


def face_template(name: TemplateName, size: int) -> FloatArray:
    """The ``(5, 2)`` float32 template of ``name`` for a square crop of ``size`` pixels.

    ``"arcface"``: a size that is a multiple of 112 scales the 112 template by ``size / 112``;
    any other size scales it by ``size / 128`` and shifts x by ``8 * size / 128`` (insightface's
    rule: the 112 face sits inside a 128 frame, e.g. inswapper's 128 px crops).
    ``"ffhq"``: the 512 template scaled by ``size / 512``.
    ``"dlib"``: dlib's 150 px face chip (its ResNet recogniser's input) scaled by ``size / 150``.
    """
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 16:
        raise BadInputError(
            f"a crop size must be a whole number of pixels, at least 16; got {size!r}",
            where="alignment template",
            fix="use the input size of the model the crop is for (112, 128, 256, 512...)",
        )
    size = int(size)
    if name == "arcface":
        if size % 112 == 0:
            template = ARCFACE_TEMPLATE_112 * np.float32(size / 112)
        else:
            template = ARCFACE_TEMPLATE_112 * np.float32(size / 128)
            template[:, 0] += np.float32(8 * size / 128)
    elif name == "ffhq":
        template = FFHQ_TEMPLATE_512 * np.float32(size / 512)
    elif name == "dlib":
        template = DLIB_TEMPLATE_150 * np.float32(size / 150)
    else:
        raise BadInputError(
            f"unknown alignment template {name!r}",
            where="alignment template",
            fix=f"use one of {', '.join(TEMPLATE_NAMES)}",
        )
    return np.ascontiguousarray(template, dtype=np.float32)


def _work_dtype(device: torch.device) -> torch.dtype:
    """float64 for the small linear algebra on the points, except where the device lacks it (MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def _result_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def estimate_similarity(points: torch.Tensor, template: torch.Tensor | FloatArray) -> torch.Tensor:
    """The least-squares similarity transforms (rotation, uniform scale, translation) ``points -> template``.

    ``points`` is ``(B, N, 2)`` (N >= 2, usually the five landmarks), ``template`` ``(N, 2)``
    or ``(B, N, 2)``. Returns ``(B, 2, 3)`` image -> crop matrices (float32, or float64 for
    float64 points). This is Umeyama's solution restricted to proper rotations (no
    reflection); in 2-D it has the closed form used here, with rotation-and-scale written as
    one complex factor ``a + ib``:

    ``a = sum(<p_i, q_i>) / sum(|p_i|^2)``, ``b = sum(p_i x q_i) / sum(|p_i|^2)``

    for the centred points ``p_i`` and centred template points ``q_i``.
    """
    if not isinstance(points, torch.Tensor) or points.ndim != 3 or points.shape[-1] != 2 or points.shape[1] < 2:
        shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise BadInputError(f"expected landmarks of shape (B, N, 2) with N >= 2, got {shape}", where="alignment")
    work = _work_dtype(points.device)
    source = points.to(work)
    target = torch.as_tensor(template).to(device=points.device, dtype=work)
    if target.ndim == 2:
        target = target.unsqueeze(0).expand(source.shape[0], -1, -1)
    if target.shape != source.shape:
        raise BadInputError(
            f"the template has shape {tuple(target.shape)} but the landmarks have {tuple(source.shape)}",
            where="alignment",
            fix="give one template point per landmark",
        )
    if not bool(torch.isfinite(source).all()):
        bad = torch.nonzero(~torch.isfinite(source).flatten(1).all(dim=1)).flatten().tolist()
        raise BadInputError("landmarks contain NaN or infinite values", where=f"faces {bad}", fix="re-detect the faces")
    source_mean = source.mean(dim=1, keepdim=True)
    target_mean = target.mean(dim=1, keepdim=True)
    p = source - source_mean
    q = target - target_mean
    spread = (p * p).sum(dim=(1, 2))
    if bool((spread < _MIN_POINT_SPREAD * source.shape[1]).any()):
        bad = torch.nonzero(spread < _MIN_POINT_SPREAD * source.shape[1]).flatten().tolist()
        raise BadInputError(
            "the landmarks of a face all lie on one point, so no alignment can be computed",
            where=f"faces {bad}",
            fix="re-detect the faces; landmarks must be distinct pixel positions",
        )
    a = (p[..., 0] * q[..., 0] + p[..., 1] * q[..., 1]).sum(dim=1) / spread
    b = (p[..., 0] * q[..., 1] - p[..., 1] * q[..., 0]).sum(dim=1) / spread
    linear = torch.stack([torch.stack([a, -b], dim=-1), torch.stack([b, a], dim=-1)], dim=1)  # (B, 2, 2)
    translation = target_mean.squeeze(1) - (linear @ source_mean.transpose(1, 2)).squeeze(2)
    matrices = torch.cat([linear, translation.unsqueeze(2)], dim=2)
    return matrices.to(_result_dtype(points.dtype))


def _check_matrices(matrices: torch.Tensor) -> None:
    if not isinstance(matrices, torch.Tensor) or matrices.ndim != 3 or tuple(matrices.shape[1:]) != (2, 3):
        shape = tuple(matrices.shape) if isinstance(matrices, torch.Tensor) else type(matrices).__name__
        raise BadInputError(f"expected affine matrices of shape (B, 2, 3), got {shape}", where="alignment")


def invert_affine(matrices: torch.Tensor) -> torch.Tensor:
    """The inverse ``(B, 2, 3)`` transforms (crop -> image for image -> crop), like ``cv2.invertAffineTransform``."""
    _check_matrices(matrices)
    work = matrices.to(_work_dtype(matrices.device))
    a, b, c = work[:, 0, 0], work[:, 0, 1], work[:, 0, 2]
    d, e, f = work[:, 1, 0], work[:, 1, 1], work[:, 1, 2]
    determinant = a * e - b * d
    singular = determinant.abs() < 1e-12
    if bool(singular.any()):
        raise BadInputError(
            "an affine matrix is singular and cannot be inverted",
            where=f"matrices {torch.nonzero(singular).flatten().tolist()}",
            fix="check the landmarks the matrices were estimated from",
        )
    inverse_linear = torch.stack([torch.stack([e, -b], dim=-1), torch.stack([-d, a], dim=-1)], dim=1)
    inverse_linear = inverse_linear / determinant[:, None, None]
    inverse_translation = -(inverse_linear @ torch.stack([c, f], dim=-1).unsqueeze(2))
    inverse = torch.cat([inverse_linear, inverse_translation], dim=2)
    return inverse.to(_result_dtype(matrices.dtype))


def transform_points(points: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Apply ``(B, 2, 3)`` matrices to ``(B, N, 2)`` points; returns ``(B, N, 2)`` in the points' dtype."""
    _check_matrices(matrices)
    if not isinstance(points, torch.Tensor) or points.ndim != 3 or points.shape[-1] != 2:
        shape = tuple(points.shape) if isinstance(points, torch.Tensor) else type(points).__name__
        raise BadInputError(f"expected points of shape (B, N, 2), got {shape}", where="alignment")
    if points.shape[0] != matrices.shape[0]:
        raise BadInputError(
            f"{points.shape[0]} point sets but {matrices.shape[0]} matrices", where="alignment", fix="give one each"
        )
    work = torch.promote_types(_result_dtype(points.dtype), _result_dtype(matrices.dtype))
    m = matrices.to(device=points.device, dtype=work)
    moved = points.to(work) @ m[:, :, :2].transpose(1, 2) + m[:, :, 2].unsqueeze(1)
    return moved.to(points.dtype)


def covered_regions(matrices: torch.Tensor, size: tuple[int, int], height: int, width: int) -> torch.Tensor:
    """Integer source regions ``(B, 4)`` = x0, y0, x1, y1 (end exclusive, clipped to ``height`` x ``width``) that
    outputs of ``size`` = ``(out_h, out_w)`` seen through ``matrices`` (source -> output) sample, on the CPU.

    The output's outer corners (pixel edges at -0.5 and out - 0.5) are mapped back to the source;
    the region is their bounding box, widened by one pixel for bilinear sampling. An output that
    lies entirely outside the source gets an empty region (x1 <= x0 or y1 <= y0).
    """
    inverse = invert_affine(matrices.detach().to("cpu", torch.float64))
    right, bottom = size[1] - 0.5, size[0] - 0.5
    corners = torch.tensor(
        [[-0.5, -0.5, 1.0], [right, -0.5, 1.0], [-0.5, bottom, 1.0], [right, bottom, 1.0]], dtype=inverse.dtype
    )
    mapped = torch.einsum("kj,bij->bki", corners, inverse)  # (B, 4 corners, 2)
    low = torch.floor(mapped.amin(dim=1)) - 1
    high = torch.ceil(mapped.amax(dim=1)) + 2
    x0 = low[:, 0].clamp(0, width)
    y0 = low[:, 1].clamp(0, height)
    x1 = high[:, 0].clamp(0, width)
    y1 = high[:, 1].clamp(0, height)
    return torch.stack([x0, y0, x1, y1], dim=1).long()


#: Faces whose regions are warped in one call cover at most this many pixels together (the float regions and their
#: sampling grid take ~28 bytes a pixel): large faces of 4K frames go a few at a time, 1080p faces all at once.
REGION_PIXEL_BUDGET = 1 << 22


def region_groups(regions: torch.Tensor, budget: int | None = None) -> list[tuple[int, int, int, int]]:
    """Consecutive faces ``(start, stop, height, width)`` whose ``(B, 4)`` regions (:func:`covered_regions`), padded
    to the group's largest height and width, stay within ``budget`` pixels (default :data:`REGION_PIXEL_BUDGET`;
    one face at least per group)."""
    budget = REGION_PIXEL_BUDGET if budget is None else budget
    spans = (regions[:, 2:] - regions[:, :2]).clamp_min(0).tolist()  # (B, 2) width, height
    groups: list[tuple[int, int, int, int]] = []
    start, height, width = 0, 1, 1
    for face, (w, h) in enumerate(spans):
        grown_h, grown_w = max(height, int(h)), max(width, int(w))
        if face > start and (face + 1 - start) * grown_h * grown_w > budget:
            groups.append((start, face, height, width))
            start, grown_h, grown_w = face, max(1, int(h)), max(1, int(w))
        height, width = grown_h, grown_w
    if spans:
        groups.append((start, len(spans), height, width))
    return groups


def _warp_byte_regions(
    images: torch.Tensor, matrices: torch.Tensor, size: tuple[int, int], index: torch.Tensor
) -> torch.Tensor:
    """:func:`warp_affine` of byte frames: each output's source region, and only that, becomes float in [0, 1].

    The regions (padded with zeros to the largest) are what a full-frame warp would read, so the result is
    that of warping ``images / 255``; a face's region costs its own pixels, whatever the frame size.
    """
    channels = int(images.shape[1])
    regions = covered_regions(matrices, size, int(images.shape[2]), int(images.shape[3]))
    # source -> output becomes region -> output: p = q + corner, so the translation gains A @ corner.
    shifted = matrices.detach().to("cpu", torch.float64).clone()
    shifted[:, :, 2] += (shifted[:, :, :2] @ regions[:, :2].to(torch.float64).unsqueeze(2)).squeeze(2)
    shifted = shifted.to(device=images.device, dtype=torch.float32)
    corners, frames = regions.tolist(), index.tolist()
    outputs = []
    for start, stop, region_h, region_w in region_groups(regions):
        patches = torch.zeros((stop - start, channels, region_h, region_w), device=images.device, dtype=torch.float32)
        for face in range(start, stop):
            x0, y0, x1, y1 = corners[face]
            if x1 > x0 and y1 > y0:  # bytes -> float, one region
                patches[face - start, :, : y1 - y0, : x1 - x0] = images[frames[face], :, y0:y1, x0:x1]
        outputs.append(warp_affine(patches.div_(255.0), shifted[start:stop], size))
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs)


def warp_affine(
    images: torch.Tensor,
    matrices: torch.Tensor,
    size: tuple[int, int],
    *,
    image_index: torch.Tensor | None = None,
) -> torch.Tensor:
    """Warp images with affine matrices: output ``b`` is ``images[image_index[b]]`` seen through ``matrices[b]``.

    Same semantics as ``cv2.warpAffine(src, M, (out_w, out_h), flags=INTER_LINEAR,
    borderMode=BORDER_CONSTANT, borderValue=0)``: ``matrices`` map *source* pixels to
    *output* pixels, pixel centres are at integers, samples outside the source blend with
    zeros. ``images`` is ``(N, C, H, W)``, ``matrices`` ``(B, 2, 3)``, ``size`` is
    ``(out_h, out_w)``; ``image_index`` ``(B,)`` defaults to ``arange(B)`` (then ``N == B``).
    Returns ``(B, C, out_h, out_w)`` in the images' dtype and device; inputs are not modified.
    Byte frames (``uint8``, 0..255) give float32 outputs in [0, 1]: each output's source region is
    cut and converted, never the whole frame (:func:`covered_regions`).

    Frames are never copied per face: faces of the same frame are sampled in one
    ``grid_sample`` call, their output grids stacked along the height axis. Half-precision
    images are sampled in float32 (normalised float16 coordinates would be off by up to
    half a pixel on a 1080p frame) and the result is cast back. Everything stays on the
    images' device; the host waits only for three scalars (the singular-matrix and
    image-index checks, and the most faces in one frame, which sizes the sampling grid).
    """
    _check_matrices(matrices)
    if (
        not isinstance(images, torch.Tensor)
        or images.ndim != 4
        or not (images.is_floating_point() or images.dtype == torch.uint8)
    ):
        raise BadInputError("expected float or uint8 images of shape (N, C, H, W)", where="warp_affine")
    out_h, out_w = (int(size[0]), int(size[1]))
    if out_h < 1 or out_w < 1:
        raise BadInputError(f"the output size must be positive, got {size}", where="warp_affine")
    batch = int(matrices.shape[0])
    num_images, channels, height, width = (int(n) for n in images.shape)
    device = images.device
    if image_index is None:
        if num_images != batch:
            raise BadInputError(
                f"{batch} matrices for {num_images} images and no image_index",
                where="warp_affine",
                fix="pass image_index saying which image each matrix belongs to",
            )
        index = torch.arange(batch, device=device)
    else:
        index = torch.as_tensor(image_index, device=device).long().flatten()
        if index.numel() != batch:
            raise BadInputError(f"image_index has {index.numel()} entries for {batch} matrices", where="warp_affine")
        if batch and (int(index.min()) < 0 or int(index.max()) >= num_images):
            raise BadInputError(f"image_index refers to images outside the batch of {num_images}", where="warp_affine")
    compute = images.dtype if images.dtype in (torch.float32, torch.float64) else torch.float32
    if batch == 0:
        empty = torch.float32 if images.dtype == torch.uint8 else images.dtype
        return torch.zeros((0, channels, out_h, out_w), device=device, dtype=empty)
    if is_byte_frames(images):
        return _warp_byte_regions(images, matrices, (out_h, out_w), index)

    # For every output pixel (x, y), the source pixel it samples: cv2's dst(x, y) = src(M^-1 [x, y, 1]),
    # expressed at once in grid_sample's align_corners=False coordinates, where pixel centres at integers
    # become u = (2 * x_source + 1) / W - 1 (so -1 and 1 are the outer edges of the source).
    inverse = invert_affine(matrices.to(device)).to(compute)  # (B, 2, 3) output -> source pixels
    to_unit = torch.tensor([2.0 / width, 2.0 / height], device=device, dtype=compute)
    linear = inverse[:, :, :2] * to_unit[None, :, None]  # (B, 2, 2)
    offset = inverse[:, :, 2] * to_unit + (to_unit / 2 - 1)  # (B, 2)
    xs = torch.arange(out_w, device=device, dtype=compute)
    ys = torch.arange(out_h, device=device, dtype=compute)
    # Separable: the x part varies along the row, the y part down the column; one broadcast add makes the grid.
    along_x = xs[None, None, :, None] * linear[:, None, None, :, 0] + offset[:, None, None, :]  # (B, 1, w, 2)
    along_y = ys[None, :, None, None] * linear[:, None, None, :, 1]  # (B, h, 1, 2)
    source_images = images if images.dtype == compute else images.to(compute)

    if num_images == 1:  # every face from one frame (a single photo): stack their grids along the height axis
        grid = (along_x + along_y).reshape(1, batch * out_h, out_w, 2)
        sampled = F.grid_sample(source_images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return sampled.reshape(channels, batch, out_h, out_w).transpose(0, 1).to(images.dtype)

    # Several frames: slot each face in its frame, faces of one frame stacked along the grid's height axis;
    # unused slots sample far outside (zeros). Frames are never copied per face.
    counts = torch.bincount(index, minlength=num_images)
    slots = int(counts.max())
    order = torch.argsort(index, stable=True)
    starts = torch.cumsum(counts, dim=0) - counts
    slot_of = torch.empty_like(index)
    slot_of[order] = torch.arange(batch, device=device) - starts[index[order]]
    grids = torch.full((num_images, slots, out_h, out_w, 2), -4.0, device=device, dtype=compute)
    grids[index, slot_of] = along_x + along_y
    sampled = F.grid_sample(
        source_images,
        grids.reshape(num_images, slots * out_h, out_w, 2),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=False,
    )  # (N, C, slots * h, w)
    sampled = sampled.reshape(num_images, channels, slots, out_h, out_w).transpose(1, 2)
    return sampled[index, slot_of].to(images.dtype)


def frames_to_sample(frames: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``frames`` on ``device`` as :func:`warp_affine` samples them: byte frames stay bytes (only face regions are
    converted), float frames become float32."""
    if is_byte_frames(frames):
        return frames.to(device)
    return frames.to(device=device, dtype=torch.float32)


def align_faces(
    images: torch.Tensor, faces: Sequence[Face], size: int, template: TemplateName = "arcface", *, scan: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Crop every face to a ``size`` x ``size`` square aligned to ``template``.

    ``images`` is the ``(N, 3, H, W)`` batch the faces were found in (``face.image_index``
    says which image). Returns the crops ``(B, 3, size, size)`` in the images' dtype (float32 in [0, 1] for
    byte frames) and device, and the ``(B, 2, 3)`` float32 image -> crop matrices (on the same device).
    ``scan=False``: the images passed :func:`images.check_images` already (their pixels are not read again).
    """
    check_images(images, where="images to align", allow_bytes=True, scan=scan)
    points_template = face_template(template, size)
    device = images.device
    if not faces:
        empty = torch.float32 if is_byte_frames(images) else images.dtype
        return torch.zeros((0, 3, size, size), device=device, dtype=empty), torch.zeros((0, 2, 3), device=device)
    landmarks = np.stack([np.asarray(face.landmarks_5, dtype=np.float64) for face in faces])
    if landmarks.shape[1:] != (5, 2):
        raise BadInputError(f"faces need (5, 2) landmarks, got {landmarks.shape[1:]}", where="align_faces")
    image_index = torch.tensor([int(face.image_index) for face in faces], dtype=torch.long)
    if int(image_index.min()) < 0 or int(image_index.max()) >= images.shape[0]:
        raise BadInputError(
            f"a face refers to an image outside the batch of {images.shape[0]}",
            where="align_faces",
            fix="align faces with the image batch they were detected in",
        )
    # The 5-point fit is tiny: do it on the CPU in float64, then move the matrices to the images' device.
    matrices = estimate_similarity(torch.from_numpy(landmarks), points_template).to(device=device, dtype=torch.float32)
    crops = warp_affine(images, matrices, (size, size), image_index=image_index.to(device))
    return crops, matrices
