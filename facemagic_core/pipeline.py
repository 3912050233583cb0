"""The swap pipeline: target faces in, swapped frames (and masks, and pose reports) out.

Stage functions, in pipeline order (the ComfyUI nodes call these; :func:`swap_faces` composes them)::

    select_target_faces(images, analyzer, *, order="largest", index=0, reference=None, min_similarity=None,
                        dense_landmarks=False) -> list[list[Face]]
        # per frame, the chosen faces in selection order, each with its raw recogniser embedding
    FaceTracker(config: SmoothingConfig).smooth(faces_per_frame) -> list[list[Face]]
        # optional, for videos: One-Euro smoothing of the landmarks_5 that drive alignment, per tracked face
    align_target_faces(images, faces_per_frame, generator, *, weave=1, no_face="error", frame_offset=0,
                       total_frames=None) -> SwapBatch
    prepare_swap(images, analyzer, generator, *, order="largest", index=0, reference=None, min_similarity=None,
                 dense_landmarks=False, tracker=None, weave=1, no_face="error", frame_offset=0,
                 total_frames=None) -> SwapBatch
        # = select_target_faces -> tracker.smooth -> align_target_faces
    check_identity(identity, generator, *, where="identity") -> None
        # IncompatibleIdentityError unless the identity's recogniser and size fit the generator
    forward_swap(batch, generator, identities, strength=1.0) -> SwapOutput
        # swapped crops (F, 3, C, C) in [0, 1] (+ the generator's soft mask or None)
    check_swap_pose(batch, swapped, analyzer, *, thresholds=None, policy="keep") -> PoseCheck
        # pose reports; crops after the failure policy; which faces to paste back
    blend_swap(frames, batch, swapped, *, mask="ellipse", erosion=0.05, feather=0.1, external_mask=None,
               generator_mask=True, colour="none", poisson=False, keep_faces=None) -> tuple[Tensor, Tensor]
        # (frames (N, 3, H, W), masks (N, H, W)), new tensors
    swap_faces(images, identities, analyzer, generator, options=None, progress=None, *,
               tracker=None, external_mask=None, frame_offset=0, total_frames=None) -> SwapResult
        # with options.mapping (facemagic_core.mapping) or options.tracking (facemagic_core.tracking):
    swap_stream(chunks, identities, analyzer, generator, options, *, smoother=None, external_mask=None,
                frame_offset=0, total_frames=None) -> Iterator[SwapResult]
        # faces mapped to identities and followed across chunks, missed detections filled in
    swap_video(source, output, identities, analyzer, generator, options=None, progress=None, *,
               max_frames=None, on_result=None) -> VideoSwapSummary

Layout: frames are ``(N, 3, H, W)`` float RGB in [0, 1], or ``uint8`` byte frames (a video's, as
decoded), which stay bytes from the decoder to the encoder: alignment samples only the face regions
in float and paste-back blends those regions and writes bytes; ``F`` faces are numbered frame by
frame, in selection order within a frame; crops are ``(F, 3, C, C)`` with ``C = weave *
generator.input_size``; ``matrices`` ``(F, 2, 3)`` map frame pixels to crop pixels. From
alignment to paste-back every tensor stays on the generator's device (detection, the one
per-image step, runs on the CPU); results come back on the frames' device and dtype. Inputs
are never modified in place.

Identities: one :class:`~facemagic_core.types.Identity` for every face, or a sequence where
``identities[i]`` is given to the ``i``-th selected face of every frame; faces beyond the
end of the sequence take its last identity (so a one-element list is the same as one
identity, and a face that appears in a few frames of a video never stops the run). The
*target* identity of each face is its own normalised embedding from the analyzer.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .align import TemplateName, frames_to_sample, invert_affine, transform_points, warp_affine
from .blend import (
    COLOUR_METHODS,
    MASK_KINDS,
    ColourMethod,
    FaceCrops,
    MaskKind,
    create_face_mask,
    crop_coverage,
    match_colour,
    paste_back,
    poisson_blend,
    resize_matrices,
    warp_crops,
)
from .errors import BadInputError, CancelledError, IncompatibleIdentityError, NoFaceError, OutOfMemoryError
from .generators.base import SwapModel, SwapOutput, is_out_of_memory, swap_woven
from .images import check_images, float_to_bytes, is_byte_frames
from .mapping import FaceMapping
from .pose import FAILURE_POLICIES, FailurePolicy, PoseReport, PoseThresholds, apply_pose_policy, check_pose
from .tracking import FaceTracks, TrackedFace, TrackingConfig
from .types import EMBEDDING_DIM, FACE_ORDERS, Face, FaceOrder, FloatArray, Identity, ProgressCallback

if TYPE_CHECKING:
    from .masks import FaceMaskSpec, FaceOccluder, FaceParser
    from .restore import FaceRestorer

logger = logging.getLogger(__name__)

#: What to do with a frame where no face (or not the face asked for) is found: raise, or return it unchanged.
NoFacePolicy = Literal["error", "pass"]
NO_FACE_POLICIES: tuple[str, ...] = get_args(NoFacePolicy)

#: Frames per chunk of :func:`swap_faces` (alignment to paste-back run on one chunk at a time).
DEFAULT_CHUNK_SIZE = 8
#: Largest weave factor: a 128 px model at 4x fills a 512 px crop (16 sub-images per face).
MAX_WEAVE = 4
#: The pose check looks for the face in its crop padded to this many times the crop side (detectors need context).
POSE_CANVAS_SCALE = 2


class Analyzer(Protocol):
    """What the pipeline needs from a face analyzer (:class:`facemagic_core.analysis.FaceAnalyzer`)."""

    embedding_model: str

    @property
    def has_dense_landmarks(self) -> bool: ...

    def analyze(self, images: Tensor, *, landmarks: bool = True, embeddings: bool = True) -> list[list[Face]]: ...

    def embed_faces(self, images: Tensor, faces: Sequence[Face]) -> list[Face]: ...


# ---------------------------------------------------------------------------------------------
# Options and results


@dataclass(frozen=True)
class SmoothingConfig:
    """Temporal smoothing of alignment landmarks in videos: a One-Euro filter per tracked face.

    The One-Euro filter (Casiez, Roussel and Vogel, CHI 2012) is an exponential smoother whose
    cut-off frequency rises with the speed of the signal: a still face is smoothed hard (no
    jitter), a moving one lightly (little lag). Frequencies are in cycles per frame and
    speeds in face sizes per frame, so the behaviour does not depend on the frame rate or
    the resolution. Faces are matched frame to frame by box overlap (IoU), else by the
    nearest centre within one face size.
    """

    min_cutoff: float = 0.02  # cut-off (cycles/frame) of a still face; lower = smoother, more lag when it moves
    beta: float = 5.0  # cut-off gained per unit of speed (face sizes/frame); higher = less lag when moving
    derivative_cutoff: float = 0.05  # cut-off of the velocity estimate itself
    max_gap: int = 5  # frames a face may go undetected and keep its track
    min_iou: float = 0.2  # smallest box overlap that matches a face to a track

    def __post_init__(self) -> None:
        for name in ("min_cutoff", "beta", "derivative_cutoff", "min_iou"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise BadInputError(f"{name} must be a non-negative number, got {value!r}", where="SmoothingConfig")
        if self.min_cutoff <= 0 or self.derivative_cutoff <= 0:
            raise BadInputError("min_cutoff and derivative_cutoff must be positive", where="SmoothingConfig")
        if isinstance(self.max_gap, bool) or not isinstance(self.max_gap, int) or self.max_gap < 0:
            raise BadInputError(f"max_gap must be a whole number >= 0, got {self.max_gap!r}", where="SmoothingConfig")

    @classmethod
    def with_strength(cls, strength: float) -> SmoothingConfig:
        """The default config with the still-face cut-off divided by ``strength`` (1 = default, 2 = smoother)."""
        if not (isinstance(strength, int | float) and math.isfinite(strength) and strength > 0):
            raise BadInputError(f"the smoothing strength must be positive, got {strength!r}", where="smoothing")
        return cls(min_cutoff=cls.min_cutoff / float(strength))


def _check_frames(images: object, *, where: str) -> None:
    """Shape and dtype checks of a frame batch, without :func:`check_images`' scan of every pixel for NaN.

    A 1080p frame takes ~3 ms to scan on a CPU core; :func:`swap_faces` scans once on entry and the
    analyzer scans what it detects in, so the later stages only check what they can check for free.
    """
    if (
        not isinstance(images, Tensor)
        or images.ndim != 4
        or images.shape[0] == 0
        or images.shape[1] != 3
        or not (images.is_floating_point() or is_byte_frames(images))
    ):
        check_images(images, where=where, allow_bytes=True)  # raises the precise error


def _check_literal(value: object, allowed: tuple[str, ...], name: str) -> None:
    if value not in allowed:
        raise BadInputError(f"unknown {name} {value!r}", where="swap options", fix=f"use one of {', '.join(allowed)}")


def _check_fraction(value: object, name: str, high: float = 1.0) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise BadInputError(f"{name} must be a number, got {value!r}", where="swap options")
    if not 0.0 <= float(value) <= high:
        raise BadInputError(f"{name} must lie between 0 and {high}, got {value!r}", where="swap options")


@dataclass(frozen=True, eq=False)
class FinishingModels:
    """The models of the finishing stages (:mod:`facemagic_core.restore`, :mod:`facemagic_core.masks`), loaded once."""

    restorer: FaceRestorer | None = None  # restores the swapped faces in crop space before paste-back
    occluder: FaceOccluder | None = None  # XSeg, for SwapOptions.face_masks.occlusion
    parser: FaceParser | None = None  # BiSeNet, for SwapOptions.face_masks.regions


@dataclass(frozen=True, eq=False)
class SwapOptions:
    """Everything :func:`swap_faces` can be told, with the defaults a newcomer gets."""

    face_order: FaceOrder = "largest"  # how the faces of a frame are counted for face_index
    face_index: int | tuple[int, ...] | None = 0  # which faces to swap: one, several (in order), None = all
    reference: FloatArray | None = None  # swap the faces most like this embedding instead (sorted by similarity)
    min_similarity: float | None = None  # with reference: skip faces less similar than this
    strength: float | tuple[float, ...] = 1.0  # identity strength in [0, 1], or one per generator block
    weave: int = 1  # crop at weave x the model's size, swapped as weave**2 interleaved sub-images
    smoothing: SmoothingConfig | None = None  # temporal landmark smoothing for videos (None = off)
    mask: MaskKind = "ellipse"  # face mask shape: box, ellipse, hull (hull needs 68/106-point landmarks)
    erosion: float = 0.05  # mask shrink, fraction of the face size
    feather: float = 0.1  # soft mask edge, fraction of the face size
    generator_mask: bool = True  # combine the generator's own soft mask (when it has one) by minimum
    colour: ColourMethod = "none"  # match the swapped face's colours to the target: none, mean_std, lab
    poisson: bool = False  # Poisson (seamless) blending on the CPU instead of the torch paste-back
    pose_check: bool = False  # compare head pose and landmarks of target and result, one report per face
    pose_thresholds: PoseThresholds = field(default_factory=PoseThresholds)
    pose_policy: FailurePolicy = "keep"  # a face failing the pose check: keep the swap, or the original face
    no_face: NoFacePolicy = "error"  # a frame without the face asked for: raise NoFaceError, or pass it through
    chunk_size: int = DEFAULT_CHUNK_SIZE  # frames aligned, swapped and pasted at once (halved on out-of-memory)
    restore_weight: float = 1.0  # with finishing.restorer: visibility of the restored face, 0 (none) to 1 (all)
    restore_fidelity: float = 0.5  # CodeFormer's fidelity w: 0 restores the most, 1 stays closest to the swap
    face_masks: FaceMaskSpec | None = None  # occlusion / region / landmark-area masks (models in finishing)
    finishing: FinishingModels | None = None  # the restorer, occluder and parser the finishing stages run
    mapping: FaceMapping | None = None  # which identity goes to which face; replaces face_order..min_similarity
    tracking: TrackingConfig | None = None  # link faces across frames and fill in missed detections (videos)

    def __post_init__(self) -> None:
        _check_literal(self.face_order, FACE_ORDERS, "face order")
        _check_literal(self.mask, MASK_KINDS, "mask kind")
        _check_literal(self.colour, COLOUR_METHODS, "colour method")
        _check_literal(self.pose_policy, FAILURE_POLICIES, "pose policy")
        _check_literal(self.no_face, NO_FACE_POLICIES, "no-face policy")
        if isinstance(self.face_index, list):
            object.__setattr__(self, "face_index", tuple(self.face_index))
        indices: tuple[int, ...] = ()
        if isinstance(self.face_index, tuple):
            indices = self.face_index
        elif self.face_index is not None:
            indices = (self.face_index,)
        for value in indices:
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise BadInputError(
                    f"face indices are whole numbers from 0, got {value!r}",
                    where="swap options",
                    fix="use 0 for the first face, or None for all faces",
                )
        if len(set(indices)) != len(indices):
            raise BadInputError(
                f"a face index is given more than once ({', '.join(str(index) for index in indices)}), "
                "which would swap the same face twice",
                where="swap options",
                fix="give each face index once",
            )
        if isinstance(self.strength, list):
            object.__setattr__(self, "strength", tuple(self.strength))
        strengths: tuple[float, ...] = self.strength if isinstance(self.strength, tuple) else (self.strength,)
        if not strengths:
            raise BadInputError("strength needs at least one value", where="swap options")
        for amount in strengths:
            _check_fraction(amount, "strength")
        _check_fraction(self.erosion, "erosion", 0.5)
        _check_fraction(self.restore_weight, "restore weight")
        _check_fraction(self.restore_fidelity, "restore fidelity")
        spec, models = self.face_masks, self.finishing
        if spec is not None and spec.occlusion and (models is None or models.occluder is None):
            raise BadInputError(
                "the occlusion mask needs an occluder model",
                where="swap options",
                fix="pass finishing=FinishingModels(occluder=...) (xseg_1)",
            )
        if spec is not None and spec.regions and (models is None or models.parser is None):
            raise BadInputError(
                "the region mask needs a face parser",
                where="swap options",
                fix="pass finishing=FinishingModels(parser=...) (bisenet_resnet_34)",
            )
        _check_fraction(self.feather, "feather", 1.0)
        if isinstance(self.weave, bool) or not isinstance(self.weave, int) or not 1 <= self.weave <= MAX_WEAVE:
            raise BadInputError(f"weave must be a whole number from 1 to {MAX_WEAVE}, got {self.weave!r}")
        if isinstance(self.chunk_size, bool) or not isinstance(self.chunk_size, int) or self.chunk_size < 1:
            raise BadInputError(f"chunk_size must be a positive whole number, got {self.chunk_size!r}")
        if self.min_similarity is not None and self.reference is None:
            raise BadInputError(
                "min_similarity needs a reference embedding", where="swap options", fix="set reference too"
            )
        if self.mapping is not None and not isinstance(self.mapping, FaceMapping):
            raise BadInputError(f"mapping must be a FaceMapping, got {type(self.mapping).__name__}")
        if self.tracking is not None and not isinstance(self.tracking, TrackingConfig):
            raise BadInputError(f"tracking must be a TrackingConfig, got {type(self.tracking).__name__}")


@dataclass(frozen=True, eq=False)
class SwapBatch:
    """Aligned target faces of a batch of frames, ready for the generator (what the Swap node passes on).

    ``F`` faces, numbered frame by frame and in selection order within a frame. Tensors live
    on the generator's device.
    """

    crops: Tensor  # (F, 3, C, C) float32 aligned target crops in [0, 1], C = weave * generator.input_size
    matrices: Tensor  # (F, 2, 3) float32 frame -> crop matrices
    image_index: Tensor  # (F,) long: the frame of each face, 0..num_frames-1
    faces: tuple[Face, ...]  # the detected faces (raw landmarks, with embeddings); face.image_index = frame
    face_index: tuple[int, ...]  # (F,) position of each face in its frame's selection (0 = first chosen)
    alignment_landmarks: FloatArray  # (F, 5, 2) the landmarks the crops were aligned with (smoothed or raw)
    frames_without_face: tuple[int, ...]  # frames (0-based, within this batch) where no face was chosen
    num_frames: int  # N
    frame_size: tuple[int, int]  # (H, W)
    weave: int  # crop side = weave * model input size
    template: str  # alignment template of the crops ("arcface" or "ffhq")

    @property
    def num_faces(self) -> int:
        return len(self.faces)

    @property
    def crop_size(self) -> int:
        return int(self.crops.shape[-1])

    @property
    def face_counts(self) -> tuple[int, ...]:
        """Faces chosen in each frame."""
        counts = [0] * self.num_frames
        for face in self.faces:
            counts[face.image_index] += 1
        return tuple(counts)

    def target_embeddings(self) -> Tensor:
        """``(F, D)`` L2-normalised embeddings of the target faces (their own identities), float32, on the device."""
        if not self.faces:
            return torch.zeros((0, EMBEDDING_DIM), device=self.crops.device)
        rows = np.stack([_face_embedding(face, number) for number, face in enumerate(self.faces)])
        return F.normalize(torch.from_numpy(rows).to(self.crops.device), dim=-1)


@dataclass(frozen=True, eq=False)
class PoseCheck:
    """The pose check of every face of a :class:`SwapBatch`."""

    reports: tuple[PoseReport, ...]  # one per face, image_index within the batch
    crops: Tensor  # (F, 3, C, C) the crops to paste: the swap, or the original crop for failed faces (policy)
    keep_faces: Tensor  # (F,) bool: paste this face back (False: a failed face under policy "original")
    target_landmarks: FloatArray  # (F, N, 2) target landmarks measured on the original crop, in frame pixels
    result_landmarks: FloatArray  # (F, N, 2) the same measured on the swapped crop, in frame pixels


@dataclass(frozen=True, eq=False)
class SwapResult:
    """What :func:`swap_faces` returns."""

    images: Tensor  # (N, 3, H, W) new tensor, the input's dtype and device (uint8 byte frames stay bytes)
    masks: Tensor  # (N, H, W) where each frame was changed (max of its face masks), in [0, 1] (0..255 for bytes)
    frames_without_face: tuple[int, ...]  # frames returned unchanged because no face was chosen (frame_offset added)
    face_counts: tuple[int, ...]  # faces swapped per frame
    pose_reports: tuple[PoseReport, ...] = ()  # with options.pose_check, one per face (image_index with frame_offset)
    faces: tuple[Face, ...] = ()  # the swapped target faces (image_index with frame_offset)
    pose_landmarks: tuple[FloatArray, FloatArray] | None = None  # (target, result) (F, N, 2) frame pixels
    frame_offset: int = 0  # images[i] is frame frame_offset + i of the video
    identity_index: tuple[int, ...] = ()  # with a mapping or tracking: the identity each face got (F,)
    tracks: tuple[int, ...] = ()  # with tracking: the track number of each face (F,)
    interpolated: tuple[bool, ...] = ()  # with tracking: True for a face filled in where detection missed it (F,)


# ---------------------------------------------------------------------------------------------
# 1. Choosing the target faces


def _face_embedding(face: Face, number: int) -> FloatArray:
    if face.embedding is None:
        raise BadInputError(
            "a target face has no embedding, which the swap needs as the target's own identity",
            where=f"frame {face.image_index}, face {number}",
            fix="use an analyzer with a recogniser (e.g. buffalo_l, or YuNet + w600k_r50)",
        )
    vector = np.asarray(face.embedding, dtype=np.float32).reshape(-1)
    if not np.all(np.isfinite(vector)) or float(np.linalg.norm(vector)) < 1e-12:
        raise BadInputError(
            "a target face's embedding is zero or not finite",
            where=f"frame {face.image_index}, face {number}",
            fix="check the recogniser model file",
        )
    return vector


def _scan_skip(analyzer: Analyzer, checked: bool) -> dict[str, bool]:
    """Keyword arguments that spare an analyzer its scan of frames already checked (when it can take them)."""
    return {"scan": False} if checked and getattr(analyzer, "takes_checked_frames", False) else {}


def select_target_faces(
    images: Tensor,
    analyzer: Analyzer,
    *,
    order: FaceOrder = "largest",
    index: int | Sequence[int] | None = 0,
    reference: FloatArray | None = None,
    min_similarity: float | None = None,
    dense_landmarks: bool = False,
    checked: bool = False,
) -> list[list[Face]]:
    """Detect the faces of every frame and choose the ones to swap, each with its embedding.

    Per frame: faces sorted by ``order`` (or by similarity to ``reference``), then ``index``
    picks one (int), several (in that order) or all (None); see
    :func:`facemagic_core.analysis.select_faces`. Only the chosen faces are embedded (one
    recogniser call for the batch), unless ``reference`` needs every face's embedding.
    ``dense_landmarks`` also computes 68/106-point landmarks (for the hull mask).
    A frame may get an empty list; :func:`align_target_faces` applies the no-face policy.
    ``checked``: the frames passed :func:`images.check_images` already, so an analyzer that can skip
    its own scan of the pixels (:class:`~facemagic_core.analysis.FaceAnalyzer`) does.
    """
    from .analysis import select_faces

    _check_frames(images, where="target images")  # the analyzer scans the pixels for NaN itself
    skip = _scan_skip(analyzer, checked)
    per_frame = analyzer.analyze(images, landmarks=dense_landmarks, embeddings=reference is not None, **skip)
    if len(per_frame) != images.shape[0]:
        raise BadInputError(
            f"the face analyzer returned results for {len(per_frame)} of {images.shape[0]} frames",
            fix="this is a bug in the analyzer; please report it",
        )
    chosen = [
        select_faces(faces, order=order, index=index, reference=reference, min_similarity=min_similarity)
        for faces in per_frame
    ]
    if reference is None:
        flat = [face for faces in chosen for face in faces]
        if flat:
            embedded = iter(analyzer.embed_faces(images, flat, **skip))
            chosen = [[next(embedded) for _ in faces] for faces in chosen]
    return [
        [face if face.image_index == frame else dataclasses.replace(face, image_index=frame) for face in faces]
        for frame, faces in enumerate(chosen)
    ]


# ---------------------------------------------------------------------------------------------
# 2. Temporal smoothing (videos)


def _box_iou(a: FloatArray, b: FloatArray) -> float:
    width = min(float(a[2]), float(b[2])) - max(float(a[0]), float(b[0]))
    height = min(float(a[3]), float(b[3])) - max(float(a[1]), float(b[1]))
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _smoothing_factor(cutoff: float) -> float:
    """Exponential smoothing factor of a cut-off frequency (cycles per frame), one frame per step."""
    tau = 1.0 / (2.0 * math.pi * cutoff)
    return 1.0 / (1.0 + tau)


@dataclass
class _Track:
    landmarks: np.ndarray  # (5, 2) filtered
    velocity: np.ndarray  # (2,) filtered velocity of the landmarks' centre, face sizes per frame
    bbox: np.ndarray  # last raw box
    last_frame: int


class FaceTracker:
    """Smooths the ``landmarks_5`` of faces across the frames of a video (see :class:`SmoothingConfig`).

    Stateful: call :meth:`smooth` on consecutive chunks of one video, in order; use a new
    tracker for another video. All five points of a face share one cut-off (derived from the
    speed of their centre), so the face shape is smoothed as a whole and does not deform.
    """

    def __init__(self, config: SmoothingConfig | None = None) -> None:
        self.config = config or SmoothingConfig()
        self._tracks: list[_Track] = []
        self._frame = 0

    def reset(self) -> None:
        self._tracks = []
        self._frame = 0

    def smooth(self, faces_per_frame: Sequence[Sequence[Face]]) -> list[list[Face]]:
        """Copies of the faces with smoothed ``landmarks_5``; everything else is kept."""
        result: list[list[Face]] = []
        for faces in faces_per_frame:
            result.append(self._smooth_frame(list(faces)))
            self._frame += 1
        return result

    def _match(self, faces: list[Face]) -> list[int | None]:
        config, frame = self.config, self._frame
        alive = [t for t in range(len(self._tracks)) if frame - self._tracks[t].last_frame <= config.max_gap + 1]
        pairs = []
        for f, face in enumerate(faces):
            size = max(face.size, 1.0)
            for t in alive:
                track = self._tracks[t]
                iou = _box_iou(face.bbox, track.bbox)
                centre = np.array(face.center)
                track_centre = (track.bbox[:2] + track.bbox[2:]) / 2
                distance = float(np.linalg.norm(centre - track_centre)) / size
                if iou >= config.min_iou or distance < 1.0:
                    pairs.append((iou, -distance, f, t))
        pairs.sort(reverse=True)
        assigned: list[int | None] = [None] * len(faces)
        used: set[int] = set()
        for _, _, f, t in pairs:
            if assigned[f] is None and t not in used:
                assigned[f] = t
                used.add(t)
        return assigned

    def _smooth_frame(self, faces: list[Face]) -> list[Face]:
        config, frame = self.config, self._frame
        assigned = self._match(faces)
        out = []
        for face, t in zip(faces, assigned, strict=True):
            raw = np.asarray(face.landmarks_5, dtype=np.float64)
            if t is None:
                self._tracks.append(_Track(raw.copy(), np.zeros(2), np.asarray(face.bbox, np.float64), frame))
                out.append(face)
                continue
            track = self._tracks[t]
            steps = max(frame - track.last_frame, 1)
            size = max(face.size, 1.0)
            # The velocity of the face centre (face sizes per frame), itself smoothed, sets the cut-off; it is
            # smoothed as a vector, so that the noise of a still face averages out instead of adding up as speed.
            raw_velocity = (raw.mean(axis=0) - track.landmarks.mean(axis=0)) / size / steps
            beta_d = _smoothing_factor(config.derivative_cutoff)
            track.velocity = track.velocity + beta_d * (raw_velocity - track.velocity)
            speed = float(np.linalg.norm(track.velocity))
            alpha = _smoothing_factor(config.min_cutoff + config.beta * speed)
            alpha = 1.0 - (1.0 - alpha) ** steps  # a gap of several frames lets the filter catch up accordingly
            track.landmarks = track.landmarks + alpha * (raw - track.landmarks)
            track.bbox = np.asarray(face.bbox, np.float64)
            track.last_frame = frame
            out.append(dataclasses.replace(face, landmarks_5=track.landmarks.astype(np.float32)))
        self._tracks = [t for t in self._tracks if frame - t.last_frame <= config.max_gap]
        return out


# ---------------------------------------------------------------------------------------------
# 3. Alignment


def _frame_label(frame: int, total: int | None) -> str:
    return f"frame {frame + 1}" + (f" of {total}" if total else "") + f" (index {frame})"


def _no_face_error(
    frames: Sequence[int],
    frame_offset: int,
    total: int | None,
    *,
    found: int = 0,
    options: SwapOptions | None = None,
) -> NoFaceError:
    """The error for frames without the face asked for; ``found`` faces were detected in the first of them."""
    first = frames[0] + frame_offset
    more = f" and {len(frames) - 1} more frame(s)" if len(frames) > 1 else ""
    if found and options is not None:
        if options.min_similarity is not None:
            return NoFaceError(
                f"{found} face(s) were found, but not the one asked for among those similar enough to the reference",
                where=_frame_label(first, total) + more,
                fix="lower the minimum similarity, or pass such frames through unchanged (no-face policy 'pass')",
            )
        asked = options.face_index if isinstance(options.face_index, tuple) else (options.face_index,)
        shown = ", ".join(str(index) for index in asked)
        return NoFaceError(
            f"face index {shown} was asked for, but only {found} face(s) were found",
            where=_frame_label(first, total) + more,
            fix=f"use a face index from 0 to {found - 1} (counted in '{options.face_order}' order), swap every face, "
            "or pass such frames through unchanged (no-face policy 'pass')",
        )
    return NoFaceError(
        "no face was found (or not the face asked for)",
        where=_frame_label(first, total) + more,
        fix="use frames where the face is clearly visible, check the face index and face order, "
        "or pass such frames through unchanged (no-face policy 'pass')",
    )


def align_target_faces(
    images: Tensor,
    faces_per_frame: Sequence[Sequence[Face]],
    generator: SwapModel,
    *,
    weave: int = 1,
    no_face: NoFacePolicy = "error",
    frame_offset: int = 0,
    total_frames: int | None = None,
) -> SwapBatch:
    """Align every chosen face to the generator's template at ``weave * generator.input_size`` pixels.

    ``faces_per_frame[n]`` are the faces of ``images[n]`` (their ``image_index`` is ignored:
    the list position says the frame). Alignment uses each face's ``landmarks_5`` (smoothed
    ones when a :class:`FaceTracker` produced them). The crops are sampled on the generator's
    device. ``no_face="error"`` raises :class:`NoFaceError` naming the first frame without a
    face (``frame_offset`` is added to frame numbers in messages; ``total_frames`` is the
    length of the whole video, for messages).
    """
    from .align import estimate_similarity, face_template

    _check_frames(images, where="target images")
    _check_literal(no_face, NO_FACE_POLICIES, "no-face policy")
    if isinstance(weave, bool) or not isinstance(weave, int) or not 1 <= weave <= MAX_WEAVE:
        raise BadInputError(f"weave must be a whole number from 1 to {MAX_WEAVE}, got {weave!r}")
    num_frames, _, height, width = (int(n) for n in images.shape)
    if len(faces_per_frame) != num_frames:
        raise BadInputError(f"{len(faces_per_frame)} face lists for {num_frames} frames", where="align_target_faces")
    missing = tuple(frame for frame, faces in enumerate(faces_per_frame) if not faces)
    if missing and no_face == "error":
        raise _no_face_error(missing, frame_offset, total_frames)

    faces: list[Face] = []
    positions: list[int] = []
    for frame, frame_faces in enumerate(faces_per_frame):
        for position, face in enumerate(frame_faces):
            faces.append(face if face.image_index == frame else dataclasses.replace(face, image_index=frame))
            positions.append(position)

    device = generator.device
    size = generator.input_size * weave
    template = str(generator.template)
    frames = frames_to_sample(images, device)
    if faces:
        landmarks = np.stack([np.asarray(face.landmarks_5, dtype=np.float64) for face in faces])
        points = face_template(generator.template, size)
        matrices = estimate_similarity(torch.from_numpy(landmarks), points).to(device=device, dtype=torch.float32)
        image_index = torch.tensor([face.image_index for face in faces], dtype=torch.long, device=device)
        crops = warp_affine(frames, matrices, (size, size), image_index=image_index)
    else:
        landmarks = np.zeros((0, 5, 2))
        matrices = torch.zeros((0, 2, 3), device=device)
        image_index = torch.zeros((0,), dtype=torch.long, device=device)
        crops = torch.zeros((0, 3, size, size), device=device)
    return SwapBatch(
        crops=crops,
        matrices=matrices,
        image_index=image_index,
        faces=tuple(faces),
        face_index=tuple(positions),
        alignment_landmarks=landmarks.astype(np.float32),
        frames_without_face=missing,
        num_frames=num_frames,
        frame_size=(height, width),
        weave=weave,
        template=template,
    )


def prepare_swap(
    images: Tensor,
    analyzer: Analyzer,
    generator: SwapModel,
    *,
    order: FaceOrder = "largest",
    index: int | Sequence[int] | None = 0,
    reference: FloatArray | None = None,
    min_similarity: float | None = None,
    dense_landmarks: bool = False,
    tracker: FaceTracker | None = None,
    weave: int = 1,
    no_face: NoFacePolicy = "error",
    frame_offset: int = 0,
    total_frames: int | None = None,
) -> SwapBatch:
    """:func:`select_target_faces`, then ``tracker.smooth`` (when given), then :func:`align_target_faces`."""
    chosen = select_target_faces(
        images,
        analyzer,
        order=order,
        index=index,
        reference=reference,
        min_similarity=min_similarity,
        dense_landmarks=dense_landmarks,
    )
    if tracker is not None:
        chosen = tracker.smooth(chosen)
    return align_target_faces(
        images, chosen, generator, weave=weave, no_face=no_face, frame_offset=frame_offset, total_frames=total_frames
    )


# ---------------------------------------------------------------------------------------------
# 4. The generator


def _generator_id_dim(generator: SwapModel) -> int:
    """Numbers per identity embedding the generator takes (TorchSwapper and OnnxSwapper say; else ArcFace's 512)."""
    return int(getattr(generator, "id_dim", EMBEDDING_DIM))


def check_recognisers(analyzer: Analyzer, generator: SwapModel, *, where: str = "swap_faces") -> None:
    """The target faces' own identities come from ``analyzer``: its recogniser must be ``generator``'s."""
    if analyzer.embedding_model != generator.embedding_model:
        raise IncompatibleIdentityError(
            f"the face analyzer's recogniser makes '{analyzer.embedding_model}' embeddings but the generator "
            f"{generator.name} takes '{generator.embedding_model}' ones (the target faces' own identities)",
            where=where,
            fix=f"use an analyzer with the '{generator.embedding_model}' recogniser (buffalo_l or yunet for "
            "arcface_w600k_r50)",
        )


def check_identity(identity: Identity, generator: SwapModel, *, where: str = "identity") -> None:
    """Raise :class:`IncompatibleIdentityError` unless ``identity`` fits ``generator`` (recogniser and size)."""
    if not isinstance(identity, Identity):
        raise BadInputError(
            f"expected an Identity, got {type(identity).__name__}",
            where=where,
            fix="make one with extract_identity or load_identity",
        )
    if identity.embedding_model != generator.embedding_model:
        raise IncompatibleIdentityError(
            f"the identity was made with the recogniser '{identity.embedding_model}', but the generator "
            f"{generator.name} takes '{generator.embedding_model}' embeddings",
            where=where,
            fix=f"re-extract the identity with the '{generator.embedding_model}' recogniser, "
            "or use a generator made for this identity's recogniser",
        )
    id_dim = _generator_id_dim(generator)
    if identity.dim != id_dim:
        raise IncompatibleIdentityError(
            f"the identity has {identity.dim} numbers per embedding but the generator {generator.name} takes {id_dim}",
            where=where,
            fix=f"use an identity made by the generator's recogniser ({generator.embedding_model}, {id_dim}-d)",
        )


def _strength_rows(strength: float | Sequence[float] | Tensor, num_blocks: int) -> Tensor:
    """``(num_blocks,)`` strengths from one number or one per block."""
    values = torch.as_tensor(strength, dtype=torch.float32).reshape(-1)
    if values.numel() == 1:
        values = values.expand(num_blocks)
    if values.numel() != num_blocks:
        raise BadInputError(
            f"{values.numel()} strength values for a generator with {num_blocks} injection block(s)",
            where="strength",
            fix=f"give one strength, or exactly {num_blocks} (one per block, coarsest first)",
        )
    if not bool(torch.isfinite(values).all()) or bool((values < 0).any()) or bool((values > 1).any()):
        raise BadInputError("strength values must lie in [0, 1]", where="strength", fix="use numbers from 0 to 1")
    return values.clone()


def forward_swap(
    batch: SwapBatch,
    generator: SwapModel,
    identities: Identity | Sequence[Identity],
    strength: float | Sequence[float] = 1.0,
    *,
    identity_index: Sequence[int] | None = None,
) -> SwapOutput:
    """Run the generator on every crop of ``batch``: ``SwapOutput(images (F, 3, C, C), mask or None)``.

    Face ``f`` gets ``identities[batch.face_index[f]]`` (the last one repeats; see the module
    docstring), or ``identities[identity_index[f]]`` when ``identity_index`` is given (a
    :class:`~facemagic_core.mapping.FaceMapping`'s choice); its target identity is its own
    normalised embedding. ``strength`` is one number or one per generator block (coarsest
    first). Crops woven at ``batch.weave`` times the model size run as ``weave**2`` sub-images
    (:func:`swap_woven`).
    """
    listed = [identities] if isinstance(identities, Identity) else list(identities)
    if not listed:
        raise BadInputError("no identity was given", where="forward_swap", fix="pass at least one identity")
    for number, identity in enumerate(listed):
        check_identity(identity, generator, where=f"identity {number}")
    if batch.crop_size != generator.input_size * batch.weave:
        raise BadInputError(
            f"the crops are {batch.crop_size} px but {generator.name} with weave {batch.weave} takes "
            f"{generator.input_size * batch.weave} px",
            where="forward_swap",
            fix="prepare the swap with the generator that runs it",
        )
    if batch.template != str(generator.template):
        raise BadInputError(
            f"the crops are aligned to the {batch.template} template but {generator.name} takes {generator.template}",
            where="forward_swap",
            fix="prepare the swap with the generator that runs it",
        )
    num_blocks = int(generator.num_blocks)
    rows = _strength_rows(strength, num_blocks)
    device = batch.crops.device
    if batch.num_faces == 0:
        empty = batch.crops.new_zeros(batch.crops.shape)
        return SwapOutput(images=empty, mask=None)
    if identity_index is not None:
        wanted = [int(number) for number in identity_index]
        if len(wanted) != batch.num_faces or any(not 0 <= number < len(listed) for number in wanted):
            raise BadInputError(
                f"identity_index needs one identity number from 0 to {len(listed) - 1} per face "
                f"({batch.num_faces} faces), got {wanted[:8]}",
                where="forward_swap",
                fix="give as many identities as the face mapping names",
            )
    elif batch.faces and len(listed) < max(batch.face_index) + 1:
        logger.info(
            "%d identities for up to %d faces per frame: faces beyond the list take the last identity",
            len(listed),
            max(batch.face_index) + 1,
        )
    table = torch.from_numpy(np.stack([identity.for_blocks(num_blocks) for identity in listed])).to(device)
    positions = wanted if identity_index is not None else [min(p, len(listed) - 1) for p in batch.face_index]
    choice = torch.tensor(positions, device=device)
    source = table[choice]  # (F, K, D)
    target = batch.target_embeddings()
    if target.shape[-1] != source.shape[-1]:
        raise IncompatibleIdentityError(
            f"the target faces' embeddings have {target.shape[-1]} numbers but the identity has {source.shape[-1]}",
            where="forward_swap",
            fix="use the same recogniser for the source identity and the target faces",
        )
    strengths = rows.to(device).unsqueeze(0).expand(batch.num_faces, num_blocks)
    return swap_woven(generator, batch.crops, source, target, strengths, factor=batch.weave)


# ---------------------------------------------------------------------------------------------
# 5. Pose check


def _measure_landmarks(crops: Tensor, analyzer: Analyzer) -> tuple[list[np.ndarray | None], int]:
    """Landmarks (crop pixels) of the face nearest the centre of each crop; None where none is found.

    Each crop is placed in the middle of a black canvas :data:`POSE_CANVAS_SCALE` times its
    size (detectors need some context around a face). Returns the landmarks and their count
    (dense when the analyzer has a landmark model, else 5).
    """
    size = int(crops.shape[-1])
    pad = size * (POSE_CANVAS_SCALE - 1) // 2
    canvas = F.pad(crops.detach().float().clamp(0, 1).cpu(), (pad, pad, pad, pad))
    found = analyzer.analyze(canvas, landmarks=True, embeddings=False)
    dense = bool(analyzer.has_dense_landmarks)
    centre = np.array([pad + (size - 1) / 2, pad + (size - 1) / 2])
    points: list[np.ndarray | None] = []
    number = 5
    for faces in found:
        if not faces:
            points.append(None)
            continue
        best = min(faces, key=lambda face: float(np.linalg.norm(np.array(face.center) - centre)))
        values = best.landmarks if dense and best.landmarks is not None else best.landmarks_5
        array = np.asarray(values, dtype=np.float64) - pad
        number = array.shape[0]
        points.append(array)
    return points, number


def check_swap_pose(
    batch: SwapBatch,
    swapped: SwapOutput | Tensor,
    analyzer: Analyzer,
    *,
    thresholds: PoseThresholds | None = None,
    policy: FailurePolicy = "keep",
) -> PoseCheck:
    """Compare head pose and landmarks of each target face and its swap; apply ``policy`` to failures.

    Landmarks are measured the same way on the original crop and on the swapped crop, with
    the analyzer's own models (68/106 points when it has a landmark model, else the
    detector's 5), then mapped to frame pixels with the inverse alignment matrix; so a
    difference comes from the swap, not from measuring a crop against a full frame. A
    swapped crop where no face is found fails ("no face found in the swapped crop").
    """
    _check_literal(policy, FAILURE_POLICIES, "pose policy")
    crops = swapped.images if isinstance(swapped, SwapOutput) else swapped
    if crops.shape != batch.crops.shape:
        raise BadInputError(
            f"swapped crops {tuple(crops.shape)} do not match the batch's {tuple(batch.crops.shape)}",
            where="check_swap_pose",
        )
    count = batch.num_faces
    if count == 0:
        empty = np.zeros((0, 5, 2), dtype=np.float32)
        return PoseCheck((), crops.clone(), torch.zeros(0, dtype=torch.bool, device=crops.device), empty, empty)
    measured, _ = _measure_landmarks(torch.cat([batch.crops, crops.to(batch.crops.device)]), analyzer)
    target_crop, result_crop = measured[:count], measured[count:]
    inverse = invert_affine(batch.matrices.detach().to("cpu", torch.float64))
    fallback = transform_points(
        torch.from_numpy(batch.alignment_landmarks.astype(np.float64)), batch.matrices.detach().to("cpu").double()
    ).numpy()  # the alignment landmarks in crop pixels, for faces the detector misses on the original crop
    width = max((p.shape[0] for p in target_crop + result_crop if p is not None), default=5)
    targets, results, found = [], [], []
    for f in range(count):
        target = target_crop[f]
        if target is None or target.shape[0] != width:
            target = fallback[f] if width == 5 else None
        result = result_crop[f]
        ok = target is not None and result is not None and result.shape[0] == width
        found.append(ok)
        target_points = target if target is not None else np.zeros((width, 2))
        targets.append(target_points)
        results.append(result if ok and result is not None else target_points)
    crop_points = torch.from_numpy(np.stack(targets + results))
    frame_points = transform_points(crop_points, torch.cat([inverse, inverse])).numpy()
    target_frame, result_frame = frame_points[:count], frame_points[count:]
    sizes = np.array([max(face.size, 1.0) for face in batch.faces])
    image_index = [face.image_index for face in batch.faces]
    reports = check_pose(
        target_frame,
        result_frame,
        sizes,
        thresholds=thresholds,
        image_index=image_index,
        face_index=list(batch.face_index),
        image_size=batch.frame_size,
    )
    final = []
    for f, report in enumerate(reports):
        if not found[f]:
            what = "no face found in the swapped crop" if result_crop[f] is None else "the face was not measured"
            nan3 = (math.nan, math.nan, math.nan)
            report = dataclasses.replace(
                report, result_pose=nan3, pose_diff=nan3, nme=math.nan, passed=False, reason=what, worst_region=""
            )
        final.append(report)
    after = apply_pose_policy(crops, batch.crops.to(crops.device), final, policy)
    keep = torch.tensor([report.passed or policy == "keep" for report in final], dtype=torch.bool, device=crops.device)
    return PoseCheck(tuple(final), after, keep, target_frame.astype(np.float32), result_frame.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# 6a. Crops that go out and come back (restorers, any IMAGE node)

#: Side of the thumbnails that recognise crops coming back (count and order checks).
THUMBNAIL_SIZE = 24
#: A crop coming back is taken for another face when it correlates with that face's thumbnail better by this much.
ORDER_MARGIN = 0.15


def realign_swap(
    frames: Tensor, batch: SwapBatch, swapped: SwapOutput | Tensor, *, template: TemplateName = "ffhq", size: int = 512
) -> FaceCrops:
    """The swapped faces re-aligned to ``template`` at ``size`` px, in their target surroundings.

    Each crop samples the target frame through its new ``frame -> crop`` matrix (fitted to the
    same ``alignment_landmarks`` as the generator's crop) and lays the swapped crop over it,
    its outer ``C / 16`` pixels faded in so that no seam shows. This is what face restorers
    expect (FFHQ alignment, 512 px for GFPGAN and CodeFormer); :func:`blend_swap` maps such
    crops back with ``finished=``.
    """
    from .align import estimate_similarity, face_template

    _check_frames(frames, where="frames to re-align")
    crops = swapped.images if isinstance(swapped, SwapOutput) else swapped
    if crops.shape != batch.crops.shape:
        raise BadInputError(
            f"swapped crops {tuple(crops.shape)} do not match the batch's {tuple(batch.crops.shape)}",
            where="realign_swap",
        )
    device = batch.crops.device
    count = batch.num_faces
    if count == 0:
        return FaceCrops(
            torch.zeros((0, 3, size, size), device=device), torch.zeros((0, 2, 3), device=device), str(template)
        )
    points = face_template(template, size)
    landmarks = torch.from_numpy(batch.alignment_landmarks.astype(np.float64))
    matrices = estimate_similarity(landmarks, points).to(device=device, dtype=torch.float32)
    context = warp_affine(frames_to_sample(frames, device), matrices, (size, size), image_index=batch.image_index)
    cover = crop_coverage(batch.crop_size, count, feather=max(2, batch.crop_size // 16), device=device)
    stacked = torch.cat([crops.to(device=device, dtype=torch.float32), cover], dim=1)
    moved = warp_crops(stacked, batch.matrices, matrices, size)
    face, weight = moved[:, :3], moved[:, 3:].clamp(0.0, 1.0)
    images = (context + weight * (face - context)).clamp(0.0, 1.0)
    return FaceCrops(images, matrices, str(template), label=f"{template} crops")


def crop_thumbnails(crops: Tensor) -> Tensor:
    """``(B, T*T)`` zero-mean, unit-norm grey thumbnails of ``(B, 3, S, S)`` crops (for matching crops coming back)."""
    grey = crops.detach().float().mean(dim=1, keepdim=True)
    small = F.interpolate(grey, size=(THUMBNAIL_SIZE, THUMBNAIL_SIZE), mode="area").flatten(1)
    small = small - small.mean(dim=1, keepdim=True)
    return F.normalize(small, dim=1).cpu()


def crops_from_image(
    given: Tensor,
    matrices: Tensor,
    size: int,
    *,
    template: str = "arcface",
    thumbnails: Tensor | None = None,
) -> FaceCrops:
    """Crops ``(F, 3, S', S')`` of any size that came back from other nodes, mapped like the crops that went out.

    ``matrices`` ``(F, 2, 3)`` and ``size`` describe what went out (frame -> crop, ``size`` px);
    a crop resized to ``S'`` px gets the matrices of :func:`blend.resize_matrices`. Raises
    :class:`BadInputError` when the count differs, the crops are not square, or (with
    ``thumbnails`` of what went out, :func:`crop_thumbnails`) a crop looks clearly more like
    another face than its own: the order was changed on the way.
    """
    count = int(matrices.shape[0])
    if not isinstance(given, Tensor) or given.ndim != 4 or given.shape[1] != 3:
        got = tuple(given.shape) if isinstance(given, Tensor) else type(given).__name__
        raise BadInputError(f"expected crops (F, 3, S, S), got {got}", where="crops input")
    if int(given.shape[0]) != count:
        raise BadInputError(
            f"{int(given.shape[0])} crop(s) came in for the {count} face(s) of this swap",
            where="crops input",
            fix="connect the crops output of the node that gave this swap (one crop per face, in the same order), "
            "through nodes that keep the batch as it is",
        )
    if given.shape[2] != given.shape[3]:
        raise BadInputError(
            f"the crops are {int(given.shape[3])}x{int(given.shape[2])}, not square",
            where="crops input",
            fix="use nodes that keep the crops square (restorers and upscalers do); do not crop or pad them",
        )
    if not given.is_floating_point() or not bool(torch.isfinite(given).all()):
        raise BadInputError("the crops must be finite float values in [0, 1]", where="crops input")
    images = given.float().clamp(0.0, 1.0)
    if thumbnails is not None and count > 1:
        similarity = crop_thumbnails(images) @ thumbnails.T  # (F, F) correlation
        own = similarity.diagonal()
        best, which = similarity.max(dim=1)
        moved = [
            (face, int(which[face])) for face in range(count) if float(best[face]) > float(own[face]) + ORDER_MARGIN
        ]
        if moved:
            described = ", ".join(f"crop {face + 1} looks like face {other + 1}" for face, other in moved[:5])
            raise BadInputError(
                f"the crops are not in the order of the faces ({described})",
                where="crops input",
                fix="keep the batch order between the crops output and Blend (no sorting, reversing or batch "
                "picking nodes in between)",
            )
    device = matrices.device
    mapped = resize_matrices(matrices, int(size), int(images.shape[-1])).to(device=device, dtype=torch.float32)
    return FaceCrops(images.to(device), mapped, template, "crops")


# ---------------------------------------------------------------------------------------------
# 6. Blending


def _external_crop_masks(external: Tensor, batch: SwapBatch) -> Tensor:
    """Frame-space masks ``(N, H, W)`` or ``(N, 1, H, W)`` (or one for all frames) warped into each face's crop."""
    mask = external
    if mask.ndim == 3:
        mask = mask.unsqueeze(1)
    height, width = batch.frame_size
    if mask.ndim != 4 or mask.shape[1] != 1 or tuple(mask.shape[2:]) != (height, width):
        raise BadInputError(
            f"the external mask must be (N, H, W) = (N, {height}, {width}), got {tuple(external.shape)}",
            where="blend_swap",
            fix="give one mask per frame at the frames' size (1 keeps the swap, 0 keeps the original)",
        )
    if mask.shape[0] not in (1, batch.num_frames):
        raise BadInputError(f"{mask.shape[0]} external masks for {batch.num_frames} frames", where="blend_swap")
    mask = mask.to(device=batch.crops.device, dtype=torch.float32).clamp(0, 1)
    index = batch.image_index if mask.shape[0] > 1 else torch.zeros_like(batch.image_index)
    size = batch.crop_size
    return warp_affine(mask, batch.matrices, (size, size), image_index=index)


def blend_swap(
    frames: Tensor,
    batch: SwapBatch,
    swapped: SwapOutput | Tensor,
    *,
    mask: MaskKind = "ellipse",
    erosion: float = 0.05,
    feather: float = 0.1,
    external_mask: Tensor | None = None,
    generator_mask: bool = True,
    colour: ColourMethod = "none",
    poisson: bool = False,
    keep_faces: Tensor | Sequence[bool] | None = None,
    finished: FaceCrops | None = None,
    crop_mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Paste the swapped crops back into (copies of) the frames: returns ``(frames, masks (N, H, W))``.

    The face mask (``mask`` kind with ``erosion`` and ``feather``, in crop space) is combined by minimum with the
    generator's own soft mask (when it has one and ``generator_mask``), with ``crop_mask`` ``(F, 1, C, C)``
    (occlusion, region and landmark-area masks made by :func:`masks.create_finish_masks`) and with ``external_mask``
    (frame space, ``(N, H, W)``, floats in [0, 1] or bytes 0..255, the limit mask; it is warped into each crop, and
    where it is 0 the frame stays exact). ``colour`` matches the swapped face's colours to the target crop.
    ``keep_faces`` ``(F,)`` leaves out faces marked False (their frame pixels stay exactly as they were).
    ``finished`` (restored crops, or crops that came back from other nodes, in a crop space of their own) is pasted
    instead of the swapped crops: the mask is built in the swapped crops' space as always and warped into theirs.
    Outside the final mask, output pixels equal the input's bit for bit. Runs on the batch's device; returns the
    frames' dtype and device.
    """
    _check_frames(frames, where="frames to blend")
    if frames.shape[0] != batch.num_frames or tuple(frames.shape[2:]) != batch.frame_size:
        raise BadInputError(
            f"the frames {tuple(frames.shape)} are not the {batch.num_frames} frames of "
            f"{batch.frame_size[1]}x{batch.frame_size[0]} the faces were aligned in",
            where="blend_swap",
            fix="blend into the same frames the swap was prepared on",
        )
    _check_literal(mask, MASK_KINDS, "mask kind")
    _check_literal(colour, COLOUR_METHODS, "colour method")
    crops = swapped.images if isinstance(swapped, SwapOutput) else swapped
    own_mask = swapped.mask if isinstance(swapped, SwapOutput) and generator_mask else None
    if crops.shape != batch.crops.shape:
        raise BadInputError(
            f"swapped crops {tuple(crops.shape)} do not match the batch's {tuple(batch.crops.shape)}",
            where="blend_swap",
        )
    device = batch.crops.device
    count, size = batch.num_faces, batch.crop_size
    as_bytes = is_byte_frames(frames)  # byte frames stay bytes; only the face regions are blended in float
    if external_mask is not None and external_mask.dtype == torch.uint8:
        external_mask = external_mask.float() / 255  # a byte mask (a byte swap's own) is 0..255
    work = frames_to_sample(frames, device)
    landmarks = None
    if mask == "hull" and count:
        dense = [face.landmarks for face in batch.faces]
        shapes = {None if points is None else tuple(points.shape) for points in dense}
        if None in shapes or len(shapes) != 1:
            raise BadInputError(
                "the hull mask needs 68- or 106-point landmarks for every face",
                where="blend_swap",
                fix="use an analyzer with a landmark model (the buffalo_l pack), or the ellipse or box mask",
            )
        points = torch.from_numpy(np.stack([np.asarray(p, dtype=np.float64) for p in dense if p is not None]))
        landmarks = transform_points(points, batch.matrices.detach().to("cpu", torch.float64))
    external = _external_crop_masks(external_mask, batch) if external_mask is not None and count else None
    face_masks = create_face_mask(
        mask, size, count, landmarks=landmarks, erosion=erosion, feather=feather, external=external, device=device
    )
    if own_mask is not None and count:
        face_masks = torch.minimum(face_masks, own_mask.to(device=device, dtype=face_masks.dtype).clamp(0, 1))
    if crop_mask is not None and count:
        if not isinstance(crop_mask, Tensor) or tuple(crop_mask.shape) != (count, 1, size, size):
            got = tuple(crop_mask.shape) if isinstance(crop_mask, Tensor) else type(crop_mask).__name__
            raise BadInputError(
                f"the crop mask must be ({count}, 1, {size}, {size}), got {got}",
                where="blend_swap",
                fix="make it with masks.create_finish_masks for this batch",
            )
        face_masks = torch.minimum(face_masks, crop_mask.to(device=device, dtype=face_masks.dtype).clamp(0, 1))
    if keep_faces is not None and count:
        keep = torch.as_tensor(keep_faces, dtype=torch.bool, device=device).reshape(-1)
        if keep.numel() != count:
            raise BadInputError(f"keep_faces has {keep.numel()} values for {count} faces", where="blend_swap")
        face_masks = face_masks * keep.to(face_masks.dtype)[:, None, None, None]
    pasted = crops.to(device=device, dtype=torch.float32)
    matrices, reference = batch.matrices, batch.crops
    if finished is not None:
        if finished.num_faces != count:
            raise BadInputError(
                f"{finished.num_faces} {finished.label} for the {count} face(s) of this swap", where="blend_swap"
            )
        matrices = finished.matrices.to(device=device, dtype=torch.float32)
        pasted = finished.images.to(device=device, dtype=torch.float32)
        if count:
            face_masks = warp_crops(face_masks, batch.matrices, matrices, finished.size).clamp(0.0, 1.0)
            reference = warp_affine(work, matrices, (finished.size, finished.size), image_index=batch.image_index)
    if colour != "none" and count:
        pasted = match_colour(pasted, reference, face_masks, colour)
    if poisson and as_bytes:  # the Poisson solve works on float frames
        output, masks = poisson_blend(work.float().div_(255.0), pasted, face_masks, matrices, batch.image_index)
        output = torch.where((masks > 0).unsqueeze(1), float_to_bytes(output), work)
        masks = float_to_bytes(masks)
    else:
        blend = poisson_blend if poisson else paste_back
        output, masks = blend(work, pasted, face_masks, matrices, batch.image_index)
    if external_mask is not None and count:
        # Warping the limit into a crop and back blurs its edge by a pixel: where it is 0 in the frame, the
        # frame's own pixels are kept exactly, and the frame mask never exceeds it.
        limit = external_mask.reshape(-1, *batch.frame_size).to(device=device, dtype=torch.float32).clamp(0, 1)
        masks = torch.minimum(masks, float_to_bytes(limit) if as_bytes else limit.to(masks.dtype))
        output = torch.where((limit <= 0).unsqueeze(1), work, output)
    if frames.dtype != torch.float32 and not as_bytes:
        # Cast back only what changed, so unchanged pixels keep their exact input values.
        changed = masks > 0
        exact = frames.to(device)
        output = torch.where(changed.unsqueeze(1), output.to(frames.dtype), exact)
    return output.to(device=frames.device, dtype=frames.dtype), masks.to(device=frames.device, dtype=frames.dtype)


# ---------------------------------------------------------------------------------------------
# 7. Everything over a batch


@dataclass(frozen=True, eq=False)
class _ChunkResult:
    images: Tensor
    masks: Tensor
    reports: tuple[PoseReport, ...]
    targets: FloatArray | None
    results: FloatArray | None


def _swap_aligned(
    frames: Tensor,
    faces_per_frame: list[list[Face]],
    identities: Identity | Sequence[Identity],
    analyzer: Analyzer,
    generator: SwapModel,
    options: SwapOptions,
    external_mask: Tensor | None,
    identity_index: Sequence[int] | None = None,
) -> _ChunkResult:
    """Alignment to paste-back for frames whose faces are chosen (and smoothed) already."""
    batch = align_target_faces(frames, faces_per_frame, generator, weave=options.weave, no_face="pass")
    swapped = forward_swap(batch, generator, identities, options.strength, identity_index=identity_index)
    models = options.finishing or FinishingModels()
    crop_mask = finished = None
    if options.face_masks is not None:
        from .masks import create_finish_masks

        crop_mask = create_finish_masks(
            frames, batch, options.face_masks, occluder=models.occluder, parser=models.parser
        )
    keep = None
    reports: tuple[PoseReport, ...] = ()
    targets = results = None
    if options.pose_check:
        pose = check_swap_pose(batch, swapped, analyzer, thresholds=options.pose_thresholds, policy=options.pose_policy)
        swapped = SwapOutput(images=pose.crops, mask=swapped.mask)
        keep, reports = pose.keep_faces, pose.reports
        targets, results = pose.target_landmarks, pose.result_landmarks
    if models.restorer is not None:
        from .restore import restore_swap

        finished = restore_swap(
            frames, batch, swapped, models.restorer, weight=options.restore_weight, fidelity=options.restore_fidelity
        )
    images, masks = blend_swap(
        frames,
        batch,
        swapped,
        mask=options.mask,
        erosion=options.erosion,
        feather=options.feather,
        external_mask=external_mask,
        generator_mask=options.generator_mask,
        colour=options.colour,
        poisson=options.poisson,
        keep_faces=keep,
        finished=finished,
        crop_mask=crop_mask,
    )
    return _ChunkResult(images, masks, reports, targets, results)


def _needs_dense(options: SwapOptions, analyzer: Analyzer) -> bool:
    """68/106-point landmarks: for the hull mask, and for landmark-area masks when the analyzer has them."""
    spec = options.face_masks
    areas = spec is not None and bool(spec.areas or spec.keep) and bool(analyzer.has_dense_landmarks)
    return options.mask == "hull" or areas


def _with_frame(report: PoseReport, frame: int) -> PoseReport:
    return dataclasses.replace(report, image_index=frame)


def _swap_parts(
    frames: Tensor,
    chosen: Sequence[Sequence[Face]],
    identity_index: Sequence[int] | None,
    identities: Identity | Sequence[Identity],
    analyzer: Analyzer,
    generator: SwapModel,
    options: SwapOptions,
    external_mask: Tensor | None,
    budget: list[int],
    first_frame: int,
    whole: int | None,
) -> _ChunkResult:
    """Alignment to paste-back of ``frames`` with their chosen faces, ``budget[0]`` frames per call.

    On out-of-memory the frames per call are halved (in ``budget``, so for later chunks too) and
    the part retried. Pose reports come back with ``image_index`` counted within ``frames``.
    """
    count = int(frames.shape[0])
    faces_before = np.cumsum([0, *(len(faces) for faces in chosen)])
    images: list[Tensor] = []
    masks: list[Tensor] = []
    reports: list[PoseReport] = []
    targets: list[FloatArray] = []
    results: list[FloatArray] = []
    part_start = 0
    while part_start < count:
        part_stop = min(part_start + budget[0], count)
        mask_part = None
        if external_mask is not None:
            mask_part = external_mask if external_mask.shape[0] == 1 else external_mask[part_start:part_stop]
        wanted = None
        if identity_index is not None:
            wanted = identity_index[int(faces_before[part_start]) : int(faces_before[part_stop])]
        try:
            piece = _swap_aligned(
                frames[part_start:part_stop].to(generator.device),  # moved once; stays there until pasted
                [list(faces) for faces in chosen[part_start:part_stop]],
                identities,
                analyzer,
                generator,
                options,
                mask_part,
                wanted,
            )
        except (torch.OutOfMemoryError, RuntimeError, OutOfMemoryError) as error:
            if not is_out_of_memory(error):
                raise
            if part_stop - part_start == 1:
                raise BadInputError(
                    f"out of memory on {generator.device} even with one frame per chunk",
                    where=_frame_label(first_frame + part_start, whole),
                    fix="use a smaller weave factor or dtype fp16, free memory held by other models, or run on the CPU",
                ) from error
            budget[0] = max(1, (part_stop - part_start) // 2)
            if generator.device.type == "cuda":
                torch.cuda.empty_cache()
            logger.warning("out of memory on %s; retrying with %d frames per chunk", generator.device, budget[0])
            continue
        images.append(piece.images)
        masks.append(piece.masks)
        reports.extend(_with_frame(report, part_start + report.image_index) for report in piece.reports)
        if piece.targets is not None and piece.results is not None:
            targets.append(piece.targets)
            results.append(piece.results)
        part_start = part_stop
    return _ChunkResult(
        images[0] if len(images) == 1 else torch.cat(images),
        masks[0] if len(masks) == 1 else torch.cat(masks),
        tuple(reports),
        np.concatenate(targets) if targets else None,
        np.concatenate(results) if results else None,
    )


def _take_frames(pending: deque[Tensor], count: int) -> Tensor:
    """The oldest ``count`` frames of the chunks in ``pending`` (removed from it), as one batch."""
    taken: list[Tensor] = []
    while count > 0:
        head = pending[0]
        if head.shape[0] <= count:
            taken.append(pending.popleft())
        else:
            taken.append(head[:count])
            pending[0] = head[count:]
        count -= int(taken[-1].shape[0])
    return taken[0] if len(taken) == 1 else torch.cat(taken)


def _listed(identities: Identity | Sequence[Identity]) -> list[Identity]:
    return [identities] if isinstance(identities, Identity) else list(identities)


def _stream_mapping(options: SwapOptions, identities: Identity | Sequence[Identity]) -> FaceMapping:
    listed = _listed(identities)
    if options.mapping is None:
        return FaceMapping.from_selection(
            order=options.face_order,
            index=options.face_index,
            reference=options.reference,
            min_similarity=options.min_similarity,
            num_identities=len(listed),
        )
    if options.mapping.num_identities > len(listed):
        raise BadInputError(
            f"the face mapping names identity {options.mapping.num_identities - 1} (counted from 0), "
            f"but {len(listed)} identit{'y was' if len(listed) == 1 else 'ies were'} given",
            where="swap options",
            fix=f"give {options.mapping.num_identities} identities, or map faces only to the ones given",
        )
    return options.mapping


def swap_stream(
    chunks: Iterable[Tensor],
    identities: Identity | Sequence[Identity],
    analyzer: Analyzer,
    generator: SwapModel,
    options: SwapOptions,
    *,
    smoother: FaceTracker | None = None,
    external_mask: Tensor | None = None,
    frame_offset: int = 0,
    total_frames: int | None = None,
    checked: bool = False,
) -> Iterator[SwapResult]:
    """Swap consecutive chunks of one clip with ``options.mapping`` and ``options.tracking``; one result per piece.

    Each chunk is analysed at once (every face with its embedding, one batched recogniser call);
    the mapping gives faces their identities, and with tracking the faces are linked across
    frames (:class:`~facemagic_core.tracking.FaceTracks`) and missed detections filled in. A
    frame is swapped once it is settled, so results lag the chunks by at most
    ``options.tracking.max_gap`` frames and memory holds at most that many frames beyond a chunk.
    ``external_mask`` (one for all frames, or one per frame of the whole clip) limits where
    faces change. The results' frame numbers start at ``frame_offset``. ``checked``: the chunks passed
    :func:`images.check_images` already (see :func:`select_target_faces`).
    """
    mapping = _stream_mapping(options, identities)
    skip = _scan_skip(analyzer, checked)
    tracks = FaceTracks(mapping, options.tracking) if options.tracking is not None else None
    dense = _needs_dense(options, analyzer)
    pending: deque[Tensor] = deque()
    detected: deque[int] = deque()
    budget = [options.chunk_size]
    pushed = 0
    emitted = 0

    def settle(ready: list[list[TrackedFace]]) -> SwapResult | None:
        nonlocal emitted
        if not ready:
            return None
        frames = _take_frames(pending, len(ready))
        found = [detected.popleft() for _ in ready]
        first = frame_offset + emitted
        chosen = [[item.face for item in items] for items in ready]
        if smoother is not None:
            chosen = smoother.smooth(chosen)
        missing = [frame for frame, faces in enumerate(chosen) if not faces]
        if missing and options.no_face == "error":
            plain = options if options.mapping is None else None
            raise _no_face_error(missing, first, total_frames, found=found[missing[0]], options=plain)
        items = [item for frame_items in ready for item in frame_items]
        identity_index = [mapping.rules[item.rule].identity for item in items]
        mask_part = None
        if external_mask is not None:
            mask_part = external_mask if external_mask.shape[0] == 1 else external_mask[emitted : emitted + len(ready)]
        parts = _swap_parts(
            frames,
            chosen,
            identity_index,
            identities,
            analyzer,
            generator,
            options,
            mask_part,
            budget,
            first,
            total_frames,
        )
        emitted += len(ready)
        return SwapResult(
            images=parts.images.to(frames.device),
            masks=parts.masks.to(frames.device),
            frames_without_face=tuple(first + frame for frame in missing),
            face_counts=tuple(len(faces) for faces in chosen),
            pose_reports=tuple(_with_frame(report, first + report.image_index) for report in parts.reports),
            faces=tuple(
                dataclasses.replace(face, image_index=first + frame)
                for frame, faces in enumerate(chosen)
                for face in faces
            ),
            pose_landmarks=(parts.targets, parts.results)
            if parts.targets is not None and parts.results is not None
            else None,
            frame_offset=first,
            identity_index=tuple(identity_index),
            tracks=tuple(item.track for item in items) if tracks is not None else (),
            interpolated=tuple(item.interpolated for item in items) if tracks is not None else (),
        )

    for chunk in chunks:
        faces = analyzer.analyze(chunk, landmarks=dense, embeddings=True, **skip)
        if len(faces) != chunk.shape[0]:
            raise BadInputError(
                f"the face analyzer returned results for {len(faces)} of {chunk.shape[0]} frames",
                fix="this is a bug in the analyzer; please report it",
            )
        faces = [[dataclasses.replace(face, image_index=pushed + n) for face in frame] for n, frame in enumerate(faces)]
        pushed += len(faces)
        pending.append(chunk)
        detected.extend(len(frame) for frame in faces)
        if tracks is not None:
            ready = tracks.push(faces)
        else:
            ready = []
            for frame in faces:
                rules = mapping.assign(frame)
                items = [
                    TrackedFace(face, -1, rule, False)
                    for face, rule in zip(frame, rules, strict=True)
                    if rule is not None
                ]
                ready.append(sorted(items, key=lambda item: item.rule))
        result = settle(ready)
        if result is not None:
            yield result
    if tracks is not None:
        result = settle(tracks.finish())
        if result is not None:
            yield result


def _swap_mapped(
    frames_in: Tensor,
    identities: Identity | Sequence[Identity],
    analyzer: Analyzer,
    generator: SwapModel,
    options: SwapOptions,
    progress: ProgressCallback | None,
    smoother: FaceTracker | None,
    external_mask: Tensor | None,
    frame_offset: int,
    whole: int | None,
) -> SwapResult:
    """:func:`swap_faces` with a mapping or tracking: :func:`swap_stream` over chunks of the batch."""
    total = int(frames_in.shape[0])
    size = options.chunk_size
    output = torch.empty_like(frames_in)
    masks = frames_in.new_empty((total, frames_in.shape[2], frames_in.shape[3]))
    pieces: list[SwapResult] = []
    stream = swap_stream(
        (frames_in[start : start + size] for start in range(0, total, size)),
        identities,
        analyzer,
        generator,
        options,
        smoother=smoother,
        external_mask=external_mask,
        frame_offset=frame_offset,
        total_frames=whole,
        checked=True,  # frames_in was scanned on entry
    )
    done = 0
    for piece in stream:
        count = int(piece.images.shape[0])
        output[done : done + count] = piece.images
        masks[done : done + count] = piece.masks
        done += count
        pieces.append(piece)
        if progress is not None:
            progress(done, total)
    pose = [piece.pose_landmarks for piece in pieces if piece.pose_landmarks is not None]
    without = tuple(frame for piece in pieces for frame in piece.frames_without_face)
    if without:
        logger.info("%d frame(s) without the face asked for were passed through unchanged", len(without))
    return SwapResult(
        images=output,
        masks=masks,
        frames_without_face=without,
        face_counts=tuple(count for piece in pieces for count in piece.face_counts),
        pose_reports=tuple(report for piece in pieces for report in piece.pose_reports),
        faces=tuple(face for piece in pieces for face in piece.faces),
        pose_landmarks=(np.concatenate([p[0] for p in pose]), np.concatenate([p[1] for p in pose])) if pose else None,
        frame_offset=frame_offset,
        identity_index=tuple(number for piece in pieces for number in piece.identity_index),
        tracks=tuple(number for piece in pieces for number in piece.tracks),
        interpolated=tuple(flag for piece in pieces for flag in piece.interpolated),
    )


def swap_faces(
    images: Tensor,
    identities: Identity | Sequence[Identity],
    analyzer: Analyzer,
    generator: SwapModel,
    options: SwapOptions | None = None,
    progress: ProgressCallback | None = None,
    *,
    tracker: FaceTracker | None = None,
    external_mask: Tensor | None = None,
    frame_offset: int = 0,
    total_frames: int | None = None,
) -> SwapResult:
    """Swap the chosen faces of every frame of ``images`` ``(N, 3, H, W)``; returns a :class:`SwapResult`.

    ``images`` are float in [0, 1] or ``uint8`` byte frames (0..255, as :func:`video.iter_frames` gives them
    with ``as_bytes``): byte frames are never converted whole; only the face regions are sampled and blended
    in float, and the result is bytes again.

    Works through the frames in chunks of ``options.chunk_size``: choose faces (CPU
    detection), smooth them (``options.smoothing`` or an explicit ``tracker``, which carries
    the smoothing across calls for a video given in pieces), then align, swap, check the
    pose (``options.pose_check``) and paste back on the generator's device. On a CUDA
    out-of-memory error the chunk is halved and retried. ``progress(done, total)`` is called
    after each chunk; an exception it raises (e.g. :class:`CancelledError`) propagates and
    nothing is returned. ``external_mask`` ``(N, H, W)`` limits where faces may change.
    ``frame_offset`` is added to the frame numbers in the result and in messages.
    """
    if options is not None and not isinstance(options, SwapOptions):
        raise BadInputError(
            f"expected SwapOptions, got {type(options).__name__}",
            where="swap_faces",
            fix="pass SwapOptions(...), e.g. SwapOptions(weave=2), or None for the defaults",
        )
    options = options or SwapOptions()
    for role, model, how in (
        ("face analyzer", analyzer, "build one with facemagic_core.analysis.FaceAnalyzer(...)"),
        ("generator", generator, "load one with facemagic_core.generators.load_generator(...)"),
    ):
        if not hasattr(model, "embedding_model"):
            raise BadInputError(f"expected a {role}, got {type(model).__name__}", where="swap_faces", fix=how)
    frames_in = check_images(images, where="target images", allow_bytes=True)
    if isinstance(identities, Identity):
        check_identity(identities, generator)
    else:
        if not isinstance(identities, list | tuple):
            raise BadInputError(
                f"expected an Identity or a list of them, got {type(identities).__name__}",
                where="swap_faces",
                fix="make an Identity with extract_identity or load_identity (a bare embedding needs "
                "Identity(embedding, embedding_model=...))",
            )
        if not identities:
            raise BadInputError("no identity was given", where="swap_faces", fix="pass at least one identity")
        for number, identity in enumerate(identities):
            check_identity(identity, generator, where=f"identity {number}")
    check_recognisers(analyzer, generator)
    _strength_rows(options.strength, int(generator.num_blocks))  # fail before any work
    if options.mask == "hull" and not analyzer.has_dense_landmarks:
        raise BadInputError(
            "the hull mask needs 68- or 106-point landmarks, and this face analyzer has no landmark model",
            where="swap options",
            fix="use an analyzer with a landmark model (the buffalo_l pack), or the ellipse or box mask",
        )
    if external_mask is not None and external_mask.shape[0] not in (1, frames_in.shape[0]):
        raise BadInputError(
            f"{external_mask.shape[0]} external masks for {frames_in.shape[0]} frames", where="swap_faces"
        )
    if tracker is None and options.smoothing is not None:
        tracker = FaceTracker(options.smoothing)
    total = int(frames_in.shape[0])
    whole = total_frames if total_frames is not None else (total if frame_offset == 0 else None)
    output: Tensor | None = None  # the pasted frames (a chunk covering every frame becomes the output as it is)
    masks: Tensor | None = None
    without: list[int] = []
    counts: list[int] = []
    faces_out: list[Face] = []
    reports: list[PoseReport] = []
    targets: list[FloatArray] = []
    results: list[FloatArray] = []
    if options.mapping is not None or options.tracking is not None:
        return _swap_mapped(
            frames_in, identities, analyzer, generator, options, progress, tracker, external_mask, frame_offset, whole
        )
    budget = [options.chunk_size]  # frames per generator call, halved for good on out-of-memory
    start = 0
    while start < total:
        stop = min(start + options.chunk_size, total)
        frames = frames_in[start:stop]
        chosen = select_target_faces(
            frames,
            analyzer,
            order=options.face_order,
            index=options.face_index,
            reference=options.reference,
            min_similarity=options.min_similarity,
            dense_landmarks=_needs_dense(options, analyzer),
            checked=True,  # frames_in was scanned on entry
        )
        missing = [frame for frame, faces in enumerate(chosen) if not faces]
        if missing and options.no_face == "error":
            found = len(analyzer.analyze(frames[missing[0] : missing[0] + 1], landmarks=False, embeddings=False)[0])
            raise _no_face_error(missing, frame_offset + start, whole, found=found, options=options)
        if tracker is not None:
            chosen = tracker.smooth(chosen)
        mask_part = None
        if external_mask is not None:
            mask_part = external_mask if external_mask.shape[0] == 1 else external_mask[start:stop]
        parts = _swap_parts(
            frames,
            chosen,
            None,
            identities,
            analyzer,
            generator,
            options,
            mask_part,
            budget,
            frame_offset + start,
            whole,
        )
        if stop - start == total:
            output, masks = parts.images.to(frames_in.device), parts.masks.to(frames_in.device)
        else:
            if output is None or masks is None:
                output = torch.empty_like(frames_in)
                masks = frames_in.new_empty((total, frames_in.shape[2], frames_in.shape[3]))
            output[start:stop] = parts.images
            masks[start:stop] = parts.masks
        for report in parts.reports:
            reports.append(_with_frame(report, frame_offset + start + report.image_index))
        if parts.targets is not None and parts.results is not None:
            targets.append(parts.targets)
            results.append(parts.results)
        for frame, faces in enumerate(chosen):
            absolute = frame_offset + start + frame
            counts.append(len(faces))
            if not faces:
                without.append(absolute)
            faces_out.extend(dataclasses.replace(face, image_index=absolute) for face in faces)
        start = stop
        if progress is not None:
            progress(start, total)
    if without:
        logger.info("%d frame(s) without the face asked for were passed through unchanged", len(without))
    pose_landmarks = (np.concatenate(targets), np.concatenate(results)) if options.pose_check and targets else None
    if output is None or masks is None:  # no frames: check_images refuses an empty batch, so never
        raise BadInputError("no frames were swapped", where="swap_faces")
    return SwapResult(
        images=output,
        masks=masks,
        frames_without_face=tuple(without),
        face_counts=tuple(counts),
        pose_reports=tuple(reports),
        faces=tuple(faces_out),
        pose_landmarks=pose_landmarks,
        frame_offset=frame_offset,
    )


# ---------------------------------------------------------------------------------------------
# 8. Videos, streamed


@dataclass(frozen=True)
class VideoSwapSummary:
    """What :func:`swap_video` did."""

    output: Path
    frames: int  # frames written
    fps: float  # frame rate of the output (the input's)
    frames_without_face: tuple[int, ...]
    face_counts: tuple[int, ...]
    pose_reports: tuple[PoseReport, ...]
    seconds: float  # wall time of the whole run
    interpolated_faces: int = 0  # with tracking: faces filled in where the detector missed them
    audio: bool = False  # the source's sound was copied into the output


def swap_video(
    source: str | os.PathLike[str],
    output: str | os.PathLike[str],
    identities: Identity | Sequence[Identity],
    analyzer: Analyzer,
    generator: SwapModel,
    options: SwapOptions | None = None,
    progress: ProgressCallback | None = None,
    *,
    max_frames: int | None = None,
    on_result: Callable[[SwapResult], None] | None = None,
    audio: bool = True,
) -> VideoSwapSummary:
    """Swap faces in a video or GIF file chunk by chunk and write ``output`` (``.mp4`` or ``.gif``) atomically.

    Frames are read, swapped (:func:`swap_faces`, landmark smoothing carried across chunks)
    and written one chunk at a time, so memory stays bounded; the frame rate is kept.
    ``progress(done, total)`` is called after each chunk; if it raises (e.g.
    :class:`CancelledError`), or anything else fails, no output file is left behind.
    ``on_result`` receives each chunk's :class:`SwapResult` (e.g. to save pose overlays).
    ``audio``: copy the source's sound into an ``.mp4``/``.mov``/``.m4v``/``.mkv`` output
    (trimmed to the frames written). ``options.mapping`` and ``options.tracking`` run through
    :func:`swap_stream`.
    """
    from .video import AUDIO_SUFFIXES, iter_frames, read_video_info, write_video

    options = options or SwapOptions()
    info = read_video_info(source)
    total = min(info.frame_count, max_frames) if max_frames is not None and info.frame_count else info.frame_count
    tracker = FaceTracker(options.smoothing) if options.smoothing is not None else None
    without: list[int] = []
    counts: list[int] = []
    reports: list[PoseReport] = []
    interpolated = [0]
    started = time.perf_counter()

    def results() -> Iterator[SwapResult]:
        chunks = iter_frames(source, options.chunk_size, max_frames=max_frames, as_bytes=True)
        if options.mapping is not None or options.tracking is not None:
            check_recognisers(analyzer, generator)
            for number, identity in enumerate(_listed(identities)):
                check_identity(identity, generator, where=f"identity {number}")
            _strength_rows(options.strength, int(generator.num_blocks))  # fail before any frame is read
            if options.mask == "hull" and not analyzer.has_dense_landmarks:
                raise BadInputError(
                    "the hull mask needs 68- or 106-point landmarks, and this face analyzer has no landmark model",
                    where="swap options",
                    fix="use an analyzer with a landmark model (the buffalo_l pack), or the ellipse or box mask",
                )
            _stream_mapping(options, identities)  # a mapping naming more identities than given
            yield from swap_stream(
                chunks, identities, analyzer, generator, options, smoother=tracker, total_frames=total or None
            )
            return
        done = 0
        for chunk in chunks:
            yield swap_faces(
                chunk,
                identities,
                analyzer,
                generator,
                options,
                tracker=tracker,
                frame_offset=done,
                total_frames=total or None,
            )
            done += int(chunk.shape[0])

    def swapped_chunks() -> Iterator[Tensor]:
        done = 0
        for result in results():
            done += int(result.images.shape[0])
            interpolated[0] += sum(result.interpolated)
            without.extend(result.frames_without_face)
            counts.extend(result.face_counts)
            reports.extend(result.pose_reports)
            if on_result is not None:
                on_result(result)
            yield result.images
            if progress is not None:
                progress(done, max(total, done))

    try:
        sound = source if audio and info.has_audio else None
        written = write_video(output, swapped_chunks(), info.fps, audio_from=sound)
    except CancelledError:
        logger.info("swap of %s cancelled; nothing was written", source)
        raise
    return VideoSwapSummary(
        output=Path(output),
        frames=written,
        fps=info.fps,
        frames_without_face=tuple(without),
        face_counts=tuple(counts),
        pose_reports=tuple(reports),
        seconds=time.perf_counter() - started,
        interpolated_faces=interpolated[0],
        audio=sound is not None and Path(output).suffix.lower() in AUDIO_SUFFIXES,
    )
