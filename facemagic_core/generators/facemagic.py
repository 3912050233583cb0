"""The FaceMagic style-delta injection generator.

Layout (S = ``cfg.image_size``, n = ``cfg.num_downsamples``, c_i = channels of level i)::

    image (B, 3, S, S) in [-1, 1]
      -> stem conv -> encoder: n x [ResBlock (kept as skip i) -> stride-2 conv]  -> ResBlock bottleneck (S / 2**n)
      -> scale 0: Style Mix Blocks (coarse)  -> concat effective identity (B, D, s, s) -> 1x1 conv
      -> scale k = 1..n: bilinear x2 + conv, concat skip of the same size + 1x1 conv, ResBlock,
                         Style Mix Blocks of scale k (finer and finer)
      -> to_rgb: conv -> tanh -> (x + 1) / 2 = (B, 3, S, S) in [0, 1];  mask: conv -> sigmoid (B, 1, S, S)

Style Mix Block l (see :class:`StyleMixBlock`) applies the style *delta* of DESIGN.md: with
``(mu_l, log_sigma_l) = mlp_l(G)``, ``mu(h)`` the per-channel spatial mean of its input ``h``,
``G_src,l`` its identity and ``w_l`` its strength::

    mu_diff        = w_l * (mu_l(G_src,l)        - mu_l(G_tgt))
    log_sigma_diff = w_l * (log_sigma_l(G_src,l) - log_sigma_l(G_tgt))
    h'             = exp(log_sigma_diff) * (h - mu(h)) + mu(h) + mu_diff

so a block is exactly the identity map when ``G_src,l == G_tgt`` or ``w_l == 0``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import Arch, GeneratorConfig
from .network import SwapGenerator, effective_identity


def _groups(channels: int) -> int:
    """GroupNorm groups: up to 32, dividing ``channels``."""
    return math.gcd(channels, 32)


class ResBlock(nn.Module):
    """Pre-activation residual block: GroupNorm, LeakyReLU, 3x3 conv, twice; (B, C, H, W) -> (B, C, H, W)."""

    def __init__(
        self, channels: int, *, slope: float, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.norm1 = nn.GroupNorm(_groups(channels), channels, **kw)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, **kw)
        self.norm2 = nn.GroupNorm(_groups(channels), channels, **kw)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, **kw)
        self.slope = slope

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv1(F.leaky_relu(self.norm1(x), self.slope))
        y = self.conv2(F.leaky_relu(self.norm2(y), self.slope))
        out: Tensor = x + y
        return out


class StyleMLP(nn.Module):
    """Identity embedding (B, D) -> style (B, 2C): ``mu_l`` in the first C numbers, ``log_sigma_l`` in the last C."""

    def __init__(
        self,
        id_dim: int,
        channels: int,
        hidden: int,
        *,
        slope: float,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        width = hidden or id_dim
        self.fc1 = nn.Linear(id_dim, width, **kw) if hidden else nn.Identity()
        self.fc2 = nn.Linear(width, 2 * channels, **kw)
        self.slope = slope

    def forward(self, identity: Tensor) -> Tensor:
        hidden = self.fc1(identity)
        if isinstance(self.fc1, nn.Linear):
            hidden = F.leaky_relu(hidden, self.slope)
        out: Tensor = self.fc2(hidden)
        return out


class StyleMixBlock(nn.Module):
    """Inject the style delta of one identity into a feature map: (B, C, H, W) -> (B, C, H, W).

    The block computes the *increment* ``d = h' - h = (exp(log_sigma_diff) - 1) * (h - mu(h)) + mu_diff``
    (the DESIGN.md formula rearranged so that no ``- mu(h) + mu(h)`` round trip touches h) and returns
    ``h + d + refine(d)``, where ``refine`` is two bias-free 3x3 convolutions (zero padding)
    around a LeakyReLU. It is exactly neutral, bit for bit, when the delta is:

    - ``G_src == G_tgt``: the style MLP runs twice on the same ``(B, D)`` shape and the same
      values, so ``mlp(G_src) - mlp(G_tgt)`` is 0; rows whose source equals their target are
      also masked to an exact 0, so this does not depend on the matmul kernels giving
      bit-identical results for the two calls (e.g. for inputs of different memory layouts);
    - ``w == 0``: ``0 * finite`` is exactly 0.

    Then ``exp(0) - 1 = 0`` exactly in floating point, so ``d`` is exactly 0; a bias-free
    convolution of zeros is zero and ``LeakyReLU(0) = 0``, so ``refine(d)`` is 0; and
    ``h + 0 == h``. Any learned bias or
    a refinement fed with ``h`` instead of ``d`` would break this, which is why the refinement
    only ever sees the increment: it shapes *how* a style change spreads spatially, never
    changes a face that gets no change.
    """

    def __init__(
        self,
        channels: int,
        cfg: GeneratorConfig,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.style = StyleMLP(cfg.id_dim, channels, cfg.style_hidden, slope=cfg.negative_slope, **kw)
        self.refine1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False, **kw) if cfg.refine else None
        self.refine2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False, **kw) if cfg.refine else None
        self.slope = cfg.negative_slope
        self.replace = cfg.injection == "replace"
        self.eps = cfg.norm_eps

    def forward(self, h: Tensor, source: Tensor, target: Tensor, strength: Tensor) -> Tensor:
        """``source``/``target``: (B, D) identities; ``strength``: (B,) weight ``w_l``."""
        if self.replace:
            return self._forward_replace(h, source, target, strength)
        delta = (self.style(source) - self.style(target)) * strength.to(h.dtype).unsqueeze(1)
        # same person: force the delta to exact zero whatever the matmul kernels did with the two calls
        delta = delta.masked_fill((source == target).all(dim=1, keepdim=True), 0.0)
        mu_diff, log_sigma_diff = delta[:, :, None, None].chunk(2, dim=1)
        mean = h.mean(dim=(2, 3), keepdim=True)
        increment = (torch.exp(log_sigma_diff) - 1) * (h - mean) + mu_diff
        return self._finish(h, increment)

    def _forward_replace(self, h: Tensor, source: Tensor, target: Tensor, strength: Tensor) -> Tensor:
        """Plain AdaIN (the ablation baseline, ``cfg.injection == "replace"``): the features are normalised and
        take the style of the effective identity, ``normalize(lerp(G_tgt, G_src, w))``, outright; never neutral."""
        identity = effective_identity(source[:, None], target, strength[:, None])[:, 0]
        mu_style, log_sigma_style = self.style(identity)[:, :, None, None].chunk(2, dim=1)
        mean = h.mean(dim=(2, 3), keepdim=True)
        std = (h.var(dim=(2, 3), keepdim=True, unbiased=False) + self.eps).sqrt()
        replaced = torch.exp(log_sigma_style) * (h - mean) / std + mu_style
        return self._finish(h, replaced - h)

    def _finish(self, h: Tensor, increment: Tensor) -> Tensor:
        """``h + d + refine(d)`` for the increment ``d`` (see the class docstring)."""
        if self.refine1 is not None and self.refine2 is not None:
            increment = increment + self.refine2(F.leaky_relu(self.refine1(increment), self.slope))
        out: Tensor = h + increment
        return out


class EncoderLevel(nn.Module):
    """One encoder level: ResBlock at its resolution (its output is the skip), then a stride-2 conv."""

    def __init__(
        self,
        channels: int,
        out_channels: int,
        *,
        slope: float,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.res = ResBlock(channels, slope=slope, device=device, dtype=dtype)
        self.down = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1, device=device, dtype=dtype)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Returns the skip feature (B, C, H, W) and the downsampled one (B, C', H / 2, W / 2)."""
        skip = self.res(x)
        return skip, self.down(skip)


