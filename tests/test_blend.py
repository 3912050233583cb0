"""Face masks, colour matching, batched paste-back, Poisson blending and the insightface-style reference."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from facemagic_core import blend
from facemagic_core.align import invert_affine, transform_points, warp_affine
from facemagic_core.errors import BadInputError
from facemagic_core.images import tensor_to_bgr_uint8

SIZE = 128


def similarity(scale: float, angle: float, tx: float, ty: float) -> list[list[float]]:
    """An image -> crop matrix: rotate by ``angle`` radians, scale, then translate."""
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    return [[c, -s, tx], [s, c, ty]]


def crop_footprint(matrix: torch.Tensor, size: int = SIZE) -> tuple[float, float, float, float]:
    """x0, y0, x1, y1 of the crop's outer corners mapped into the frame."""
    corners = torch.tensor([[[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]]])
    mapped = transform_points(corners.double(), invert_affine(matrix[None].double()))[0]
    return (float(mapped[:, 0].min()), float(mapped[:, 1].min()), float(mapped[:, 0].max()), float(mapped[:, 1].max()))


def textured(height: int, width: int, batch: int = 1, period: float = 9.0) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(height).float(), torch.arange(width).float(), indexing="ij")
    base = torch.stack(
        [
            0.5 + 0.3 * torch.sin(xs * 2 * math.pi / period),
            0.5 + 0.3 * torch.cos(ys * 2 * math.pi / (period * 1.3)),
            0.5 + 0.2 * torch.sin((xs + ys) * 2 * math.pi / (period * 2.1)),
        ]
    )
    return base.expand(batch, 3, height, width).clone()


# ---------------------------------------------------------------------------------------------------------- masks


@pytest.mark.parametrize("kind", ["box", "ellipse", "hull"])
def test_masks_are_soft_bounded_and_zero_at_the_crop_edge(kind: str) -> None:
    landmarks = torch.tensor([[[20.0, 30.0], [108.0, 30.0], [64.0, 125.0], [10.0, 80.0], [118.0, 80.0], [64, 70]]])
    mask = blend.create_face_mask(kind, SIZE, 2, landmarks=landmarks.expand(2, -1, -1))
    assert mask.shape == (2, 1, SIZE, SIZE) and mask.dtype == torch.float32
    assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
    assert float(mask.max()) == pytest.approx(1.0, abs=1e-5)  # a solid core
    border = torch.cat([mask[..., 0, :], mask[..., -1, :], mask[..., :, 0], mask[..., :, -1]], dim=-1)
    assert float(border.abs().max()) == 0.0  # exactly zero on the crop's outer pixels
    assert float(mask[..., :4, :4].max()) == 0.0 and float(mask[..., -4:, -4:].max()) == 0.0  # corners
    soft = ((mask > 0.01) & (mask < 0.99)).sum()
    assert int(soft) > 100  # feathering leaves a soft edge


def test_hull_mask_follows_the_landmarks() -> None:
    square = torch.tensor([[[40.0, 40.0], [90.0, 40.0], [90.0, 90.0], [40.0, 90.0], [65.0, 65.0]]])
    hard = blend.create_face_mask("hull", SIZE, 1, landmarks=square, erosion=0.0, feather=0.0)
    assert float(hard.sum()) == pytest.approx(51 * 51)  # pixel centres 40..90 inclusive
    assert hard[0, 0, 40, 40] == 1.0 and hard[0, 0, 39, 65] == 0.0 and hard[0, 0, 91, 65] == 0.0
    reversed_order = blend.create_face_mask("hull", SIZE, 1, landmarks=square.flip(1), erosion=0.0, feather=0.0)
    assert torch.equal(hard, reversed_order)
    with pytest.raises(BadInputError, match="landmarks"):
        blend.create_face_mask("hull", SIZE, 1)


@pytest.mark.parametrize("kind", ["box", "ellipse"])
def test_erosion_shrinks_the_mask_monotonically(kind: str) -> None:
    areas = [float(blend.create_face_mask(kind, SIZE, 1, erosion=e).sum()) for e in (0.0, 0.02, 0.05, 0.1, 0.2)]
    assert all(a > b for a, b in itertools.pairwise(areas)), areas
    sharp = blend.create_face_mask(kind, SIZE, 1, feather=0.0)
    assert set(torch.unique(sharp).tolist()) <= {0.0, 1.0}  # no feather: a hard mask
    soft = blend.create_face_mask(kind, SIZE, 1, feather=0.2)
    assert int(((soft > 0) & (soft < 1)).sum()) > int(((sharp > 0) & (sharp < 1)).sum())


