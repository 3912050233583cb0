"""``facemagic swap``: put a person's face into a photo, a GIF or a video."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..blend import COLOUR_METHODS, MASK_KINDS
from ..errors import BadInputError
from ..files import check_input_file, check_output_path, check_outputs_not_inputs
from ..identity import IDENTITY_SUFFIX, extract_identity, load_identity, mix_coarse_fine
from ..images import (
    ALPHA_SUFFIXES,
    MIN_IMAGE_SIDE,
    as_float_images,
    check_image_file,
    load_alpha,
    load_image,
    save_image,
)
from ..masks import OCCLUDER_NAMES, PARSER_NAMES, FaceMaskSpec
from ..pipeline import (
    DEFAULT_CHUNK_SIZE,
    MAX_WEAVE,
    NO_FACE_POLICIES,
    FinishingModels,
    NoFacePolicy,
    SmoothingConfig,
    SwapOptions,
    SwapResult,
    swap_faces,
    swap_video,
)
from ..pose import FAILURE_POLICIES, PoseReport, PoseThresholds, draw_pose_overlay, format_pose_report
from ..restore import RESTORER_NAMES
from ..types import FACE_ORDERS, Identity
from ..video import WRITABLE_VIDEO_SUFFIXES, is_video_path, read_video_info
from . import add_model_options
from . import identity as identity_command
from .mapping_options import add_mapping_options, build_mapping, build_tracking, map_sources, uses_mapping

if TYPE_CHECKING:
    from ..analysis import FaceAnalyzer
    from ..generators import SwapModel

logger = logging.getLogger(__name__)

#: Output suffixes for a photo target.
IMAGE_OUTPUT_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"})
#: Parts of a --mix: the coarse blocks (face shape) and the fine blocks (details).
MIX_PARTS = ("coarse", "fine")
#: Failing faces printed in full for a video (the rest are counted).
MAX_FAILURES_SHOWN = 10
#: SwapOptions fields whose range errors are reported under their command-line option (--erosion ...).
_OPTION_FIELDS = ("erosion", "feather", "strength", "weave", "chunk_size")
#: Frames without a face listed by number (the rest are counted).
MAX_FRAMES_LISTED = 20


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number of at least 1, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {value}")
    return value


def _mask_items(text: str) -> tuple[str, str]:
    """``--mask``: the shape kind (at most one of MASK_KINDS, default ellipse) and the finishing masks as text."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    shapes = [item for item in items if item in MASK_KINDS]
    if len(shapes) > 1:
        raise argparse.ArgumentTypeError(f"give one mask shape ({', '.join(MASK_KINDS)}), got {', '.join(shapes)}")
    rest = ",".join(item for item in items if item not in MASK_KINDS)
    try:
        FaceMaskSpec.parse(rest)
    except BadInputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return (shapes[0] if shapes else "ellipse"), rest


