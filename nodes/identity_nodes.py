"""Identity nodes: extract, mix, save, load, and the similarity read-out."""

from __future__ import annotations

import logging
import math
import re

import numpy as np
import torch

from facemagic_core.align import align_faces
from facemagic_core.analysis import FaceAnalyzer, face_similarities, select_faces
from facemagic_core.errors import BadInputError, FaceMagicError, IncompatibleIdentityError
from facemagic_core.hub import sha256_file
from facemagic_core.identity import (
    MixMethod,
    choose_source_faces,
    describe_similarity,
    identity_from_chosen_faces,
    load_identity,
    mix_coarse_fine,
    mix_identities,
    mix_per_block,
    save_identity,
)
from facemagic_core.types import FACE_ORDERS, Face, Identity, ProgressCallback

from ._comfy import io, text_ui
from .common import (
    CATEGORY,
    analyzer_input,
    face_index_input,
    face_order_input,
    generator_input,
    identity_input,
    node_schema,
)
from .memory import GeneratorHandle
from .model_folder import identity_path_for_saving, list_identities, resolve_identity
from .progress import comfy_errors, comfy_progress
from .sockets import IdentitySocket
from .tensors import as_image_batch, images_to_comfy, images_to_core

logger = logging.getLogger(__name__)

#: Side of the preview crops of chosen faces, in pixels.
PREVIEW_SIZE = 256
#: How many identity inputs the mix node has (the frontend shows them one at a time).
MAX_MIX_INPUTS = 8
MIX_METHODS = ("mean", "weighted", "median", "slerp", "per_block")
IDENTITY_TOOLTIP = "An identity from 'FaceMagic Extract Identity', 'FaceMagic Load Identity' or a mix node."


def describe_identity(identity: Identity) -> str:
    sources = ", ".join(identity.sources) or "unknown source"
    return f"{identity.mode} identity of {identity.embedding_model}, {identity.num_blocks} block row(s), from {sources}"


# ---------------------------------------------------------------------------------------------------------------------
# Extract


class FaceMagicExtractIdentity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="FaceMagicExtractIdentity",
            search_aliases=("face embedding", "arcface", "face model", "build face model", "source face"),
            display_name="FaceMagic Extract Identity",
            category=CATEGORY,
            description="Finds one face in each source picture and averages their embeddings into one identity. "
            "Several pictures of the same person (an IMAGE batch) give a steadier identity than one.",
            inputs=[
                analyzer_input(),
                io.Image.Input(
                    "images",
                    display_name="source images",
                    tooltip="Pictures of the person to take the identity from (one face is used per picture). "
                    "Pictures of different sizes: extract each on its own and mix the identities.",
                ),
                face_order_input(),
                face_index_input(),
            ],
            outputs=[
                IdentitySocket.Output("identity", display_name="identity", tooltip="The extracted identity."),
                io.Image.Output(
                    "preview",
                    display_name="chosen faces",
                    tooltip=f"The face used from each picture, aligned, {PREVIEW_SIZE} x {PREVIEW_SIZE} pixels: "
                    "check that the right face was picked.",
                ),
            ],
        )

    @classmethod
    def execute(cls, analyzer: FaceAnalyzer, images: torch.Tensor, face_order: str, face_index: int) -> io.NodeOutput:
        pictures = images_to_core(images, where="source images")
        with comfy_errors():
            chosen = choose_source_faces(analyzer, pictures, order=face_order, index=face_index)  # type: ignore[arg-type]
            identity = identity_from_chosen_faces(chosen, embedding_model=analyzer.embedding_model, order=face_order)
            crops, _ = align_faces(pictures, [item.face for item in chosen], PREVIEW_SIZE, "arcface")
        logger.info("FaceMagic: %s", describe_identity(identity))
        return io.NodeOutput(identity, images_to_comfy(crops))


# ---------------------------------------------------------------------------------------------------------------------
# Mix


