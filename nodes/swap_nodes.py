"""Swap nodes: swap, pose check, blend, and the all-in-one swap.

The modular path passes a :class:`SwapData` through ``FACEMAGIC_SWAP`` sockets. The Swap node
works through the frames in chunks (``facemagic_core.pipeline.DEFAULT_CHUNK_SIZE`` frames):
each chunk is detected, aligned and swapped on the generator's device, then its crops are
parked on the CPU. The pose check and the blend go through the same chunks, moving one chunk
at a time to the device, so a long batch of video frames never sits on the accelerator as a
whole. Nothing is modified in place: every node returns new tensors and a new SwapData.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch

from facemagic_core.analysis import FaceAnalyzer
from facemagic_core.blend import COLOUR_METHODS, MASK_KINDS, FaceCrops
from facemagic_core.errors import BadInputError
from facemagic_core.generators.base import SwapOutput
from facemagic_core.mapping import DEFAULT_REFERENCE_THRESHOLD
from facemagic_core.pipeline import (
    DEFAULT_CHUNK_SIZE,
    MAX_WEAVE,
    NO_FACE_POLICIES,
    FaceTracker,
    PoseCheck,
    SmoothingConfig,
    SwapBatch,
    SwapOptions,
    blend_swap,
    check_recognisers,
    check_swap_pose,
    crop_thumbnails,
    crops_from_image,
    forward_swap,
    prepare_swap,
    realign_swap,
    swap_faces,
)
from facemagic_core.pose import FAILURE_POLICIES, PoseReport, PoseThresholds, draw_pose_overlay, format_pose_report
from facemagic_core.tracking import DEFAULT_MAX_GAP, TrackingConfig
from facemagic_core.types import Identity

from ._comfy import io, text_ui
from .common import (
    CATEGORY,
    SWAP_ALIASES,
    advanced,
    analyzer_input,
    face_order_input,
    generator_input,
    identity_input,
    node_schema,
)
from .memory import GeneratorHandle
from .progress import comfy_errors, comfy_progress
from .sockets import Swap
from .tensors import as_image_batch, images_as_core_view, images_to_comfy, images_to_core, masks_to_comfy, masks_to_core

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------------------------
# What travels through FACEMAGIC_SWAP


@dataclass(frozen=True, eq=False)
class SwapChunk:
    """The swap of frames ``start .. start + batch.num_frames - 1``; tensors on the CPU."""

    start: int
    batch: SwapBatch  # aligned target crops, frame -> crop matrices, faces (frame numbers within the chunk)
    swapped: SwapOutput  # the generator's crops (and soft mask)
    pose: PoseCheck | None = None  # set by the pose check
    finished: FaceCrops | None = None  # restored crops (FaceMagic Restore Faces), pasted instead of the swapped ones


#: What the Swap node's crops output holds: the generator's own crops, or the swapped faces re-aligned for restorers.
CROP_OUTPUTS = ("generator", "ffhq_512")


@dataclass(frozen=True, eq=False)
class CropsOut:
    """What the crops IMAGE output of the node that gave a swap holds, so that Blend can map such crops back."""

    matrices: torch.Tensor  # (F, 2, 3) frame -> crop of every face (CPU, float32), in face order
    size: int  # crop side in pixels
    template: str  # alignment of the crops
    thumbnails: torch.Tensor  # (F, T*T) of the crops as they went out (pipeline.crop_thumbnails): order check


@dataclass(frozen=True, eq=False)
class SwapData:
    """What travels through a ``FACEMAGIC_SWAP`` socket."""

    images: torch.Tensor  # the target IMAGE [N, H, W, C] as ComfyUI gave it (not copied, never modified)
    chunks: tuple[SwapChunk, ...]
    analyzer: FaceAnalyzer  # the analyzer that found the faces (the pose check measures with it too)
    device: torch.device  # where the generator ran; later stages run there
    generator_name: str
    crops_out: CropsOut | None = None  # what the crops output of the node that gave this swap holds

    @property
    def num_frames(self) -> int:
        return int(self.images.shape[0])

    def frames(self, start: int, stop: int) -> torch.Tensor:
        """Target frames ``start .. stop - 1`` as a core ``(n, 3, H, W)`` batch (converted chunk by chunk)."""
        return images_to_core(self.images[start:stop], where="target images")

    @property
    def num_faces(self) -> int:
        return sum(chunk.batch.num_faces for chunk in self.chunks)

    @property
    def frames_without_face(self) -> tuple[int, ...]:
        return tuple(chunk.start + frame for chunk in self.chunks for frame in chunk.batch.frames_without_face)

    def pose_reports(self) -> list[PoseReport]:
        """Every pose report, with frame numbers of the whole batch (empty before the pose check)."""
        return [
            dataclasses.replace(report, image_index=chunk.start + report.image_index)
            for chunk in self.chunks
            if chunk.pose is not None
            for report in chunk.pose.reports
        ]


def _to_cpu_batch(batch: SwapBatch) -> SwapBatch:
    return dataclasses.replace(
        batch, crops=batch.crops.cpu(), matrices=batch.matrices.cpu(), image_index=batch.image_index.cpu()
    )


def _to_device_batch(batch: SwapBatch, device: torch.device) -> SwapBatch:
    return dataclasses.replace(
        batch,
        crops=batch.crops.to(device),
        matrices=batch.matrices.to(device),
        image_index=batch.image_index.to(device),
    )


def _on(output: SwapOutput, device: torch.device) -> SwapOutput:
    return SwapOutput(images=output.images.to(device), mask=output.mask.to(device) if output.mask is not None else None)


def swapped_crops_image(data: SwapData) -> torch.Tensor:
    """All swapped crops as a ComfyUI IMAGE (one black crop when no face was swapped)."""
    size = data.chunks[0].batch.crop_size if data.chunks else 64
    return crops_as_image([chunk.swapped.images for chunk in data.chunks], size)


def crops_as_image(parts: list[torch.Tensor], size: int) -> torch.Tensor:
    """Crops ``(F, 3, S, S)`` of every chunk as one ComfyUI IMAGE (one black crop when there are none)."""
    crops = [part for part in parts if part.shape[0]]
    if not crops:
        return torch.zeros((1, size, size, 3))
    return images_to_comfy(torch.cat(crops))


def crops_out_of(matrices: list[torch.Tensor], image: torch.Tensor, template: str, data: SwapData) -> CropsOut:
    """The :class:`CropsOut` of a crops IMAGE (``image``, BHWC) made from the chunks' crops with these matrices."""
    stacked = torch.cat([m.cpu() for m in matrices]) if matrices else torch.zeros((0, 2, 3))
    faces = data.num_faces
    thumbnails = crop_thumbnails(image[:faces].permute(0, 3, 1, 2)) if faces else torch.zeros((0, 1))
    return CropsOut(matrices=stacked.float(), size=int(image.shape[1]), template=template, thumbnails=thumbnails)


