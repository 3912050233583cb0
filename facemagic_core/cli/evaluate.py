"""``facemagic eval``: how good swaps are, judged by a recogniser the swap did not use (module: evaluate)."""

from __future__ import annotations

import argparse
import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import BadInputError
from ..files import atomic_write_bytes
from ..images import load_image, save_image
from ..quality import (
    RECOGNIZER_FAMILIES,
    QualityReport,
    SwapSample,
    draw_quality_plot,
    evaluate_swaps,
    independent_recognizer,
)
from ..video import is_video_path, read_frames
from . import add_model_options, progress_printer
from . import identity as identity_command

logger = logging.getLogger(__name__)

#: Files a run folder holds (see --help), and the optional table that pairs them explicitly.
RUN_FOLDERS = ("sources", "targets", "results")
PAIRS_FILE = "pairs.csv"
_MEDIA_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".mp4", ".mov", ".m4v", ".avi",
                   ".mkv", ".webm", ".gif"}  # fmt: skip


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="measure swap quality: identity, ID retrieval, pose, expression, flicker",
        description=identity_command.wrap_description(
            "Judge swap results. For each (source, target, result) it reports the identity similarity of the "
            "result's face to the source's and to the target's, measured by a recogniser other than the one that "
            "drove the swap (dlib's ResNet for an ArcFace swap, ArcFace for a dlib one), ID retrieval top-1 over "
            "all the sources (the FaceForensics++ protocol), the head-pose error (yaw, pitch, roll) and the "
            "landmark and expression error of the result to the target, and frame-to-frame flicker for videos. "
            "It prints a table and writes it as CSV and JSON with a plot (-o). Give the files with --source, "
            "--target and --result (one source for all, or one per target), or a RUN folder holding sources/, "
            "targets/ and results/ (a result has its target's file name; one source for all, or one per target "
            f"of the same name), or a {PAIRS_FILE} with the columns source,target,result (paths relative to RUN)."
        ),
        epilog=(
            "examples:\n"
            "  facemagic eval --source me.jpg --target a.jpg b.jpg --result a_swapped.png b_swapped.png -o report\n"
            "  facemagic eval runs/celeba_test --landmarks68 models/faceapi -o runs/celeba_test/report\n"
            "  facemagic eval --source me.jpg --target clip.mp4 --result clip_swapped.mp4 --max-frames 100"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run", type=Path, nargs="?", metavar="RUN", help="a run folder (see above)")
    parser.add_argument("--source", type=Path, nargs="+", default=[], metavar="FILE", help="source photo(s)")
    parser.add_argument("--target", type=Path, nargs="+", default=[], metavar="FILE", help="target photos or videos")
    parser.add_argument("--result", type=Path, nargs="+", default=[], metavar="FILE", help="their swap results")
    parser.add_argument(
        "--swap-recognizer",
        default="arcface_w600k_r50",
        metavar="MODEL",
        help="the recogniser that drove the swap (the native generators, inswapper and hyperswap use "
        "arcface_w600k_r50; a generator trained with dlib's teacher: dlib_resnet_v1) (default: %(default)s)",
    )
    parser.add_argument(
        "--allow-same-recognizer",
        action="store_true",
        help="judge with the swap's own recogniser family anyway (the report then carries a warning)",
    )
    parser.add_argument(
        "--landmarks68",
        type=Path,
        metavar="FOLDER",
        help="face-api's 68-point landmark files for the pose and expression errors (default: MODELS/faceapi "
        "when it is there; without them the detector's five points are used)",
    )
    parser.add_argument("--max-frames", type=int, metavar="N", help="read at most N frames of each video")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="PREFIX",
        help="write PREFIX.csv, PREFIX.json and the plot PREFIX.png",
    )
    identity_command.add_detector_options(parser)
    add_model_options(parser)
    parser.set_defaults(handler=run_eval)


@dataclass(frozen=True)
class _Triple:
    source: Path
    target: Path
    result: Path


def _media(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise BadInputError("the run folder has no such sub-folder", where=str(folder), fix=_RUN_FIX)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in _MEDIA_SUFFIXES)


_RUN_FIX = (
    f"give RUN with {', '.join(f + '/' for f in RUN_FOLDERS)} or a {PAIRS_FILE}, or use --source/--target/--result"
)


