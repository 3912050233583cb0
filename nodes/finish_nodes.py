"""Finishing nodes: face restorers, occlusion / region / landmark-area masks, and their loaders.

Restore Faces works in the swap's crop space before paste-back: it takes a ``FACEMAGIC_SWAP``
and gives one back whose faces Blend pastes as restored. Face Mask gives a frame-space MASK
(1 where a face may change) for Blend's limit mask input, so it can be looked at and edited
on the way. Both go through the swap chunk by chunk, one chunk on the device at a time.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal, get_args

import torch

from facemagic_core.blend import FaceCrops
from facemagic_core.errors import BadInputError
from facemagic_core.masks import (
    FACE_REGIONS,
    OCCLUDER_NAMES,
    PARSER_NAMES,
    FaceMaskSpec,
    FaceOccluder,
    FaceParser,
    create_finish_masks,
    crop_masks_to_frames,
)
from facemagic_core.restore import DEFAULT_FIDELITY, RESTORER_NAMES, FaceRestorer, restore_swap
from facemagic_core.runtime import onnx_providers

from ._comfy import io
from .common import CATEGORY, DEVICE_TOOLTIP, ONNX_DEVICES, node_schema, resolve_device_choice
from .model_folder import ensure_registry_model, model_fingerprint
from .progress import comfy_errors, comfy_progress
from .sockets import MaskModel, Restorer, Swap
from .swap_nodes import CropsOut, SwapData, _to_device_batch, crops_as_image, crops_out_of

logger = logging.getLogger(__name__)

#: Landmark areas the Face Mask node offers: where the swap may show, and what the target keeps.
OnlyArea = Literal["whole face", "mouth", "eyes", "lower_face"]
ONLY_AREAS: tuple[str, ...] = get_args(OnlyArea)
KeptArea = Literal["nothing", "mouth", "eyes", "mouth and eyes"]
KEPT_AREAS: tuple[str, ...] = get_args(KeptArea)


def _loader_schema(
    node_id: str, display_name: str, aliases: tuple[str, ...], description: str, model: io.Input, output: io.Output
) -> io.Schema:
    """A model loader's schema: its ``model`` choice, the device choice, one output."""
    return node_schema(
        search_aliases=aliases,
        node_id=node_id,
        display_name=display_name,
        category=CATEGORY,
        description=description,
        inputs=[model, io.Combo.Input("device", options=list(ONNX_DEVICES), default="auto", tooltip=DEVICE_TOOLTIP)],
        outputs=[output],
    )


class FaceMagicRestorerLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _loader_schema(
            "FaceMagicRestorerLoader",
            "FaceMagic Restorer Loader",
            ("face restore model", "gfpgan", "codeformer", "gpen", "restoreformer"),
            "Loads a face restorer (GFPGAN 1.4, CodeFormer, GPEN-BFR, RestoreFormer++ as ONNX) for "
            "'FaceMagic Restore Faces'. Missing files are downloaded into models/facemagic/restorers on first use.",
            io.Combo.Input(
                "model",
                options=list(RESTORER_NAMES),
                default="gfpgan_1.4",
                tooltip="gfpgan_1.4 (Apache-2.0) and codeformer (non-commercial; has a fidelity setting) work "
                "at 512 px; gpen_bfr_256 ... 2048 (non-commercial) at their size; restoreformer_plus_plus at 512.",
            ),
            Restorer.Output("restorer", display_name="restorer", tooltip="The loaded face restorer."),
        )

    @classmethod
    def fingerprint_inputs(cls, model: str, **_settings: object) -> str:
        return model_fingerprint([model])

    @classmethod
    def execute(cls, model: str, device: str) -> io.NodeOutput:
        device_name = resolve_device_choice(device)
        with comfy_errors():
            path = ensure_registry_model(model, progress=comfy_progress(what=f"restorer {model}"))
            torch_device = "cpu" if device_name in ("auto", "directml", "coreml") else device_name.split(":")[0]
            restorer = FaceRestorer(
                path,
                name=model,
                providers=onnx_providers(device_name),
                device=torch_device if torch_device in ("cpu", "cuda") else None,
            )
        return io.NodeOutput(restorer)


class FaceMagicMaskModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _loader_schema(
            "FaceMagicMaskModelLoader",
            "FaceMagic Mask Model Loader",
            ("occlusion model", "xseg", "bisenet", "face parsing"),
            "Loads an occlusion model (XSeg: keeps hands, glasses, microphones in front of the face) or a "
            "face parser (BiSeNet: swap only chosen regions) for 'FaceMagic Face Mask'.",
            io.Combo.Input(
                "model",
                options=list(OCCLUDER_NAMES + PARSER_NAMES),
                default="xseg_1",
                tooltip="xseg_1, xseg_2, xseg_3: occlusion (DeepFaceLab's XSeg, GPL-3.0); bisenet_resnet_18 / "
                "34: face parsing into skin, brows, eyes, nose, lips... (MIT).",
            ),
            MaskModel.Output("mask_model", display_name="mask model", tooltip="The loaded mask model."),
        )

    @classmethod
    def fingerprint_inputs(cls, model: str, **_settings: object) -> str:
        return model_fingerprint([model])

    @classmethod
    def execute(cls, model: str, device: str) -> io.NodeOutput:
        providers = onnx_providers(resolve_device_choice(device))
        with comfy_errors():
            path = ensure_registry_model(model, progress=comfy_progress(what=f"mask model {model}"))
            loaded = (FaceOccluder if model in OCCLUDER_NAMES else FaceParser)(path, name=model, providers=providers)
        return io.NodeOutput(loaded)


class FaceMagicRestoreFaces(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            search_aliases=("face restore", "gfpgan", "codeformer", "face enhance", "reactor restore"),
            node_id="FaceMagicRestoreFaces",
            display_name="FaceMagic Restore Faces",
            category=CATEGORY,
            description="Restores the swapped faces (sharper eyes, skin and teeth) before Blend pastes them back: "
            "each face is re-aligned the way the restorer expects, restored in one batch and mixed with the swap by "
            "the weight. Only swapped faces are touched.",
            inputs=[
                Swap.Input("swap", tooltip="Swapped faces from 'FaceMagic Swap' or 'FaceMagic Pose Check'."),
                Restorer.Input("restorer", tooltip="A face restorer from 'FaceMagic Restorer Loader'."),
                io.Float.Input(
                    "weight",
                    default=1.0,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    display_name="visibility",
                    tooltip="How much of the restored face shows: 1 all of it, 0.5 half restored, half swapped.",
                ),
                io.Float.Input(
                    "fidelity",
                    default=DEFAULT_FIDELITY,
                    min=0.0,
                    max=1.0,
                    step=0.05,
                    display_name="codeformer fidelity",
                    tooltip="CodeFormer only: 0 restores the most, 1 stays closest to the swapped face.",
                ),
            ],
            outputs=[
                Swap.Output("restored_swap", display_name="swap", tooltip="The swap with restored faces, for Blend."),
                io.Image.Output(
                    "crops",
                    display_name="restored crops",
                    tooltip="The restored faces, one per face in order; they can go through any IMAGE node into "
                    "Blend's crops input.",
                ),
            ],
        )

    @classmethod
    def execute(cls, swap: SwapData, restorer: FaceRestorer, weight: float, fidelity: float) -> io.NodeOutput:
        progress = comfy_progress(len(swap.chunks), what="restore")
        chunks = []
        with comfy_errors():
            for number, chunk in enumerate(swap.chunks):
                frames = swap.frames(chunk.start, chunk.start + chunk.batch.num_frames).to(swap.device)
                crops = chunk.pose.crops if chunk.pose is not None else chunk.swapped.images
                restored = restore_swap(
                    frames,
                    _to_device_batch(chunk.batch, swap.device),
                    crops.to(swap.device),
                    restorer,
                    weight=float(weight),
                    fidelity=float(fidelity),
                )
                finished = FaceCrops(restored.images.cpu(), restored.matrices.cpu(), "ffhq", restored.label)
                chunks.append(dataclasses.replace(chunk, finished=finished))
                progress(number + 1, len(swap.chunks))
        image = crops_as_image(
            [chunk.finished.images for chunk in chunks if chunk.finished is not None], restorer.input_size
        )
        data = dataclasses.replace(swap, chunks=tuple(chunks))
        matrices = [chunk.finished.matrices for chunk in chunks if chunk.finished is not None]
        out: CropsOut = crops_out_of(matrices, image, "ffhq", data)
        logger.info("FaceMagic restore: %d face(s) with %s (weight %.2f)", data.num_faces, restorer.name, weight)
        return io.NodeOutput(dataclasses.replace(data, crops_out=out), image)


def _kept(choice: str) -> tuple[str, ...]:
    return {"nothing": (), "mouth": ("mouth",), "eyes": ("eyes",), "mouth and eyes": ("mouth", "eyes")}[choice]