def crops_coming_back(data: SwapData, crops: torch.Tensor) -> list[FaceCrops | None]:
    """Crops given to Blend (ComfyUI IMAGE, any size), mapped back and split per chunk (None: nothing to paste)."""
    if data.num_faces == 0:
        return [None] * len(data.chunks)
    if data.crops_out is None:
        raise BadInputError(
            "this swap does not say what its crops are", where="crops input", fix="run the swap with FaceMagic Swap"
        )
    given = images_to_core(as_image_batch(crops, where="crops input"), where="crops input")
    out = data.crops_out
    mapped = crops_from_image(given, out.matrices, out.size, template=out.template, thumbnails=out.thumbnails)
    parts: list[FaceCrops | None] = []
    first = 0
    for chunk in data.chunks:
        last = first + chunk.batch.num_faces
        parts.append(FaceCrops(mapped.images[first:last], mapped.matrices[first:last], out.template, "crops input"))
        first = last
    return parts


# ---------------------------------------------------------------------------------------------------------------------
# Inputs shared by the swap nodes


def strength_input(tooltip: str | None = None) -> io.Input:
    return io.Float.Input(
        "strength",
        default=1.0,
        min=0.0,
        max=1.0,
        step=0.01,
        display_mode=io.NumberDisplay.slider,
        tooltip=tooltip
        or "How much of the identity is injected: 1 is the full swap, 0 injects none (the face keeps its own "
        "identity, as the generator redraws it).",
    )