def parse_numbers(text: str, *, what: str) -> list[float]:
    """``"1, 0.5 2"`` -> [1.0, 0.5, 2.0]; commas, semicolons and spaces separate numbers."""
    parts = [part for part in re.split(r"[,;\s]+", text.strip()) if part]
    try:
        numbers = [float(part) for part in parts]
    except ValueError as error:
        raise BadInputError(
            f"cannot read the {what} {text!r}", where=what, fix="write numbers separated by commas, e.g. 1, 0.5"
        ) from error
    if any(not math.isfinite(number) for number in numbers):
        raise BadInputError(f"the {what} {text!r} contain a value that is not finite", where=what)
    return numbers


def parse_block_weights(text: str, count: int) -> np.ndarray:
    """One line per generator block, one number per connected identity -> ``(blocks, count)`` array."""
    rows = [parse_numbers(line, what="block weights") for line in re.split(r"[\n|]+", text.strip()) if line.strip()]
    if not rows:
        raise BadInputError(
            "the per_block mix needs block weights",
            where="block weights",
            fix=f"write one line per generator block with {count} numbers each, e.g. '1, 0' for the first identity",
        )
    for number, row in enumerate(rows):
        if len(row) != count:
            raise BadInputError(
                f"line {number + 1} of the block weights has {len(row)} numbers for {count} connected identities",
                where="block weights",
                fix=f"give {count} numbers on every line, one per connected identity, in input order",
            )
    return np.asarray(rows, dtype=np.float64)


def mix_connected(identities: list[Identity], *, method: str, weights: str, block_weights: str) -> Identity:
    """The mix node's work: one core call chosen by ``method``."""
    if not identities:
        raise BadInputError("no identity is connected", where="mix identities", fix="connect at least one identity")
    if method == "per_block":
        return mix_per_block(identities, parse_block_weights(block_weights, len(identities)))
    numbers = parse_numbers(weights, what="weights") if weights.strip() else None
    if numbers is not None and method not in ("weighted", "slerp"):
        logger.info("FaceMagic mix: weights are only used by the weighted and slerp methods; ignored for %s", method)
        numbers = None
    if numbers is not None and len(numbers) != len(identities):
        count = len(identities)
        raise BadInputError(
            f"{len(numbers)} weight{'s' if len(numbers) != 1 else ''} for {count} connected identities",
            where=f"{method} mix",
            fix=f"give {count} numbers, one per connected identity in input order, or leave the weights empty",
        )
    if method == "weighted" and numbers is None:
        numbers = [1.0] * len(identities)
    chosen: MixMethod = method  # type: ignore[assignment]
    return mix_identities(identities, method=chosen, weights=numbers)