def _mix_item(text: str) -> tuple[str, Path]:
    part, sep, path = text.partition("=")
    if not sep or part not in MIX_PARTS or not path:
        raise argparse.ArgumentTypeError(
            f"expected PART=FILE with PART one of {', '.join(MIX_PARTS)} (e.g. coarse=a.jpg), got {text!r}"
        )
    return part, Path(path)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "swap",
        help="swap a face into a photo, GIF or video",
        description=identity_command.wrap_description(
            "Replace the face in a target photo, GIF or video with the face of the person in the source photo(s). "
            "The target keeps its pose, expression, lighting, hair and background; only the identity changes. "
            "Give the person as one or more --source photos (their average is used) or as an --identity file "
            f"({IDENTITY_SUFFIX}) made by 'facemagic identity'."
            "\n\nBy default the largest face of every frame is swapped (--face-index and --all-faces choose "
            "others). A photo without a face is an error; video frames without a face are kept unchanged "
            "(--no-face). Videos keep their frame rate and sound and are written as .mp4 (H.264), .gif or .webp; "
            "faces are followed from frame to frame (--track-gap), and several people get their own identities "
            "with --map. Models are downloaded "
            "into --models on first use; a generator can also be a local .onnx file or a native model folder."
        ),
        epilog=(
            "examples:\n"
            "  facemagic swap --source me.jpg --target photo.jpg -o result.png\n"
            "  facemagic swap --source me1.jpg me2.jpg --target clip.mp4 -o result.mp4 --smooth\n"
            "  facemagic swap --identity me.safetensors --target group.jpg -o out.png --all-faces\n"
            "  facemagic swap --mix coarse=a.jpg fine=b.jpg --target t.jpg -o out.png --generator my_model/\n"
            "  facemagic swap --source me.jpg --target t.jpg -o out.png --pose-check --pose-debug debug/\n"
            "  facemagic swap --map anna.jpg=0 --map ben.jpg=1 --order left_to_right --target party.mp4 -o out.mp4"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    who = parser.add_argument_group("who to put in (one of these)")
    who.add_argument(
        "--source",
        nargs="+",
        type=Path,
        metavar="PHOTO",
        help="photo(s) of the person; with several, their identities are averaged (the largest face of each)",
    )
    who.add_argument(
        "--identity",
        type=Path,
        nargs="+",
        metavar="FILE",
        help=f"an identity file ({IDENTITY_SUFFIX}) made by 'facemagic identity' or the Save Identity node; "
        "with several files, the first face of each frame (in --order) gets the first file, the second face the "
        "second file, and so on (faces beyond the list get the last file): use with --all-faces",
    )
    who.add_argument(
        "--mix",
        nargs="+",
        type=_mix_item,
        metavar="PART=FILE",
        help="mix two people: coarse=FILE gives the face shape (the generator's coarse blocks), fine=FILE the "
        "details (its fine blocks); each FILE is a photo or an identity file. Needs a generator with several "
        "identity blocks: native FaceMagic models, and inswapper-layout .onnx files (inswapper, reswapper), which "
        "are converted to six blocks; hyperswap and other ONNX swappers have one",
    )
    who.add_argument(
        "--coarse-blocks",
        type=int,
        metavar="N",
        help="with --mix: how many blocks, counted from the coarsest, take the coarse identity (default: half)",
    )

    where = parser.add_argument_group("where to put it")
    where.add_argument(
        "--target",
        type=Path,
        required=True,
        metavar="FILE",
        help="the photo, GIF or video (.mp4, .mov, .avi, .mkv, .webm, .gif) whose face is replaced",
    )
    where.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        metavar="FILE",
        help="the result: a picture (.png, .jpg, .webp) for a photo or a GIF of one frame, .mp4 or .gif for a GIF or "
        "video; a transparent PNG target keeps its transparency in a .png result",
    )
    faces = where.add_mutually_exclusive_group()
    faces.add_argument(
        "--face-index",
        type=identity_command.parse_face_index,
        default=0,
        metavar="N",
        help="which face of each frame to swap: 0 is the first in --order, 1 the second; several as 0,2 (default: 0)",
    )
    faces.add_argument("--all-faces", action="store_true", help="swap every face of every frame")
    where.add_argument(
        "--order",
        choices=FACE_ORDERS,
        default="largest",
        metavar="ORDER",
        help=f"how faces are counted for --face-index: {', '.join(FACE_ORDERS)} (default: %(default)s)",
    )
    where.add_argument(
        "--no-face",
        choices=NO_FACE_POLICIES,
        default=None,
        help="a frame without the face asked for: 'error' stops, 'pass' keeps the frame unchanged "
        "(default: error for a photo, pass for a video)",
    )
    where.add_argument(
        "--max-frames", type=_positive_int, metavar="N", help="only the first N frames of a video or GIF"
    )

    how = parser.add_argument_group("how")
    how.add_argument(
        "--generator",
        default="inswapper_128",
        metavar="MODEL",
        help="the swap model: a registry name (inswapper_128, inswapper_128_fp16, hyperswap_1a_256, ...; see "
        "'facemagic models list'), a native model folder (config.json + model.safetensors) or an .onnx file "
        "(default: %(default)s)",
    )
    how.add_argument(
        "--strength",
        nargs="+",
        type=_fraction,
        default=[1.0],
        metavar="S",
        help="how much of the source identity to put in, 0 to 1: one number, or one per generator block "
        "(coarsest first) (default: 1)",
    )
    how.add_argument(
        "--weave",
        type=int,
        choices=range(1, MAX_WEAVE + 1),
        default=1,
        metavar="N",
        help=f"work at N times the model's resolution (1 to {MAX_WEAVE}): sharper faces on large frames, "
        "N*N times slower (default: 1)",
    )
    how.add_argument(
        "--smooth",
        type=float,
        nargs="?",
        const=1.0,
        default=None,
        metavar="STRENGTH",
        help="video: steady the face crop from frame to frame (landmark smoothing); optional strength, "
        "1 = default, 2 = smoother but slower to follow fast moves",
    )
    how.add_argument(
        "--mask",
        type=_mask_items,
        default=("ellipse", ""),
        metavar="KIND[,KIND...]",
        help="where the new face may show, comma-separated, combined by minimum: a shape (ellipse, box, or hull, "
        "the face outline from the insightface detector's landmarks; default ellipse), occlusion (keeps hands, "
        "glasses, microphones in front of the face: XSeg, see --occlusion-model), region:NAME+NAME (only these "
        "parsed regions: skin, brows, eyes, glasses, nose, mouth, lips, ...; BiSeNet, see --parser-model), or a "
        "landmark area (mouth, eyes, lower_face); e.g. --mask ellipse,occlusion,region:skin+nose",
    )
    how.add_argument(
        "--keep-mouth",
        action="store_true",
        help="keep the target's own mouth (speech, teeth) inside the swapped face",
    )
    how.add_argument(
        "--occlusion-model",
        choices=OCCLUDER_NAMES,
        default="xseg_1",
        help="the occlusion model for --mask occlusion (default: %(default)s)",
    )
    how.add_argument(
        "--parser-model",
        choices=PARSER_NAMES,
        default="bisenet_resnet_34",
        help="the face parser for --mask region:... (default: %(default)s)",
    )
    how.add_argument(
        "--restore",
        choices=RESTORER_NAMES,
        metavar="NAME",
        help="restore the swapped faces before they are pasted back: " + ", ".join(RESTORER_NAMES),
    )
    how.add_argument(
        "--restore-weight",
        type=_fraction,
        default=1.0,
        metavar="W",
        help="with --restore: how much of the restored face shows, 0 to 1 (default: %(default)s)",
    )
    how.add_argument(
        "--codeformer-fidelity",
        type=_fraction,
        default=0.5,
        metavar="W",
        help="with --restore codeformer: 0 restores the most, 1 stays closest to the swap (default: %(default)s)",
    )
    how.add_argument(
        "--feather",
        type=_fraction,
        default=0.1,
        metavar="F",
        help="width of the soft mask edge, as a fraction of the face size (default: %(default)s)",
    )
    how.add_argument(
        "--erosion",
        type=float,
        default=0.05,
        metavar="F",
        help="shrink the mask by this fraction of the face size, 0 to 0.5 (default: %(default)s)",
    )
    how.add_argument(
        "--colour",
        "--color",
        choices=COLOUR_METHODS,
        default="none",
        help="match the new face's colours to the target: none, mean_std or lab (default: %(default)s)",
    )
    how.add_argument("--poisson", action="store_true", help="seamless (Poisson) blending, on the CPU (slow)")
    how.add_argument(
        "--pose-check",
        action="store_true",
        help="check that each swapped face keeps the target's head pose and landmarks, and print a report",
    )
    how.add_argument(
        "--pose-policy",
        choices=FAILURE_POLICIES,
        default="keep",
        help="with --pose-check, a face that fails: keep the swap, or keep the original face (default: %(default)s)",
    )
    how.add_argument(
        "--pose-debug",
        type=Path,
        metavar="DIR",
        help="with --pose-check, save one picture per frame with the target (green) and result (red) landmarks",
    )

    models = parser.add_argument_group("models and hardware")
    identity_command.add_detector_options(models)
    models.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "fp32", "fp16", "bf16"),
        help="generator precision: auto is fp16 on a GPU, fp32 on the CPU (default: %(default)s)",
    )
    models.add_argument(
        "--chunk",
        type=_positive_int,
        default=DEFAULT_CHUNK_SIZE,
        metavar="N",
        help="frames processed at once; smaller uses less memory (halved automatically on GPU out-of-memory) "
        "(default: %(default)s)",
    )
    add_mapping_options(parser)
    add_model_options(parser)
    parser.set_defaults(handler=run_swap)