def _face_index_input() -> io.Input:
    return io.Int.Input(
        "face_index",
        default=0,
        min=-1,
        max=63,
        display_name="face index",
        tooltip="Which face of each frame to swap, counted from 0 in the face order; -1 swaps every face.",
    )


def _reference_input() -> io.Input:
    return identity_input(
        "reference",
        "Optional: swap the face that looks most like this identity (then face index counts from the most "
        "similar face, and face order is not used).",
        optional=True,
    )


def reference_threshold_input(tooltip: str | None = None, *, optional: bool = True, **extra: Any) -> io.Input:
    """``extra``: more keywords of the input (:func:`advanced`'s)."""
    return io.Float.Input(
        "reference_threshold",
        default=DEFAULT_REFERENCE_THRESHOLD,
        min=-1.0,
        max=1.0,
        step=0.01,
        display_name="reference threshold",
        tooltip=tooltip
        or "With a reference: faces less similar to it than this are never swapped, so nobody else is swapped "
        "while that person is out of the shot (-1 keeps every face).",
        optional=optional,
        **extra,
    )


def track_gap_input(tooltip: str | None = None, *, optional: bool = True, **extra: Any) -> io.Input:
    """``extra``: more keywords of the input (:func:`advanced`'s)."""
    return io.Int.Input(
        "track_gap",
        default=DEFAULT_MAX_GAP,
        min=0,
        max=60,
        display_name="track gap",
        tooltip=tooltip
        or "Video frames: faces are followed from frame to frame, and a face the detector misses for up to this "
        "many frames is still swapped (its place interpolated), so it does not flicker. 0 turns following off.",
        optional=optional,
        **extra,
    )


def no_face_input(tooltip: str | None = None, *, default: str = "error") -> io.Input:
    return io.Combo.Input(
        "no_face",
        options=list(NO_FACE_POLICIES),
        default=default,
        display_name="no face",
        tooltip=tooltip
        or "A frame without the face asked for: error stops the run and names the frame; pass returns the "
        "frame unchanged (useful for videos).",
    )


def _smoothing_input() -> io.Input:
    return io.Float.Input(
        "smoothing",
        default=0.0,
        min=0.0,
        max=10.0,
        step=0.1,
        tooltip="Video frames: smooths the face landmarks over time so the swapped face does not jitter. "
        "0 is off, 1 the default strength, higher is smoother (with more lag on fast moves).",
        **advanced(),
    )


def _face_selection(
    face_order: str, face_index: int, reference: Identity | None, threshold: float | None = None
) -> dict[str, Any]:
    return {
        "order": face_order,
        "index": None if face_index < 0 else int(face_index),
        "reference": reference.mean_embedding() if reference is not None else None,
        "min_similarity": float(threshold) if reference is not None and threshold is not None else None,
    }


def mask_input(tooltip: str | None = None) -> io.Input:
    return io.Combo.Input(
        "mask",
        options=list(MASK_KINDS),
        default="ellipse",
        display_name="mask shape",
        tooltip=tooltip
        or "Where the swapped face is pasted: ellipse (the usual choice), box, or hull (the outline of "
        "the 68/106-point landmarks; needs the buffalo_l or antelopev2 analyzer).",
    )


