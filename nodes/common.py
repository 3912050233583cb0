"""Pieces every FaceMagic node module shares: the category, shared inputs, device choice."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from facemagic_core.types import FACE_ORDERS

from ._comfy import get_torch_device, input_supports, io, schema_supports
from .sockets import Analyzer, Generator, IdentitySocket

CATEGORY = "FaceMagic"
#: Devices for ONNX models (the analyzer): each asks onnxruntime for that execution provider.
ONNX_DEVICES = ("auto", "cpu", "cuda", "tensorrt", "rocm", "directml", "coreml")
#: Devices for swap generators: torch devices (ONNX swappers use the matching onnxruntime provider).
TORCH_DEVICES = ("auto", "cpu", "cuda", "mps")
DEVICE_TOOLTIP = (
    "Where the model runs. auto: the device ComfyUI uses (its --cpu / --cuda-device settings apply). "
    "ONNX models ask onnxruntime for the matching provider and say so in the log when they fall back to the CPU."
)


#: Words the node search also finds the swap nodes by: what people call face swapping, and the tools they know.
SWAP_ALIASES = ("face swap", "faceswap", "swap face", "reactor", "inswapper", "roop", "hyperswap", "reswapper")


def node_schema(*, search_aliases: Sequence[str] = (), **fields: Any) -> io.Schema:
    """``io.Schema(**fields)``, with ``search_aliases`` where this ComfyUI has them (dropped where not)."""
    if search_aliases and schema_supports("search_aliases"):
        fields["search_aliases"] = list(search_aliases)
    return io.Schema(**fields)


def advanced() -> dict[str, bool]:
    """Keyword arguments marking an expert input: ``advanced=True`` where this ComfyUI has it, else nothing."""
    return {"advanced": True} if input_supports("advanced") else {}


def comfy_device_name() -> str:
    """ComfyUI's device as a name facemagic_core understands ("cpu", "cuda:0", "mps"), else "auto"."""
    device = get_torch_device()
    if device.type in ("cpu", "mps"):
        return device.type
    if device.type == "cuda":
        return f"cuda:{device.index or 0}"
    return "auto"


def resolve_device_choice(choice: str) -> str:
    """A device choice from the UI as given to facemagic_core ("auto" becomes ComfyUI's device)."""
    return comfy_device_name() if choice == "auto" else choice


def analyzer_input(tooltip: str = "Face analyzer from 'FaceMagic Analyzer Loader'.") -> io.Input:
    return Analyzer.Input("analyzer", display_name="analyzer", tooltip=tooltip)


def generator_input(
    tooltip: str = "Swap model from 'FaceMagic Generator Loader'.", *, optional: bool = False
) -> io.Input:
    return Generator.Input("generator", display_name="generator", tooltip=tooltip, optional=optional)


def identity_input(
    name: str = "identity", tooltip: str = "The person to put into the picture.", *, optional: bool = False
) -> io.Input:
    return IdentitySocket.Input(name, display_name=name, tooltip=tooltip, optional=optional)


def face_order_input(tooltip: str | None = None, *, default: str = "largest") -> io.Input:
    return io.Combo.Input(
        "face_order",
        options=list(FACE_ORDERS),
        default=default,
        display_name="face order",
        tooltip=tooltip
        or "How the faces found in a picture are ordered before face_index picks one "
        "(largest first, left to right, best detector score...).",
    )


def face_index_input(tooltip: str | None = None, *, maximum: int = 63) -> io.Input:
    return io.Int.Input(
        "face_index",
        default=0,
        min=0,
        max=maximum,
        display_name="face index",
        tooltip=tooltip or "Which face to use, counted from 0 in the chosen face order.",
    )