class FaceMagicMixIdentities(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        identity_inputs = [
            identity_input(
                f"identity_{number}",
                "An identity to mix. Connect the inputs in order; a new one appears when the last is connected."
                if number > 1
                else "The first identity to mix.",
                optional=number > 1,
            )
            for number in range(1, MAX_MIX_INPUTS + 1)
        ]
        return node_schema(
            node_id="FaceMagicMixIdentities",
            search_aliases=("blend faces", "blend face models", "average faces", "mix faces"),
            display_name="FaceMagic Mix Identities",
            category=CATEGORY,
            description="Mixes up to eight identities into one: mean, weighted mean, element-wise median, spherical "
            "interpolation of two, or a different weighting for each generator block (per_block).",
            inputs=[
                *identity_inputs,
                io.Combo.Input(
                    "method",
                    options=list(MIX_METHODS),
                    default="mean",
                    tooltip="mean: the average person. weighted: average with the weights below. median: robust to "
                    "one odd photo. slerp: between exactly two identities (weights '1, 1' is half way). "
                    "per_block: the block weights below, one line per generator block.",
                ),
                io.String.Input(
                    "weights",
                    default="",
                    tooltip="weighted and slerp: one number per connected identity in input order, e.g. '2, 1, 1'. "
                    "Normalised to sum to one. Empty means equal weights.",
                ),
                io.String.Input(
                    "block_weights",
                    default="",
                    multiline=True,
                    display_name="block weights",
                    tooltip="per_block only: one line per generator block (coarse first), one number per connected "
                    "identity on each line, e.g. six lines '1, 0' / '1, 0' / '1, 0' / '0, 1' / '0, 1' / '0, 1'.",
                ),
            ],
            outputs=[IdentitySocket.Output("mixed_identity", display_name="identity", tooltip="The mixed identity.")],
        )

    @classmethod
    def execute(
        cls,
        identity_1: Identity,
        method: str,
        weights: str,
        block_weights: str,
        identity_2: Identity | None = None,
        identity_3: Identity | None = None,
        identity_4: Identity | None = None,
        identity_5: Identity | None = None,
        identity_6: Identity | None = None,
        identity_7: Identity | None = None,
        identity_8: Identity | None = None,
    ) -> io.NodeOutput:
        connected = [
            identity
            for identity in (
                identity_1,
                identity_2,
                identity_3,
                identity_4,
                identity_5,
                identity_6,
                identity_7,
                identity_8,
            )
            if identity is not None
        ]
        mixed = mix_connected(connected, method=method, weights=weights, block_weights=block_weights)
        logger.info("FaceMagic: %s", describe_identity(mixed))
        return io.NodeOutput(mixed)


class FaceMagicCoarseFineMix(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="FaceMagicCoarseFineMix",
            search_aliases=("mix faces per block", "blend face models", "identity mix"),
            display_name="FaceMagic Coarse/Fine Mix",
            category=CATEGORY,
            description="Gives the coarse generator blocks (face shape, proportions) one identity and the fine blocks "
            "(skin, eyes, details) another. Needs a native generator with several blocks to have an effect; "
            "ONNX swappers use one identity for the whole face.",
            inputs=[
                identity_input("coarse", "Identity for the coarse blocks (counted first)."),
                identity_input("fine", "Identity for the remaining, fine blocks."),
                io.Int.Input(
                    "coarse_blocks",
                    default=3,
                    min=0,
                    max=64,
                    display_name="coarse blocks",
                    tooltip="How many blocks, counted from the coarsest, take the coarse identity.",
                ),
                io.Int.Input(
                    "num_blocks",
                    default=6,
                    min=1,
                    max=64,
                    display_name="blocks",
                    tooltip="Number of injection blocks of the generator (6 for inswapper-style models). Ignored "
                    "when a generator is connected: its own number is used.",
                ),
                generator_input("Optional: the generator, to take its number of blocks from.", optional=True),
            ],
            outputs=[
                IdentitySocket.Output("mixed_identity", display_name="identity", tooltip="The coarse/fine identity.")
            ],
        )

    @classmethod
    def execute(
        cls,
        coarse: Identity,
        fine: Identity,
        coarse_blocks: int,
        num_blocks: int,
        generator: GeneratorHandle | None = None,
    ) -> io.NodeOutput:
        blocks = int(generator.model.num_blocks) if generator is not None else int(num_blocks)
        if coarse_blocks > blocks:
            raise BadInputError(
                f"coarse blocks is {coarse_blocks} but the generator has {blocks} blocks",
                where="coarse/fine mix",
                fix=f"use a number from 0 to {blocks}",
            )
        mixed = mix_coarse_fine(coarse, fine, num_blocks=blocks, coarse_blocks=int(coarse_blocks))
        logger.info("FaceMagic: %s", describe_identity(mixed))
        return io.NodeOutput(mixed)


# ---------------------------------------------------------------------------------------------------------------------
# Save and load


class FaceMagicSaveIdentity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="FaceMagicSaveIdentity",
            search_aliases=("save face model", "save face", "save embedding"),
            display_name="FaceMagic Save Identity",
            category=CATEGORY,
            description="Saves an identity as models/facemagic/identities/<name>.safetensors, to load it again later "
            "with 'FaceMagic Load Identity' (no source photos needed).",
            is_output_node=True,
            inputs=[
                identity_input(tooltip=IDENTITY_TOOLTIP),
                io.String.Input(
                    "name",
                    default="my_identity",
                    tooltip="File name without folder or suffix; sub-folders are allowed (people/anna). "
                    "It stays inside models/facemagic/identities.",
                ),
                io.Boolean.Input(
                    "overwrite",
                    default=True,
                    tooltip="Replace an existing identity of the same name. Off: stop with an error instead.",
                ),
            ],
            outputs=[
                IdentitySocket.Output(
                    "saved_identity",
                    display_name="identity",
                    tooltip="The same identity, to keep using it in this run.",
                )
            ],
        )

    @classmethod
    def execute(cls, identity: Identity, name: str, overwrite: bool) -> io.NodeOutput:
        path = identity_path_for_saving(name)
        try:
            if path.exists() and not overwrite:
                raise BadInputError(
                    f"an identity called {name!r} already exists",
                    where=str(path),
                    fix="choose another name, or switch overwrite on",
                )
            save_identity(identity, path)
        except OSError as error:  # name too long, a file where a folder should be, no permission, disk full
            raise BadInputError(
                f"cannot save the identity: {error.strerror or error}",
                where=str(path),
                fix="choose a shorter name of plain letters and digits, and check that the folder is writable",
            ) from error
        message = f"saved {describe_identity(identity)} to {path}"
        logger.info("FaceMagic: %s", message)
        return io.NodeOutput(identity, ui=text_ui(message))


