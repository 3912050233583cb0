"""Swap generators: the native style-delta network, the inswapper layout, and ONNX swappers.

Everything the pipeline needs goes through :func:`load_generator`, which returns a
:class:`SwapModel` (``swap(crops, source, target, strength) -> SwapOutput``).
"""

from __future__ import annotations

from ..align import TemplateName
from .base import SwapModel, SwapOutput, TorchSwapper, check_swap_inputs, split_woven, swap_woven, weave_woven
from .config import ARCHES, Arch, GeneratorConfig, ValueRange
from .convert import ConversionError, convert_checked, convert_inswapper_onnx, export_inswapper_onnx
from .facemagic import FaceMagicGenerator, StyleMixBlock
from .inswapper import InswapperBlock, InswapperGenerator
from .loader import load_generator
from .network import SwapGenerator, effective_identity
from .onnx_swapper import KNOWN_SWAPPERS, OnnxSwapper, OnnxSwapperSpec, read_emap

__all__ = [
    "ARCHES",
    "KNOWN_SWAPPERS",
    "Arch",
    "ConversionError",
    "FaceMagicGenerator",
    "GeneratorConfig",
    "InswapperBlock",
    "InswapperGenerator",
    "OnnxSwapper",
    "OnnxSwapperSpec",
    "StyleMixBlock",
    "SwapGenerator",
    "SwapModel",
    "SwapOutput",
    "TemplateName",
    "TorchSwapper",
    "ValueRange",
    "check_swap_inputs",
    "convert_checked",
    "convert_inswapper_onnx",
    "effective_identity",
    "export_inswapper_onnx",
    "load_generator",
    "read_emap",
    "split_woven",
    "swap_woven",
    "weave_woven",
]
