"""A small multi-scale PatchGAN discriminator (pix2pixHD-style) for the adversarial loss.

``MultiScaleDiscriminator(images)`` takes ``(B, 3, S, S)`` images in [0, 1] and returns, for
each scale (full size, then halved by average pooling), the list of intermediate features
of that scale's PatchGAN with its ``(B, 1, h, w)`` patch logits last. Layers: a stride-2
4x4 convolution per layer (channels doubling up to ``max_channels``), a 3x3 convolution and
a 3x3 logits convolution; LeakyReLU 0.2; no normalisation layer (no batch statistics, so
results do not depend on how a batch is split).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import BadInputError
from .config import DiscriminatorConfig


class PatchDiscriminator(nn.Module):
    """One scale: ``(B, 3, H, W)`` in [-1, 1] -> features, logits ``(B, 1, H / 2**layers, W / 2**layers)``."""

    def __init__(self, cfg: DiscriminatorConfig, *, device: torch.device | str | None = None) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device}
        widths = [min(cfg.channels << i, cfg.max_channels) for i in range(cfg.layers)]
        self.down = nn.ModuleList(
            nn.Conv2d(3 if i == 0 else widths[i - 1], widths[i], 4, stride=2, padding=1, **kw)
            for i in range(cfg.layers)
        )
        self.body = nn.Conv2d(widths[-1], widths[-1], 3, padding=1, **kw)
        self.logits = nn.Conv2d(widths[-1], 1, 3, padding=1, **kw)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for layer in self.down:
            x = F.leaky_relu(layer(x), 0.2)
            features.append(x)
        x = F.leaky_relu(self.body(x), 0.2)
        features.append(x)
        features.append(self.logits(x))
        return features


class MultiScaleDiscriminator(nn.Module):
    """PatchGANs at ``cfg.scales`` image scales (see the module docstring)."""

    def __init__(self, cfg: DiscriminatorConfig, image_size: int, *, device: torch.device | str | None = None) -> None:
        super().__init__()
        smallest = image_size >> (cfg.scales - 1 + cfg.layers)
        if smallest < 1:
            raise BadInputError(
                f"a {image_size} px image is too small for {cfg.scales} discriminator scales of {cfg.layers} layers",
                where="discriminator config",
                fix="use fewer scales or layers (image_size must be at least 2**(scales - 1 + layers))",
            )
        self.cfg = cfg
        self.scales = nn.ModuleList(PatchDiscriminator(cfg, device=device) for _ in range(cfg.scales))

    def forward(self, images: Tensor) -> list[list[Tensor]]:
        x = images * 2 - 1
        outputs = []
        for number, scale in enumerate(self.scales):
            if number:
                x = F.avg_pool2d(x, 3, stride=2, padding=1, count_include_pad=False)
            outputs.append(scale(x))
        return outputs


def logits_of(outputs: list[list[Tensor]]) -> list[Tensor]:
    """The patch logits of every scale."""
    return [features[-1] for features in outputs]
