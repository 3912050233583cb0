"""Several people in one swap: identities mapped to target faces (by position, reference photo, gender, age),
with faces followed across video frames so that a missed detection is still swapped."""

from __future__ import annotations

import logging
from collections import Counter

import torch

from facemagic_core.analysis import FaceAnalyzer
from facemagic_core.errors import BadInputError
from facemagic_core.mapping import FaceMapping, parse_face_choice
from facemagic_core.pipeline import SwapOptions, swap_faces
from facemagic_core.tracking import TrackingConfig
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
from .swap_nodes import mask_input, no_face_input, reference_threshold_input, strength_input, track_gap_input
from .tensors import images_as_core_view, images_to_comfy, masks_to_comfy

logger = logging.getLogger(__name__)

#: Identities one node takes (identity_1 .. identity_4, each with an optional reference).
MAX_PEOPLE = 4
#: The face choices a new node starts with: person k goes to face k (in the face order).
DEFAULT_CHOICES = "\n".join(str(number) for number in range(MAX_PEOPLE))


def build_mapping(
    choices: str, references: list[Identity | None], count: int, order: str, threshold: float
) -> FaceMapping:
    """The mapping of the node's face choices: line k is identity k's choice (its reference for ``ref``)."""
    lines = [line for line in str(choices).splitlines() if line.strip()]
    if len(lines) < count:
        raise BadInputError(
            f"{count} identities are connected but the face choices have {len(lines)} line(s)",
            where="FaceMagic Swap Several People",
            fix="write one line per connected identity, e.g. 0 and 1 (left to right), ref, female, age:18-60",
        )
    rules = []
    for number in range(count):
        choice = parse_face_choice(lines[number])
        reference = references[number]
        if choice.reference is not None and reference is None:
            raise BadInputError(
                f"line {number + 1} of the face choices says ref, but reference_{number + 1} is not connected",
                where="FaceMagic Swap Several People",
                fix=f"connect an identity of the target person to reference_{number + 1}, or choose a face number",
            )
        # A connected reference is always used: faces are then counted by similarity to it (0 = most similar).
        embedding = reference.mean_embedding() if reference is not None else None
        rules.append(choice.rule(number, embedding, float(threshold)))
    return FaceMapping(tuple(rules), order)  # type: ignore[arg-type]


def describe_result(names: list[str], identity_index: tuple[int, ...], faces_per_frame: tuple[int, ...]) -> str:
    counts = Counter(identity_index)
    lines = [f"{sum(faces_per_frame)} face(s) swapped in {len(faces_per_frame)} frame(s)"]
    lines += [f"identity {n + 1} ({name}): {counts.get(n, 0)} face(s)" for n, name in enumerate(names)]
    return "\n".join(lines)


