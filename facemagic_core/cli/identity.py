"""``facemagic identity``: make an identity file from one or more photos of one person."""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import torch

from ..errors import BadInputError, ModelNotFoundError
from ..files import check_output_path, check_outputs_not_inputs
from ..identity import (
    IDENTITY_SUFFIX,
    SourceFace,
    choose_source_faces,
    identity_from_chosen_faces,
    normalize_embedding,
    save_identity,
    similarity_matrix,
)
from ..images import load_image, save_image
from ..types import FACE_ORDERS, FaceOrder
from . import add_model_options

if TYPE_CHECKING:
    from ..analysis import FaceAnalyzer

#: Detector backends the command line offers.
DetectorBackend = Literal["insightface", "yunet"]
DETECTOR_BACKENDS: tuple[str, ...] = get_args(DetectorBackend)

#: Files a SOURCE folder contributes.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
#: Picture formats the --preview file may have.
PREVIEW_SUFFIXES = IMAGE_SUFFIXES

#: A photo whose similarity to the mean of the other photos is below this probably shows someone else.
DIFFERENT_PERSON_WARNING = 0.3
#: Side of the aligned crops in the preview picture (the recogniser's own input size).
PREVIEW_SIZE = 112


def build_analyzer(
    model_dir: Path,
    backend: str,
    device: str,
    *,
    detector_model: Path | None = None,
    recognizer: Path | None = None,
) -> FaceAnalyzer:
    """A face analyzer from the model folder: the buffalo_l pack, or YuNet + ArcFace w600k_r50.

    ``detector_model`` / ``recognizer`` replace the registry's files (a YuNet or SCRFD ``.onnx``, a
    w600k_r50-compatible ArcFace ``.onnx``). Missing registry models are downloaded into ``model_dir``;
    when that is impossible, one :class:`~facemagic_core.errors.ModelNotFoundError` names every file to
    put where.
    """
    from ..analysis import FaceAnalyzer
    from ..runtime import onnx_providers

    if backend not in DETECTOR_BACKENDS:
        raise BadInputError(f"unknown detector {backend!r}", fix=f"use one of {', '.join(DETECTOR_BACKENDS)}")
    providers = onnx_providers(device)
    if recognizer is not None and is_dlib_recognizer(recognizer):
        return _analyzer_with_dlib(model_dir, backend, device, detector_model, recognizer, providers)
    if backend == "insightface":
        (pack,) = ensure_models(["buffalo_l"], model_dir)  # its landmark model is used with given files too
        if detector_model is None and recognizer is None:
            return FaceAnalyzer.from_pack(pack, providers=providers)
        return FaceAnalyzer(
            backend="insightface",
            detector=detector_model or pack / "det_10g.onnx",
            recognizer=recognizer or pack / "w600k_r50.onnx",
            landmarks_106=pack / "2d106det.onnx",
            providers=providers,
        )
    replaced = {"yunet": detector_model, "arcface_w600k_r50": recognizer}
    needed = [name for name, given in replaced.items() if given is None]
    found = dict(zip(needed, ensure_models(needed, model_dir), strict=True))
    return FaceAnalyzer(
        backend="yunet",
        detector=detector_model or found["yunet"],
        recognizer=recognizer or found["arcface_w600k_r50"],
        providers=providers,
    )


def is_dlib_recognizer(recognizer: Path | str) -> bool:
    """``--recognizer dlib_resnet_v1``, a dlib ``.dat`` file or face-api's tfjs recogniser (manifest or folder)."""
    path = Path(recognizer)
    return (
        str(recognizer) == "dlib_resnet_v1"
        or path.suffix in (".dat", ".json")
        or (path.is_dir() and (path / "face_recognition_model-weights_manifest.json").is_file())
    )


def _analyzer_with_dlib(
    model_dir: Path, backend: str, device: str, detector_model: Path | None, recognizer: Path, providers: Any
) -> FaceAnalyzer:
    """An analyzer whose recogniser is dlib's ResNet in torch (public-domain weights, 128-d identities)."""
    from ..analysis import FaceAnalyzer
    from ..dlib_resnet import load_dlib_recognizer
    from ..hub import resolve_dlib_recognizer
    from ..runtime import resolve_device

    path = resolve_dlib_recognizer(model_dir) if str(recognizer) == "dlib_resnet_v1" else Path(recognizer)
    dlib = load_dlib_recognizer(path, device=resolve_device(device))
    if backend == "insightface":
        (pack,) = ensure_models(["buffalo_l"], model_dir)
        return FaceAnalyzer(
            backend="insightface",
            detector=detector_model or pack / "det_10g.onnx",
            recognizer=dlib,
            landmarks_106=pack / "2d106det.onnx",
            providers=providers,
        )
    detector = detector_model or ensure_models(["yunet"], model_dir)[0]
    return FaceAnalyzer(backend="yunet", detector=detector, recognizer=dlib, providers=providers)


