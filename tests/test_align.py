"""align.py: templates, similarity fits, cv2-exact warping, round trips, and a real detector on aligned crops."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facemagic_core.align import (
    ARCFACE_TEMPLATE_112,
    FFHQ_TEMPLATE_512,
    align_faces,
    estimate_similarity,
    face_template,
    invert_affine,
    transform_points,
    warp_affine,
)
from facemagic_core.errors import BadInputError, FaceMagicError
from facemagic_core.images import load_image, tensor_to_bgr_uint8
from facemagic_core.types import Face

face_align = pytest.importorskip("insightface.utils.face_align")


def _random_landmarks(rng: np.random.Generator, count: int, *, spread: float = 400.0) -> np.ndarray:
    """Plausible 5-point sets: the template rotated, scaled, moved and jittered."""
    sets = []
    for _ in range(count):
        angle = rng.uniform(-0.8, 0.8)
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        scale = rng.uniform(0.6, 3.0)
        points = (ARCFACE_TEMPLATE_112 - 56) @ rotation.T * scale + rng.uniform(60, spread, 2)
        sets.append(points + rng.normal(0, 2.0, (5, 2)))
    return np.stack(sets)


def _cv2_warp(image_chw: np.ndarray, matrix: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    out = cv2.warpAffine(
        np.ascontiguousarray(image_chw.transpose(1, 2, 0)),
        matrix.astype(np.float64),
        (size[1], size[0]),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=0,
    )
    return out.reshape(size[0], size[1], -1).transpose(2, 0, 1)


def _estimate_norm(points: np.ndarray, size: int) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-image deprecates SimilarityTransform.estimate
        return np.asarray(face_align.estimate_norm(points.astype(np.float32), size))


# ------------------------------------------------------------------------------------------------
# Templates


def test_arcface_template_follows_the_size_rule() -> None:
    np.testing.assert_allclose(face_template("arcface", 112), ARCFACE_TEMPLATE_112)
    np.testing.assert_allclose(face_template("arcface", 224), ARCFACE_TEMPLATE_112 * 2, rtol=1e-6)
    at_128 = face_template("arcface", 128)
    # The 128 px points of MODELS.md: (46.29, 51.70) (81.53, 51.50) (64.03, 71.74) (49.55, 92.37) (78.73, 92.20).
    expected = [[46.29, 51.70], [81.53, 51.50], [64.03, 71.74], [49.55, 92.37], [78.73, 92.20]]
    np.testing.assert_allclose(at_128, expected, atol=0.006)
    at_256 = face_template("arcface", 256)
    np.testing.assert_allclose(at_256[:, 1], ARCFACE_TEMPLATE_112[:, 1] * 2, rtol=1e-6)
    np.testing.assert_allclose(at_256[:, 0], ARCFACE_TEMPLATE_112[:, 0] * 2 + 16, rtol=1e-6)
    assert at_256.dtype == np.float32 and at_256.shape == (5, 2)


def test_ffhq_template_scales_from_512() -> None:
    np.testing.assert_allclose(face_template("ffhq", 512), FFHQ_TEMPLATE_512)
    np.testing.assert_allclose(face_template("ffhq", 256), FFHQ_TEMPLATE_512 / 2, rtol=1e-6)
    ffhq = face_template("ffhq", 512)
    assert ffhq[0, 0] < ffhq[1, 0] and ffhq[3, 0] < ffhq[4, 0]  # image-left points first
    assert ffhq[0, 1] < ffhq[2, 1] < ffhq[3, 1]  # eyes above nose above mouth


def test_template_rejects_bad_names_and_sizes() -> None:
    with pytest.raises(BadInputError, match="unknown alignment template"):
        face_template("vggface", 112)  # type: ignore[arg-type]
    for size in (0, 8, 112.0, True):
        with pytest.raises(BadInputError, match="crop size"):
            face_template("arcface", size)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# Similarity transforms


@pytest.mark.parametrize("size", [112, 128, 256])
def test_estimate_similarity_matches_insightface(size: int) -> None:
    rng = np.random.default_rng(size)
    points = _random_landmarks(rng, 6).astype(np.float32)
    matrices = estimate_similarity(torch.from_numpy(points), face_template("arcface", size))
    assert matrices.shape == (6, 2, 3) and matrices.dtype == torch.float32
    for i in range(6):
        expected = _estimate_norm(points[i], size)
        np.testing.assert_allclose(matrices[i].numpy(), expected, rtol=1e-5, atol=1e-3)


def test_estimate_similarity_never_reflects() -> None:
    mirrored = face_template("arcface", 112).copy()
    mirrored[:, 0] = 112 - mirrored[:, 0]  # a mirror image of the template: the best similarity is not a reflection
    matrices = estimate_similarity(torch.from_numpy(mirrored[None]).double(), face_template("arcface", 112))
    linear = matrices[0, :, :2]
    assert matrices.dtype == torch.float64
    assert float(torch.linalg.det(linear)) > 0
    torch.testing.assert_close(linear[0, 0], linear[1, 1])  # rotation and uniform scale only
    torch.testing.assert_close(linear[0, 1], -linear[1, 0])


def test_estimate_similarity_rejects_degenerate_points() -> None:
    with pytest.raises(BadInputError, match="one point"):
        estimate_similarity(torch.full((2, 5, 2), 7.0), face_template("arcface", 112))
    with pytest.raises(BadInputError, match="NaN"):
        estimate_similarity(torch.full((1, 5, 2), float("nan")), face_template("arcface", 112))
    with pytest.raises(BadInputError, match=r"\(B, N, 2\)"):
        estimate_similarity(torch.zeros(5, 2), face_template("arcface", 112))


def test_invert_and_transform_points_round_trip() -> None:
    rng = np.random.default_rng(3)
    points = torch.from_numpy(_random_landmarks(rng, 8))
    matrices = estimate_similarity(points, face_template("arcface", 112))
    inverse = invert_affine(matrices)
    for i in range(8):
        np.testing.assert_allclose(
            inverse[i].numpy(), cv2.invertAffineTransform(matrices[i].numpy().astype(np.float64)), rtol=1e-5, atol=1e-4
        )
    crop_points = transform_points(points, matrices)
    back = transform_points(crop_points, inverse)
    assert back.dtype == points.dtype
    assert float((back - points).abs().max()) < 1e-3
    with pytest.raises(BadInputError, match="singular"):
        invert_affine(torch.zeros(1, 2, 3))


# ------------------------------------------------------------------------------------------------
# Warping


def test_warp_affine_matches_cv2_on_random_images() -> None:
    rng = np.random.default_rng(0)
    images = rng.random((3, 3, 150, 200)).astype(np.float32)
    points = _random_landmarks(rng, 7, spread=180.0).astype(np.float32)
    matrices = estimate_similarity(torch.from_numpy(points), face_template("arcface", 128))
    image_index = torch.tensor([2, 0, 0, 1, 2, 2, 0])
    out = warp_affine(torch.from_numpy(images), matrices, (96, 128), image_index=image_index)
    assert out.shape == (7, 3, 96, 128) and out.dtype == torch.float32
    differences = []
    for b in range(7):
        expected = _cv2_warp(images[int(image_index[b])], matrices[b].numpy(), (96, 128))
        differences.append(np.abs(out[b].numpy() - expected))
    difference = np.stack(differences)
    assert difference.mean() < 1e-4, difference.mean()
    assert difference.max() < 2e-3, difference.max()
    # Any channel count: channels are warped independently.
    one_channel = warp_affine(torch.from_numpy(images[:, 1:2]), matrices, (96, 128), image_index=image_index)
    assert torch.equal(one_channel, out[:, 1:2])
    # Parts outside the source are zero, as with cv2's constant border.
    outside = warp_affine(torch.from_numpy(images[:1]), torch.tensor([[[1.0, 0, -500], [0, 1, 0]]]), (10, 10))
    assert float(outside.abs().max()) == 0.0


def test_warp_affine_of_byte_frames_equals_warping_them_as_floats() -> None:
    """uint8 frames are sampled region by region: the crops equal those of frames / 255, faces partly or wholly
    outside the frame included, and the frames are left as they were."""
    rng = np.random.default_rng(3)
    frames = torch.from_numpy(rng.integers(0, 256, (2, 300, 400, 3), dtype=np.uint8)).permute(0, 3, 1, 2)
    before = frames.clone()
    points = _random_landmarks(rng, 5, spread=350.0).astype(np.float32)
    matrices = estimate_similarity(torch.from_numpy(points), face_template("arcface", 128))
    partly_out = torch.tensor([[[1.2, 0.0, -350.0], [0.0, 1.2, -250.0]], [[1.0, 0.0, 500.0], [0.0, 1.0, 0.0]]])
    matrices = torch.cat([matrices, partly_out])  # the last lies wholly outside its frame
    image_index = torch.tensor([0, 1, 1, 0, 1, 1, 0])
    ours = warp_affine(frames, matrices, (128, 96), image_index=image_index)
    expected = warp_affine(frames.float() / 255, matrices, (128, 96), image_index=image_index)
    assert ours.dtype == torch.float32 and ours.shape == (7, 3, 128, 96)
    assert float((ours - expected).abs().max()) < 2e-4
    assert float(ours[-1].abs().max()) == 0.0 and float(ours[-2].max()) > 0.0
    assert torch.equal(frames, before)
    assert warp_affine(frames, matrices[:0], (8, 8), image_index=image_index[:0]).dtype == torch.float32


def test_warp_affine_defaults_to_one_matrix_per_image_and_keeps_inputs() -> None:
    rng = np.random.default_rng(1)
    images = torch.from_numpy(rng.random((2, 3, 64, 80)).astype(np.float32))
    before = images.clone()
    matrices = torch.tensor([[[0.9, 0.1, 3.0], [-0.1, 0.9, -2.0]], [[1.2, 0.0, -5.0], [0.0, 1.2, 4.0]]])
    out = warp_affine(images, matrices, (40, 50))
    for b in range(2):
        np.testing.assert_allclose(
            out[b].numpy(), _cv2_warp(images[b].numpy(), matrices[b].numpy(), (40, 50)), atol=2e-3
        )
    assert torch.equal(images, before)
    with pytest.raises(BadInputError, match="image_index"):
        warp_affine(images, matrices[:1], (40, 50))
    with pytest.raises(BadInputError, match="outside the batch"):
        warp_affine(images, matrices, (40, 50), image_index=torch.tensor([0, 2]))
    assert warp_affine(images, torch.zeros(0, 2, 3), (8, 8), image_index=torch.zeros(0, dtype=torch.long)).shape == (
        0,
        3,
        8,
        8,
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_warp_affine_any_float_dtype(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(2)
    images = torch.from_numpy(rng.random((1, 3, 720, 1280)).astype(np.float32))
    points = torch.from_numpy(_random_landmarks(rng, 3, spread=1100.0)).float()
    matrices = estimate_similarity(points, face_template("arcface", 112))
    index = torch.zeros(3, dtype=torch.long)
    reference = warp_affine(images, matrices, (112, 112), image_index=index)
    out = warp_affine(images.to(dtype), matrices, (112, 112), image_index=index)
    assert out.dtype == dtype
    # float16 coordinates would be off by up to half a pixel on a 1280 px frame; sampling happens in float32,
    # so only the pixel values' own rounding remains (float64 differs by float32's coordinate rounding).
    tolerance = {torch.float64: 5e-4, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}[dtype]
    assert float((out.float() - reference).abs().max()) < tolerance


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")
def test_warp_affine_on_cuda_matches_cpu() -> None:
    rng = np.random.default_rng(4)
    images = torch.from_numpy(rng.random((2, 3, 480, 640)).astype(np.float32))
    points = torch.from_numpy(_random_landmarks(rng, 5, spread=420.0))
    matrices = estimate_similarity(points, face_template("arcface", 128))
    index = torch.tensor([0, 1, 1, 0, 1])
    cpu = warp_affine(images, matrices, (128, 128), image_index=index)
    cuda = warp_affine(images.cuda().half(), matrices.cuda(), (128, 128), image_index=index.cuda())
    assert cuda.device.type == "cuda" and cuda.dtype == torch.float16
    assert float((cuda.float().cpu() - cpu).abs().max()) < 2e-3


# ------------------------------------------------------------------------------------------------
# align_faces


def _gaussian_spots(points: np.ndarray, height: int, width: int, sigma: float = 2.5) -> np.ndarray:
    """One (5, H, W) stack: channel k holds a Gaussian spot at points[k]."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    spots = [np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2)) for x, y in points]
    return np.stack(spots).astype(np.float32)


