"""Quality nodes: the Swap Quality report (identity, ID retrieval, pose, expression, flicker) with its plot."""

from __future__ import annotations

import logging
from typing import Any

import torch

from facemagic_core.analysis import FaceAnalyzer
from facemagic_core.quality import RECOGNIZER_FAMILIES, draw_quality_plot, evaluate_swaps, pair_batches

from ._comfy import io, text_ui
from .common import CATEGORY, advanced, analyzer_input, node_schema
from .model_folder import ensure_registry_model
from .progress import comfy_errors, comfy_progress
from .tensors import images_to_comfy, images_to_core

logger = logging.getLogger(__name__)

#: How the batches are read: one swap per picture, or the frames of one video.
QUALITY_MODES = ("pictures", "video")
#: Where the pose and expression errors take their landmarks from.
LANDMARK_SOURCES = ("detector 5 points", "faceapi_landmark68")


def load_quality_landmarker(choice: str, device: torch.device) -> Any:
    """face-api's 68-point landmarker from the model folder (downloaded when missing), or None for 5 points."""
    if choice != "faceapi_landmark68":
        return None
    from facemagic_core.landmarks68 import Landmarker68

    return Landmarker68.from_file(ensure_registry_model("faceapi_landmark68"), device=device)


class FaceMagicSwapQuality(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            search_aliases=("swap quality", "face swap metrics", "identity retrieval", "evaluate swap"),
            node_id="FaceMagicSwapQuality",
            display_name="FaceMagic Swap Quality",
            category=CATEGORY,
            description="Judges swap results: how much the result's face looks like the source and like the "
            "target (measured by a recogniser other than the swap's: load the analyzer with yunet_dlib for an "
            "ArcFace swap), ID retrieval top-1 over the sources, head-pose and landmark/expression error to the "
            "target, and flicker for a video. Gives a table and a plot; the table is shown on the node.",
            is_output_node=True,
            inputs=[
                analyzer_input(
                    "The judge: an analyzer whose recogniser did not drive the swap (yunet_dlib for the native "
                    "generators, inswapper and hyperswap, which use ArcFace)."
                ),
                io.Image.Input("source", tooltip="The source picture(s): one for all targets, or one per target."),
                io.Image.Input("target", tooltip="The pictures or video frames that were swapped."),
                io.Image.Input("result", tooltip="The swap's result of those targets (as many images, same size)."),
                io.Combo.Input(
                    "mode",
                    options=list(QUALITY_MODES),
                    default="pictures",
                    tooltip="pictures: each image of the batch is its own swap. video: the batch is the frames of "
                    "one video (flicker is measured between frames).",
                ),
                io.Combo.Input(
                    "swap_recognizer",
                    options=list(RECOGNIZER_FAMILIES),
                    default="arcface_w600k_r50",
                    display_name="swap recogniser",
                    tooltip="The recogniser that drove the swap (ArcFace w600k_r50 for the native generators, "
                    "inswapper, hyperswap). The judge must be of another family.",
                ),
                io.Combo.Input(
                    "landmarks",
                    options=list(LANDMARK_SOURCES),
                    default="detector 5 points",
                    tooltip="Landmarks of the pose and expression errors: the detector's five points, or face-api's "
                    "68-point net (MIT, downloaded into models/facemagic on first use).",
                ),
                io.Boolean.Input(
                    "allow_same_recognizer",
                    default=False,
                    display_name="allow same recogniser",
                    tooltip="Judge with the swap's own recogniser family anyway; its scores flatter the swap and "
                    "the report says so.",
                    **advanced(),
                ),
            ],
            outputs=[
                io.String.Output("report", display_name="report", tooltip="The table, with what each column means."),
                io.Image.Output(
                    "plot",
                    display_name="plot",
                    tooltip="Left: each swap from where it started to the result (similarity to target, to source; "
                    "top left is best). Right: mean pose and landmark errors.",
                ),
                io.Float.Output(
                    "source_similarity",
                    display_name="source similarity",
                    tooltip="Mean similarity of the results to their sources (NaN when no face was found).",
                ),
            ],
        )

    @classmethod
    def execute(
        cls,
        analyzer: FaceAnalyzer,
        source: torch.Tensor,
        target: torch.Tensor,
        result: torch.Tensor,
        mode: str,
        swap_recognizer: str,
        landmarks: str,
        allow_same_recognizer: bool,
    ) -> io.NodeOutput:
        with comfy_errors():
            samples = pair_batches(
                images_to_core(source, where="source"),
                images_to_core(target, where="target"),
                images_to_core(result, where="result"),
                video=mode == "video",
            )
            landmarker = load_quality_landmarker(landmarks, torch.device("cpu"))
            report = evaluate_swaps(
                samples,
                analyzer,
                swap_recognizer=swap_recognizer,
                landmarker=landmarker,
                allow_same_recognizer=allow_same_recognizer,
                progress=comfy_progress(len(samples), what="swap quality"),
            )
            plot = draw_quality_plot(report)
        text = report.format_text()
        similarity = report.summary()["source_similarity"]
        found = [similarity] if similarity == similarity else []  # NaN: no face was measured, no number shown
        return io.NodeOutput(text, images_to_comfy(plot, owned=True), similarity, ui=text_ui(text, similarity=found))


NODES: list[type[io.ComfyNode]] = [FaceMagicSwapQuality]