class FaceMagicFaceMask(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return node_schema(
            search_aliases=("face mask", "occlusion mask", "face parsing mask", "mouth mask", "xseg"),
            node_id="FaceMagicFaceMask",
            display_name="FaceMagic Face Mask",
            category=CATEGORY,
            description="Where the swapped faces may show, from the target faces: occlusion (what covers the face "
            "stays), parsed regions, landmark areas (keep the original mouth...). Gives a MASK, 1 where a face may "
            "change, for Blend's limit mask; masks combine by minimum, so each one only takes away.",
            inputs=[
                Swap.Input("swap", tooltip="Swapped faces from 'FaceMagic Swap' (or Pose Check, Restore Faces)."),
                io.String.Input(
                    "regions",
                    default="",
                    tooltip="With a face parser: the regions the swap may cover, e.g. 'skin, nose, brows' ("
                    + ", ".join(FACE_REGIONS)
                    + "). Empty: the parser's usual face (skin, brows, eyes, glasses, nose, mouth, lips).",
                ),
                io.Combo.Input(
                    "only",
                    options=list(ONLY_AREAS),
                    default="whole face",
                    display_name="swap only",
                    tooltip="Limit the swap to a landmark area (no model needed): the mouth, the eyes or the lower "
                    "face (the lower face needs the 68/106-point landmarks of buffalo_l).",
                ),
                io.Combo.Input(
                    "keep",
                    options=list(KEPT_AREAS),
                    default="nothing",
                    display_name="keep original",
                    tooltip="Areas where the target keeps its own face, e.g. the mouth for speech and teeth.",
                ),
                MaskModel.Input(
                    "occluder",
                    optional=True,
                    display_name="occlusion model",
                    tooltip="Optional: an XSeg model; hands, glasses, microphones in front of the face stay.",
                ),
                MaskModel.Input(
                    "parser",
                    optional=True,
                    display_name="face parser",
                    tooltip="Optional: a BiSeNet face parser; the swap covers only the chosen regions.",
                ),
            ],
            outputs=[
                io.Mask.Output(
                    "mask", display_name="mask", tooltip="1 where a face may change, for Blend's limit mask."
                )
            ],
        )

    @classmethod
    def execute(
        cls,
        swap: SwapData,
        regions: str,
        only: str,
        keep: str,
        occluder: FaceOccluder | FaceParser | None = None,
        parser: FaceOccluder | FaceParser | None = None,
    ) -> io.NodeOutput:
        if occluder is not None and not isinstance(occluder, FaceOccluder):
            raise BadInputError(
                f"the occlusion model input got the face parser {occluder.name}",
                where="FaceMagic Face Mask",
                fix="connect an xseg model there, and the bisenet model to the face parser input",
            )
        if parser is not None and not isinstance(parser, FaceParser):
            raise BadInputError(
                f"the face parser input got the occlusion model {parser.name}",
                where="FaceMagic Face Mask",
                fix="connect a bisenet model there, and the xseg model to the occlusion model input",
            )
        names = tuple(name.strip().replace(" ", "_") for name in regions.replace("+", ",").split(",") if name.strip())
        spec = FaceMaskSpec(
            occlusion=occluder is not None,
            regions=(names or FaceMaskSpec.parse("region").regions) if parser is not None else (),
            areas=() if only == "whole face" else (only,),
            keep=_kept(keep),
        )
        if names and parser is None:
            raise BadInputError(
                "regions are named but no face parser is connected",
                where="FaceMagic Face Mask",
                fix="connect a bisenet model from 'FaceMagic Mask Model Loader', or clear the regions",
            )
        height, width = int(swap.images.shape[1]), int(swap.images.shape[2])
        masks = torch.ones((swap.num_frames, height, width))
        progress = comfy_progress(len(swap.chunks), what="face mask")
        with comfy_errors():
            for number, chunk in enumerate(swap.chunks):
                stop = chunk.start + chunk.batch.num_frames
                batch = _to_device_batch(chunk.batch, swap.device)
                frames = swap.frames(chunk.start, stop).to(swap.device)
                crop_masks = create_finish_masks(frames, batch, spec, occluder=occluder, parser=parser)
                if crop_masks is not None:
                    masks[chunk.start : stop] = crop_masks_to_frames(crop_masks, batch).cpu()
                progress(number + 1, len(swap.chunks))
        return io.NodeOutput(masks)


NODES: list[type[io.ComfyNode]] = [
    FaceMagicRestorerLoader,
    FaceMagicMaskModelLoader,
    FaceMagicRestoreFaces,
    FaceMagicFaceMask,
]