def add_detector_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """--detector, --detector-model and --recognizer: which models find and recognise faces."""
    parser.add_argument(
        "--detector",
        choices=DETECTOR_BACKENDS,
        default="insightface",
        help="face detector: insightface (the buffalo_l pack: accurate, with 106-point landmarks, ~330 MB) or yunet "
        "(small and fast, with the ArcFace w600k_r50 recogniser); both give the same kind of identity "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--detector-model",
        type=Path,
        metavar="FILE",
        help="use this detector file instead of the registry's (a YuNet .onnx with --detector yunet, an SCRFD "
        ".onnx with insightface)",
    )
    parser.add_argument(
        "--recognizer",
        type=Path,
        metavar="FILE",
        help="use this ArcFace recogniser .onnx (w600k_r50-compatible) instead of the registry's, or dlib_resnet_v1 "
        "(dlib's ResNet: public-domain weights, 128-d identities; also a dlib .dat file or face-api's tfjs files)",
    )


def ensure_models(names: Sequence[str], model_dir: Path) -> list[Path]:
    """:func:`~facemagic_core.hub.ensure_model` for each name; every missing model is named in one error.

    A newcomer without the models then learns in one run all the files to fetch, not one per run.
    """
    from ..hub import ensure_model

    paths: list[Path] = []
    missing: dict[str, ModelNotFoundError] = {}
    for name in names:
        try:
            paths.append(ensure_model(name, model_dir))
        except ModelNotFoundError as error:
            missing[name] = error
    if len(missing) == 1:
        raise next(iter(missing.values()))
    if missing:
        steps = "".join(
            f"\n  {number}. {name}: {error.what}: {error.fix}"
            for number, (name, error) in enumerate(missing.items(), start=1)
        )
        raise ModelNotFoundError(
            f"{len(missing)} models are missing: {', '.join(missing)}", where=str(model_dir), fix=steps
        )
    return paths