# ---------------------------------------------------------------------------------------------
# Building the parts


def registry_models_needed(args: argparse.Namespace) -> list[str]:
    """The registry models a ``facemagic swap`` run with these options loads (files given by path excluded)."""
    from ..hub import MODELS

    if args.detector == "insightface":
        names = ["buffalo_l"]  # its landmark model is used even when detector and recogniser files are given
    else:
        replaced = (("yunet", args.detector_model), ("arcface_w600k_r50", args.recognizer))
        names = [name for name, given_file in replaced if given_file is None]
    if str(args.generator) in MODELS:
        names.append(str(args.generator))
    spec = FaceMaskSpec.parse(args.mask[1], keep_mouth=args.keep_mouth)
    if spec.occlusion:
        names.append(args.occlusion_model)
    if spec.regions:
        names.append(args.parser_model)
    if args.restore:
        names.append(args.restore)
    return names


def _load_named_identity(path: Path) -> Identity:
    """An identity file, named after the file when it does not carry a name (for messages and mixes)."""
    identity = load_identity(path)
    if identity.extra.get("name"):
        return identity
    return dataclasses.replace(identity, extra={**identity.extra, "name": path.name})


def _identity_from_file(path: Path, analyzer: FaceAnalyzer) -> Identity:
    """An identity file, or the identity of the largest face in a photo."""
    if path.suffix.lower() == IDENTITY_SUFFIX:
        return _load_named_identity(path)
    return extract_identity(analyzer, [load_image(path)], sources=[path.name])