class FaceMagicLoadIdentity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        names = list_identities()
        return node_schema(
            node_id="FaceMagicLoadIdentity",
            search_aliases=("load face model", "load face", "load embedding"),
            display_name="FaceMagic Load Identity",
            category=CATEGORY,
            description="Loads an identity saved with 'FaceMagic Save Identity' from models/facemagic/identities.",
            inputs=[
                io.Combo.Input(
                    "name",
                    options=names,
                    default=names[0] if names else None,
                    tooltip="Saved identities found in models/facemagic/identities ('refresh list' on the node "
                    "lists one saved since).",
                ),
            ],
            outputs=[IdentitySocket.Output("identity", display_name="identity", tooltip="The loaded identity.")],
        )

    @classmethod
    def validate_inputs(cls, name: str) -> bool | str:
        try:
            resolve_identity(name)
        except FaceMagicError as error:  # shown in the UI before anything runs
            return str(error)
        return True

    @classmethod
    def fingerprint_inputs(cls, name: str) -> str:
        """Changes when the file does (saved again, copied over), so ComfyUI reads it again instead of its cache."""
        try:
            return sha256_file(resolve_identity(name))
        except (FaceMagicError, OSError) as error:  # validate_inputs reports it
            return f"unreadable: {error}"

    @classmethod
    def execute(cls, name: str) -> io.NodeOutput:
        identity = load_identity(resolve_identity(name))
        logger.info("FaceMagic: loaded %s", describe_identity(identity))
        return io.NodeOutput(identity)


# ---------------------------------------------------------------------------------------------------------------------
# Similarity


MOST_SIMILAR = "most_similar"
#: Images analysed at once by the similarity read-out (video frames come in long batches).
SIMILARITY_CHUNK = 8


