"""Masks that understand the face: occlusion (XSeg), region parsing (BiSeNet) and landmark areas.

Every mask here is made per face in the generator's crop space ``(F, 1, C, C)``, 1 where the
swapped face may show and 0 where the target must stay as it is; :func:`create_finish_masks`
combines them by minimum (facefusion's convention) and :func:`~facemagic_core.pipeline.blend_swap`
(``crop_mask=``) combines the result by minimum with the shape mask and the limit mask, so a
mask can only ever take away. The models look at the *target* face (what covers it, what is
skin), re-aligned to the FFHQ template at their own input size, and their masks are warped
into the crop.

- Occlusion, XSeg (facefusion's xseg_1, xseg_2, xseg_3): input ``(1, 256, 256, 3)`` NHWC RGB
  in [0, 1], output ``(1, 256, 256, 1)``, 1 on the visible face, 0 on hands, microphones,
  hair in front of it.
- Region parsing, BiSeNet (face-parsing.PyTorch, as facefusion hosts bisenet_resnet_18/34):
  input ``(1, 3, 512, 512)`` RGB normalised with ImageNet's mean and std, output 19 class
  logits per pixel in CelebAMask-HQ's order (:data:`PARSER_CLASSES`). A region choice keeps
  the pixels whose most likely class is in it.
- Landmark areas, no model: the mouth, the eyes, the lower face as convex hulls of the 68- or
  106-point landmarks (with only the five points: an ellipse around the mouth corners, a disc
  around each eye). ``keep`` areas give the target's own mouth or eyes back.

Both models run batched (a fixed-batch file once per face) through onnxruntime.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .align import estimate_similarity, face_template, frames_to_sample, transform_points, warp_affine
from .blend import convex_hulls, gaussian_blur, warp_crops
from .errors import BadInputError, ModelIntegrityError
from .runtime import ProviderSpec, create_session

if TYPE_CHECKING:
    import onnxruntime

    from .pipeline import SwapBatch

logger = logging.getLogger(__name__)

OccluderName = Literal["xseg_1", "xseg_2", "xseg_3"]
OCCLUDER_NAMES: tuple[str, ...] = get_args(OccluderName)
ParserName = Literal["bisenet_resnet_18", "bisenet_resnet_34"]
PARSER_NAMES: tuple[str, ...] = get_args(ParserName)

#: CelebAMask-HQ's 19 classes, in the order of BiSeNet's output channels (face-parsing.PyTorch).
PARSER_CLASSES = (
    "background", "skin", "left_brow", "right_brow", "left_eye", "right_eye", "glasses", "left_ear", "right_ear",
    "earring", "nose", "mouth", "upper_lip", "lower_lip", "neck", "necklace", "cloth", "hair", "hat",
)  # fmt: skip

#: Regions a user can choose, and the parser classes each one covers.
FaceRegion = Literal[
    "skin", "brows", "left_brow", "right_brow", "eyes", "left_eye", "right_eye", "glasses", "ears", "nose",
    "mouth", "lips", "upper_lip", "lower_lip", "neck", "hair",
]  # fmt: skip
FACE_REGIONS: tuple[str, ...] = get_args(FaceRegion)
REGION_CLASSES: dict[str, tuple[int, ...]] = {
    "skin": (1,),
    "brows": (2, 3),
    "left_brow": (2,),
    "right_brow": (3,),
    "eyes": (4, 5),
    "left_eye": (4,),
    "right_eye": (5,),
    "glasses": (6,),
    "ears": (7, 8),
    "nose": (10,),
    "mouth": (11,),
    "lips": (12, 13),
    "upper_lip": (12,),
    "lower_lip": (13,),
    "neck": (14,),
    "hair": (17,),
}
#: facefusion's default region choice: the face without ears, neck and hair.
DEFAULT_REGIONS: tuple[str, ...] = ("skin", "brows", "eyes", "glasses", "nose", "mouth", "lips")

#: Areas drawn from landmarks, no model needed.
LandmarkArea = Literal["mouth", "eyes", "lower_face"]
LANDMARK_AREAS: tuple[str, ...] = get_args(LandmarkArea)
#: Landmark indices of each area, per landmark count (68: the iBUG / dlib markup; 106: insightface's 2d106det).
AREA_POINTS: dict[int, dict[str, tuple[tuple[int, ...], ...]]] = {
    68: {
        "mouth": (tuple(range(48, 60)),),
        "eyes": (tuple(range(36, 42)), tuple(range(42, 48))),
        "lower_face": ((*range(2, 15), 31, 32, 33, 34, 35),),
    },
    106: {
        "mouth": (tuple(range(52, 72)),),
        "eyes": (tuple(range(33, 43)), tuple(range(87, 97))),
        "lower_face": ((*range(4, 29), *range(76, 87)),),
    },
}
#: Landmark areas grow by this fraction of the face size (a kept mouth includes the lips' edge), then feather.
AREA_MARGIN = 0.025
AREA_FEATHER = 0.05

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# ---------------------------------------------------------------------------------------------------------------------
# What to mask


@dataclass(frozen=True)
class FaceMaskSpec:
    """Which finishing masks to make. Empty: none (the shape mask alone decides)."""

    occlusion: bool = False  # keep what covers the face (XSeg)
    regions: tuple[str, ...] = ()  # swap only these parsed regions (BiSeNet); () = no region mask
    areas: tuple[str, ...] = ()  # swap only inside these landmark areas; () = the whole face
    keep: tuple[str, ...] = ()  # landmark areas where the target's own face stays (keep the mouth: ("mouth",))

    def __post_init__(self) -> None:
        for name, values, allowed in (
            ("region", self.regions, FACE_REGIONS),
            ("area", self.areas, LANDMARK_AREAS),
            ("kept area", self.keep, LANDMARK_AREAS),
        ):
            for value in values:
                if value not in allowed:
                    raise BadInputError(
                        f"unknown {name} {value!r}", where="face masks", fix=f"use one of {', '.join(allowed)}"
                    )

    @property
    def is_empty(self) -> bool:
        return not (self.occlusion or self.regions or self.areas or self.keep)

    @classmethod
    def parse(cls, text: str, *, keep_mouth: bool = False) -> FaceMaskSpec:
        """``"occlusion,region:skin+nose,mouth,keep:eyes"`` (the command line's --mask items) as a spec."""
        occlusion, regions, areas, keep = False, list[str](), list[str](), list[str]()
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            kind, _, rest = item.partition(":")
            if item == "occlusion":
                occlusion = True
            elif kind == "region":
                regions.extend(rest.split("+") if rest else DEFAULT_REGIONS)
            elif kind == "keep" and rest:
                keep.extend(rest.split("+"))
            elif item in LANDMARK_AREAS:
                areas.append(item)
            else:
                raise BadInputError(
                    f"unknown mask {item!r}",
                    where="face masks",
                    fix="use occlusion, region:NAME+NAME ("
                    + ", ".join(FACE_REGIONS)
                    + "), an area ("
                    + ", ".join(LANDMARK_AREAS)
                    + ") or keep:AREA",
                )
        if keep_mouth:
            keep.append("mouth")
        return cls(occlusion, tuple(dict.fromkeys(regions)), tuple(dict.fromkeys(areas)), tuple(dict.fromkeys(keep)))


# ---------------------------------------------------------------------------------------------------------------------
# The two models


def _image_input(
    session: onnxruntime.InferenceSession, *, channels_last: bool, where: str, kind: str
) -> tuple[str, int, bool]:
    inputs = list(session.get_inputs())
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        shapes = ", ".join(f"{item.name} {item.shape}" for item in inputs)
        raise BadInputError(f"this ONNX file is not {kind}: got inputs {shapes}", where=where, fix=f"use {kind} file")
    shape = inputs[0].shape
    height, width, channels = (shape[1], shape[2], shape[3]) if channels_last else (shape[2], shape[3], shape[1])
    if channels not in (3, "3") or not (isinstance(height, int) and height == width):
        layout = "(1, S, S, 3)" if channels_last else "(1, 3, S, S)"
        raise BadInputError(
            f"this ONNX file is not {kind}: its input is {shape}, expected {layout}",
            where=where,
            fix=f"use {kind} file",
        )
    return inputs[0].name, int(height), isinstance(shape[0], int)


class _MaskModel:
    """An ONNX mask model: a session and how to call it, batched (one face per call for a fixed batch of 1)."""

    kind = ""
    channels_last = False

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        providers: list[ProviderSpec] | None = None,
        max_batch: int = 4,
    ) -> None:
        self.path = Path(path)
        self.name = name or self.path.stem
        self.session = create_session(self.path, providers=providers, what=f"{self.kind} {self.name}")
        self.input_name, self.input_size, self.fixed_batch = _image_input(
            self.session, channels_last=self.channels_last, where=str(self.path), kind=f"a {self.kind}"
        )
        self.output_name = self.session.get_outputs()[0].name
        self.max_batch = max(1, int(max_batch))
        logger.info(
            "%s %s: %d px input, providers %s", self.kind, self.name, self.input_size, self.session.get_providers()
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {self.input_size} px)"

    def _run(self, batch: np.ndarray) -> np.ndarray:
        step = 1 if self.fixed_batch else self.max_batch
        parts = []
        for start in range(0, len(batch), step):
            result = self.session.run([self.output_name], {self.input_name: batch[start : start + step]})
            parts.append(np.asarray(result[0], dtype=np.float32))
        out = np.concatenate(parts)
        if not np.all(np.isfinite(out)):
            raise ModelIntegrityError(
                f"{self.name} returned NaN or infinite values", where=str(self.path), fix="use the original file"
            )
        return out

    def _check(self, crops: Tensor) -> None:
        if not isinstance(crops, Tensor) or crops.ndim != 4 or crops.shape[1] != 3:
            got = tuple(crops.shape) if isinstance(crops, Tensor) else type(crops).__name__
            raise BadInputError(f"expected crops (B, 3, S, S), got {got}", where=f"{self.kind} {self.name}")
        if tuple(crops.shape[2:]) != (self.input_size, self.input_size):
            raise BadInputError(
                f"{self.name} takes {self.input_size} px crops, got {tuple(crops.shape[2:])}",
                where=f"{self.kind} {self.name}",
            )


