"""The loss terms of FaceMagic training. Each returns a scalar float32 tensor (0 for an empty selection).

Notation: B faces, K blocks, D embedding size; ``result`` and ``target`` are ``(B, 3, S, S)``
images in [0, 1]; identities are L2-normalised.

- reconstruction: L1 and ``1 - SSIM`` between result and target, on the same-image rows
  (where source == target and the Style Mix Blocks are exactly neutral).
- identity: ``1 - cos(ArcFace(result), G_src,k)`` averaged over the K blocks, so a face whose
  coarse blocks got person A and fine blocks person B is pulled towards each in proportion to
  the number of blocks it got from them.
- relative identity (defined here): with ``s = mean_k cos(G_src,k, G_tgt)`` the similarity of
  source and target *before* the swap and ``r = cos(ArcFace(result), G_tgt)`` the similarity
  of the result to the target *after* it, ``|r - s|`` ("absolute") or ``max(0, r - s)``
  ("hinge"). A swap should leave the result exactly as far from the target as the source
  is: a look-alike source (high ``s``) may stay close, an unrelated source must not collapse
  back into the target, which is the failure the plain identity loss tolerates for
  look-alike pairs. The hinge only penalises results closer to the target than the source.
- landmark: mean L1 distance of the result's landmarks to the target's, in units of the
  landmark model's input side (pose and expression must stay the target's).
- adversarial: hinge losses of a multi-scale discriminator, and feature matching (L1 between
  the discriminator's features of result and target).
- mask: binary cross-entropy between the generator's mask and a soft face ellipse.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

#: SSIM constants for images in [0, 1] (Wang et al. 2004: K1 = 0.01, K2 = 0.03, L = 1).
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2


def _zero(reference: Tensor) -> Tensor:
    return reference.new_zeros((), dtype=torch.float32)


def _gaussian_window(size: int, sigma: float, device: torch.device) -> Tensor:
    coordinates = torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2
    weights = torch.exp(-(coordinates**2) / (2 * sigma**2))
    return weights / weights.sum()


def ssim(a: Tensor, b: Tensor, *, window: int = 11, sigma: float = 1.5) -> Tensor:
    """Mean structural similarity of two ``(B, C, H, W)`` batches in [0, 1], per image: ``(B,)``.

    Gaussian window (separable), valid region only; the window shrinks to the image for
    images smaller than it.
    """
    a = a.float()
    b = b.float()
    size = min(window, a.shape[-1], a.shape[-2])
    size = size if size % 2 else size - 1
    kernel = _gaussian_window(max(size, 1), sigma * size / window, a.device)
    channels = a.shape[1]
    horizontal = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    vertical = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)

    def blur(x: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(x, horizontal, groups=channels), vertical, groups=channels)

    mean_a, mean_b = blur(a), blur(b)
    var_a = blur(a * a) - mean_a**2
    var_b = blur(b * b) - mean_b**2
    covariance = blur(a * b) - mean_a * mean_b
    numerator = (2 * mean_a * mean_b + SSIM_C1) * (2 * covariance + SSIM_C2)
    denominator = (mean_a**2 + mean_b**2 + SSIM_C1) * (var_a + var_b + SSIM_C2)
    return (numerator / denominator).mean(dim=(1, 2, 3))


def l1_loss(result: Tensor, target: Tensor, rows: Tensor | None = None) -> Tensor:
    """Mean absolute difference over the selected rows (all rows when ``rows`` is None)."""
    if rows is not None:
        if not bool(rows.any()):
            return _zero(result)
        result, target = result[rows], target[rows]
    return (result.float() - target.float()).abs().mean()


def structural_loss(result: Tensor, target: Tensor, rows: Tensor | None = None) -> Tensor:
    """``1 - SSIM`` averaged over the selected rows."""
    if rows is not None:
        if not bool(rows.any()):
            return _zero(result)
        result, target = result[rows], target[rows]
    return (1.0 - ssim(result, target)).mean()


def identity_loss(result_identity: Tensor, source_identity: Tensor) -> Tensor:
    """``mean_b mean_k (1 - cos(result_b, source_b,k))``: result ``(B, D)``, sources ``(B, K, D)``."""
    cosine = (result_identity.float()[:, None, :] * source_identity.float()).sum(-1)  # (B, K)
    return (1.0 - cosine).mean()


def relative_identity_loss(
    result_identity: Tensor,
    source_identity: Tensor,
    target_identity: Tensor,
    rows: Tensor | None = None,
    *,
    mode: str = "absolute",
) -> Tensor:
    """Relative identity loss (see the module docstring); rows: the swap rows."""
    if rows is not None:
        if not bool(rows.any()):
            return _zero(result_identity)
        result_identity, source_identity, target_identity = (
            result_identity[rows],
            source_identity[rows],
            target_identity[rows],
        )
    before = (source_identity.float() * target_identity.float()[:, None, :]).sum(-1).mean(-1)  # (B,)
    after = (result_identity.float() * target_identity.float()).sum(-1)
    gap = after - before
    return (gap.clamp(min=0.0) if mode == "hinge" else gap.abs()).mean()


def landmark_loss(result_points: Tensor, target_points: Tensor) -> Tensor:
    """Mean L1 distance between ``(B, N, 2)`` landmark sets (any unit; the teacher gives input-side units)."""
    if result_points.numel() == 0:
        return _zero(result_points)
    return (result_points.float() - target_points.float()).abs().mean()


def discriminator_hinge_loss(real_logits: list[Tensor], fake_logits: list[Tensor]) -> Tensor:
    """``mean(relu(1 - D(real))) + mean(relu(1 + D(fake)))``, averaged over scales."""
    total = _zero(real_logits[0])
    for real, fake in zip(real_logits, fake_logits, strict=True):
        total = total + F.relu(1.0 - real.float()).mean() + F.relu(1.0 + fake.float()).mean()
    return total / len(real_logits)


def generator_hinge_loss(fake_logits: list[Tensor]) -> Tensor:
    """``-mean(D(fake))``, averaged over scales."""
    return torch.stack([-logits.float().mean() for logits in fake_logits]).mean()


def feature_matching_loss(fake_features: list[list[Tensor]], real_features: list[list[Tensor]]) -> Tensor:
    """L1 between the discriminator's intermediate features of fake and real images (logits excluded)."""
    terms = [
        (fake.float() - real.detach().float()).abs().mean()
        for fake_scale, real_scale in zip(fake_features, real_features, strict=True)
        for fake, real in zip(fake_scale[:-1], real_scale[:-1], strict=True)
    ]
    return torch.stack(terms).mean() if terms else _zero(fake_features[0][0])


def mask_loss(mask: Tensor, reference: Tensor) -> Tensor:
    """Binary cross-entropy of a ``(B, 1, S, S)`` mask in (0, 1) against a soft reference mask."""
    clamped = mask.float().clamp(1e-6, 1 - 1e-6)  # written out: F.binary_cross_entropy refuses autocast regions
    label = reference.float().expand_as(clamped)
    return -(label * clamped.log() + (1 - label) * (1 - clamped).log()).mean()