def build_identity(args: argparse.Namespace, analyzer: FaceAnalyzer, generator: SwapModel) -> Identity | list[Identity]:
    """The identity to inject, from --source, --identity or --mix (exactly one of them).

    Several --identity files give one identity per face (a list, in face order)."""
    check_who(args)
    if args.map:  # one identity per --map, in order
        return [_identity_from_file(item.source, analyzer) for item in args.map]
    if args.identity:
        identities = [_load_named_identity(path) for path in args.identity]
        return identities[0] if len(identities) == 1 else identities
    if args.source:
        paths: list[Path] = list(args.source)
        images = [load_image(path) for path in paths]
        names = [path.name if [p.name for p in paths].count(path.name) == 1 else str(path) for path in paths]
        return extract_identity(analyzer, images, sources=names)
    parts = dict(args.mix)
    if set(parts) != set(MIX_PARTS) or len(args.mix) != len(MIX_PARTS):
        raise BadInputError(
            "--mix needs exactly one coarse=FILE and one fine=FILE",
            where="facemagic swap",
            fix="e.g. --mix coarse=a.jpg fine=b.jpg",
        )
    coarse = _identity_from_file(parts["coarse"], analyzer)
    fine = _identity_from_file(parts["fine"], analyzer)
    blocks = int(generator.num_blocks)
    if blocks == 1:
        print(
            f"warning: the generator {generator.name} has a single identity block, so --mix cannot give coarse and "
            "fine details to different people: the coarse identity is used. Use a native FaceMagic model for mixing."
        )
    return mix_coarse_fine(coarse, fine, num_blocks=blocks, coarse_blocks=args.coarse_blocks)


def check_who(args: argparse.Namespace) -> None:
    """Exactly one of --source, --identity, --mix and --map (checked before any model is loaded)."""
    given = [name for name in ("source", "identity", "mix", "map") if getattr(args, name)]
    if len(given) != 1:
        raise BadInputError(
            "say who to put in with exactly one of --source, --identity or --mix (or several people with --map)"
            + (f" (got {', '.join('--' + name for name in given)})" if given else ""),
            where="facemagic swap",
            fix="e.g. --source me.jpg, or --identity me.safetensors",
        )
    if args.coarse_blocks is not None and not args.mix:
        raise BadInputError("--coarse-blocks only works with --mix", where="facemagic swap")


def check_options_before_loading(args: argparse.Namespace, *, video: bool) -> None:
    """Every mistake in the options that needs no model, before the (slow, maybe downloading) model loads."""
    check_who(args)
    try:
        build_options(args, video=video)  # SwapOptions checks the ranges (--erosion, --strength, ...)
    except BadInputError as error:  # name the option as typed: "--erosion must lie ...", not "erosion must ..."
        first = error.what.split(" ", 1)[0]
        option = f"--{first.replace('_', '-')}" if first in _OPTION_FIELDS else first
        raise BadInputError(option + error.what[len(first) :], where="facemagic swap", fix=error.fix) from error
    if args.mask[0] == "hull" and args.detector == "yunet":
        raise BadInputError(
            "--mask hull needs 68- or 106-point landmarks, and --detector yunet gives only 5 points",
            where="facemagic swap",
            fix="add --detector insightface (the buffalo_l pack has the landmark model), or use --mask ellipse",
        )