class FaceOccluder(_MaskModel):
    """XSeg: where the face is visible (1) and where something covers it (0)."""

    kind = "face occluder"
    channels_last = True

    def masks(self, crops: Tensor) -> Tensor:
        """``(B, 1, S, S)`` visibility of ``(B, 3, S, S)`` FFHQ-aligned target crops in [0, 1] (S = input_size)."""
        self._check(crops)
        if crops.shape[0] == 0:
            return crops.new_zeros((0, 1, *crops.shape[2:]))
        nhwc = crops.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
        out = torch.from_numpy(self._run(np.ascontiguousarray(nhwc)))
        if out.ndim != 4:
            raise ModelIntegrityError(
                f"{self.name} returned {tuple(out.shape)}, expected (B, S, S, 1)", where=str(self.path)
            )
        out = out.permute(0, 3, 1, 2) if out.shape[-1] == 1 else out[:, :1]
        return out.clamp(0, 1).to(crops.device)


class FaceParser(_MaskModel):
    """BiSeNet: 19 face classes per pixel (:data:`PARSER_CLASSES`)."""

    kind = "face parser"

    def classes(self, crops: Tensor) -> Tensor:
        """``(B, S, S)`` most likely class (long) of each pixel of ``(B, 3, S, S)`` FFHQ-aligned crops in [0, 1]."""
        self._check(crops)
        mean = torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1)
        normalised = (crops.detach().float().clamp(0, 1).cpu() - mean) / std
        logits = torch.from_numpy(self._run(np.ascontiguousarray(normalised.numpy())))
        if logits.ndim != 4 or logits.shape[1] != len(PARSER_CLASSES):
            raise ModelIntegrityError(
                f"{self.name} returned {tuple(logits.shape)}, expected (B, {len(PARSER_CLASSES)}, S, S) class logits",
                where=str(self.path),
                fix="use a BiSeNet face parser with CelebAMask-HQ's 19 classes",
            )
        return logits.argmax(dim=1).to(crops.device)

    def masks(self, crops: Tensor, regions: tuple[str, ...] = DEFAULT_REGIONS) -> Tensor:
        """``(B, 1, S, S)``: 1 where the pixel's class is in ``regions`` (:data:`FACE_REGIONS`)."""
        chosen = sorted({number for region in regions for number in REGION_CLASSES[region]})
        classes = self.classes(crops)
        table = torch.zeros(len(PARSER_CLASSES), dtype=torch.bool, device=classes.device)
        table[chosen] = True
        return table[classes].unsqueeze(1).to(torch.float32)


