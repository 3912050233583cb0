"""Head pose from landmarks, landmark distance, pose reports, failure policy and the debug overlay."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facemagic_core import pose
from facemagic_core.errors import BadInputError

HEIGHT, WIDTH = 480, 640
CAMERA = np.array([[640.0, 0.0, 319.5], [0.0, 640.0, 239.5], [0.0, 0.0, 1.0]])  # what estimate_head_pose assumes


def synthetic_landmarks(
    num: int, yaw: float, pitch: float, roll: float, *, noise: float = 0.0, seed: int = 0
) -> np.ndarray:
    """Project the generic 3D face, rotated by a known pose, 700 mm in front of the camera."""
    indices, model = pose.reference_points(num)
    rotation = pose.euler_to_matrix(yaw, pitch, roll)
    projected = pose.project_points(model, rotation, np.array([15.0, -25.0, 700.0]), CAMERA)
    projected = projected + np.random.default_rng(seed).normal(0.0, noise, projected.shape)
    full = np.zeros((num, 2))
    full[list(indices)] = projected
    if num == 68:  # fill the unused points plausibly (they do not enter the pose fit)
        unused = [i for i in range(68) if i not in indices]
        full[unused] = projected.mean(0)
    return full


@pytest.mark.parametrize(("num", "bound"), [(68, 3.0), (5, 4.0), (106, 4.0)])
def test_known_rotations_are_recovered(num: int, bound: float) -> None:
    """Known yaw/pitch/roll, projected with 0.5 px landmark noise (eyes ~58 px apart), read back.

    68 points: within 3 degrees. 5 points (and 106, which uses 5 of its points) have a
    third of the constraints and a near-planar layout: within 4 degrees.
    """
    poses = [(y, 0.0, 0.0) for y in (-30, -15, 0, 15, 30)]
    poses += [(0.0, p, 0.0) for p in (-20, -10, 10, 20)]
    poses += [(0.0, 0.0, r) for r in (-15, 15)]
    poses += [(25.0, -12.0, 8.0), (-20.0, 15.0, -10.0)]
    landmarks = np.stack([synthetic_landmarks(num, *p, noise=0.5, seed=i) for i, p in enumerate(poses)])
    estimated = pose.estimate_head_pose(landmarks, (HEIGHT, WIDTH))
    assert estimated.shape == (len(poses), 3)
    error = np.abs(estimated - np.array(poses))
    assert error.max() < bound, error.max(axis=0)
    # And without noise the fit is exact: the model and camera are the ones used to project.
    exact = np.stack([synthetic_landmarks(num, *p) for p in poses])
    np.testing.assert_allclose(pose.estimate_head_pose(torch.from_numpy(exact), (HEIGHT, WIDTH)), poses, atol=1e-4)


def test_sign_conventions_match_the_docstring() -> None:
    frontal = synthetic_landmarks(5, 0, 0, 0)
    turned = synthetic_landmarks(5, 20, 0, 0)
    raised = synthetic_landmarks(5, 0, 20, 0)
    tilted = synthetic_landmarks(5, 0, 0, 20)

    def nose_offset(points: np.ndarray) -> np.ndarray:
        return points[2] - (points[0] + points[1]) / 2

    assert nose_offset(turned)[0] > nose_offset(frontal)[0] + 5  # yaw > 0: nose towards the image right
    assert nose_offset(raised)[1] < nose_offset(frontal)[1] - 5  # pitch > 0: nose up
    assert tilted[1, 1] > tilted[0, 1] + 5  # roll > 0: image-right eye lower (clockwise)


def test_arcface_template_reads_as_frontal() -> None:
    template = np.array(
        [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
    )
    yaw, pitch, roll = pose.estimate_head_pose(template)[0]  # no image size: camera on the face
    assert abs(yaw) < 1 and abs(pitch) < 1 and abs(roll) < 1


def test_euler_round_trip_and_bad_counts() -> None:
    for angles in [(10.0, -20.0, 30.0), (-60.0, 5.0, -5.0)]:
        np.testing.assert_allclose(pose.matrix_to_euler(pose.euler_to_matrix(*angles)), angles, atol=1e-9)
    with pytest.raises(BadInputError, match="5, 68 or 106"):
        pose.estimate_head_pose(np.zeros((1, 7, 2)))
    with pytest.raises(BadInputError, match="NaN"):
        pose.estimate_head_pose(np.full((1, 5, 2), np.nan))


def test_landmark_distance_is_mean_distance_over_face_size() -> None:
    a = np.zeros((2, 4, 2))
    b = a.copy()
    b[0, :, 0] = 3.0  # every point 3 px away
    b[1, 0] = (6.0, 8.0)  # one point 10 px away, mean 2.5 px
    np.testing.assert_allclose(pose.landmark_distance(a, b, [30.0, 50.0]), [0.1, 0.05])
    np.testing.assert_allclose(pose.landmark_distance(a, b, 10.0), [0.3, 0.25])
    with pytest.raises(BadInputError):
        pose.landmark_distance(a, b[:, :3], 10.0)


def face_size_of(points: np.ndarray) -> float:
    """About sqrt(box area) of a detector box around these landmarks (eyes 58 px apart -> ~140 px)."""
    return 2.4 * float(np.linalg.norm(points[0] - points[1]))


@pytest.mark.parametrize("region", ["mouth", "eyes"])
def test_report_flags_moved_landmarks(region: str) -> None:
    target = synthetic_landmarks(68, 10, -5, 3)
    size = face_size_of(target[[36, 45]])
    moved = target.copy()
    rows = list(range(48, 68)) if region == "mouth" else list(range(36, 48))
    moved[rows, 1] += 0.10 * size  # 10 % of the face size
    reports = pose.check_pose(
        np.stack([target, target]), np.stack([target, moved]), [size, size], image_size=(HEIGHT, WIDTH)
    )
    same, changed = reports
    assert same.passed and same.reason == "ok" and same.nme == 0.0
    assert same.pose_diff == pytest.approx((0.0, 0.0, 0.0), abs=1e-6)
    assert not changed.passed
    assert changed.worst_region == region
    assert changed.worst_region_nme == pytest.approx(0.10, rel=1e-6)
    assert f"{region} moved by 0.100" in changed.reason


def test_report_flags_pose_change_and_uses_given_poses() -> None:
    target = synthetic_landmarks(5, 0, 0, 0)
    turned = synthetic_landmarks(5, 18, 0, 0)
    size = face_size_of(target)
    (report,) = pose.check_pose(target, turned, size, image_size=(HEIGHT, WIDTH), image_index=[3], face_index=[1])
    assert not report.passed and "yaw differs by" in report.reason
    assert report.pose_diff[0] == pytest.approx(18.0, abs=1e-3)
    assert (report.image_index, report.face_index) == (3, 1)
    # Poses given directly (e.g. insightface's 1k3d68) replace the estimate; the angle difference wraps at 180.
    (given,) = pose.check_pose(target, target, size, target_poses=[[179.0, 0, 0]], result_poses=[[-179.0, 0, 9.0]])
    assert given.pose_diff == pytest.approx((2.0, 0.0, 9.0))
    assert not given.passed and "roll differs by 9.0" in given.reason
    strict = pose.PoseThresholds(max_roll_diff=10.0)
    (relaxed,) = pose.check_pose(
        target, target, size, thresholds=strict, target_poses=[[0, 0, 0]], result_poses=[[0, 0, 9.0]]
    )
    assert relaxed.passed


def test_policy_original_replaces_only_failed_faces() -> None:
    swapped = torch.rand(3, 3, 16, 16)
    original = torch.rand(3, 3, 16, 16)
    target = synthetic_landmarks(5, 0, 0, 0)
    moved = target.copy()
    moved[3:] += 30.0
    reports = pose.check_pose(
        np.stack([target, target, target]), np.stack([target, moved, target]), 100.0, image_size=(HEIGHT, WIDTH)
    )
    assert [r.passed for r in reports] == [True, False, True]
    before = swapped.clone()
    kept = pose.apply_pose_policy(swapped, original, reports, "keep")
    assert torch.equal(kept, swapped) and kept.data_ptr() != swapped.data_ptr()
    chosen = pose.apply_pose_policy(swapped, original, reports, "original")
    assert torch.equal(chosen[0], swapped[0]) and torch.equal(chosen[2], swapped[2])
    assert torch.equal(chosen[1], original[1])
    assert torch.equal(swapped, before)
    with pytest.raises(BadInputError, match="policy"):
        pose.apply_pose_policy(swapped, original, reports, "drop")  # type: ignore[arg-type]

    table = pose.format_pose_report(reports)
    lines = table.splitlines()
    assert len(lines) == 2 + 3 + 1 and "FAIL" in lines[3] and lines[-1] == "2 of 3 faces passed"


def test_overlay_draws_new_tensor_and_leaves_input() -> None:
    images = torch.full((2, 3, 120, 160), 0.25)
    images[1] = 0.5
    before = images.clone()
    target = np.array([[[40.0, 50.0], [80.0, 50.0], [60.0, 70.0], [45.0, 90.0], [75.0, 90.0]]])
    result = target + 4.0
    reports = pose.check_pose(target, result, 60.0, image_index=[1])
    overlay = pose.draw_pose_overlay(images, target, result, reports)
    assert overlay.shape == images.shape and overlay.dtype == images.dtype
    assert torch.equal(images, before)
    assert torch.equal(overlay[0], images[0])  # no face on image 0
    changed = (overlay[1] != images[1]).any(dim=0)
    for x, y in np.concatenate([target[0], result[0]]):
        assert changed[int(y) - 1 : int(y) + 2, int(x) - 1 : int(x) + 2].any()
    assert not changed[110:, :].any()  # far from the face nothing changed
    # Green target point, red result point (RGB).
    tx, ty = (int(v) for v in target[0, 0])
    rx, ry = (int(v) for v in result[0, 0])
    assert overlay[1, 1, ty, tx] > 0.9 and overlay[1, 0, ty, tx] < 0.6
    assert overlay[1, 0, ry, rx] > 0.9 and overlay[1, 1, ry, rx] < 0.6


def test_overlay_leaves_a_channels_last_view_untouched() -> None:
    """ComfyUI hands over (B, H, W, C) IMAGEs; the node boundary permutes them to a (B, C, H, W) view."""
    comfy_image = torch.full((1, 120, 160, 3), 0.25)
    before = comfy_image.clone()
    target = np.array([[[40.0, 50.0], [80.0, 50.0], [60.0, 70.0], [45.0, 90.0], [75.0, 90.0]]])
    overlay = pose.draw_pose_overlay(comfy_image.permute(0, 3, 1, 2), target, target + 4.0)
    assert torch.equal(comfy_image, before)
    assert not torch.equal(overlay, before.permute(0, 3, 1, 2))


def yunet_landmarks(model: Path, bgr: np.ndarray) -> np.ndarray:
    """5 landmarks (image-left eye first, our order) of the largest face YuNet finds."""
    height, width = bgr.shape[:2]
    detector = cv2.FaceDetectorYN.create(str(model), "", (width, height), 0.6)
    _, faces = detector.detect(bgr)
    assert faces is not None and len(faces) > 0
    largest = faces[np.argmax(faces[:, 2] * faces[:, 3])]
    return np.asarray(largest[4:14], dtype=np.float64).reshape(5, 2)


@pytest.mark.parametrize("name", ["elon.webp", "zhuyin.jpg"])
def test_real_photo_and_its_mirror_have_opposite_yaw(faces_dir: Path, yunet_path: Path, name: str) -> None:
    """On real photos (YuNet landmarks) mirroring the image negates yaw; a mirrored swap fails the check."""
    bgr = cv2.imread(str(faces_dir / name))
    assert bgr is not None
    mirrored = np.ascontiguousarray(bgr[:, ::-1])
    original = yunet_landmarks(yunet_path, bgr)
    flipped = yunet_landmarks(yunet_path, mirrored)
    size = bgr.shape[:2]
    yaw, _, _ = pose.estimate_head_pose(original, size)[0]
    yaw_mirrored, _, _ = pose.estimate_head_pose(flipped, size)[0]
    assert abs(yaw) > 8 and np.sign(yaw) == -np.sign(yaw_mirrored)
    assert abs(yaw + yaw_mirrored) < 5  # detector noise on the mirrored image
    face_size = 2.4 * float(np.linalg.norm(original[1] - original[0]))
    # The same face passes; the mirrored face (the head turned the other way) fails on yaw.
    same, turned = pose.check_pose(
        np.stack([original, original]), np.stack([original, flipped]), face_size, image_size=size
    )
    assert same.passed and same.reason == "ok"
    assert not turned.passed and "yaw differs" in turned.reason
    assert turned.pose_diff[0] == pytest.approx(abs(yaw - yaw_mirrored), abs=1e-6)