def _centroids(stack: torch.Tensor) -> np.ndarray:
    """(5, H, W) -> (5, 2) intensity-weighted centres, pixel centres at integers."""
    array = stack.double().numpy()
    ys, xs = np.mgrid[0 : array.shape[1], 0 : array.shape[2]]
    mass = array.sum(axis=(1, 2))
    return np.stack([(array * xs).sum(axis=(1, 2)) / mass, (array * ys).sum(axis=(1, 2)) / mass], axis=1)


def test_align_then_inverse_warp_round_trip_is_sub_pixel() -> None:
    rng = np.random.default_rng(5)
    height, width = 300, 360
    landmarks = _random_landmarks(rng, 1, spread=200.0)[0]
    landmarks = landmarks - landmarks.mean(axis=0) + [width / 2, height / 2]
    spots = _gaussian_spots(landmarks, height, width)  # a 5-channel "image" with one spot per landmark
    face = Face(bbox=np.zeros(4, np.float32), score=1.0, landmarks_5=landmarks.astype(np.float32))
    image = torch.from_numpy(spots[:3])[None]
    crops, matrices = align_faces(image, [face], 224)
    expected_in_crop = transform_points(torch.from_numpy(landmarks[None]).float(), matrices)[0].numpy()
    crop_spots = warp_affine(torch.from_numpy(spots)[None], matrices, (224, 224))[0]
    assert torch.equal(crops[0], crop_spots[:3])
    assert np.abs(_centroids(crop_spots) - expected_in_crop).max() < 0.5
    back = warp_affine(crop_spots[None], invert_affine(matrices), (height, width))[0]
    assert np.abs(_centroids(back) - landmarks).max() < 0.5


