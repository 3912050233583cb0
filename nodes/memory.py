"""Swap models under ComfyUI's model management.

A native (torch) generator is wrapped in ComfyUI's ``ModelPatcher``: its weights live on
ComfyUI's device while in use, ComfyUI counts them when it plans memory for other models,
and it may move them to its offload device (the CPU) when another model needs the room.
:meth:`GeneratorHandle.ready` asks ComfyUI to bring them back before every use
(``load_models_gpu``), so the swap model always runs where it says it runs.

ONNX models running through onnxruntime (and the face analyzer, which is onnxruntime and
OpenCV) hold their memory outside torch; ComfyUI cannot see or evict it. They stay loaded
for as long as ComfyUI keeps the node's output cached.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from facemagic_core.generators.base import SwapModel

from ._comfy import load_models, new_model_patcher, offload_device

logger = logging.getLogger(__name__)


class ManagedWeights(torch.nn.Module):
    """The generator's module as ComfyUI's ModelPatcher sees it.

    ModelPatcher writes bookkeeping attributes onto the module it manages (``device``,
    ``model_loaded_weight_memory``...), and the generator's own ``device`` is a read-only
    property; this container takes those writes and holds the generator as its only submodule,
    so moving the container's weights moves the generator's.
    """

    def __init__(self, generator: torch.nn.Module) -> None:
        super().__init__()
        self.generator = generator


@dataclass(frozen=True, eq=False)
class GeneratorHandle:
    """What travels through a ``FACEMAGIC_GENERATOR`` socket."""

    model: SwapModel
    patcher: Any | None  # ComfyUI ModelPatcher around the torch module; None for onnxruntime models
    name: str  # the name chosen in the UI

    def ready(self) -> SwapModel:
        """The swap model with its weights on its device (ComfyUI may have offloaded them)."""
        if self.patcher is not None:
            load_models([self.patcher])
        return self.model

    @property
    def managed(self) -> bool:
        return self.patcher is not None


def manage_generator(model: SwapModel, *, name: str) -> GeneratorHandle:
    """Wrap ``model``; torch generators get a ModelPatcher on their device, others are passed as they are."""
    module = getattr(model, "module", None)
    if not isinstance(module, torch.nn.Module):
        logger.info("%s runs through onnxruntime: ComfyUI's model management does not see its memory", name)
        return GeneratorHandle(model=model, patcher=None, name=name)
    device = model.device
    parking = offload_device() if device.type != "cpu" else torch.device("cpu")
    patcher = new_model_patcher(ManagedWeights(module), load_device=device, offload_to=parking)
    logger.info("%s handed to ComfyUI's model management (load %s, offload %s)", name, device, parking)
    return GeneratorHandle(model=model, patcher=patcher, name=name)