def measure_similarity(
    analyzer: FaceAnalyzer,
    images: torch.Tensor,
    identity: Identity,
    *,
    face_order: str,
    face_index: int,
    progress: ProgressCallback | None = None,
) -> tuple[list[float | None], str]:
    """Cosine similarity of the chosen face of every image to ``identity``, and a readable report.

    ``images`` is a ComfyUI IMAGE; it is converted and analysed :data:`SIMILARITY_CHUNK` images at a
    time (video frames), calling ``progress(done, total)`` after each chunk.
    """
    if identity.embedding_model != analyzer.embedding_model:
        raise IncompatibleIdentityError(
            f"the identity was made with {identity.embedding_model} but the analyzer's recogniser is "
            f"{analyzer.embedding_model}; their similarities mean nothing",
            where="face similarity",
            fix="use the analyzer the identity was extracted with",
        )
    reference = identity.mean_embedding()
    by_similarity = face_order == MOST_SIMILAR
    values: list[float | None] = []
    lines = []
    total = int(images.shape[0])
    per_image: list[list[Face]] = []
    for start in range(0, total, SIMILARITY_CHUNK):
        chunk = images_to_core(images[start : start + SIMILARITY_CHUNK], where="images")
        per_image.extend(analyzer.analyze(chunk, landmarks=False, embeddings=True))
        if progress is not None:
            progress(min(start + SIMILARITY_CHUNK, total), total)
    for number, faces in enumerate(per_image):
        chosen = select_faces(
            faces,
            order="largest" if by_similarity else face_order,  # type: ignore[arg-type]
            index=face_index,
            reference=reference if by_similarity else None,
        )
        if not chosen:
            values.append(None)
            found_text = f" with index {face_index} ({len(faces)} face{'s' if len(faces) != 1 else ''} found)"
            lines.append(f"image {number + 1}: no face" + (found_text if faces else ""))
            continue
        value = float(face_similarities(chosen[:1], reference)[0])
        values.append(value)
        lines.append(f"image {number + 1}: {value:.3f} ({describe_similarity(value, analyzer.embedding_model)})")
    found = [value for value in values if value is not None]
    summary = (
        f"mean similarity {sum(found) / len(found):.3f} over {len(found)} of {len(values)} image(s)"
        if found
        else "no face measured in any image"
    )
    return values, "\n".join([summary, *lines])


class FaceMagicFaceSimilarity(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            node_id="FaceMagicFaceSimilarity",
            search_aliases=("face similarity", "compare faces", "face verification", "arcface similarity"),
            display_name="FaceMagic Face Similarity",
            category=CATEGORY,
            description="How much the faces in the pictures look like the identity (cosine similarity of ArcFace "
            "embeddings). For ArcFace w600k_r50, above 0.4 is usually the same person, below 0.2 usually not. "
            "The result is shown on the node.",
            is_output_node=True,
            inputs=[
                analyzer_input(),
                io.Image.Input("images", tooltip="Pictures to check, e.g. the swap result."),
                identity_input(tooltip="The identity to compare with, e.g. the one that was swapped in."),
                io.Combo.Input(
                    "face_order",
                    options=[MOST_SIMILAR, *FACE_ORDERS],
                    default=MOST_SIMILAR,
                    display_name="face order",
                    tooltip="Which face of each picture is measured: most_similar takes the face that looks most "
                    "like the identity; the others order the faces for face_index.",
                ),
                face_index_input(),
            ],
            outputs=[
                io.Float.Output(
                    "similarity",
                    display_name="similarity",
                    tooltip="Mean similarity over the pictures that have a face (0 when none has one).",
                ),
                io.String.Output("report", display_name="report", tooltip="One line per picture, with a verdict."),
            ],
        )

    @classmethod
    def execute(
        cls, analyzer: FaceAnalyzer, images: torch.Tensor, identity: Identity, face_order: str, face_index: int
    ) -> io.NodeOutput:
        pictures = as_image_batch(images, where="images")
        progress = comfy_progress(int(pictures.shape[0]), what="face similarity")
        with comfy_errors():
            values, report = measure_similarity(
                analyzer, pictures, identity, face_order=face_order, face_index=face_index, progress=progress
            )
        found = [value for value in values if value is not None]
        mean = float(sum(found) / len(found)) if found else 0.0
        # no measurement, no number on the canvas: a 0 there reads "likely different people"
        return io.NodeOutput(mean, report, ui=text_ui(report, similarity=[mean] if found else []))


NODES: list[type[io.ComfyNode]] = [
    FaceMagicExtractIdentity,
    FaceMagicMixIdentities,
    FaceMagicCoarseFineMix,
    FaceMagicSaveIdentity,
    FaceMagicLoadIdentity,
    FaceMagicFaceSimilarity,
]