def test_align_faces_matches_insightface_norm_crop() -> None:
    rng = np.random.default_rng(6)
    bgr = (rng.random((240, 320, 3)) * 255).astype(np.uint8)
    bgr = cv2.GaussianBlur(bgr, (7, 7), 2.0)  # image-like smoothness
    rgb = torch.from_numpy(np.ascontiguousarray(bgr[:, :, ::-1])).permute(2, 0, 1).float()[None] / 255
    landmarks = _random_landmarks(rng, 3, spread=200.0).astype(np.float32)
    faces = [Face(bbox=np.zeros(4, np.float32), score=1.0, landmarks_5=points) for points in landmarks]
    for size in (112, 128):
        crops, matrices = align_faces(rgb, faces, size)
        assert crops.shape == (3, 3, size, size) and matrices.dtype == torch.float32
        for i in range(3):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # scikit-image deprecates SimilarityTransform.estimate
                expected = face_align.norm_crop(bgr, landmarks[i], image_size=size).astype(np.float32)
            ours = crops[i].permute(1, 2, 0).numpy()[:, :, ::-1] * 255
            assert np.abs(ours - expected).max() <= 1.0  # cv2 rounds uint8 results; we keep floats
            np.testing.assert_allclose(matrices[i].numpy(), _estimate_norm(landmarks[i], size), rtol=1e-5, atol=1e-3)


