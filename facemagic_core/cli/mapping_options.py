"""``facemagic swap`` options for several people and for videos: --map, --reference, gender/age, tracking, audio."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import BadInputError
from ..mapping import DEFAULT_REFERENCE_THRESHOLD, FaceChoice, FaceMapping, parse_age_range, parse_face_choice
from ..tracking import DEFAULT_MAX_GAP, TrackingConfig
from ..types import GENDERS, FaceOrder, Identity

if TYPE_CHECKING:
    from ..analysis import FaceAnalyzer


@dataclasses.dataclass(frozen=True)
class MapItem:
    """One ``--map SOURCE=FACES`` as written: who (a photo or identity file) and the faces they go to."""

    source: Path
    choice: FaceChoice

    @property
    def reference(self) -> Path | None:
        return Path(self.choice.reference) if self.choice.reference else None


def parse_map_item(text: str) -> MapItem:
    """``me.jpg=1``, ``me.jpg=all``, ``her.safetensors=female,age:18-60``, ``him.jpg=ref:man_in_clip.jpg``."""
    source, sep, faces = text.partition("=")
    if not sep or not source or not faces.strip():
        raise argparse.ArgumentTypeError(
            f"expected SOURCE=FACES, e.g. me.jpg=0 (face 0 in --order), me.jpg=ref:person.jpg, her.jpg=female; "
            f"got {text!r}"
        )
    try:
        choice = parse_face_choice(faces)
    except BadInputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    if choice.reference == "":
        raise argparse.ArgumentTypeError(f"name the reference photo after ref:, e.g. ref:person.jpg, in {text!r}")
    return MapItem(Path(source), choice)


def _age_text(text: str) -> tuple[int | None, int | None]:
    try:
        return parse_age_range(text)
    except BadInputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_mapping_options(parser: argparse.ArgumentParser) -> None:
    """The option group for several people, reference photos, gender/age filters, tracking and audio."""
    group = parser.add_argument_group("several people, reference photos and videos")
    group.add_argument(
        "--map",
        action="append",
        type=parse_map_item,
        metavar="SOURCE=FACES",
        help="put the person of SOURCE (a photo or identity file) into the FACES of each frame; repeat for several "
        "people (instead of --source/--identity). FACES: a face number in --order (0, 1...), 'all', "
        "ref:PHOTO (the face most like the person in PHOTO, above --reference-threshold), female/male, "
        "age:LOW-HIGH; combine with commas, e.g. --map a.jpg=0 --map b.jpg=1 or --map b.jpg=ref:bob.jpg",
    )
    group.add_argument(
        "--reference",
        type=Path,
        metavar="PHOTO",
        help="swap the face most like the person in PHOTO (a photo or identity file) instead of counting faces; "
        "faces below --reference-threshold are left alone, so nobody else is swapped when that person is away",
    )
    group.add_argument(
        "--reference-threshold",
        type=float,
        default=DEFAULT_REFERENCE_THRESHOLD,
        metavar="S",
        help="smallest identity similarity (-1 to 1) a face needs to count as the --reference or ref: person "
        "(default: %(default)s)",
    )
    group.add_argument(
        "--gender", choices=GENDERS, help="only swap faces of this gender (needs --detector insightface)"
    )
    group.add_argument(
        "--age",
        type=_age_text,
        metavar="LOW-HIGH",
        help="only swap faces whose estimated age is in this range, e.g. 18-60 (needs --detector insightface)",
    )
    group.add_argument(
        "--track-gap",
        type=int,
        default=DEFAULT_MAX_GAP,
        metavar="N",
        help="video: follow faces from frame to frame and swap a face the detector misses for up to N frames "
        "(its place interpolated); each followed face keeps its identity. 0 turns tracking off "
        "(default: %(default)s)",
    )
    group.add_argument("--no-audio", action="store_true", help="video: do not copy the target's audio to the output")


def uses_mapping(args: argparse.Namespace) -> bool:
    return bool(args.map) or args.reference is not None or args.gender is not None or args.age is not None


def map_sources(args: argparse.Namespace) -> list[Path]:
    """Every file --map, --reference and ref: read (for the checks that no output replaces an input)."""
    paths = [item.source for item in args.map or []]
    paths += [item.reference for item in args.map or [] if item.reference is not None]
    return paths + ([args.reference] if args.reference is not None else [])


def _embedding(path: Path, analyzer: FaceAnalyzer, loader: Any) -> Any:
    identity: Identity = loader(path, analyzer)
    return identity.mean_embedding()


def build_mapping(
    args: argparse.Namespace,
    analyzer: FaceAnalyzer,
    identity_loader: Any,
    *,
    face_index: int | tuple[int, ...] | None,
    num_identities: int = 1,
) -> FaceMapping:
    """The face mapping of --map (rule k gives the k-th --map SOURCE) or of --reference/--gender/--age.

    ``identity_loader(path, analyzer) -> Identity`` reads a photo or an identity file (for references).
    """
    threshold = float(args.reference_threshold)
    if not -1.0 <= threshold <= 1.0:
        raise BadInputError(f"--reference-threshold must lie in [-1, 1], got {threshold}", where="facemagic swap")
    order: FaceOrder = args.order
    if args.map:
        if args.reference is not None or args.gender is not None or args.age is not None:
            raise BadInputError(
                "--reference, --gender and --age apply to one person; with --map put them in each SOURCE=FACES",
                where="facemagic swap",
                fix="e.g. --map me.jpg=ref:person.jpg or --map me.jpg=female,age:18-60",
            )
        rules = [
            item.choice.rule(
                number,
                _embedding(item.reference, analyzer, identity_loader) if item.reference is not None else None,
                threshold,
            )
            for number, item in enumerate(args.map)
        ]
        return FaceMapping(tuple(rules), order)
    reference = _embedding(args.reference, analyzer, identity_loader) if args.reference is not None else None
    low, high = args.age if args.age is not None else (None, None)
    plain = FaceMapping.from_selection(
        order=order,
        index=face_index,
        reference=reference,
        min_similarity=threshold if reference is not None else None,
        num_identities=num_identities,
    )
    rules = [
        dataclasses.replace(rule, gender=args.gender, min_age=low, max_age=high)  # filters on every rule
        for rule in plain.rules
    ]
    return FaceMapping(tuple(rules), order)


def build_tracking(args: argparse.Namespace) -> TrackingConfig | None:
    if args.track_gap < 0:
        raise BadInputError(f"--track-gap must be 0 or more, got {args.track_gap}", where="facemagic swap")
    return TrackingConfig(max_gap=args.track_gap) if args.track_gap > 0 else None