def load_mask_model(
    model: str | os.PathLike[str], *, model_dir: Path | None = None, providers: list[ProviderSpec] | None = None
) -> FaceOccluder | FaceParser:
    """An occluder (xseg_*) or a parser (bisenet_*) by registry name (fetched into ``model_dir``) or .onnx path.

    A local file is told apart by its input layout: channels last is XSeg, channels first BiSeNet."""
    from .hub import resolve_onnx_model

    names = OCCLUDER_NAMES + PARSER_NAMES
    path, spec = resolve_onnx_model(
        model, kinds=("occluder", "parser"), what="mask model", names=names, model_dir=model_dir
    )
    if spec is not None:
        cls: type[FaceOccluder] | type[FaceParser] = FaceOccluder if spec.kind == "occluder" else FaceParser
        return cls(path, name=spec.name, providers=providers)
    try:
        return FaceOccluder(path, providers=providers)
    except BadInputError:
        return FaceParser(path, providers=providers)


# ---------------------------------------------------------------------------------------------------------------------
# Landmark areas


def _fill_hulls(points: list[np.ndarray], size: int) -> np.ndarray:
    """One ``(size, size)`` float32 plane with the convex hull of each point set filled (crop pixels)."""
    plane = np.zeros((size, size), dtype=np.uint8)
    shift = 4  # sub-pixel vertices
    for group in points:
        hull = convex_hulls(group[None].astype(np.float32))[0]
        vertices = np.round(hull * (1 << shift)).astype(np.int32)
        cv2.fillConvexPoly(plane, vertices, 1, lineType=cv2.LINE_8, shift=shift)
    return plane.astype(np.float32)