def _mask_inputs() -> list[io.Input]:
    return [
        mask_input(),
        io.Float.Input(
            "erosion",
            default=0.05,
            min=0.0,
            max=0.5,
            step=0.01,
            tooltip="Shrinks the mask, as a fraction of the face size, to keep hair and face edges of the target.",
            **advanced(),
        ),
        io.Float.Input(
            "feather",
            default=0.1,
            min=0.0,
            max=1.0,
            step=0.01,
            tooltip="Softness of the mask edge, as a fraction of the face size.",
            **advanced(),
        ),
        io.Combo.Input(
            "colour",
            options=list(COLOUR_METHODS),
            default="none",
            display_name="colour match",
            tooltip="Match the swapped face's colours to the target: mean_std per RGB channel, lab in Lab colour "
            "space (best for different lighting), none to keep the generator's colours.",
        ),
    ]


# ---------------------------------------------------------------------------------------------------------------------
# Swap


class FaceMagicSwap(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="FaceMagicSwap",
            search_aliases=SWAP_ALIASES,
            display_name="FaceMagic Swap",
            category=CATEGORY,
            description="Finds the target faces, aligns them and runs the generator with the identity. Gives the "
            "swapped faces for 'FaceMagic Pose Check' and 'FaceMagic Blend' (which pastes them back), and the "
            "swapped crops to look at.",
            inputs=[
                io.Image.Input("images", display_name="target images", tooltip="Pictures or video frames to swap."),
                identity_input(tooltip="The person to put into the pictures."),
                generator_input(),
                analyzer_input("Face analyzer that finds the target faces (it must use the generator's recogniser)."),
                strength_input(),
                face_order_input(),
                _face_index_input(),
                io.Int.Input(
                    "weave",
                    default=1,
                    min=1,
                    max=MAX_WEAVE,
                    tooltip="Crop at this many times the model's size and swap it as interleaved sub-images: sharper "
                    "faces from a 128 px model (2 gives 256 px) at weave x weave the cost.",
                    **advanced(),
                ),
                _smoothing_input(),
                no_face_input(),
                _reference_input(),
                reference_threshold_input(),
                io.Combo.Input(
                    "crop_output",
                    options=list(CROP_OUTPUTS),
                    default="generator",
                    optional=True,
                    display_name="crops output",
                    tooltip="What the swapped crops output holds: generator, the crops as the model made them; "
                    "ffhq_512, the swapped faces re-aligned at 512 px the way face restorers (GFPGAN, CodeFormer) "
                    "expect. Either can go through any IMAGE node into Blend's crops input.",
                ),
            ],
            outputs=[
                Swap.Output("swap", display_name="swap", tooltip="The swapped faces, for Pose Check or Blend."),
                io.Image.Output(
                    "crops",
                    display_name="swapped crops",
                    tooltip="The swapped faces as aligned square crops, one per face in order (see crops output); "
                    "edit them with any IMAGE node and give them to Blend's crops input.",
                ),
            ],
        )

    @classmethod
    def execute(
        cls,
        images: torch.Tensor,
        identity: Identity,
        generator: GeneratorHandle,
        analyzer: FaceAnalyzer,
        strength: float,
        face_order: str,
        face_index: int,
        weave: int,
        smoothing: float,
        no_face: str,
        reference: Identity | None = None,
        reference_threshold: float | None = None,
        crop_output: str | None = None,
    ) -> io.NodeOutput:
        images = as_image_batch(images, where="target images")
        total = int(images.shape[0])
        selection = _face_selection(face_order, face_index, reference, reference_threshold)
        tracker = FaceTracker(SmoothingConfig.with_strength(smoothing)) if smoothing > 0 else None
        progress = comfy_progress(total, what="swap")
        chunks: list[SwapChunk] = []
        realigned: list[FaceCrops] = []
        with comfy_errors():
            model = generator.ready()
            check_recognisers(analyzer, model, where="FaceMagic Swap")
            dense = bool(analyzer.has_dense_landmarks)
            for start in range(0, total, DEFAULT_CHUNK_SIZE):
                part = images_to_core(images[start : start + DEFAULT_CHUNK_SIZE], where="target images")
                batch = prepare_swap(
                    part,
                    analyzer,
                    model,
                    **selection,
                    dense_landmarks=dense,  # Blend's hull mask needs them; its mask is chosen after this node
                    tracker=tracker,
                    weave=int(weave),
                    no_face=no_face,  # type: ignore[arg-type]
                    frame_offset=start,
                    total_frames=total,
                )
                swapped = forward_swap(batch, model, identity, float(strength))
                if crop_output == "ffhq_512":
                    realigned.append(realign_swap(part, batch, swapped, template="ffhq", size=512).to("cpu"))
                chunks.append(
                    SwapChunk(start=start, batch=_to_cpu_batch(batch), swapped=_on(swapped, torch.device("cpu")))
                )
                progress(min(start + DEFAULT_CHUNK_SIZE, total), total)
        data = SwapData(
            images=images, chunks=tuple(chunks), analyzer=analyzer, device=model.device, generator_name=generator.name
        )
        if crop_output == "ffhq_512":
            crops_image = crops_as_image([crop.images for crop in realigned], 512)
            data = dataclasses.replace(
                data, crops_out=crops_out_of([crop.matrices for crop in realigned], crops_image, "ffhq", data)
            )
        else:
            crops_image = swapped_crops_image(data)
            matrices = [chunk.batch.matrices for chunk in data.chunks]
            data = dataclasses.replace(data, crops_out=crops_out_of(matrices, crops_image, "arcface", data))
        logger.info(
            "FaceMagic swap: %d face(s) in %d frame(s) with %s; %d frame(s) without the face asked for",
            data.num_faces,
            total,
            generator.name,
            len(data.frames_without_face),
        )
        return io.NodeOutput(data, crops_image)


