"""The finishing nodes and the crops round trip through Swap -> (any IMAGE node) -> Blend, via the ComfyUI stand-in."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from comfy_stub.samples import comfy_image

from facemagic_core.analysis import FaceAnalyzer
from facemagic_core.errors import BadInputError
from facemagic_core.types import Identity

pytest_plugins = ["comfy_stub.fixtures"]

SWAP_SETTINGS = {"strength": 1.0, "face_order": "largest", "face_index": 0, "weave": 1, "smoothing": 0.0}
BLEND_SETTINGS = {
    "mask": "ellipse",
    "erosion": 0.05,
    "feather": 0.1,
    "colour": "none",
    "generator_mask": True,
    "poisson": False,
}


@pytest.fixture(scope="module")
def target() -> torch.Tensor:
    """Two target pictures, one "face" each."""
    return torch.cat([comfy_image([(5, 5, 255)]), comfy_image([(4, 5, 230)])])


def run_swap(
    nodes: dict[str, Any],
    generator: Any,
    analyzer: FaceAnalyzer,
    target: torch.Tensor,
    identity: Identity,
    **extra: Any,
) -> Any:
    return nodes["FaceMagicSwap"].run(
        images=target,
        identity=identity,
        generator=generator,
        analyzer=analyzer,
        no_face="error",
        **SWAP_SETTINGS,
        **extra,
    )


def upscale(image: torch.Tensor, size: int) -> torch.Tensor:
    """What an upscaler node does to an IMAGE batch (BHWC)."""
    return (
        F.interpolate(image.permute(0, 3, 1, 2), size=(size, size), mode="bicubic", align_corners=False)
        .permute(0, 2, 3, 1)
        .clamp(0, 1)
    )


@pytest.mark.parametrize("crop_output", ["generator", "ffhq_512"])
def test_crops_through_any_image_node_come_back_onto_their_faces(
    nodes: dict[str, Any],
    generator: Any,
    analyzer: FaceAnalyzer,
    target: torch.Tensor,
    identity_b: Identity,
    crop_output: str,
) -> None:
    data, crops = run_swap(nodes, generator, analyzer, target, identity_b, crop_output=crop_output).args
    size = 512 if crop_output == "ffhq_512" else 64
    assert crops.shape == (2, size, size, 3)
    assert data.crops_out is not None and data.crops_out.size == size
    blend = nodes["FaceMagicBlend"]
    plain, plain_mask = blend.run(swap=data, **BLEND_SETTINGS).args
    same, same_mask = blend.run(swap=data, crops=upscale(crops, 2 * size), **BLEND_SETTINGS).args
    # the mask is built in the generator's crop space either way; resampled into the larger crop, its soft edge moves
    # by a fraction of a pixel
    assert float((same_mask - plain_mask).abs().max()) < 0.1 and float((same_mask - plain_mask).abs().mean()) < 2e-3
    inside = plain_mask > 0.5
    assert float((same - plain).abs().amax(dim=-1)[inside].mean()) < 0.03  # an upscaled copy pastes the same face
    outside = same_mask == 0
    assert bool(outside.any()) and torch.equal(same[outside], target[outside])  # bit for bit outside the mask
    # A crop that changed (a "restorer" that brightens) changes the face, and only inside the mask.
    brighter, brighter_mask = blend.run(swap=data, crops=(crops * 0.5 + 0.5), **BLEND_SETTINGS).args
    assert float((brighter - plain).mean(dim=-1)[inside].mean()) > 0.1
    assert torch.equal(brighter[brighter_mask == 0], target[brighter_mask == 0])


def test_blend_says_when_the_crops_do_not_fit(
    nodes: dict[str, Any], generator: Any, analyzer: FaceAnalyzer, target: torch.Tensor, identity_b: Identity
) -> None:
    data, crops = run_swap(nodes, generator, analyzer, target, identity_b, crop_output="ffhq_512").args
    blend = nodes["FaceMagicBlend"]
    with pytest.raises(BadInputError, match="3 crop\\(s\\) came in for the 2 face"):
        blend.run(swap=data, crops=torch.cat([crops, crops[:1]]), **BLEND_SETTINGS)
    with pytest.raises(BadInputError, match="not square"):
        blend.run(swap=data, crops=crops[:, :, :300], **BLEND_SETTINGS)


# ---------------------------------------------------------------------------------------------------------------------
# Restore Faces and Face Mask


def test_restore_faces_then_blend_pastes_the_restored_faces(
    nodes: dict[str, Any], generator: Any, analyzer: FaceAnalyzer, target: torch.Tensor, identity_b: Identity
) -> None:
    data, _ = run_swap(nodes, generator, analyzer, target, identity_b).args
    restorer = nodes["FaceMagicRestorerLoader"].run(model="codeformer", device="cpu")[0]
    assert restorer.name == "codeformer" and restorer.has_fidelity and restorer.input_size == 64
    restored, crops = nodes["FaceMagicRestoreFaces"].run(swap=data, restorer=restorer, weight=1.0, fidelity=0.5).args
    assert crops.shape == (2, 64, 64, 3) and restored.crops_out.template == "ffhq"
    assert all(chunk.finished is not None for chunk in restored.chunks) and data.chunks[0].finished is None
    blend = nodes["FaceMagicBlend"]
    plain, plain_mask = blend.run(swap=data, **BLEND_SETTINGS).args
    images, mask = blend.run(swap=restored, **BLEND_SETTINGS).args
    inside, outside = plain_mask > 0.5, mask == 0
    assert torch.equal(images[outside], target[outside])
    # the tiny restorer halves the contrast around grey, plus 0.3 * fidelity: the faces come out lighter, flatter
    assert float((images - plain).mean(dim=-1)[inside].mean()) > 0.02
    # The restored crops through an IMAGE node into Blend's crops input give the same picture.
    again, _ = blend.run(swap=restored, crops=upscale(crops, 128), **BLEND_SETTINGS).args
    assert float((again - images).abs().amax(dim=-1)[inside].mean()) < 0.03
    none = nodes["FaceMagicRestoreFaces"].run(swap=data, restorer=restorer, weight=0.0, fidelity=0.5)[0]
    untouched, _ = blend.run(swap=none, **BLEND_SETTINGS).args
    assert float((untouched - plain).abs().amax(dim=-1)[inside].mean()) < 0.03  # weight 0: the swap as it was


def test_face_mask_node_gives_a_mask_blend_obeys(
    nodes: dict[str, Any], generator: Any, analyzer: FaceAnalyzer, target: torch.Tensor, identity_b: Identity
) -> None:
    data, _ = run_swap(nodes, generator, analyzer, target, identity_b).args
    occluder = nodes["FaceMagicMaskModelLoader"].run(model="xseg_1", device="cpu")[0]
    parser = nodes["FaceMagicMaskModelLoader"].run(model="bisenet_resnet_34", device="cpu")[0]
    face_mask = nodes["FaceMagicFaceMask"]
    everything = face_mask.run(swap=data, regions="", only="whole face", keep="nothing")[0]
    assert everything.shape == target.shape[:3] and float(everything.min()) == 1.0  # no mask asked for: all 1
    mask = face_mask.run(swap=data, regions="", only="whole face", keep="mouth", occluder=occluder)[0]
    assert float(mask.min()) < 0.05 and float(mask.max()) == 1.0
    images, changed = nodes["FaceMagicBlend"].run(swap=data, mask_input=mask, **BLEND_SETTINGS).args
    assert float((changed - mask).clamp_min(0).max()) == 0.0  # never more than the limit
    assert torch.equal(images[mask == 0], target[mask == 0])
    with pytest.raises(BadInputError, match="face parser input got the occlusion model"):
        face_mask.run(swap=data, regions="", only="whole face", keep="nothing", parser=occluder)
    with pytest.raises(BadInputError, match="regions are named but no face parser"):
        face_mask.run(swap=data, regions="skin", only="whole face", keep="nothing")
    skin = face_mask.run(swap=data, regions="skin, nose", only="whole face", keep="nothing", parser=parser)[0]
    assert skin.shape == target.shape[:3]