class DecoderLevel(nn.Module):
    """One decoder level: bilinear x2 + 3x3 conv, optional skip concat + 1x1 fuse, ResBlock."""

    def __init__(
        self,
        channels: int,
        out_channels: int,
        *,
        skip: bool,
        slope: float,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.up = nn.Conv2d(channels, out_channels, 3, padding=1, **kw)
        self.fuse = nn.Conv2d(2 * out_channels, out_channels, 1, **kw) if skip else None
        self.res = ResBlock(out_channels, slope=slope, **kw)
        self.slope = slope

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """``x (B, C, h, w)``, the encoder's ``skip (B, C', 2h, 2w)`` (unused without skips) -> (B, C', 2h, 2w)."""
        x = F.leaky_relu(self.up(F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)), self.slope)
        if self.fuse is not None:
            x = self.fuse(torch.cat([x, skip], dim=1))
        out: Tensor = self.res(x)
        return out


class FaceMagicGenerator(SwapGenerator):
    """Style-delta injection generator (see the module docstring for the layout).

    ``forward(image, source, target, strength)``: image ``(B, 3, S, S)`` in [-1, 1] (or [0, 1]
    per ``cfg.value_range``), source ``(B, K, D)``, target ``(B, D)``, strength ``(B, K)``;
    returns RGB ``(B, 3, S, S)`` in [0, 1] and the mask ``(B, 1, S, S)`` (or ``None``).

    The identity concatenated before the decoder is the *effective* identity of the last
    coarse block k: ``normalize(lerp(G_tgt, G_src,k, w_k))``; the target's own identity when
    its strength is 0, so that the decoder sees the same person the coarse blocks injected.
    """

    arch: ClassVar[Arch] = "facemagic"

    def __init__(
        self, cfg: GeneratorConfig, *, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> None:
        super().__init__(cfg)
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        levels = cfg.num_downsamples
        channels = [cfg.level_channels(level) for level in range(levels + 1)]
        self.stem = nn.Conv2d(3, channels[0], 3, padding=1, **kw)
        self.encoder = nn.ModuleList(
            EncoderLevel(channels[i], channels[i + 1], slope=cfg.negative_slope, **kw) for i in range(levels)
        )
        self.bottleneck = ResBlock(channels[levels], slope=cfg.negative_slope, **kw)
        # block k lives at scale block_scales[k]; scale s has the channels of encoder level n - s
        self.blocks = nn.ModuleList(StyleMixBlock(channels[levels - s], cfg, **kw) for s in cfg.block_scales())
        self.id_fuse = nn.Conv2d(channels[levels] + cfg.id_dim, channels[levels], 1, **kw) if cfg.id_concat else None
        self.decoder = nn.ModuleList(
            DecoderLevel(channels[i + 1], channels[i], skip=cfg.skips, slope=cfg.negative_slope, **kw)
            for i in reversed(range(levels))
        )
        self.to_rgb = nn.Conv2d(channels[0], 3, 3, padding=1, **kw)
        self.to_mask = nn.Conv2d(channels[0], 1, 3, padding=1, **kw) if cfg.mask_head else None
        # which block's effective identity is concatenated before the decoder: the last coarse one
        self.concat_block = max(cfg.blocks_per_scale[0] - 1, 0)

    def _inject(self, x: Tensor, scale: int, source: Tensor, target: Tensor, strength: Tensor) -> Tensor:
        """Run the Style Mix Blocks of ``scale`` in order."""
        first = sum(self.cfg.blocks_per_scale[:scale])
        count = self.cfg.blocks_per_scale[scale] if scale < len(self.cfg.blocks_per_scale) else 0
        for k in range(first, first + count):
            x = self.blocks[k](x, source[:, k], target, strength[:, k])
        return x

    def forward(self, image: Tensor, source: Tensor, target: Tensor, strength: Tensor) -> tuple[Tensor, Tensor | None]:
        x = self.stem(image)
        skips = []
        for level in self.encoder:
            skip, x = level(x)
            skips.append(skip)
        x = self.bottleneck(x)

        x = self._inject(x, 0, source, target, strength)
        if self.id_fuse is not None:
            k = self.concat_block
            identity = effective_identity(source[:, k : k + 1], target, strength[:, k : k + 1])[:, 0]
            identity_map = identity[:, :, None, None].to(x.dtype).expand(-1, -1, x.shape[2], x.shape[3])
            x = self.id_fuse(torch.cat([x, identity_map], dim=1))

        for scale, level in enumerate(self.decoder, start=1):
            x = level(x, skips[-scale])
            x = self._inject(x, scale, source, target, strength)

        x = F.leaky_relu(x, self.cfg.negative_slope)
        rgb = (torch.tanh(self.to_rgb(x)) + 1) / 2
        mask = torch.sigmoid(self.to_mask(x)) if self.to_mask is not None else None
        return rgb, mask