def check_inputs_before_loading(args: argparse.Namespace, *, video: bool) -> None:
    """Every input file readable (headers only), before the models load: a damaged target or source photo
    was found only after loading (and perhaps downloading) them."""
    if video:
        info = read_video_info(args.target)
        if min(info.width, info.height) < MIN_IMAGE_SIDE:
            raise BadInputError(
                f"the video frames are {info.width}x{info.height} pixels, too small to hold a detectable face",
                where=str(args.target),
                fix=f"use a video of at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE} pixels",
            )
    else:
        check_image_file(args.target)
    for path in [*(args.source or []), *(path for _, path in args.mix or []), *map_sources(args)]:
        if path.suffix.lower() == IDENTITY_SUFFIX:
            check_input_file(path, what="identity file")
        else:
            check_image_file(path)


def build_options(args: argparse.Namespace, *, video: bool) -> SwapOptions:
    no_face: NoFacePolicy = args.no_face or ("pass" if video else "error")
    smoothing = SmoothingConfig.with_strength(args.smooth) if args.smooth is not None else None
    strength = args.strength[0] if len(args.strength) == 1 else tuple(args.strength)
    return SwapOptions(
        face_order=args.order,
        face_index=None if args.all_faces else args.face_index,
        strength=strength,
        weave=args.weave,
        smoothing=smoothing,
        mask=args.mask[0],
        erosion=args.erosion,
        feather=args.feather,
        colour=args.colour,
        poisson=args.poisson,
        pose_check=args.pose_check or args.pose_debug is not None,
        pose_thresholds=PoseThresholds(),
        pose_policy=args.pose_policy,
        no_face=no_face,
        chunk_size=args.chunk,
        restore_weight=args.restore_weight,
        restore_fidelity=args.codeformer_fidelity,
    )


def build_finish_models(args: argparse.Namespace) -> FinishingModels | None:
    """The restorer, occluder and parser this run needs (None when it needs none), each loaded once."""
    from ..masks import FaceOccluder, FaceParser, load_mask_model
    from ..restore import load_restorer
    from ..runtime import onnx_providers

    spec = FaceMaskSpec.parse(args.mask[1], keep_mouth=args.keep_mouth)
    if not args.restore and spec.is_empty:
        return None
    providers = onnx_providers(args.device)
    restorer = occluder = parser = None
    if args.restore:
        restorer = load_restorer(args.restore, model_dir=args.models, providers=providers)
        print(f"Restoring the swapped faces with {args.restore} (visibility {args.restore_weight:g})")
    if spec.occlusion:
        loaded = load_mask_model(args.occlusion_model, model_dir=args.models, providers=providers)
        occluder = loaded if isinstance(loaded, FaceOccluder) else None
    if spec.regions:
        loaded = load_mask_model(args.parser_model, model_dir=args.models, providers=providers)
        parser = loaded if isinstance(loaded, FaceParser) else None
    return FinishingModels(restorer=restorer, occluder=occluder, parser=parser)


# ---------------------------------------------------------------------------------------------
# Reporting


def save_pose_debug(result: SwapResult, folder: Path) -> int:
    """One picture per frame with faces: target landmarks green, result red, pass/fail written; returns the count."""
    if result.pose_landmarks is None or not result.pose_reports:
        return 0
    targets, results = result.pose_landmarks
    reports = result.pose_reports
    frames = sorted({report.image_index for report in reports})
    folder.mkdir(parents=True, exist_ok=True)
    for frame in frames:
        chosen = [i for i, report in enumerate(reports) if report.image_index == frame]
        local = frame - result.frame_offset
        picture = draw_pose_overlay(
            as_float_images(result.images[local : local + 1]),  # a video's frames are bytes
            targets[chosen],
            results[chosen],
            [reports[i] for i in chosen],
            image_index=[0] * len(chosen),
        )
        save_image(picture[0], folder / f"frame_{frame:05d}.png")
    return len(frames)


