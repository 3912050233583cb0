"""``facemagic prepare``: turn a folder of photos into a training cache for ``facemagic train``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import BadInputError
from ..files import check_output_path, check_outputs_not_inputs
from ..generators.config import TEMPLATES
from . import add_model_options, progress_printer
from . import identity as identity_command

#: Default crop side when neither --size nor --config is given.
DEFAULT_SIZE = 256


def register(subparsers: Any) -> None:
    from ..training.prepare import DEFAULT_SHARD_SIZE, LAYOUTS

    parser = subparsers.add_parser(
        "prepare",
        help="detect, align and embed the faces of a photo folder for training",
        description=identity_command.wrap_description(
            "Find the face in every photo of DATA_DIR, align it to the generator's template and size, compute its "
            "ArcFace identity embedding and landmarks, and write them to CACHE_DIR as shards plus a manifest.json. "
            "With one sub-folder per person (VGGFace2 or CelebA by identity) the person ids are kept too."
            "\n\nThe work is resumable: run the same command again after an interruption, or after adding photos, "
            "and only the photos not yet in the manifest are processed. Photos that cannot be read are listed "
            "and skipped."
        ),
        epilog=(
            "examples:\n"
            "  facemagic prepare photos/ -o cache/ --config configs/base_256.json\n"
            "  facemagic prepare vggface2/train -o cache256/ --size 256 --layout per_person --detector insightface"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("data_dir", type=Path, metavar="DATA_DIR", help="folder of photos (or of per-person folders)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="CACHE_DIR", help="cache folder to write")
    parser.add_argument(
        "--config",
        type=Path,
        metavar="CONFIG",
        help="training config (JSON) whose generator decides the crop size and template",
    )
    parser.add_argument("--size", type=int, help=f"crop side in pixels when no --config (default: {DEFAULT_SIZE})")
    parser.add_argument(
        "--template", choices=TEMPLATES, default=None, help="alignment template when no --config (default: arcface)"
    )
    parser.add_argument(
        "--layout",
        choices=LAYOUTS,
        default="auto",
        help="per_person: each sub-folder is one person; flat: no person labels; auto: per_person when the folder "
        "holds only sub-folders (default: %(default)s)",
    )
    parser.add_argument("--all-faces", action="store_true", help="keep every face of a photo, not just the largest")
    parser.add_argument(
        "--min-face-size", type=float, default=0.0, metavar="PX", help="skip faces smaller than this (default: 0)"
    )
    parser.add_argument(
        "--shard-size", type=int, default=DEFAULT_SHARD_SIZE, metavar="N", help="faces per shard (default: %(default)s)"
    )
    identity_command.add_detector_options(parser)
    add_model_options(parser)
    parser.set_defaults(handler=run_prepare)


def _crop_geometry(args: argparse.Namespace) -> tuple[int, str]:
    if args.config is not None:
        from ..training.config import TrainConfig

        if args.size is not None or args.template is not None:
            raise BadInputError(
                "--size and --template cannot be combined with --config",
                where="facemagic prepare",
                fix="the config's generator decides them; leave --size and --template out",
            )
        generator = TrainConfig.from_file(args.config).generator
        return generator.image_size, generator.template
    size = DEFAULT_SIZE if args.size is None else int(args.size)
    if size < 16:
        raise BadInputError(f"--size must be at least 16, got {size}", where="facemagic prepare")
    return size, args.template or "arcface"


def run_prepare(args: argparse.Namespace) -> int:
    from ..training.prepare import prepare_dataset

    size, template = _crop_geometry(args)
    data = Path(args.data_dir)
    if data.is_file():
        raise BadInputError(
            "prepare takes a folder of photos, not one file",
            where=str(data),
            fix=f"put the photos in a folder and give that folder (e.g. {data.parent})",
        )
    if not data.is_dir():
        raise BadInputError("the data folder does not exist", where=str(data), fix="give a folder of photos")
    check_output_path(Path(args.output) / "manifest.json")  # before any model is loaded
    if Path(args.output).is_dir() and Path(args.output).resolve() == data.resolve():
        raise BadInputError(
            "the cache folder is the data folder: the cache would be written among the photos",
            where=str(data),
            fix=f"give another cache folder, e.g. -o {data.parent / (data.name + '_cache')}",
        )
    photos = [path for path in data.iterdir() if path.is_file()]
    check_outputs_not_inputs([("-o", Path(args.output) / "*")], photos, where="facemagic prepare")
    analyzer = identity_command.build_analyzer(
        args.models, args.detector, args.device, detector_model=args.detector_model, recognizer=args.recognizer
    )
    summary = prepare_dataset(
        args.data_dir,
        args.output,
        analyzer,
        image_size=size,
        template=template,
        layout=args.layout,
        shard_size=args.shard_size,
        all_faces=args.all_faces,
        min_face_size=args.min_face_size,
        progress=progress_printer("prepare:", "photos"),
    )
    print(
        f"{summary.photos_processed} new photo(s) of {summary.photos_total}: {summary.faces_added} face(s) added, "
        f"{summary.faces_total} in the cache, {summary.shards_written} shard(s) written ({size} px, {template})"
    )
    if summary.no_face:
        print(f"no usable face in {len(summary.no_face)} photo(s): {', '.join(summary.no_face[:10])}")
    if summary.unreadable:
        print(f"{len(summary.unreadable)} photo(s) could not be read and were skipped:")
        for name, reason in summary.unreadable:
            print(f"  {name}: {reason}")
    print(f"Wrote {args.output / 'manifest.json'}")
    return 0