def parse_face_index(text: str) -> int | list[int]:
    """``"2"`` -> 2 (every photo); ``"0,1,0"`` -> one index per photo."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number such as 0, or numbers such as 0,1,0; got {text!r}"
        ) from None
    if any(value < 0 for value in values):
        raise argparse.ArgumentTypeError(f"face indices start at 0, got {text!r}")
    return values[0] if len(values) == 1 else values


def wrap_description(text: str) -> str:
    """``text`` wrapped to the terminal, for parsers whose epilog keeps its own line breaks."""
    width = max(40, min(shutil.get_terminal_size().columns, 100) - 2)
    return "\n\n".join(textwrap.fill(paragraph, width) for paragraph in text.split("\n\n"))


def add_face_options(
    parser: argparse.ArgumentParser,
    *,
    per_input: str = "give one number per photo, separated by commas (0,1,0), to choose in each photo",
) -> None:
    """Options that choose the face in each photo and the detector that finds it."""
    parser.add_argument(
        "--face-index",
        type=parse_face_index,
        default=0,
        metavar="N",
        help=f"which face to use when a photo shows several people: 0 is the first in --order, 1 the second, "
        f"and so on; {per_input} (default: 0)",
    )
    parser.add_argument(
        "--order",
        choices=FACE_ORDERS,
        default="largest",
        metavar="ORDER",
        help=f"how the faces in a photo are counted for --face-index: {', '.join(FACE_ORDERS)} (default: %(default)s)",
    )
    add_detector_options(parser)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "identity",
        help="make an identity file from photos of one person",
        description=wrap_description(
            "Make an identity file (.safetensors) from one or more photos of the person whose face you want "
            "to put into other images. With several photos the identity is their average, which is usually "
            "more faithful than one photo. The file is used by 'facemagic swap' and the ComfyUI Load Identity node."
            "\n\nThe command prints which face it used in each photo and how alike the photos are, and warns "
            "when a photo seems to show someone else. Models are downloaded into --models on first use."
        ),
        epilog=(
            "examples:\n"
            "  facemagic identity me.jpg -o me.safetensors\n"
            "  facemagic identity photos/ -o me.safetensors --preview faces.png\n"
            "  facemagic identity group.jpg -o friend.safetensors --order left_to_right --face-index 2"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "sources",
        nargs="+",
        type=Path,
        metavar="SOURCE",
        help="photos of the person (JPEG, PNG, WebP), or folders of photos; one face is used from each photo",
    )
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help=f"the identity file to write, ending in {IDENTITY_SUFFIX} (e.g. person{IDENTITY_SUFFIX})",
    )
    add_face_options(parser)
    parser.add_argument(
        "--preview",
        type=Path,
        metavar="PICTURE",
        help="also save the face crops that were used, side by side, as a picture (e.g. crop.png), "
        "to check that the right faces were picked",
    )
    add_model_options(parser)
    parser.set_defaults(handler=run_identity)


def collect_image_paths(sources: Sequence[Path]) -> list[Path]:
    """The image files named by ``sources``: files as given, folders by their image files in name order."""
    paths: list[Path] = []
    for source in sources:
        if source.is_dir():
            found = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise BadInputError(
                    "the folder holds no image files",
                    where=str(source),
                    fix=f"put photos ({', '.join(sorted(IMAGE_SUFFIXES))}) in it, or name the files directly",
                )
            paths.extend(found)
        else:
            paths.append(source)  # load_image says so when it is missing
    return paths


def _source_names(paths: Sequence[Path]) -> list[str]:
    """File names, or the paths as given where two files share a name."""
    names = [path.name for path in paths]
    return [str(path) if names.count(path.name) > 1 else path.name for path in paths]


def _leave_one_out_similarity(embeddings: np.ndarray[Any, Any]) -> list[float]:
    """Similarity of each (normalised) embedding to the normalised mean of the others."""
    total = embeddings.sum(axis=0)
    result = []
    for row in embeddings:
        others = total - row
        norm = float(np.linalg.norm(others))
        result.append(float(row @ others / norm) if norm > 1e-6 else 0.0)
    return result


def save_preview(images: Sequence[torch.Tensor], chosen: Sequence[SourceFace], path: Path) -> None:
    """Save the aligned crops of the chosen faces (what the recogniser saw), side by side."""
    from ..align import align_faces

    crops = []
    for image, item in zip(images, chosen, strict=True):
        face = dataclasses.replace(item.face, image_index=0)
        crop, _ = align_faces(image, [face], PREVIEW_SIZE, "arcface")
        crops.append(crop[0])
    save_image(torch.cat(crops, dim=2), path)


def print_summary(chosen: Sequence[SourceFace], order: str) -> None:
    """Faces used per photo, how alike the photos are, and warnings for photos that look like someone else."""
    print(f"Faces used ({len(chosen)} photo{'s' if len(chosen) != 1 else ''}):")
    for number, item in enumerate(chosen):
        face = item.face
        print(
            f"  {number + 1}. {item.source}: face {item.index} of {item.faces_found} ({order} first), "
            f"{face.width:.0f}x{face.height:.0f} px at ({face.bbox[0]:.0f}, {face.bbox[1]:.0f}), "
            f"detector score {face.score:.2f}"
        )
    if len(chosen) < 2:
        return
    normalized = normalize_embedding(np.stack([np.asarray(item.face.embedding) for item in chosen]))
    similarities = similarity_matrix(normalized)
    print("Similarity between the photos (1 = identical, above about 0.4 = likely the same person):")
    width = max(7, len(str(len(chosen))) + 2)
    print("    " + "".join(f"{number + 1:>{width}}" for number in range(len(chosen))))
    for number, row in enumerate(similarities):
        print(f"{number + 1:>4}" + "".join(f"{value:>{width}.2f}" for value in row))
    if len(chosen) == 2:
        if similarities[0, 1] < DIFFERENT_PERSON_WARNING:
            print(
                f"warning: the two photos look like different people: similarity {similarities[0, 1]:.2f}, "
                f"below {DIFFERENT_PERSON_WARNING}. Check that both show the same person, "
                "or choose another face with --face-index (see --preview)."
            )
        return
    to_others = _leave_one_out_similarity(normalized.astype(np.float64))
    print("Similarity of each photo to the mean of the others: " + ", ".join(f"{v:.2f}" for v in to_others))
    for number, (item, value) in enumerate(zip(chosen, to_others, strict=True)):
        if value < DIFFERENT_PERSON_WARNING:
            print(
                f"warning: photo {number + 1} ({item.source}) looks like a different person: similarity {value:.2f} "
                f"to the mean of the others, below {DIFFERENT_PERSON_WARNING}. Check that it shows the same person, "
                "or choose another face in it with --face-index (see --preview)."
            )


def run_identity(args: argparse.Namespace) -> int:
    paths = collect_image_paths(args.sources)
    output = Path(args.output)
    if output.suffix.lower() != IDENTITY_SUFFIX:
        raise BadInputError(
            f"the identity file must end in {IDENTITY_SUFFIX}",
            where=str(output),
            fix=f"use -o {output.with_suffix(IDENTITY_SUFFIX)}",
        )
    check_output_path(output)  # before any photo is read or model loaded
    if args.preview is not None:
        preview = Path(args.preview)
        if preview.suffix.lower() not in PREVIEW_SUFFIXES:
            raise BadInputError(
                f"the preview is a picture, so it cannot be written as {preview.suffix or 'a file without suffix'}",
                where=str(preview),
                fix=f"name it {preview.stem}.png or {preview.stem}.jpg",
            )
        check_output_path(preview)
    outputs = [("-o", output), ("--preview", args.preview)]
    check_outputs_not_inputs(outputs, paths, where="facemagic identity")
    images = [load_image(path) for path in paths]
    analyzer = build_analyzer(
        args.models, args.detector, args.device, detector_model=args.detector_model, recognizer=args.recognizer
    )
    order: FaceOrder = args.order
    chosen = choose_source_faces(analyzer, images, order=order, index=args.face_index, sources=_source_names(paths))
    identity = identity_from_chosen_faces(chosen, embedding_model=analyzer.embedding_model, order=order)
    print_summary(chosen, order)
    save_identity(identity, output)
    if args.preview is not None:
        save_preview(images, chosen, args.preview)
        print(f"Saved the face crops to {args.preview}")
    print(f"Saved the identity ({identity.embedding_model}) to {os.fspath(output)}")
    return 0