def print_pose_summary(reports: Sequence[PoseReport], *, full: bool) -> None:
    if not reports:
        return
    failed = [report for report in reports if not report.passed]
    if full:
        print(format_pose_report(reports))
        return
    print(f"Pose check: {len(reports) - len(failed)} of {len(reports)} faces passed")
    if failed:
        print(format_pose_report(failed[:MAX_FAILURES_SHOWN]).rsplit("\n", 1)[0])
        if len(failed) > MAX_FAILURES_SHOWN:
            print(f"... and {len(failed) - MAX_FAILURES_SHOWN} more failing faces")


def _describe_frames(frames: Sequence[int]) -> str:
    shown = ", ".join(str(frame) for frame in frames[:MAX_FRAMES_LISTED])
    return shown + (f" ... ({len(frames)} in all)" if len(frames) > MAX_FRAMES_LISTED else "")


def _is_still_gif(path: Path) -> bool:
    """Whether ``path`` is a readable GIF of a single frame (False for anything else, errors included)."""
    if path.suffix.lower() != ".gif" or not path.is_file():
        return False
    try:
        return read_video_info(path).frame_count == 1
    except BadInputError:
        return False  # reported when the target is read


def check_identity_kinds(args: argparse.Namespace) -> None:
    """A photo given to --identity or an identity file given to --source: say which option takes it."""
    for path in args.identity or []:
        if path.suffix.lower() != IDENTITY_SUFFIX:
            raise BadInputError(
                f"--identity takes identity files ({IDENTITY_SUFFIX}), not {path.suffix or 'a file without suffix'}",
                where=str(path),
                fix=f"give photos with --source {path.name}, or make an identity file with 'facemagic identity'",
            )
    for path in args.source or []:
        if path.suffix.lower() == IDENTITY_SUFFIX:
            raise BadInputError(
                "--source takes photos; this is an identity file",
                where=str(path),
                fix=f"give identity files with --identity {path.name}",
            )


def check_output_not_an_input(output: Path, args: argparse.Namespace) -> None:
    """Refuse an output (the result, a pose-debug picture) that would replace the target or a source file."""
    inputs: list[Path] = [
        args.target,
        *(args.source or []),
        *(args.identity or []),
        *(path for _, path in args.mix or []),
        *map_sources(args),
    ]
    debug = args.pose_debug / "frame_*.png" if args.pose_debug is not None else None
    check_outputs_not_inputs(
        [("-o", output), ("--pose-debug", debug)], inputs, where="facemagic swap", rename="_swapped"
    )


# ---------------------------------------------------------------------------------------------
# The command


