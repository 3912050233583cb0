"""Test stand-in for ``comfy.model_management``: CPU device, recorded loads, the interrupt flag."""

from __future__ import annotations

import threading
from typing import Any

import torch

#: Every list of ModelPatchers passed to load_models_gpu, in order (tests read it).
LOADED: list[list[Any]] = []
#: The force_full_load argument of each of those calls.
FULL_LOADS: list[bool] = []

_interrupt_lock = threading.RLock()
_interrupt_processing = False


class InterruptProcessingException(BaseException):  # BaseException in current ComfyUI, Exception in 0.3.6x
    pass


def get_torch_device() -> torch.device:
    return torch.device("cpu")


def unet_offload_device() -> torch.device:
    return torch.device("cpu")


def intermediate_device() -> torch.device:
    return torch.device("cpu")


def load_models_gpu(
    models: list[Any],
    memory_required: int = 0,
    force_patch_weights: bool = False,
    minimum_memory_required: int | None = None,
    force_full_load: bool = False,
) -> None:
    LOADED.append(list(models))
    FULL_LOADS.append(force_full_load)
    for patcher in models:
        patcher.model.to(patcher.load_device)


def interrupt_current_processing(value: bool = True) -> None:
    global _interrupt_processing
    with _interrupt_lock:
        _interrupt_processing = value


def processing_interrupted() -> bool:
    with _interrupt_lock:
        return _interrupt_processing


def throw_exception_if_processing_interrupted() -> None:
    global _interrupt_processing
    with _interrupt_lock:
        if _interrupt_processing:
            _interrupt_processing = False
            raise InterruptProcessingException()