@pytest.mark.parametrize("kind", ["box", "ellipse", "hull"])
@pytest.mark.parametrize("erosion", [0.05, 0.1])
def test_erosion_moves_the_outline_inwards_by_the_same_distance_in_every_direction(kind: str, erosion: float) -> None:
    """A disc-shaped erosion: pixels deeper than the erosion distance stay, shallower ones go, diagonals included.

    (A square minimum filter cuts ~1.4 times deeper along the diagonals: the ellipse turns into a rounded diamond.)
    """
    import cv2

    size = 256
    angles = torch.arange(8) * (2 * math.pi / 8) + 0.3  # an octagon with edges in every direction
    polygon = torch.stack([128 + 100 * torch.cos(angles), 130 + 95 * torch.sin(angles)], dim=1)[None]
    full = blend.create_face_mask(kind, size, 1, landmarks=polygon, erosion=0.0, feather=0.0)
    eroded = blend.create_face_mask(kind, size, 1, landmarks=polygon, erosion=erosion, feather=0.0)
    depth = cv2.distanceTransform(full[0, 0].numpy().astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    depth = torch.from_numpy(depth)  # distance of each pixel centre to the nearest pixel outside the shape
    shrink = erosion * size
    kept = eroded[0, 0] > 0
    assert float(depth[kept].min()) >= shrink - 1.0
    assert bool(kept[depth >= shrink + 1.5].all())


def test_external_mask_combines_by_minimum() -> None:
    plain = blend.create_face_mask("ellipse", SIZE, 2)
    external = torch.ones(2, 1, SIZE, SIZE)
    external[0, :, :, : SIZE // 2] = 0.0  # face 0: an occluder over the image-left half
    external[1] = 0.3
    combined = blend.create_face_mask("ellipse", SIZE, 2, external=external)
    torch.testing.assert_close(combined, torch.minimum(plain, external))
    assert float(combined[0, :, :, : SIZE // 2].max()) == 0.0
    assert float(combined[1].max()) == pytest.approx(0.3)
    with pytest.raises(BadInputError, match="external mask"):
        blend.create_face_mask("box", SIZE, 2, external=torch.ones(2, 1, 64, 64))


def test_mask_options_are_checked() -> None:
    with pytest.raises(BadInputError, match="mask kind"):
        blend.create_face_mask("circle", SIZE, 1)  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="erosion"):
        blend.create_face_mask("box", SIZE, 1, erosion=-0.1)


# ---------------------------------------------------------------------------------------------------------- colour


def test_mean_std_matching_moves_the_masked_statistics() -> None:
    generator = torch.Generator().manual_seed(1)
    swapped = 0.55 + 0.08 * torch.randn(2, 3, 32, 32, generator=generator)
    target = 0.35 + 0.05 * torch.randn(2, 3, 32, 32, generator=generator)
    target[1, 0] += 0.2  # a redder second target
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:24, 8:24] = 1.0
    matched = blend.match_colour(swapped, target, mask, "mean_std")
    inside = mask.bool().expand(-1, 3, -1, -1)
    for face in range(2):
        got = matched[face][inside[face]].reshape(3, -1)
        want = target[face][inside[face]].reshape(3, -1)
        torch.testing.assert_close(got.mean(1), want.mean(1), atol=1e-4, rtol=0)
        torch.testing.assert_close(got.std(1, correction=0), want.std(1, correction=0), atol=1e-4, rtol=0)
    assert torch.equal(blend.match_colour(swapped, target, mask, "none"), swapped)


def test_lab_matching_moves_the_lab_mean() -> None:
    generator = torch.Generator().manual_seed(2)
    swapped = (0.5 + 0.05 * torch.randn(1, 3, 24, 24, generator=generator)).clamp(0, 1)
    target = (torch.tensor([0.7, 0.45, 0.35]).reshape(1, 3, 1, 1) + 0.04 * torch.randn(1, 3, 24, 24)).clamp(0, 1)
    mask = torch.ones(1, 1, 24, 24)
    matched = blend.match_colour(swapped, target, mask, "lab")
    got = blend.rgb_to_lab(matched).mean(dim=(2, 3))
    want = blend.rgb_to_lab(target).mean(dim=(2, 3))
    torch.testing.assert_close(got, want, atol=0.3, rtol=0)  # Lab units (L in 0..100)
    before = blend.rgb_to_lab(swapped).mean(dim=(2, 3))
    assert float((before - want).abs().max()) > 5.0


def test_lab_round_trip_and_known_values() -> None:
    rgb = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(blend.lab_to_rgb(blend.rgb_to_lab(rgb)), rgb, atol=1e-4, rtol=0)
    white = blend.rgb_to_lab(torch.ones(1, 3, 1, 1)).flatten()
    torch.testing.assert_close(white, torch.tensor([100.0, 0.0, 0.0]), atol=0.05, rtol=0)
    red = blend.rgb_to_lab(torch.tensor([1.0, 0.0, 0.0]).reshape(1, 3, 1, 1)).flatten()
    torch.testing.assert_close(red, torch.tensor([53.24, 80.09, 67.20]), atol=0.1, rtol=0)  # textbook sRGB red


# ---------------------------------------------------------------------------------------------------------- paste


def scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Three frames; frame 0 has two overlapping faces, frame 1 none, frame 2 one that leaves the frame."""
    generator = torch.Generator().manual_seed(4)
    frames = torch.rand(3, 3, 180, 240, generator=generator)
    crops = torch.rand(3, 3, SIZE, SIZE, generator=generator)
    masks = blend.create_face_mask("ellipse", SIZE, 3)
    matrices = torch.tensor(
        [similarity(1.3, 0.3, -30.0, -20.0), similarity(1.1, -0.2, -60.0, -10.0), similarity(0.9, 0.1, -160.0, -90.0)]
    )
    image_index = torch.tensor([0, 0, 2])
    return frames, crops, masks, matrices, image_index


def test_paste_back_changes_only_masked_pixels() -> None:
    frames, crops, masks, matrices, image_index = scene()
    copies = [t.clone() for t in (frames, crops, masks, matrices, image_index)]
    out, frame_masks = blend.paste_back(frames, crops, masks, matrices, image_index)
    for before, after in zip(copies, (frames, crops, masks, matrices, image_index), strict=True):
        assert torch.equal(before, after)  # inputs untouched
    assert out.shape == frames.shape and out.dtype == frames.dtype
    assert frame_masks.shape == (3, 180, 240) and frame_masks.dtype == frames.dtype
    outside = frame_masks <= 0
    assert torch.equal(out.permute(1, 0, 2, 3)[:, outside], frames.permute(1, 0, 2, 3)[:, outside])  # bit for bit
    assert torch.equal(out[1], frames[1]) and float(frame_masks[1].max()) == 0.0  # the frame without faces
    assert float(frame_masks[0].max()) == pytest.approx(1.0, abs=1e-5)
    assert bool((out[0] != frames[0]).any(dim=0)[frame_masks[0] > 0.5].all())
    # The mask lies inside the union of the faces' footprints.
    ys, xs = torch.meshgrid(torch.arange(180).float(), torch.arange(240).float(), indexing="ij")
    for frame, faces in ((0, (0, 1)), (2, (2,))):
        inside_any = torch.zeros(180, 240, dtype=torch.bool)
        for face in faces:
            x0, y0, x1, y1 = crop_footprint(matrices[face])
            inside_any |= (xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1)
        assert not bool((frame_masks[frame] > 0)[~inside_any].any())


def test_paste_back_core_equals_the_warped_crop_and_later_faces_win() -> None:
    frames, crops, masks, matrices, image_index = scene()
    out, frame_masks = blend.paste_back(frames, crops, masks, matrices, image_index)
    crop_to_frame = invert_affine(matrices)
    back = warp_affine(crops, crop_to_frame, (180, 240))
    mask_back = warp_affine(masks, crop_to_frame, (180, 240))
    core_second = mask_back[1, 0] >= 1.0  # face 1 (pasted after face 0) fully covers these pixels
    assert int(core_second.sum()) > 1000
    torch.testing.assert_close(out[0][:, core_second], back[1][:, core_second], atol=1e-4, rtol=0)
    only_first = (mask_back[0, 0] >= 1.0) & (mask_back[1, 0] <= 0.0)
    torch.testing.assert_close(out[0][:, only_first], back[0][:, only_first], atol=1e-4, rtol=0)
    torch.testing.assert_close(frame_masks[0], torch.maximum(mask_back[0, 0], mask_back[1, 0]), atol=1e-4, rtol=0)
    # Face 2 leaves frame 2 on the right/bottom: clipped, still pasted.
    assert float(frame_masks[2].max()) > 0.99


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_paste_back_keeps_dtype_and_exact_outside(dtype: torch.dtype) -> None:
    frames, crops, masks, matrices, image_index = scene()
    frames = frames.to(dtype)
    out, frame_masks = blend.paste_back(frames, crops, masks, matrices, image_index)
    assert out.dtype == dtype and frame_masks.dtype == dtype
    outside = (frame_masks <= 0)[:, None].expand_as(out)
    assert torch.equal(out[outside], frames[outside])


def test_paste_back_into_byte_frames_rounds_the_float_result_and_keeps_the_rest() -> None:
    """uint8 frames (a video's) are blended region by region: the float result rounded half up (within one
    level), byte masks, every pixel outside the mask exactly as it was, the input untouched."""
    frames, crops, masks, matrices, image_index = scene()
    as_bytes = (frames * 255 + 0.5).to(torch.uint8).contiguous(memory_format=torch.channels_last)
    before = as_bytes.clone()
    out, frame_masks = blend.paste_back(as_bytes, crops, masks, matrices, image_index)
    floats, float_masks = blend.paste_back(as_bytes.float() / 255, crops, masks, matrices, image_index)
    assert out.dtype == torch.uint8 and frame_masks.dtype == torch.uint8 and torch.equal(as_bytes, before)
    assert out.is_contiguous(memory_format=torch.channels_last)  # the layout a decoder's bytes come in
    rounded = (floats * 255 + 0.5).clamp(0, 255).to(torch.uint8)
    assert int((out.int() - rounded.int()).abs().max()) <= 1
    assert float((out.int() != rounded.int()).float().mean()) < 1e-3
    outside = (frame_masks == 0)[:, None].expand_as(out)
    assert torch.equal(out[outside], as_bytes[outside]) and int(outside.sum()) > 10_000
    assert float((frame_masks.float() / 255 - float_masks).abs().max()) <= 0.5 / 255 + 1e-6
    assert int(frame_masks[0].max()) == 255 and int(frame_masks[1].max()) == 0


def test_large_faces_are_pasted_a_group_at_a_time_with_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    """Faces go through warping in groups within a pixel budget (memory bounded for 4K close-ups); the groups keep
    the batch order and change no value: one face per group pastes what all at once pastes, float and bytes alike."""
    from facemagic_core import align

    frames, crops, masks, matrices, image_index = scene()
    regions = blend.face_regions(matrices, SIZE, 180, 240)
    assert [group[:2] for group in align.region_groups(regions)] == [(0, 3)]
    assert [group[:2] for group in align.region_groups(regions, budget=1)] == [(0, 1), (1, 2), (2, 3)]
    spans = (regions[:, 2:] - regions[:, :2]).tolist()
    two = align.region_groups(regions, budget=2 * max(w for w, _ in spans[:2]) * max(h for _, h in spans[:2]))
    assert two[0][:2] == (0, 2) and two[0][2:] == (max(h for _, h in spans[:2]), max(w for w, _ in spans[:2]))
    as_bytes = (frames * 255 + 0.5).to(torch.uint8)
    together = [blend.paste_back(f, crops, masks, matrices, image_index) for f in (frames, as_bytes)]
    together_crops = warp_affine(as_bytes, matrices, (SIZE, SIZE), image_index=image_index)
    monkeypatch.setattr(align, "REGION_PIXEL_BUDGET", 1)
    apart = [blend.paste_back(f, crops, masks, matrices, image_index) for f in (frames, as_bytes)]
    for (out_a, mask_a), (out_b, mask_b) in zip(together, apart, strict=True):
        assert torch.equal(out_a, out_b) and torch.equal(mask_a, mask_b)
    # Sampling byte frames: the padded region sizes differ by group, which moves the coordinates by rounding only.
    apart_crops = warp_affine(as_bytes, matrices, (SIZE, SIZE), image_index=image_index)
    torch.testing.assert_close(apart_crops, together_crops, atol=1e-4, rtol=0)


def test_paste_back_with_no_faces_and_bad_input() -> None:
    frames = torch.rand(2, 3, 64, 64)
    out, frame_masks = blend.paste_back(
        frames, torch.zeros(0, 3, SIZE, SIZE), torch.zeros(0, 1, SIZE, SIZE), torch.zeros(0, 2, 3), torch.zeros(0)
    )
    assert torch.equal(out, frames) and out.data_ptr() != frames.data_ptr() and float(frame_masks.max()) == 0.0
    crops, masks = torch.rand(1, 3, SIZE, SIZE), torch.ones(1, 1, SIZE, SIZE)
    matrix = torch.tensor([similarity(1.0, 0.0, 0.0, 0.0)])
    with pytest.raises(BadInputError, match="outside the batch"):
        blend.paste_back(frames, crops, masks, matrix, torch.tensor([2]))
    with pytest.raises(BadInputError, match="masks"):
        blend.paste_back(frames, crops, masks[:, :, :64], matrix, torch.tensor([0]))


def test_paste_back_matches_the_insightface_reference_in_the_core() -> None:
    height, width = 200, 260
    frame = textured(height, width, period=23.0)
    matrix = torch.tensor([similarity(0.8, 0.25, -40.0, -10.0)])
    crop = (warp_affine(textured(height, width, period=31.0).flip(-1), matrix, (SIZE, SIZE)) * 0.8 + 0.1).clamp(0, 1)
    frame_bgr, crop_bgr = tensor_to_bgr_uint8(frame[0]), tensor_to_bgr_uint8(crop[0])
    reference, reference_mask = blend.paste_back_reference(frame_bgr, crop_bgr, matrix[0].numpy())
    assert reference.dtype == np.uint8 and reference.shape == frame_bgr.shape
    ours, our_mask = blend.paste_back(
        frame, crop.mul(255).round().div(255), blend.create_face_mask("box", SIZE, 1), matrix, torch.tensor([0])
    )
    core = torch.from_numpy(reference_mask >= 1.0) & (our_mask[0] >= 1.0)
    assert int(core.sum()) > 2000
    ours_bgr = torch.from_numpy(tensor_to_bgr_uint8(ours[0]).astype(np.int16))
    difference = (ours_bgr - torch.from_numpy(reference.astype(np.int16))).abs()[core]
    assert int(difference.max()) <= 3  # bilinear implementations and insightface's uint8 truncation
    # Away from the face both leave the frame as it was.
    far = torch.from_numpy(reference_mask <= 0) & (our_mask[0] <= 0)
    assert torch.equal(torch.from_numpy(reference)[far], torch.from_numpy(frame_bgr)[far])


def test_poisson_blend_places_the_face_where_it_belongs() -> None:
    height, width = 150, 190
    frame = textured(height, width, period=7.0)
    matrix = torch.tensor([similarity(1.1, 0.15, -20.0, -15.0)])
    crop = warp_affine(frame, matrix, (112, 112))  # the frame's own face: cloning it must change nothing
    mask = blend.create_face_mask("box", 112, 1)
    before = frame.clone()
    out, frame_masks = blend.poisson_blend(frame, crop, mask, matrix, [0])
    assert torch.equal(frame, before)
    inside = frame_masks[0] > 0
    assert int(inside.sum()) > 2000
    # Cloned where it belongs: close to a hard paste-back of the same crop (both carry the crop's resampling
    # blur, ~6/255 away from the frame itself); the crop taken 1 px off gives ~30/255 here.
    pasted, _ = blend.paste_back(frame, crop, (mask > 0.5).float(), matrix, [0])
    error = (out - pasted).abs().amax(dim=1)[0][inside]
    assert float(error.mean()) < 4 / 255 and float(error.max()) < 24 / 255
    assert torch.equal(out[:, :, ~inside], frame[:, :, ~inside])
    brighter, _ = blend.poisson_blend(frame, (crop + 0.3).clamp(0, 1), mask, matrix, [0])
    # Poisson cloning keeps the frame's boundary values: a uniform brightening of the face is (mostly) undone.
    assert float((brighter - frame).abs().mean()) < 0.05


def test_poisson_blend_brings_the_crops_detail_into_the_frame() -> None:
    """Cloning a striped face onto a flat frame must show the stripes (OpenCV overwrites the mask it is given)."""
    frame = torch.full((1, 3, 150, 190), 0.5)
    matrix = torch.tensor([similarity(1.0, 0.0, -30.0, -20.0)])
    stripes = (torch.arange(112) // 4 % 2).float()  # 4 px wide vertical stripes
    crop = (0.3 + 0.4 * stripes).expand(1, 3, 112, 112).contiguous()
    mask = blend.create_face_mask("box", 112, 1)
    out, frame_masks = blend.poisson_blend(frame, crop, mask, matrix, [0])
    inside = frame_masks[0] > 0
    assert int(inside.sum()) > 4000
    # Poisson cloning keeps the crop's gradients: the stripes' contrast reappears inside the face region.
    assert float(out[0, 0][inside].std()) > 0.1
    assert torch.equal(out[:, :, ~inside], frame[:, :, ~inside])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_paste_back_on_cuda_matches_cpu() -> None:
    frames, crops, masks, matrices, image_index = scene()
    cpu, cpu_masks = blend.paste_back(frames, crops, masks, matrices, image_index)
    gpu, gpu_masks = blend.paste_back(frames.cuda(), crops.cuda(), masks.cuda(), matrices.cuda(), image_index.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)
    torch.testing.assert_close(gpu_masks.cpu(), cpu_masks, atol=1e-4, rtol=0)
    outside = (gpu_masks <= 0)[:, None].expand_as(gpu)
    assert torch.equal(gpu[outside], frames.cuda()[outside])