def run_swap(args: argparse.Namespace) -> int:
    from ..generators import load_generator

    target: Path = args.target
    output: Path = args.output
    video = is_video_path(target)
    suffix = output.suffix.lower()
    if video and suffix in IMAGE_OUTPUT_SUFFIXES and _is_still_gif(target):
        video = False  # a GIF of one frame is a picture: it may be saved as one
    if video and suffix not in WRITABLE_VIDEO_SUFFIXES:
        raise BadInputError(
            f"the target is a video, so the output must be a video too, not {suffix or 'a file without suffix'}",
            where=str(output),
            fix=f"name the output {output.stem}.mp4, {output.stem}.gif or {output.stem}.webp",
        )
    if not video and suffix not in IMAGE_OUTPUT_SUFFIXES:
        raise BadInputError(
            f"the target is a photo, so the output must be a picture, not {suffix or 'a file without suffix'}",
            where=str(output),
            fix=f"name the output {output.stem}.png or {output.stem}.jpg",
        )
    if target.is_dir():
        raise BadInputError(
            "the target is a folder, not a photo or video file",
            where=str(target),
            fix="name one photo or video in it (run the command once per file to swap several)",
        )
    check_input_file(target, what="target file")
    check_output_path(output)  # before any model is loaded or frame swapped
    check_output_not_an_input(output, args)
    check_identity_kinds(args)
    if args.pose_debug is not None:
        check_output_path(args.pose_debug / "frame_00000.png")
    check_options_before_loading(args, video=video)
    check_inputs_before_loading(args, video=video)
    tracking = build_tracking(args) if video else None
    if args.pose_debug is not None and not args.pose_check:
        print("note: --pose-debug turns on --pose-check")

    started = time.perf_counter()
    # Fetch (or name, when they cannot be fetched) every registry model this run needs in one go.
    identity_command.ensure_models(registry_models_needed(args), args.models)
    analyzer = identity_command.build_analyzer(
        args.models, args.detector, args.device, detector_model=args.detector_model, recognizer=args.recognizer
    )
    generator = load_generator(args.generator, model_dir=args.models, device=args.device, dtype=args.dtype)
    identity = build_identity(args, analyzer, generator)
    options = build_options(args, video=video)
    if uses_mapping(args):
        count = 1 if isinstance(identity, Identity) else len(identity)
        index = options.face_index
        mapping = build_mapping(args, analyzer, _identity_from_file, face_index=index, num_identities=count)
        options = dataclasses.replace(options, mapping=mapping)
    if tracking is not None:
        options = dataclasses.replace(options, tracking=tracking)
    finishing = build_finish_models(args)
    if finishing is not None:  # the masks and the models that make them go in together (the options check both)
        spec = FaceMaskSpec.parse(args.mask[1], keep_mouth=args.keep_mouth)
        options = dataclasses.replace(options, face_masks=None if spec.is_empty else spec, finishing=finishing)
    described = "; ".join(
        ", ".join(one.sources) or one.extra.get("name", "an identity file")
        for one in ([identity] if isinstance(identity, Identity) else identity)
    )
    print(
        f"Swapping with {generator.name} on {generator.device} ({str(generator.dtype).removeprefix('torch.')}); "
        f"identity from {described}"
        + ("" if isinstance(identity, Identity) or options.mapping else " (one per face, in face order)")
    )
    if options.mapping is not None:
        print("Faces: " + "; ".join(rule.describe() for rule in options.mapping.rules))

    if not video:
        image = load_image(target)
        result = swap_faces(image, identity, analyzer, generator, options)
        alpha = load_alpha(target)  # a cut-out keeps its transparent background
        save_image(result.images[0], output, alpha=alpha)
        print(f"Swapped {result.face_counts[0]} face(s); saved {output}")
        if alpha is not None and output.suffix.lower() not in ALPHA_SUFFIXES:
            print(f"note: the target is transparent in places, which {output.suffix} cannot hold; use .png to keep it")
        if result.frames_without_face:
            print("No face was found; the picture was saved unchanged.")
        print_pose_summary(result.pose_reports, full=True)
        if args.pose_debug is not None:
            save_pose_debug(result, args.pose_debug)
            print(f"Saved the pose overlay to {args.pose_debug}")
        return 0

    clock = {"start": time.perf_counter()}

    def report_progress(done: int, total: int) -> None:
        seconds = time.perf_counter() - clock["start"]
        rate = done / seconds if seconds > 0 else 0.0
        print(f"frames {done}/{total} ({100 * done / max(total, 1):.0f}%), {rate:.2f} frames/s", flush=True)

    debug_frames = [0]

    def on_result(result: SwapResult) -> None:
        if args.pose_debug is not None:
            debug_frames[0] += save_pose_debug(result, args.pose_debug)

    summary = swap_video(
        target,
        output,
        identity,
        analyzer,
        generator,
        options,
        report_progress,
        max_frames=args.max_frames,
        on_result=on_result,
        audio=not args.no_audio,
    )
    swapped = sum(1 for count in summary.face_counts if count)
    print(
        f"Saved {output}: {summary.frames} frames at {summary.fps:.3g} fps, faces swapped in {swapped} frames "
        f"({sum(summary.face_counts)} faces) in {time.perf_counter() - started:.1f} s"
    )
    if summary.audio:
        print("The target's sound was copied into the output.")
    elif not args.no_audio and read_video_info(target).has_audio:
        print(f"note: {output.suffix} cannot hold sound, so the target's sound was left out; use .mp4 to keep it")
    if summary.interpolated_faces:
        print(f"Faces the detector missed, followed and swapped: {summary.interpolated_faces}")
    if summary.frames_without_face:
        print(f"Frames without a face, kept unchanged: {_describe_frames(summary.frames_without_face)}")
    print_pose_summary(summary.pose_reports, full=False)
    if args.pose_debug is not None:
        print(f"Saved {debug_frames[0]} pose overlay picture(s) to {args.pose_debug}")
    return 0