class FaceMagicSwapSeveralPeople(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        identities = [
            identity_input(
                f"identity_{n}",
                f"Person {n}: goes to the faces chosen on line {n} of the face choices."
                + (" Leave empty for fewer people." if n > 1 else ""),
                optional=n > 1,
            )
            for n in range(1, MAX_PEOPLE + 1)
        ]
        references = [
            identity_input(
                f"reference_{n}",
                f"Optional: an identity of the target person that person {n} replaces (e.g. from a frame of the "
                f"video): line {n} then counts faces by similarity to it (0 = the most similar) and skips faces "
                "below the reference threshold, so nobody else is swapped when that person is away.",
                optional=True,
            )
            for n in range(1, MAX_PEOPLE + 1)
        ]
        return node_schema(
            node_id="FaceMagicSwapSeveralPeople",
            search_aliases=(*SWAP_ALIASES, "multiple faces", "several people", "many faces", "group photo"),
            display_name="FaceMagic Swap Several People",
            category=CATEGORY,
            description="Swaps up to four people into one picture or video in one go: each identity goes to the faces "
            "its line of 'face choices' names (a face number in the face order, all, ref for the face most like its "
            "reference, female/male, age:LOW-HIGH). Video frames are followed face by face: a face the detector "
            "misses for a few frames is still swapped in place, and each face keeps its person.",
            inputs=[
                io.Image.Input("images", display_name="target images", tooltip="Pictures or video frames to swap."),
                generator_input(),
                analyzer_input("Face analyzer that finds the target faces (buffalo_l for gender and age)."),
                identities[0],
                io.String.Input(
                    "face_choices",
                    default=DEFAULT_CHOICES,
                    multiline=True,
                    display_name="face choices",
                    tooltip="One line per identity: 0, 1... (the face number in the face order), all, ref (the face "
                    "most like its reference), female or male, age:18-60; join with commas, e.g. female,age:18-.",
                ),
                face_order_input("How the faces of a frame are counted for the face numbers.", default="left_to_right"),
                reference_threshold_input(
                    "Smallest identity similarity a face needs to count as a reference's person.",
                    optional=False,
                    **advanced(),
                ),
                track_gap_input(
                    "Video: frames a followed face may be missed by the detector and still be swapped (its place "
                    "interpolated). 0 turns following off (each frame on its own).",
                    optional=False,
                    **advanced(),
                ),
                strength_input("How much of each identity is injected: 1 is the full swap."),
                mask_input("Where the swapped faces are pasted: ellipse, box, or hull (needs buffalo_l)."),
                no_face_input(
                    "A frame where none of the chosen faces is found: pass it unchanged, or stop with an error.",
                    default="pass",
                ),
                *identities[1:],
                *references,
            ],
            outputs=[
                io.Image.Output("swapped_images", display_name="images", tooltip="The frames with swapped faces."),
                io.Mask.Output("face_mask", display_name="mask", tooltip="Where each frame was changed, 0 to 1."),
                io.String.Output(
                    "report", display_name="report", tooltip="Faces swapped per person and faces followed."
                ),
            ],
        )

    @classmethod
    def execute(
        cls,
        images: torch.Tensor,
        generator: GeneratorHandle,
        analyzer: FaceAnalyzer,
        identity_1: Identity,
        face_choices: str,
        face_order: str,
        reference_threshold: float,
        track_gap: int,
        strength: float,
        mask: str,
        no_face: str,
        identity_2: Identity | None = None,
        identity_3: Identity | None = None,
        identity_4: Identity | None = None,
        reference_1: Identity | None = None,
        reference_2: Identity | None = None,
        reference_3: Identity | None = None,
        reference_4: Identity | None = None,
    ) -> io.NodeOutput:
        given = [identity_1, identity_2, identity_3, identity_4]
        references = [reference_1, reference_2, reference_3, reference_4]
        count = max(n + 1 for n, one in enumerate(given) if one is not None)
        if any(one is None for one in given[:count]):
            gap = next(n + 1 for n, one in enumerate(given[:count]) if one is None)
            raise BadInputError(
                f"identity_{gap} is empty but identity_{count} is connected",
                where="FaceMagic Swap Several People",
                fix="connect the identities from identity_1 on, without gaps",
            )
        people = [one for one in given[:count] if one is not None]
        frames = images_as_core_view(images, where="target images")  # no copy of a long frame batch
        total = int(frames.shape[0])
        progress = comfy_progress(total, what="swap")
        with comfy_errors():
            mapping = build_mapping(face_choices, references, count, face_order, reference_threshold)
            options = SwapOptions(
                mapping=mapping,
                tracking=TrackingConfig(max_gap=int(track_gap)) if track_gap > 0 and total > 1 else None,
                strength=float(strength),
                mask=mask,  # type: ignore[arg-type]
                no_face=no_face,  # type: ignore[arg-type]
            )
            result = swap_faces(frames, people, analyzer, generator.ready(), options, progress)
        names = [", ".join(one.sources) or one.extra.get("name", "identity") for one in people]
        report = describe_result(names, result.identity_index, result.face_counts)
        if any(result.interpolated):
            report += f"\n{sum(result.interpolated)} face(s) the detector missed were followed and swapped"
        if result.frames_without_face:
            report += f"\n{len(result.frames_without_face)} frame(s) without a chosen face, left unchanged"
        logger.info("FaceMagic several people: %s", report.replace("\n", "; "))
        swapped = images_to_comfy(result.images, owned=True)
        return io.NodeOutput(swapped, masks_to_comfy(result.masks), report, ui=text_ui(report))


NODES: list[type[io.ComfyNode]] = [FaceMagicSwapSeveralPeople]