# ---------------------------------------------------------------------------------------------------------------------
# Pose check


def _angle_limit_input(name: str, default: float, angle: str, meaning: str) -> io.Input:
    return io.Float.Input(
        name,
        default=default,
        min=0.0,
        max=90.0,
        step=0.5,
        display_name=f"max {angle} difference",
        tooltip=f"Largest {meaning} difference (degrees) a face may have and pass.",
    )


def pose_report_text(data: SwapData) -> str:
    reports = data.pose_reports()
    if not reports:
        return "no face was swapped, nothing to check"
    return format_pose_report(reports)


class FaceMagicPoseCheck(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        defaults = PoseThresholds()
        return node_schema(
            node_id="FaceMagicPoseCheck",
            search_aliases=("head pose", "face angle", "pose check"),
            display_name="FaceMagic Pose Check",
            category=CATEGORY,
            description="Compares head pose and landmarks of every swapped face with its target face. Faces that "
            "turned or changed expression beyond the limits fail; the policy decides what Blend pastes for them. "
            "The report is shown on the node.",
            inputs=[
                Swap.Input("swap", tooltip="Swapped faces from 'FaceMagic Swap'."),
                _angle_limit_input("max_yaw_diff", defaults.max_yaw_diff, "yaw", "left-right head turn"),
                _angle_limit_input("max_pitch_diff", defaults.max_pitch_diff, "pitch", "up-down head tilt"),
                _angle_limit_input("max_roll_diff", defaults.max_roll_diff, "roll", "sideways head tilt"),
                io.Float.Input(
                    "max_nme",
                    default=defaults.max_nme,
                    min=0.0,
                    max=1.0,
                    step=0.005,
                    display_name="max landmark distance",
                    tooltip="Largest mean landmark distance between target and result, as a fraction of the face "
                    "size (0.05: an expression change a viewer sees).",
                ),
                io.Combo.Input(
                    "policy",
                    options=list(FAILURE_POLICIES),
                    default="keep",
                    tooltip="A face that fails: keep the swap anyway (and only report it), or original to leave "
                    "the target face unchanged.",
                ),
            ],
            outputs=[
                Swap.Output("checked_swap", display_name="swap", tooltip="The swap with the check's verdicts."),
                io.String.Output("report", display_name="report", tooltip="One line per face: poses, differences."),
                io.Image.Output(
                    "debug",
                    display_name="debug image",
                    tooltip="The target frames with target landmarks in green and result landmarks in red.",
                ),
            ],
        )

    @classmethod
    def execute(
        cls,
        swap: SwapData,
        max_yaw_diff: float,
        max_pitch_diff: float,
        max_roll_diff: float,
        max_nme: float,
        policy: str,
    ) -> io.NodeOutput:
        thresholds = dataclasses.replace(
            PoseThresholds(),
            max_yaw_diff=float(max_yaw_diff),
            max_pitch_diff=float(max_pitch_diff),
            max_roll_diff=float(max_roll_diff),
            max_nme=float(max_nme),
        )
        progress = comfy_progress(len(swap.chunks), what="pose check")
        checked: list[SwapChunk] = []
        debug = torch.empty((*swap.images.shape[:3], 3), dtype=torch.float32)
        with comfy_errors():
            for number, chunk in enumerate(swap.chunks):
                pose = check_swap_pose(
                    chunk.batch,
                    chunk.swapped,
                    swap.analyzer,
                    thresholds=thresholds,
                    policy=policy,  # type: ignore[arg-type]
                )
                checked.append(dataclasses.replace(chunk, pose=pose))
                stop = chunk.start + chunk.batch.num_frames
                frames = swap.frames(chunk.start, stop)
                if chunk.batch.num_faces:
                    frames = draw_pose_overlay(frames, pose.target_landmarks, pose.result_landmarks, list(pose.reports))
                debug[chunk.start : stop] = images_to_comfy(frames)
                progress(number + 1, len(swap.chunks))
        data = dataclasses.replace(swap, chunks=tuple(checked))
        report = pose_report_text(data)
        failed = sum(not report.passed for report in data.pose_reports())
        logger.info("FaceMagic pose check: %d of %d face(s) failed", failed, data.num_faces)
        ui = text_ui(report, pose=[{"faces": data.num_faces, "failed": failed}])
        return io.NodeOutput(data, report, debug, ui=ui)


# ---------------------------------------------------------------------------------------------------------------------
# Blend


class FaceMagicBlend(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="FaceMagicBlend",
            search_aliases=("paste back", "face mask", "face blend", "seamless clone", "colour match"),
            display_name="FaceMagic Blend",
            category=CATEGORY,
            description="Pastes the swapped faces back into the target frames through a soft face mask, optionally "
            "matching colours. Pixels outside the mask stay exactly as they were.",
            inputs=[
                Swap.Input("swap", tooltip="Swapped faces from 'FaceMagic Swap' or 'FaceMagic Pose Check'."),
                *_mask_inputs(),
                io.Boolean.Input(
                    "generator_mask",
                    default=True,
                    display_name="use generator mask",
                    tooltip="Also use the generator's own soft face mask, when it predicts one (native FaceMagic "
                    "generators do; ONNX swappers do not).",
                    **advanced(),
                ),
                io.Boolean.Input(
                    "poisson",
                    default=False,
                    tooltip="Seamless (Poisson) blending with OpenCV on the CPU instead of the mask blend: hides "
                    "colour seams, slower.",
                    **advanced(),
                ),
                io.Mask.Input(
                    "mask_input",
                    optional=True,
                    display_name="limit mask",
                    tooltip="Optional MASK (one per frame, or one for all; another size is stretched to the "
                    "frames): the face only changes where it is 1, e.g. an occlusion mask that keeps hands or glasses "
                    "in front of the face.",
                ),
                io.Image.Input(
                    "crops",
                    optional=True,
                    display_name="crops",
                    tooltip="Optional: the crops output of the node that gave this swap (Swap or Restore Faces), after "
                    "any IMAGE node (restorer, upscaler, detailer): one crop per face, in the same order, square, any "
                    "size. They are pasted instead of the swapped faces, each mapped back onto its face.",
                ),
            ],
            outputs=[
                io.Image.Output("images", display_name="images", tooltip="The frames with the swapped faces."),
                io.Mask.Output("face_mask", display_name="mask", tooltip="Where each frame was changed, 0 to 1."),
            ],
        )

    @classmethod
    def execute(
        cls,
        swap: SwapData,
        mask: str,
        erosion: float,
        feather: float,
        colour: str,
        generator_mask: bool,
        poisson: bool,
        mask_input: torch.Tensor | None = None,
        crops: torch.Tensor | None = None,
    ) -> io.NodeOutput:
        frame_size = (int(swap.images.shape[1]), int(swap.images.shape[2]))
        limit = masks_to_core(mask_input, size=frame_size, where="limit mask") if mask_input is not None else None
        if limit is not None and limit.shape[0] not in (1, swap.num_frames):
            raise BadInputError(
                f"{limit.shape[0]} masks for {swap.num_frames} frames",
                where="limit mask",
                fix="connect one mask per frame, or one mask for all frames",
            )
        progress = comfy_progress(len(swap.chunks), what="blend")
        images = torch.empty((*swap.images.shape[:3], 3), dtype=torch.float32)
        masks = torch.empty(tuple(swap.images.shape[:3]), dtype=torch.float32)
        with comfy_errors():
            coming_back = crops_coming_back(swap, crops) if crops is not None else None
            for number, chunk in enumerate(swap.chunks):
                stop = chunk.start + chunk.batch.num_frames
                finished = coming_back[number] if coming_back is not None else chunk.finished
                frames = swap.frames(chunk.start, stop).to(swap.device)
                external = None
                if limit is not None:
                    external = limit if limit.shape[0] == 1 else limit[chunk.start : stop]
                crops = chunk.pose.crops if chunk.pose is not None else chunk.swapped.images
                blended, changed = blend_swap(
                    frames,
                    _to_device_batch(chunk.batch, swap.device),
                    SwapOutput(images=crops.to(swap.device), mask=_on(chunk.swapped, swap.device).mask),
                    mask=mask,  # type: ignore[arg-type]
                    erosion=float(erosion),
                    feather=float(feather),
                    external_mask=external,
                    generator_mask=bool(generator_mask),
                    colour=colour,  # type: ignore[arg-type]
                    poisson=bool(poisson),
                    keep_faces=chunk.pose.keep_faces.to(swap.device) if chunk.pose is not None else None,
                    finished=finished.to(swap.device) if finished is not None else None,
                )
                images[chunk.start : stop] = images_to_comfy(blended)
                masks[chunk.start : stop] = masks_to_comfy(changed)
                progress(number + 1, len(swap.chunks))
        return io.NodeOutput(images, masks)


# ---------------------------------------------------------------------------------------------------------------------
# All in one


def describe_frames_without_face(frames: tuple[int, ...] | list[int], shown: int = 20) -> str:
    """``(1, 4)`` -> "2 frames without the face asked for, left unchanged: frame 2 (index 1), frame 5 (index 4)".

    Frames are counted from 1 with their batch index beside, as the no-face error names them.
    """
    count = len(frames)
    listed = ", ".join(f"frame {frame + 1} (index {frame})" for frame in frames[:shown])
    more = f" and {count - shown} more" if count > shown else ""
    return f"{count} frame{'s' if count != 1 else ''} without the face asked for, left unchanged: {listed}{more}"


class FaceMagicSwapFaces(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="FaceMagicSwapFaces",
            search_aliases=SWAP_ALIASES,
            display_name="FaceMagic Swap Faces (all in one)",
            category=CATEGORY,
            description="The whole swap in one node: find the faces, swap them, optionally check the pose, and "
            "paste them back. Works through long frame batches in chunks, so memory stays bounded.",
            inputs=[
                io.Image.Input("images", display_name="target images", tooltip="Pictures or video frames to swap."),
                identity_input(tooltip="The person to put into the pictures."),
                generator_input(),
                analyzer_input("Face analyzer that finds the target faces (it must use the generator's recogniser)."),
                strength_input(),
                face_order_input(),
                _face_index_input(),
                *_mask_inputs(),
                io.Boolean.Input(
                    "pose_check",
                    default=False,
                    display_name="pose check",
                    tooltip="Compare head pose and landmarks of every swapped face with its target (default "
                    "limits); the report output lists every face.",
                ),
                io.Combo.Input(
                    "pose_policy",
                    options=list(FAILURE_POLICIES),
                    default="keep",
                    display_name="pose policy",
                    tooltip="With the pose check: a face that fails keeps the swap (keep) or the original face "
                    "(original).",
                ),
                _smoothing_input(),
                no_face_input(),
                _reference_input(),
                reference_threshold_input(),
                track_gap_input(),
            ],
            outputs=[
                io.Image.Output("swapped_images", display_name="images", tooltip="The frames with swapped faces."),
                io.Mask.Output("face_mask", display_name="mask", tooltip="Where each frame was changed, 0 to 1."),
                io.String.Output(
                    "report",
                    display_name="report",
                    tooltip="What was done: faces per frame, frames without a face, and the pose check.",
                ),
            ],
        )

    @classmethod
    def execute(
        cls,
        images: torch.Tensor,
        identity: Identity,
        generator: GeneratorHandle,
        analyzer: FaceAnalyzer,
        strength: float,
        face_order: str,
        face_index: int,
        mask: str,
        erosion: float,
        feather: float,
        colour: str,
        pose_check: bool,
        pose_policy: str,
        smoothing: float,
        no_face: str,
        reference: Identity | None = None,
        reference_threshold: float | None = None,
        track_gap: int | None = None,
    ) -> io.NodeOutput:
        frames = images_as_core_view(images, where="target images")  # no copy of a long frame batch
        total = int(frames.shape[0])
        selection = _face_selection(face_order, face_index, reference, reference_threshold)
        options = SwapOptions(
            face_order=selection["order"],
            face_index=selection["index"],
            reference=selection["reference"],
            min_similarity=selection["min_similarity"],
            tracking=TrackingConfig(max_gap=int(track_gap)) if track_gap and total > 1 else None,
            strength=float(strength),
            smoothing=SmoothingConfig.with_strength(smoothing) if smoothing > 0 else None,
            mask=mask,  # type: ignore[arg-type]
            erosion=float(erosion),
            feather=float(feather),
            colour=colour,  # type: ignore[arg-type]
            pose_check=bool(pose_check),
            pose_policy=pose_policy,  # type: ignore[arg-type]
            no_face=no_face,  # type: ignore[arg-type]
        )
        progress = comfy_progress(total, what="swap")
        with comfy_errors():  # swap_faces works through the frames in chunks, halving them on out-of-memory
            result = swap_faces(frames, identity, analyzer, generator.ready(), options, progress)
        without = result.frames_without_face
        lines = [f"{sum(result.face_counts)} face(s) swapped in {total} frame(s) with {generator.name}"]
        if without:
            lines.append(describe_frames_without_face(without))
        if pose_check:
            lines.append(format_pose_report(result.pose_reports) if result.pose_reports else "pose check: no faces")
        report = "\n".join(lines)
        swapped = images_to_comfy(result.images, owned=True)
        return io.NodeOutput(swapped, masks_to_comfy(result.masks), report, ui=text_ui(report))


NODES: list[type[io.ComfyNode]] = [FaceMagicSwap, FaceMagicPoseCheck, FaceMagicBlend, FaceMagicSwapFaces]
