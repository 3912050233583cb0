"""The public inswapper-style generator layout as a native module.

Layout (C = ``cfg.channels``; inswapper_128 has C = 128, S = 128, six blocks, 138.3 M parameters)::

    image (B, 3, S, S) RGB in [0, 1]
      -> reflect-pad 3 + 7x7 conv 3 -> C, 3x3 conv C -> 2C, 3x3 stride-2 conv -> 4C, 3x3 stride-2 conv -> 8C
         (LeakyReLU(0.2) after each; S / 4 at the bottleneck)
      -> K blocks at 8C: x + mod2(norm(conv2(pad(relu(mod1(norm(conv1(pad(x)))))))))
         norm = subtract the spatial mean, divide by the spatial RMS (no learned affine),
         mod_j(y) = y * gamma_j + beta_j with (gamma_j, beta_j) = style_j(latent_k), a Linear(D -> 2 * 8C)
      -> bilinear x2 + 3x3 conv 8C -> 4C, bilinear x2 + 3x3 conv 4C -> 2C, 3x3 conv 2C -> C
         (LeakyReLU after each), reflect-pad 3 + 7x7 conv C -> 3, tanh, (x + 1) / 2  -> (B, 3, S, S) in [0, 1]

No skip connections, no mask. The identity *latent* of block k is ``normalize(e_k) @ emap``
(re-normalised to unit length when ``cfg.latent_renormalize``), where ``emap`` is the
``(D, D)`` matrix stored in the public ONNX file and ``e_k = lerp(G_tgt, G_src,k, w_k)`` is
the effective identity of block k: facefusion's swap strength, per block. Strength 0 feeds
the target's own identity, so the network reconstructs the target's face.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import Arch, GeneratorConfig
from .network import SwapGenerator, effective_identity


def normalize_rms(x: Tensor, eps: float) -> Tensor:
    """Per sample and channel: ``(x - mean) / sqrt(mean((x - mean)**2) + eps)`` over H, W (statistics in fp32)."""
    centred = x.float() - x.float().mean(dim=(2, 3), keepdim=True)
    scale = torch.rsqrt(centred.square().mean(dim=(2, 3), keepdim=True) + eps)
    return (centred * scale).to(x.dtype)


class InswapperBlock(nn.Module):
    """AdaIN-style residual block at the bottleneck: (B, 8C, h, w) and a latent (B, D) -> (B, 8C, h, w)."""

    def __init__(
        self,
        channels: int,
        id_dim: int,
        eps: float,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.conv1 = nn.Conv2d(channels, channels, 3, **kw)
        self.conv2 = nn.Conv2d(channels, channels, 3, **kw)
        self.style1 = nn.Linear(id_dim, 2 * channels, **kw)  # (gamma, beta) of the first modulation
        self.style2 = nn.Linear(id_dim, 2 * channels, **kw)  # (gamma, beta) of the second modulation
        self.eps = eps

    def forward(self, x: Tensor, latent: Tensor) -> Tensor:
        gamma1, beta1 = self.style1(latent)[:, :, None, None].chunk(2, dim=1)
        gamma2, beta2 = self.style2(latent)[:, :, None, None].chunk(2, dim=1)
        y = normalize_rms(self.conv1(F.pad(x, (1, 1, 1, 1), mode="reflect")), self.eps)
        y = F.relu(y * gamma1 + beta1)
        y = normalize_rms(self.conv2(F.pad(y, (1, 1, 1, 1), mode="reflect")), self.eps)
        out: Tensor = x + (y * gamma2 + beta2)
        return out


class InswapperGenerator(SwapGenerator):
    """The inswapper layout (see the module docstring), with per-block identities and strengths.

    ``forward(image, source, target, strength)`` takes the image in [0, 1], identities as
    L2-normalised embeddings (``source (B, K, D)``, ``target (B, D)``), ``strength (B, K)``;
    :meth:`forward_latent` takes ready latents like the public ONNX file does.
    """

    arch: ClassVar[Arch] = "inswapper"
    emap: Tensor

    def __init__(
        self, cfg: GeneratorConfig, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__(cfg)
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        c = cfg.channels
        self.stem = nn.Conv2d(3, c, 7, **kw)
        self.conv1 = nn.Conv2d(c, 2 * c, 3, padding=1, **kw)
        self.down1 = nn.Conv2d(2 * c, 4 * c, 3, stride=2, padding=1, **kw)
        self.down2 = nn.Conv2d(4 * c, 8 * c, 3, stride=2, padding=1, **kw)
        self.blocks = nn.ModuleList(
            InswapperBlock(8 * c, cfg.id_dim, cfg.norm_eps, **kw) for _ in range(cfg.num_blocks)
        )
        self.up1 = nn.Conv2d(8 * c, 4 * c, 3, padding=1, **kw)
        self.up2 = nn.Conv2d(4 * c, 2 * c, 3, padding=1, **kw)
        self.conv2 = nn.Conv2d(2 * c, c, 3, padding=1, **kw)
        self.to_rgb = nn.Conv2d(c, 3, 7, **kw)
        # identity -> latent map of the public file (its last initializer); identity until converted
        emap = torch.empty(cfg.id_dim, cfg.id_dim, **kw)
        self.register_buffer("emap", emap if emap.is_meta else nn.init.eye_(emap))

    def compute_latents(self, source: Tensor, target: Tensor, strength: Tensor) -> Tensor:
        """Per-block latents ``(B, K, D)`` from embeddings: ``normalize(lerp(t, s_k, w_k)) @ emap``."""
        latents = effective_identity(source, target, strength) @ self.emap.to(source.dtype)
        return F.normalize(latents, dim=-1) if self.cfg.latent_renormalize else latents

    def forward(self, image: Tensor, source: Tensor, target: Tensor, strength: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.forward_latent(image, self.compute_latents(source, target, strength)), None

    def forward_latent(self, image: Tensor, latents: Tensor) -> Tensor:
        """``image (B, 3, S, S)`` in [0, 1], ``latents (B, K, D)`` or ``(B, D)`` for all blocks -> (B, 3, S, S)."""
        slope = self.cfg.negative_slope
        if latents.ndim == 2:
            latents = latents.unsqueeze(1).expand(-1, len(self.blocks), -1)
        latents = latents.to(image.dtype)
        x = F.leaky_relu(self.stem(F.pad(image, (3, 3, 3, 3), mode="reflect")), slope)
        x = F.leaky_relu(self.conv1(x), slope)
        x = F.leaky_relu(self.down1(x), slope)
        x = F.leaky_relu(self.down2(x), slope)
        for k, block in enumerate(self.blocks):
            x = block(x, latents[:, k])
        x = F.leaky_relu(self.up1(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)), slope)
        x = F.leaky_relu(self.up2(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)), slope)
        x = F.leaky_relu(self.conv2(x), slope)
        x = self.to_rgb(F.pad(x, (3, 3, 3, 3), mode="reflect"))
        return (torch.tanh(x) + 1) / 2