def _pairs_file(run: Path) -> list[_Triple]:
    with open(run / PAIRS_FILE, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or any(not {"source", "target", "result"} <= set(row) for row in rows):
        raise BadInputError(
            f"{PAIRS_FILE} needs a header source,target,result and one row per swap",
            where=str(run / PAIRS_FILE),
            fix="write it as: source,target,result then one line per swap",
        )
    return [_Triple(run / row["source"], run / row["target"], run / row["result"]) for row in rows]


def _run_folder(run: Path) -> list[_Triple]:
    if not run.is_dir():
        raise BadInputError("the run folder does not exist", where=str(run), fix=_RUN_FIX)
    if (run / PAIRS_FILE).is_file():
        return _pairs_file(run)
    sources, targets, results = (_media(run / name) for name in RUN_FOLDERS)
    if not targets:
        raise BadInputError("the run folder has no targets", where=str(run / "targets"), fix=_RUN_FIX)
    by_stem = {path.stem: path for path in results}
    source_by_stem = {path.stem: path for path in sources}
    triples = []
    for target in targets:
        result = by_stem.get(target.stem)
        if result is None:
            raise BadInputError(
                f"no result for the target {target.name}",
                where=str(run / "results"),
                fix=f"name the result of {target.name} {target.stem}.<ext> in results/",
            )
        if len(sources) == 1:
            source = sources[0]
        elif target.stem in source_by_stem:
            source = source_by_stem[target.stem]
        else:
            raise BadInputError(
                f"sources/ holds {len(sources)} files and none is named like the target {target.name}",
                where=str(run / "sources"),
                fix="put one source for all targets there, or one per target with the target's file name",
            )
        triples.append(_Triple(source, target, result))
    return triples


def _listed(args: argparse.Namespace) -> list[_Triple]:
    sources, targets, results = args.source, args.target, args.result
    if not targets or not sources:
        raise BadInputError("nothing to evaluate", where="facemagic eval", fix=_RUN_FIX)
    if len(results) != len(targets):
        raise BadInputError(
            f"{len(targets)} targets but {len(results)} results",
            where="--target/--result",
            fix="give one result per target, in the same order",
        )
    if len(sources) not in (1, len(targets)):
        raise BadInputError(
            f"{len(sources)} sources for {len(targets)} targets",
            where="--source",
            fix="give one source for all targets, or one per target in the same order",
        )
    return [
        _Triple(sources[0] if len(sources) == 1 else sources[i], target, result)
        for i, (target, result) in enumerate(zip(targets, results, strict=True))
    ]


def _read(path: Path, max_frames: int | None) -> torch.Tensor:
    return read_frames(path, max_frames=max_frames) if is_video_path(path) else load_image(path)


def load_samples(triples: list[_Triple], max_frames: int | None = None) -> list[SwapSample]:
    """Swap samples of the files; each file is read once (a source shared by all targets is one tensor)."""
    cache: dict[Path, torch.Tensor] = {}

    def read(path: Path) -> torch.Tensor:
        key = path.resolve()
        if key not in cache:
            cache[key] = _read(path, max_frames)
        return cache[key]

    names = [triple.result.name for triple in triples]
    if len(set(names)) != len(names):  # results of several folders with one name: tell them apart
        names = [str(triple.result) for triple in triples]
    samples = []
    for name, triple in zip(names, triples, strict=True):
        source = read(triple.source)
        if source.shape[0] != 1:
            raise BadInputError("a source must be one photo, not a video", where=str(triple.source))
        samples.append(
            SwapSample(name, source, read(triple.target), read(triple.result), source_name=str(triple.source))
        )
    return samples


def _landmarker(args: argparse.Namespace) -> Any:
    from ..landmarks68 import Landmarker68
    from ..runtime import resolve_device

    folder = args.landmarks68
    if folder is None:
        default = Path(args.models) / "faceapi"
        if not (default / "face_landmark_68_model-weights_manifest.json").is_file():
            return None
        folder = default
    return Landmarker68.from_file(folder, device=resolve_device(args.device))


def _recognizer_choice(args: argparse.Namespace) -> Path | None:
    """The judging recogniser for build_analyzer: the given one, else the one independent of the swap's."""
    if args.recognizer is not None:
        return Path(args.recognizer)
    judge = independent_recognizer(args.swap_recognizer)
    if args.swap_recognizer not in RECOGNIZER_FAMILIES:
        logger.warning("unknown --swap-recognizer %r; judging with %s", args.swap_recognizer, judge)
    return Path("dlib_resnet_v1") if judge == "dlib_resnet_v1" else None  # None: the registry's ArcFace


def write_report(report: QualityReport, prefix: Path) -> list[Path]:
    """PREFIX.csv, PREFIX.json and PREFIX.png, each written atomically."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    paths = [prefix.with_name(prefix.name + suffix) for suffix in (".csv", ".json", ".png")]
    atomic_write_bytes(paths[0], report.to_csv().encode("utf-8"))
    atomic_write_bytes(paths[1], report.to_json().encode("utf-8"))
    save_image(draw_quality_plot(report)[0], paths[2])
    return paths


def run_eval(args: argparse.Namespace) -> int:
    if args.run is not None and (args.source or args.target or args.result):
        raise BadInputError("give a RUN folder or --source/--target/--result, not both", where="facemagic eval")
    if args.max_frames is not None and args.max_frames < 1:
        raise BadInputError(f"--max-frames must be at least 1, got {args.max_frames}", where="--max-frames")
    triples = _run_folder(args.run) if args.run is not None else _listed(args)
    samples = load_samples(triples, args.max_frames)
    analyzer = identity_command.build_analyzer(
        args.models,
        args.detector,
        args.device,
        detector_model=args.detector_model,
        recognizer=_recognizer_choice(args),
    )
    report = evaluate_swaps(
        samples,
        analyzer,
        swap_recognizer=args.swap_recognizer,
        landmarker=_landmarker(args),
        allow_same_recognizer=args.allow_same_recognizer,
        progress=progress_printer("evaluating", "swaps") if len(samples) > 1 else None,
    )
    print(report.format_text())
    if args.output is not None:
        for path in write_report(report, args.output):
            print(f"wrote {path}")
    return 0