def _five_point_areas(points: np.ndarray, area: str, size: int) -> np.ndarray:
    """Area of one face from its five landmarks (crop pixels): an ellipse round the mouth, discs round the eyes."""
    plane = np.zeros((size, size), dtype=np.uint8)
    eye_distance = float(np.linalg.norm(points[1] - points[0]))
    if area == "mouth":
        centre = (points[3] + points[4]) / 2
        width = float(np.linalg.norm(points[4] - points[3]))
        angle = math.degrees(math.atan2(points[4][1] - points[3][1], points[4][0] - points[3][0]))
        axes = (max(1, round(0.55 * width)), max(1, round(0.25 * width)))
        cv2.ellipse(plane, (round(centre[0]), round(centre[1])), axes, angle, 0, 360, 1, thickness=-1)
    elif area == "eyes":
        for eye in points[:2]:
            cv2.circle(plane, (round(eye[0]), round(eye[1])), max(1, round(0.3 * eye_distance)), 1, thickness=-1)
    else:
        raise BadInputError(
            "the lower-face area needs 68- or 106-point landmarks",
            where="face masks",
            fix="use an analyzer with a landmark model (buffalo_l), or the mouth and eyes areas",
        )
    return plane.astype(np.float32)


def landmark_area_masks(
    landmarks: list[np.ndarray | None],
    five: np.ndarray,
    area: str,
    size: int,
    *,
    face_size: float,
    device: torch.device,
) -> Tensor:
    """``(F, 1, S, S)`` soft masks of ``area`` from each face's dense landmarks (or its five), in crop pixels."""
    if area not in LANDMARK_AREAS:
        raise BadInputError(
            f"unknown landmark area {area!r}", where="face masks", fix=f"use one of {', '.join(LANDMARK_AREAS)}"
        )
    planes = []
    for face, dense in enumerate(landmarks):
        count = None if dense is None else int(dense.shape[0])
        if dense is not None and count in AREA_POINTS:
            groups = AREA_POINTS[count][area]
            planes.append(_fill_hulls([dense[list(group)] for group in groups], size))
        else:
            planes.append(_five_point_areas(five[face], area, size))
    hard = torch.from_numpy(np.stack(planes)).unsqueeze(1).to(device)
    grow = max(1, round(AREA_MARGIN * face_size))
    hard = F.max_pool2d(hard, kernel_size=2 * grow + 1, stride=1, padding=grow)  # a square dilation: a margin
    return gaussian_blur(hard, max(1, round(AREA_FEATHER * face_size / 2))).clamp(0, 1)


# ---------------------------------------------------------------------------------------------------------------------
# All of them, per face of a swap


def _target_ffhq_crops(frames: Tensor, batch: SwapBatch, size: int) -> tuple[Tensor, Tensor]:
    """The target faces re-aligned to FFHQ at ``size`` px, and their frame -> crop matrices."""
    landmarks = torch.from_numpy(batch.alignment_landmarks.astype(np.float64))
    device = batch.crops.device
    matrices = estimate_similarity(landmarks, face_template("ffhq", size)).to(device=device, dtype=torch.float32)
    crops = warp_affine(frames_to_sample(frames, device), matrices, (size, size), image_index=batch.image_index)
    return crops, matrices


def _soften(masks: Tensor) -> Tensor:
    """facefusion's finish of a model mask: a light blur, then values below 0.5 to 0 and the rest stretched to 1."""
    blurred = gaussian_blur(masks, max(1, round(masks.shape[-1] / 100)))
    return ((blurred.clamp(0.5, 1.0) - 0.5) * 2).clamp(0, 1)


