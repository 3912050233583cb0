"""``facemagic similarity``: how alike two faces are, each given as a photo or an identity file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BadInputError, IncompatibleIdentityError
from ..identity import (
    DIFFERENT_PEOPLE_THRESHOLD,
    IDENTITY_SUFFIX,
    SAME_PERSON_THRESHOLD,
    SIMILARITY_THRESHOLDS,
    THRESHOLD_MODEL,
    choose_source_faces,
    cosine_similarity,
    describe_similarity,
    load_identity,
    similarity_thresholds,
)
from ..images import load_image
from ..types import FloatArray, Identity
from . import add_model_options
from . import identity as identity_command


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "similarity",
        help="how alike two faces are (photos or identity files)",
        description=identity_command.wrap_description(
            "Compare two faces and print their identity similarity (cosine similarity of their ArcFace "
            "embeddings, from -1 to 1; 1 = the same embedding) with a plain-words verdict. Each of A and B is a "
            f"photo or an identity file ({IDENTITY_SUFFIX}) made by 'facemagic identity'. Use it to check a "
            "swap result against its source. "
            f"Rule of thumb for {THRESHOLD_MODEL}: above about {SAME_PERSON_THRESHOLD} the same person is likely, "
            f"below about {DIFFERENT_PEOPLE_THRESHOLD} different people are likely; in between it is hard to tell."
        ),
        epilog=(
            "examples:\n"
            "  facemagic similarity me.jpg result.png\n"
            "  facemagic similarity me.safetensors result.png\n"
            "  facemagic similarity group.jpg me.jpg --face-index 2,0"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("a", type=Path, metavar="A", help=f"a photo, or an identity file ({IDENTITY_SUFFIX})")
    parser.add_argument("b", type=Path, metavar="B", help=f"a photo, or an identity file ({IDENTITY_SUFFIX})")
    identity_command.add_face_options(
        parser, per_input="give two numbers, such as 2,0, to choose in A and B separately"
    )
    add_model_options(parser)
    parser.set_defaults(handler=run_similarity)


def _is_identity_file(path: Path) -> bool:
    return path.suffix.lower() == IDENTITY_SUFFIX


def _describe_identity(identity: Identity) -> str:
    count = len(identity.sources)
    text = f"identity from {count} source{'s' if count != 1 else ''} ({identity.mode}), {identity.embedding_model}"
    if identity.num_blocks > 1:
        text += f"; its {identity.num_blocks} block rows are compared through their mean"
    return text


def run_similarity(args: argparse.Namespace) -> int:
    paths: list[Path] = [args.a, args.b]
    indices = args.face_index if isinstance(args.face_index, list) else [args.face_index] * 2
    if len(indices) != 2:
        raise BadInputError(
            f"--face-index got {len(indices)} numbers for 2 inputs", fix="give one number, or two such as 0,1"
        )
    identities = {number: load_identity(path) for number, path in enumerate(paths) if _is_identity_file(path)}
    images = {number: load_image(path) for number, path in enumerate(paths) if not _is_identity_file(path)}

    embeddings: list[FloatArray | Identity] = []
    labels: list[str] = []
    model: str | None = None
    analyzer = (
        identity_command.build_analyzer(
            args.models, args.detector, args.device, detector_model=args.detector_model, recognizer=args.recognizer
        )
        if images
        else None
    )
    for number, path in enumerate(paths):
        if number in identities:
            identity = identities[number]
            if analyzer is not None and identity.embedding_model != analyzer.embedding_model:
                raise IncompatibleIdentityError(
                    f"the identity was made with the recogniser '{identity.embedding_model}', "
                    f"but the photo is analysed with '{analyzer.embedding_model}'",
                    where=str(path),
                    fix=f"re-extract the identity with '{analyzer.embedding_model}', or compare two identity files",
                )
            embeddings.append(identity)
            labels.append(f"{path.name}: {_describe_identity(identity)}")
            model = identity.embedding_model
        elif analyzer is not None:  # built above whenever a photo is given
            (item,) = choose_source_faces(
                analyzer, images[number], order=args.order, index=[indices[number]], sources=[path.name]
            )
            embeddings.append(np.asarray(item.face.embedding, dtype=np.float32))
            labels.append(f"{path.name}: face {item.index} of {item.faces_found} ({args.order} first)")
            model = analyzer.embedding_model

    value = float(cosine_similarity(embeddings[0], embeddings[1]))  # two vectors give one number
    print(f"A = {labels[0]}")
    print(f"B = {labels[1]}")
    print(f"similarity: {value:.4f}")
    model = model or THRESHOLD_MODEL
    print(f"verdict: {describe_similarity(value, model)}")
    known = model in SIMILARITY_THRESHOLDS
    same, different = similarity_thresholds(model)
    rule = (
        f"(rule of thumb for {model if known else THRESHOLD_MODEL}: above about {same} usually the same person, "
        f"below about {different} usually different people)"
    )
    if not known:
        rule += f"; these embeddings come from {model}, for which the rule may not hold"
    print(rule)
    return 0