def test_align_faces_uses_each_face_image_and_checks_input() -> None:
    images = torch.zeros(2, 3, 64, 64)
    images[1] = 1.0
    template = face_template("arcface", 112) / 2 + 4
    faces = [
        Face(bbox=np.zeros(4, np.float32), score=1.0, landmarks_5=template, image_index=1),
        Face(bbox=np.zeros(4, np.float32), score=1.0, landmarks_5=template, image_index=0),
    ]
    crops, _ = align_faces(images, faces, 112)
    assert float(crops[0, :, 56, 56].min()) == pytest.approx(1.0) and float(crops[1].max()) == 0.0
    empty_crops, empty_matrices = align_faces(images, [], 112)
    assert empty_crops.shape == (0, 3, 112, 112) and empty_matrices.shape == (0, 2, 3)
    with pytest.raises(BadInputError, match="outside the batch"):
        align_faces(images[:1], faces, 112)
    with pytest.raises(FaceMagicError):
        align_faces(torch.zeros(1, 4, 64, 64), faces[1:], 112)


# ------------------------------------------------------------------------------------------------
# A real detector on aligned crops of real photos

#: Mean and largest distance (112 px crop) between YuNet's landmarks re-detected on the aligned crop
#: and the ArcFace template. YuNet's own landmark noise at this scale is 2-4 px, and real faces do not
#: have the template's exact shape, so a few pixels is what a correct alignment gives; a mirrored,
#: shifted or mis-scaled crop is off by 10 px or more.
REDETECT_MEAN_PX = 4.0
REDETECT_MAX_PX = 6.0


@pytest.mark.parametrize("name", ["anni.jpg", "chenglong.jpg", "wuyifan.png"])
def test_yunet_finds_aligned_landmarks_on_the_template(name: str, faces_dir: Path, yunet_path: Path) -> None:
    path = faces_dir / name
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    image = load_image(path)
    bgr = tensor_to_bgr_uint8(image[0])
    detector = cv2.FaceDetectorYN.create(str(yunet_path), "", (bgr.shape[1], bgr.shape[0]), 0.5, 0.3, 50)
    _, rows = detector.detect(bgr)
    assert rows is not None and len(rows) == 1
    face = Face(bbox=rows[0, :4], score=float(rows[0, 14]), landmarks_5=rows[0, 4:14].reshape(5, 2))
    crops, _ = align_faces(image, [face], 112)
    crop = tensor_to_bgr_uint8(crops[0])
    detector.setInputSize((112, 112))
    _, found = detector.detect(crop)
    assert found is not None and len(found) >= 1, "YuNet finds no face in the aligned crop"
    distances = np.linalg.norm(found[0, 4:14].reshape(5, 2) - face_template("arcface", 112), axis=1)
    assert distances.mean() < REDETECT_MEAN_PX, distances
    assert distances.max() < REDETECT_MAX_PX, distances
