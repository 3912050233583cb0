"""Test stand-in for ``comfy.model_patcher``: a ModelPatcher that only knows its devices."""

from __future__ import annotations

from typing import Any

import torch


class ModelPatcher:
    def __init__(
        self,
        model: torch.nn.Module,
        load_device: torch.device,
        offload_device: torch.device,
        size: int = 0,
        weight_inplace_update: bool = False,
        **kwargs: Any,
    ):
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device
        self.size = size or sum(t.nelement() * t.element_size() for t in model.state_dict().values())

    def model_size(self) -> int:
        return self.size

    def detach(self, unpatch_all: bool = True) -> None:
        self.model.to(self.offload_device)
