"""Where an inswapper-layout swapper runs: the fastest runtime per device, by a documented rule.

An inswapper-layout ONNX file (inswapper_128, reswapper) converts to a native torch module that
matches onnxruntime (:mod:`.convert`); both can run it. Which is faster depends on the device:

- **CUDA** (and MPS): the native module, always. It stays on the device with the rest of the
  pipeline (no copies to the host around the call), takes fp16 on tensor cores and adds per-block
  identity mixing. onnxruntime on the GPU would need onnxruntime-gpu, which this package no longer
  installs (see ``runtime``).
- **CPU**: onnxruntime for swaps whose identity is the same in every block (the usual swap), the
  native module for per-block mixing, which onnxruntime's single-latent graph cannot express. Both
  compute the same convolutions; on the 2-core AMD EPYC of our CI onnxruntime's kernels reach about
  210 GFLOP/s on these shapes where torch's reach about 160 (measured with ``facemagic bench``;
  see benchmarks/README.md), and the two agree within the conversion check's tolerance.

:func:`choose_swapper_runtime` states the rule; :class:`RuntimeChoiceSwapper` applies it per call.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from torch import Tensor

from ..align import TemplateName
from ..errors import BadInputError
from .base import SwapOutput, TorchSwapper, check_swap_inputs
from .onnx_swapper import OnnxSwapper

logger = logging.getLogger(__name__)

#: What ``runtime`` may be where a swapper is loaded: auto (the rule below), or one runtime forced.
SwapperRuntime = Literal["auto", "torch", "onnxruntime"]
SWAPPER_RUNTIMES: tuple[str, ...] = ("auto", "torch", "onnxruntime")


def choose_swapper_runtime(device: torch.device, runtime: str = "auto") -> Literal["torch", "onnxruntime", "both"]:
    """The runtime(s) an inswapper-layout file is loaded into on ``device``: ``both`` on the CPU with ``auto``
    (onnxruntime for uniform swaps, torch for per-block mixing), torch on every GPU, or what was forced."""
    if runtime not in SWAPPER_RUNTIMES:
        raise BadInputError(
            f"unknown runtime {runtime!r}", where="swapper runtime", fix=f"use one of {', '.join(SWAPPER_RUNTIMES)}"
        )
    if runtime != "auto":
        return "torch" if runtime == "torch" else "onnxruntime"
    return "both" if device.type == "cpu" else "torch"


def is_uniform(source: Tensor, strength: Tensor) -> bool:
    """Whether every block gets the same identity and strength (``source (B, K, D)``, ``strength (B, K)``)."""
    return bool(torch.equal(source, source[:, :1].expand_as(source))) and bool(
        torch.equal(strength, strength[:, :1].expand_as(strength))
    )


class RuntimeChoiceSwapper:
    """One inswapper-layout model held by both runtimes on the CPU: onnxruntime runs uniform swaps, the native
    module runs per-block mixing (see the module docstring). Behaves as the native model (``num_blocks`` of
    the native layout); the weights are held twice (about 2 x 530 MB for the public inswapper_128)."""

    def __init__(self, native: TorchSwapper, onnx: OnnxSwapper) -> None:
        if native.input_size != onnx.input_size:
            raise BadInputError(
                f"the native module takes {native.input_size} px crops but the onnx file {onnx.input_size} px",
                where=native.name,
                fix="load the two from the same file",
            )
        self.native = native
        self.onnx = onnx
        self.name = native.name
        self.input_size = native.input_size
        self.template: TemplateName = native.template
        self.embedding_model = native.embedding_model
        self.num_blocks = native.num_blocks
        self.id_dim = native.id_dim
        self.device = native.device
        self.dtype = native.dtype
        self.calls = {"onnxruntime": 0, "torch": 0}  # how many swaps each runtime served (for reports and tests)

    def __repr__(self) -> str:
        return f"RuntimeChoiceSwapper({self.name!r}: onnxruntime for uniform swaps, torch for per-block mixing)"

    @property
    def module(self) -> torch.nn.Module:
        """The native module (per-block mixing, pose checks and conversions read it)."""
        return self.native.module

    def swap(self, crops: Tensor, source: Tensor, target: Tensor, strength: Tensor) -> SwapOutput:
        inputs = check_swap_inputs(self, crops, source, target, strength)
        if is_uniform(inputs.source, inputs.strength):
            self.calls["onnxruntime"] += 1
            return self.onnx.swap(inputs.crops, inputs.source[:, :1], inputs.target, inputs.strength[:, :1])
        self.calls["torch"] += 1
        return self.native.swap(inputs.crops, inputs.source, inputs.target, inputs.strength)
