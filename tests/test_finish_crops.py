"""Crops that go out and come back: FFHQ re-alignment, crops of any size mapped back, count/order checks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facemagic_core.align import estimate_similarity, face_template, invert_affine, transform_points, warp_affine
from facemagic_core.blend import compose_affine, resize_matrices
from facemagic_core.errors import BadInputError
from facemagic_core.generators.base import SwapOutput
from facemagic_core.pipeline import SwapBatch, blend_swap, crop_thumbnails, crops_from_image, realign_swap
from facemagic_core.types import Face

HEIGHT, WIDTH, CROP = 240, 320, 128


def face_landmarks(centre: tuple[float, float], eye_distance: float, angle_degrees: float) -> np.ndarray:
    """Five landmarks of a face: the ArcFace template turned, scaled and moved."""
    template = face_template("arcface", 112).astype(np.float64)
    middle = template.mean(axis=0)
    angle = math.radians(angle_degrees)
    rotation = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    scale = eye_distance / float(np.linalg.norm(template[1] - template[0]))
    return (template - middle) @ rotation.T * scale + np.array(centre)


def make_batch(frames: torch.Tensor, faces: list[tuple[int, np.ndarray]]) -> SwapBatch:
    """A SwapBatch for ``faces`` = (frame, landmarks_5), aligned to ArcFace at CROP px as the pipeline does it."""
    landmarks = np.stack([points for _, points in faces])
    matrices = estimate_similarity(torch.from_numpy(landmarks), face_template("arcface", CROP)).float()
    image_index = torch.tensor([frame for frame, _ in faces])
    crops = warp_affine(frames, matrices, (CROP, CROP), image_index=image_index)
    found = tuple(
        Face(
            bbox=np.array([*points.min(0) - 20, *points.max(0) + 20], dtype=np.float32),
            score=0.9,
            landmarks_5=points.astype(np.float32),
            image_index=frame,
        )
        for frame, points in faces
    )
    return SwapBatch(
        crops=crops,
        matrices=matrices,
        image_index=image_index,
        faces=found,
        face_index=tuple(range(len(faces))),
        alignment_landmarks=landmarks.astype(np.float32),
        frames_without_face=(),
        num_frames=int(frames.shape[0]),
        frame_size=(HEIGHT, WIDTH),
        weave=1,
        template="arcface",
    )


def textured_frames(count: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(3)
    noise = torch.rand((count, 3, HEIGHT // 8, WIDTH // 8), generator=generator)
    return F.interpolate(noise, size=(HEIGHT, WIDTH), mode="bicubic", align_corners=False).clamp(0, 1)


def blobs(size: int, points: list[tuple[float, float]], sigma: float) -> torch.Tensor:
    """A (3, size, size) picture of Gaussian blobs at ``points`` (crop pixels, pixel centres at integers)."""
    ys, xs = torch.meshgrid(torch.arange(size).double(), torch.arange(size).double(), indexing="ij")
    picture = torch.zeros((size, size), dtype=torch.float64)
    for x, y in points:
        picture += torch.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma * sigma))
    return picture.clamp(0, 1).float().expand(3, size, size).clone()


def centroid(plane: torch.Tensor, near: tuple[float, float], radius: int) -> tuple[float, float]:
    x0, y0 = round(near[0]), round(near[1])
    window = plane[y0 - radius : y0 + radius + 1, x0 - radius : x0 + radius + 1].double()
    ys, xs = torch.meshgrid(
        torch.arange(y0 - radius, y0 + radius + 1).double(),
        torch.arange(x0 - radius, x0 + radius + 1).double(),
        indexing="ij",
    )
    total = float(window.sum())
    return float((window * xs).sum()) / total, float((window * ys).sum()) / total


def test_resize_matrices_follow_a_resized_crop() -> None:
    frames = textured_frames(1)
    batch = make_batch(frames, [(0, face_landmarks((160, 120), 60, 15))])
    for size in (64, 300, 512):
        resized = F.interpolate(batch.crops, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
        direct = warp_affine(frames, resize_matrices(batch.matrices, CROP, size).float(), (size, size))
        inner = slice(size // 8, size - size // 8)
        assert float((resized - direct)[..., inner, inner].abs().mean()) < 0.01
    identity = compose_affine(batch.matrices, invert_affine(batch.matrices.double()))
    torch.testing.assert_close(identity, torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]], dtype=torch.float64))


@pytest.mark.parametrize("size", [512, 1024, 384])
def test_a_crop_coming_back_lands_on_the_exact_face_area(size: int) -> None:
    """Blobs painted into the FFHQ crop (as a restorer or upscaler would return it) are found where they belong."""
    frames = torch.zeros((2, 3, HEIGHT, WIDTH))
    faces = [(0, face_landmarks((150, 125), 55, 20)), (1, face_landmarks((170, 110), 70, -35))]
    batch = make_batch(frames, faces)
    out = realign_swap(frames, batch, batch.crops, template="ffhq", size=512)
    assert out.images.shape == (2, 3, 512, 512)
    template = face_template("ffhq", 512).astype(np.float64)
    spots = [tuple(template[2]), tuple(template[0] + [0, -20]), tuple((template[3] + template[4]) / 2)]
    painted = torch.stack([blobs(512, spots, sigma=6.0)] * 2)
    returned = F.interpolate(painted, size=(size, size), mode="bilinear", align_corners=False, antialias=size < 512)
    finished = crops_from_image(returned, out.matrices, 512, thumbnails=crop_thumbnails(out.images))
    images, _ = blend_swap(
        frames, batch, SwapOutput(batch.crops, None), mask="box", erosion=0.0, feather=0.02, finished=finished
    )
    worst = 0.0
    for face in range(2):
        expected = transform_points(
            torch.tensor([spots], dtype=torch.float64), invert_affine(out.matrices[face : face + 1].double())
        )[0]
        for point in expected.tolist():
            found = centroid(images[face, 0], (point[0], point[1]), radius=12)
            worst = max(worst, math.dist(found, point))
    assert worst < 0.5, f"round trip error {worst:.3f} px"
    print(f"crop round trip at {size} px: worst error {worst:.3f} px")


def test_outside_the_mask_nothing_changes_and_identity_crops_match_the_direct_blend() -> None:
    frames = textured_frames(2)
    faces = [
        (0, face_landmarks((150, 125), 55, 20)),
        (1, face_landmarks((170, 110), 70, -35)),
        (1, face_landmarks((60, 60), 30, 0)),
    ]
    batch = make_batch(frames, faces)
    swapped = SwapOutput(torch.rand_like(batch.crops), None)
    limit = torch.ones((2, HEIGHT, WIDTH))
    limit[:, :, :160] = 0.0  # the left half may not change
    direct, direct_mask = blend_swap(frames, batch, swapped, external_mask=limit)
    back = crops_from_image(swapped.images.clone(), batch.matrices, CROP, thumbnails=crop_thumbnails(swapped.images))
    via, via_mask = blend_swap(frames, batch, swapped, external_mask=limit, finished=back)
    torch.testing.assert_close(via, direct, atol=2e-4, rtol=0)
    torch.testing.assert_close(via_mask, direct_mask, atol=2e-4, rtol=0)
    for images, masks in ((direct, direct_mask), (via, via_mask)):
        outside = (masks == 0).unsqueeze(1).expand_as(frames)
        assert bool(outside.any()) and torch.equal(images[outside], frames[outside])  # bit for bit
        assert torch.equal(images[..., :160], frames[..., :160])  # the limit mask is obeyed exactly
    restored = realign_swap(frames, batch, swapped, size=256)
    blended, masks = blend_swap(frames, batch, swapped, external_mask=limit, finished=restored)
    outside = (masks == 0).unsqueeze(1).expand_as(frames)
    assert torch.equal(blended[outside], frames[outside]) and torch.equal(blended[..., :160], frames[..., :160])
    assert float((blended - frames).abs().max()) > 0.1  # and the faces did change


def test_crops_in_another_count_order_or_shape_are_refused() -> None:
    frames = textured_frames(1)
    batch = make_batch(frames, [(0, face_landmarks((100, 120), 60, 10)), (0, face_landmarks((230, 110), 50, -10))])
    out = realign_swap(frames, batch, batch.crops)
    thumbs = crop_thumbnails(out.images)
    with pytest.raises(BadInputError, match="1 crop\\(s\\) came in for the 2 face"):
        crops_from_image(out.images[:1], out.matrices, 512, thumbnails=thumbs)
    with pytest.raises(BadInputError, match=r"not in the order of the faces.*crop 1 looks like face 2"):
        crops_from_image(out.images.flip(0), out.matrices, 512, thumbnails=thumbs)
    with pytest.raises(BadInputError, match="not square"):
        crops_from_image(out.images[..., :400], out.matrices, 512, thumbnails=thumbs)
    # a restorer's changes (sharpening, a colour shift) and a resize keep the order recognisable
    changed = F.interpolate(out.images * 0.8 + 0.1, size=(300, 300), mode="bilinear", align_corners=False)
    assert crops_from_image(changed, out.matrices, 512, thumbnails=thumbs).size == 300
