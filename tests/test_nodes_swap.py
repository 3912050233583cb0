"""The swap nodes (Swap, Pose Check, Blend, all-in-one) on tiny models, through the ComfyUI stand-in."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
import torch
from comfy_stub.samples import comfy_image, random_identity

from facemagic_core.analysis import FaceAnalyzer
from facemagic_core.errors import IncompatibleIdentityError, NoFaceError
from facemagic_core.pipeline import DEFAULT_CHUNK_SIZE
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
ALL_IN_ONE_SETTINGS = {
    **{key: value for key, value in SWAP_SETTINGS.items() if key != "weave"},
    **{key: value for key, value in BLEND_SETTINGS.items() if key not in ("generator_mask", "poisson")},
}
ALL_IN_ONE_DEFAULTS = {**ALL_IN_ONE_SETTINGS, "pose_check": False, "pose_policy": "keep", "no_face": "error"}
POSE_SETTINGS = {"max_yaw_diff": 10.0, "max_pitch_diff": 10.0, "max_roll_diff": 8.0, "max_nme": 0.05}


@pytest.fixture(scope="module")
def target() -> torch.Tensor:
    """Two target pictures, each with one "face"."""
    return torch.cat([comfy_image([(5, 5, 255)]), comfy_image([(4, 5, 230)])])


@pytest.fixture(scope="module")
def swapped(nodes: dict[str, Any], generator: Any, analyzer: FaceAnalyzer, target: torch.Tensor, identity_b: Identity):
    return nodes["FaceMagicSwap"].run(
        images=target, identity=identity_b, generator=generator, analyzer=analyzer, no_face="error", **SWAP_SETTINGS
    )


def test_swap_gives_swap_data_and_the_swapped_crops(swapped: Any, target: torch.Tensor) -> None:
    data, crops = swapped.args
    assert data.num_faces == 2 and data.frames_without_face == ()
    assert crops.shape == (2, 64, 64, 3) and crops.dtype == torch.float32  # the tiny generator's 64 px crops
    assert float(crops.min()) >= 0.0 and float(crops.max()) <= 1.0
    assert data.images is target  # the target IMAGE is kept, not copied
    assert data.chunks[0].batch.crops.device.type == "cpu"  # parked on the CPU between nodes


def test_blend_pastes_back_inside_the_mask_only(nodes: dict[str, Any], swapped: Any, target: torch.Tensor) -> None:
    images, mask = nodes["FaceMagicBlend"].run(swap=swapped[0], **BLEND_SETTINGS).args
    assert images.shape == target.shape and mask.shape == target.shape[:3]
    outside = mask == 0
    assert bool(outside.any()) and bool((mask > 0.5).any())
    assert torch.equal(images[outside], target[outside])  # untouched pixels are bit for bit the input
    assert float((images - target).abs().amax(dim=-1)[mask > 0.5].mean()) > 1e-3  # the face changed


def test_blend_limit_mask_keeps_the_face_where_it_is_zero(
    nodes: dict[str, Any], swapped: Any, target: torch.Tensor
) -> None:
    nothing = torch.zeros(1, 320, 320)
    images, mask = nodes["FaceMagicBlend"].run(swap=swapped[0], mask_input=nothing, **BLEND_SETTINGS).args
    assert float(mask.max()) == 0.0 and torch.equal(images, target)


def test_blend_limit_mask_of_another_size_is_resized_to_the_frames(
    nodes: dict[str, Any], swapped: Any, target: torch.Tensor
) -> None:
    """Masks come in other sizes (Load Image gives a 64 x 64 one for a picture without alpha): resized, as in core."""
    blend = nodes["FaceMagicBlend"]
    free, free_mask = blend.run(swap=swapped[0], **BLEND_SETTINGS).args
    everywhere, everywhere_mask = blend.run(swap=swapped[0], mask_input=torch.ones(1, 64, 64), **BLEND_SETTINGS).args
    assert torch.equal(everywhere, free) and torch.equal(everywhere_mask, free_mask)
    left = torch.zeros(1, 40, 40)
    left[..., :20] = 1
    images, mask = blend.run(swap=swapped[0], mask_input=left, **BLEND_SETTINGS).args
    right = slice(176, None)  # clear of the stretched edge at x = 160 and the warps' bilinear spread
    assert float(mask[..., right].max()) == 0.0 and torch.equal(images[..., right, :], target[..., right, :])
    assert float(mask[..., :144].max()) > 0.5


def test_pose_check_reports_every_face_and_draws_the_debug_image(
    nodes: dict[str, Any], swapped: Any, target: torch.Tensor
) -> None:
    output = nodes["FaceMagicPoseCheck"].run(swap=swapped[0], policy="original", **POSE_SETTINGS)
    data, report, debug = output.args
    reports = data.pose_reports()
    assert [r.image_index for r in reports] == [0, 1]
    assert report.splitlines()[-1] == f"{sum(r.passed for r in reports)} of 2 faces passed"
    assert debug.shape == target.shape and not torch.equal(debug, target)  # landmarks drawn
    assert output.ui["text"] == [report]
    assert output.ui["facemagic_pose"] == [{"faces": 2, "failed": sum(not r.passed for r in reports)}]
    assert swapped[0].chunks[0].pose is None  # the input SwapData is not modified
    assert torch.equal(target, torch.cat([comfy_image([(5, 5, 255)]), comfy_image([(4, 5, 230)])]))  # nor the IMAGE
    # policy "original": failed faces are left as they were by the blend
    images, _ = nodes["FaceMagicBlend"].run(swap=data, **BLEND_SETTINGS).args
    for frame, result in enumerate(reports):
        if not result.passed:
            assert torch.equal(images[frame], target[frame])


def test_swap_without_a_face_names_the_frame_or_passes_it(
    nodes: dict[str, Any], generator: Any, analyzer: FaceAnalyzer, target: torch.Tensor, identity_b: Identity
) -> None:
    frames = torch.cat([target[:1], comfy_image([])])
    swap = nodes["FaceMagicSwap"]
    with pytest.raises(NoFaceError, match="frame 2 of 2"):
        swap.run(
            images=frames, identity=identity_b, generator=generator, analyzer=analyzer, no_face="error", **SWAP_SETTINGS
        )
    data = swap.run(
        images=frames, identity=identity_b, generator=generator, analyzer=analyzer, no_face="pass", **SWAP_SETTINGS
    )[0]
    assert data.frames_without_face == (1,) and data.num_faces == 1
    images, mask = nodes["FaceMagicBlend"].run(swap=data, **BLEND_SETTINGS).args
    assert torch.equal(images[1], frames[1]) and float(mask[1].max()) == 0.0


def test_swap_refuses_an_identity_of_another_recogniser(
    nodes: dict[str, Any], generator: Any, analyzer: FaceAnalyzer, target: torch.Tensor
) -> None:
    with pytest.raises(IncompatibleIdentityError, match="recogniser"):
        nodes["FaceMagicSwap"].run(
            images=target,
            identity=random_identity(3, model="arcface_glintr100"),
            generator=generator,
            analyzer=analyzer,
            no_face="error",
            **SWAP_SETTINGS,
        )


def test_long_batches_go_in_chunks_with_progress_and_stop_on_cancel(
    nodes: dict[str, Any], generator: Any, analyzer: FaceAnalyzer, identity_b: Identity
) -> None:
    import comfy.model_management as model_management
    import comfy.utils

    frames = comfy_image([(2, 2, 255)], size=160).repeat(DEFAULT_CHUNK_SIZE + 2, 1, 1, 1)
    comfy.utils.PROGRESS_UPDATES.clear()
    data = nodes["FaceMagicSwap"].run(
        images=frames, identity=identity_b, generator=generator, analyzer=analyzer, no_face="error", **SWAP_SETTINGS
    )[0]
    assert [chunk.start for chunk in data.chunks] == [0, DEFAULT_CHUNK_SIZE]
    assert [update[1:] for update in comfy.utils.PROGRESS_UPDATES] == [
        (DEFAULT_CHUNK_SIZE, DEFAULT_CHUNK_SIZE + 2),
        (DEFAULT_CHUNK_SIZE + 2, DEFAULT_CHUNK_SIZE + 2),
    ]
    images, _ = nodes["FaceMagicBlend"].run(swap=data, **BLEND_SETTINGS).args
    assert images.shape[0] == DEFAULT_CHUNK_SIZE + 2
    torch.testing.assert_close(images[0], images[-1])  # the same frame gives the same result in every chunk
    model_management.interrupt_current_processing(True)
    with pytest.raises(model_management.InterruptProcessingException):
        nodes["FaceMagicBlend"].run(swap=data, **BLEND_SETTINGS)


def test_all_in_one_goes_through_long_batches_in_chunks_like_the_modular_nodes(
    nodes: dict[str, Any], generator: Any, analyzer: FaceAnalyzer, identity_b: Identity
) -> None:
    import comfy.model_management as model_management
    import comfy.utils

    frames = torch.cat([comfy_image([(2, 2, 255)], size=160), comfy_image([(2, 3, 240)], size=160)])
    frames = frames.repeat(DEFAULT_CHUNK_SIZE // 2 + 1, 1, 1, 1)  # two chunks
    before = frames.clone()
    settings = {"images": frames, "identity": identity_b, "generator": generator, "analyzer": analyzer}
    comfy.utils.PROGRESS_UPDATES.clear()
    images, mask, report = nodes["FaceMagicSwapFaces"].run(**settings, **ALL_IN_ONE_DEFAULTS).args
    total = DEFAULT_CHUNK_SIZE + 2
    assert [update[1:] for update in comfy.utils.PROGRESS_UPDATES] == [(DEFAULT_CHUNK_SIZE, total), (total, total)]
    assert torch.equal(frames, before)  # the target IMAGE is read, never written
    assert images.shape == frames.shape and images.is_contiguous() and images.data_ptr() != frames.data_ptr()
    assert mask.shape == frames.shape[:3] and report.startswith(f"{total} face(s) swapped in {total} frame(s)")
    data = nodes["FaceMagicSwap"].run(**settings, no_face="error", **SWAP_SETTINGS)[0]
    modular, modular_mask = nodes["FaceMagicBlend"].run(swap=data, **BLEND_SETTINGS).args
    torch.testing.assert_close(images, modular, atol=2e-5, rtol=0)
    torch.testing.assert_close(mask, modular_mask, atol=2e-5, rtol=0)
    model_management.interrupt_current_processing(True)
    with pytest.raises(model_management.InterruptProcessingException):
        nodes["FaceMagicSwapFaces"].run(**settings, **ALL_IN_ONE_DEFAULTS)


class RunsOutOfMemory:
    """A swap model that runs out of memory on more than ``most`` faces at once (as a small GPU would)."""

    def __init__(self, model: Any, most: int) -> None:
        self.model, self.most, self.failures = model, most, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def swap(self, crops: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if crops.shape[0] > self.most:
            self.failures += 1
            raise torch.OutOfMemoryError("CUDA out of memory (test)")
        return self.model.swap(crops, *args, **kwargs)


def test_all_in_one_keeps_the_smaller_chunk_after_running_out_of_memory(
    nodes: dict[str, Any], generator: Any, analyzer: FaceAnalyzer, identity_b: Identity
) -> None:
    flaky = RunsOutOfMemory(generator.model, most=2)
    handle = dataclasses.replace(generator, model=flaky, patcher=None)
    frames = comfy_image([(2, 2, 255)], size=160).repeat(2 * DEFAULT_CHUNK_SIZE + 2, 1, 1, 1)
    inputs = {"images": frames, "identity": identity_b, "generator": handle, "analyzer": analyzer}
    images = nodes["FaceMagicSwapFaces"].run(**inputs, **ALL_IN_ONE_DEFAULTS)[0]
    assert flaky.failures == 2  # 8 -> 4 -> 2 frames once, then every later chunk goes 2 by 2
    torch.testing.assert_close(images[0], images[-1])


def test_all_in_one_matches_the_modular_nodes(
    nodes: dict[str, Any],
    generator: Any,
    analyzer: FaceAnalyzer,
    target: torch.Tensor,
    identity_b: Identity,
    swapped: Any,
) -> None:
    inputs = {"images": target, "identity": identity_b, "generator": generator, "analyzer": analyzer}
    output = nodes["FaceMagicSwapFaces"].run(**inputs, **{**ALL_IN_ONE_DEFAULTS, "pose_check": True})
    images, mask, report = output.args
    modular, modular_mask = nodes["FaceMagicBlend"].run(swap=swapped[0], **BLEND_SETTINGS).args
    torch.testing.assert_close(images, modular, atol=2e-5, rtol=0)
    torch.testing.assert_close(mask, modular_mask, atol=2e-5, rtol=0)
    assert report.startswith("2 face(s) swapped in 2 frame(s) with tiny_native")
    assert "of 2 faces passed" in report and output.ui["text"] == [report]


def test_strength_zero_injects_nothing_and_minus_one_swaps_every_face(
    nodes: dict[str, Any],
    generator: Any,
    analyzer: FaceAnalyzer,
    target: torch.Tensor,
    identity_a: Identity,
    identity_b: Identity,
) -> None:
    swap = nodes["FaceMagicSwap"]
    settings = {"images": target[:1], "generator": generator, "analyzer": analyzer, "no_face": "error"}
    nothing = swap.run(identity=identity_b, **settings, **{**SWAP_SETTINGS, "strength": 0.0})[1]
    itself = swap.run(identity=identity_a, **settings, **SWAP_SETTINGS)[1]  # target[0] is person A
    other = swap.run(identity=identity_b, **settings, **SWAP_SETTINGS)[1]
    torch.testing.assert_close(nothing, itself, atol=1e-5, rtol=0)  # strength 0 = the face's own identity
    assert float((other - itself).abs().max()) > 1e-3

    two_faces = comfy_image([(3, 5, 255), (8, 5, 240)])
    settings["images"] = two_faces
    every = swap.run(identity=identity_b, **settings, **{**SWAP_SETTINGS, "face_index": -1})[0]
    assert every.num_faces == 2
    reference = swap.run(identity=identity_b, reference=identity_b, **settings, **SWAP_SETTINGS)[0]
    assert reference.num_faces == 1


def test_swap_refuses_an_analyzer_of_another_recogniser(
    nodes: dict[str, Any], generator: Any, analyzer: FaceAnalyzer, target: torch.Tensor, identity_b: Identity
) -> None:
    other = copy.copy(analyzer)  # the same models, said to embed another recogniser's space
    other.embedding_model = "arcface_glintr100"
    with pytest.raises(IncompatibleIdentityError, match="analyzer's recogniser"):
        nodes["FaceMagicSwap"].run(
            images=target, identity=identity_b, generator=generator, analyzer=other, no_face="error", **SWAP_SETTINGS
        )


def test_blend_hull_mask_works_after_the_modular_swap_and_matches_the_all_in_one(
    nodes: dict[str, Any],
    generator: Any,
    analyzer: FaceAnalyzer,
    target: torch.Tensor,
    identity_b: Identity,
    swapped: Any,
) -> None:
    """The hull mask needs the dense landmarks: the Swap node computes them (Blend's mask is chosen later)."""
    assert analyzer.has_dense_landmarks  # the buffalo_l pack, whose hull mask the error message recommends
    settings = {**BLEND_SETTINGS, "mask": "hull"}
    images, mask = nodes["FaceMagicBlend"].run(swap=swapped[0], **settings).args
    assert images.shape == target.shape and mask.shape == target.shape[:3] and float(mask.max()) > 0.5
    inputs = {"images": target, "identity": identity_b, "generator": generator, "analyzer": analyzer}
    hull = {**ALL_IN_ONE_DEFAULTS, "mask": "hull"}
    all_in_one, all_in_one_mask, _ = nodes["FaceMagicSwapFaces"].run(**inputs, **hull)
    torch.testing.assert_close(images, all_in_one, atol=2e-5, rtol=0)
    torch.testing.assert_close(mask, all_in_one_mask, atol=2e-5, rtol=0)


def test_all_in_one_report_counts_frames_the_way_its_error_does(
    nodes: dict[str, Any], generator: Any, analyzer: FaceAnalyzer, target: torch.Tensor, identity_b: Identity
) -> None:
    """The report listed '1' for the second frame, which the no-face error calls 'frame 2 of 3 (index 1)'."""
    frames = torch.cat([target[:1], comfy_image([]), target[1:]])
    inputs = {"images": frames, "identity": identity_b, "generator": generator, "analyzer": analyzer}
    images, mask, report = nodes["FaceMagicSwapFaces"].run(**inputs, **{**ALL_IN_ONE_DEFAULTS, "no_face": "pass"}).args
    assert images.shape == frames.shape and mask.shape == frames.shape[:3]
    assert torch.equal(images[1], frames[1]) and float(mask[1].max()) == 0.0
    assert report.splitlines() == [
        "2 face(s) swapped in 3 frame(s) with tiny_native",
        "1 frame without the face asked for, left unchanged: frame 2 (index 1)",
    ]