def create_finish_masks(
    frames: Tensor,
    batch: SwapBatch,
    spec: FaceMaskSpec,
    *,
    occluder: FaceOccluder | None = None,
    parser: FaceParser | None = None,
) -> Tensor | None:
    """The finishing masks of every face of ``batch``, combined by minimum: ``(F, 1, C, C)`` in crop space, or None.

    ``frames`` are the target frames the batch was aligned in. Needs ``occluder`` for
    ``spec.occlusion`` and ``parser`` for ``spec.regions``; landmark areas use each face's
    dense landmarks when it has them (else its five).
    """
    if spec.is_empty:
        return None
    if spec.occlusion and occluder is None:
        raise BadInputError(
            "the occlusion mask needs an occluder model", where="face masks", fix="load xseg_1, xseg_2 or xseg_3"
        )
    if spec.regions and parser is None:
        raise BadInputError(
            "the region mask needs a face parser", where="face masks", fix="load bisenet_resnet_18 or bisenet_resnet_34"
        )
    count, size, device = batch.num_faces, batch.crop_size, batch.crops.device
    combined = torch.ones((count, 1, size, size), device=device)
    if count == 0:
        return combined
    for model, run in (
        (occluder if spec.occlusion else None, "occlusion"),
        (parser if spec.regions else None, "regions"),
    ):
        if model is None:
            continue
        crops, matrices = _target_ffhq_crops(frames, batch, model.input_size)
        made = model.masks(crops) if isinstance(model, FaceOccluder) else model.masks(crops, spec.regions)
        mask = warp_crops(_soften(made.to(device)), matrices, batch.matrices, size).clamp(0, 1)
        combined = torch.minimum(combined, mask)
        logger.debug("%s mask of %d face(s) from %s", run, count, model.name)
    if spec.areas or spec.keep:
        dense: list[np.ndarray | None] = []
        for face in batch.faces:
            dense.append(None if face.landmarks is None else np.asarray(face.landmarks, dtype=np.float64))
        matrices64 = batch.matrices.detach().to("cpu", torch.float64)
        crop_dense: list[np.ndarray | None] = [
            None
            if points is None
            else transform_points(torch.from_numpy(points)[None], matrices64[f : f + 1])[0].numpy()
            for f, points in enumerate(dense)
        ]
        five = transform_points(torch.from_numpy(batch.alignment_landmarks.astype(np.float64)), matrices64).numpy()
        face_size = float(size)
        if spec.areas:
            inside = torch.zeros_like(combined)
            for area in spec.areas:
                inside = torch.maximum(
                    inside, landmark_area_masks(crop_dense, five, area, size, face_size=face_size, device=device)
                )
            combined = torch.minimum(combined, inside)
        for area in spec.keep:
            kept = landmark_area_masks(crop_dense, five, area, size, face_size=face_size, device=device)
            combined = torch.minimum(combined, 1.0 - kept)
    return combined


def crop_masks_to_frames(masks: Tensor, batch: SwapBatch) -> Tensor:
    """Crop-space masks ``(F, 1, C, C)`` as frame masks ``(N, H, W)``: 1 outside the faces, each face's mask inside.

    Where faces overlap, the smaller value wins (masks only take away). For inspecting and
    editing, and for Blend's limit mask input.
    """
    from .align import invert_affine
    from .blend import face_regions

    height, width = batch.frame_size
    device = masks.device
    frames = torch.ones((batch.num_frames, height, width), device=device)
    if batch.num_faces == 0:
        return frames
    regions = face_regions(batch.matrices, batch.crop_size, height, width)
    crop_to_frame = invert_affine(batch.matrices.detach().to("cpu", torch.float64))
    shift = torch.zeros_like(crop_to_frame)
    shift[:, 0, 2] = regions[:, 0].to(shift.dtype)
    shift[:, 1, 2] = regions[:, 1].to(shift.dtype)
    region_h = int((regions[:, 3] - regions[:, 1]).clamp_min(0).max())
    region_w = int((regions[:, 2] - regions[:, 0]).clamp_min(0).max())
    if region_h == 0 or region_w == 0:
        return frames
    removed = warp_affine(
        1.0 - masks.float(), (crop_to_frame - shift).to(device=device, dtype=torch.float32), (region_h, region_w)
    )
    for face, (x0, y0, x1, y1) in enumerate(regions.tolist()):
        if x1 <= x0 or y1 <= y0:
            continue
        frame = int(batch.image_index[face])
        view = frames[frame, y0:y1, x0:x1]
        torch.minimum(view, 1.0 - removed[face, 0, : y1 - y0, : x1 - x0].clamp(0, 1), out=view)
    return frames
