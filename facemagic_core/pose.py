"""Head pose and landmark agreement between a target face and its swapped result.

A swap must keep the target's pose and expression. This module measures both from
landmarks and turns them into a per-face :class:`PoseReport` with pass/fail:

- :func:`estimate_head_pose`: yaw, pitch and roll in degrees from 2D landmarks (5, 68 or
  106 points) through ``cv2.solvePnP`` against a generic 3D face (below);
- :func:`landmark_distance`: the normalised mean error (NME) between two landmark sets;
- :func:`check_pose`: both, against :class:`PoseThresholds`, one report per face;
- :func:`apply_pose_policy`: what to do with failed faces (keep the swap, or give back the
  original crop); :func:`format_pose_report`: a readable table;
- :func:`draw_pose_overlay`: a debug picture with both landmark sets drawn.

Angle conventions (degrees, all zero for a face looking straight into the camera, image
axes x right and y down):

- **yaw > 0**: the subject turns to *their* left, so the nose tip moves to the image right;
- **pitch > 0**: the subject lifts the chin, so the nose tip moves up in the image;
- **roll > 0**: the head tilts towards the subject's left shoulder, so the face turns
  clockwise in the image (the image-right eye goes down).

The rotation is ``R = Rz(roll) · Ry(yaw) · Rx(pitch)`` in a head frame with x to the image
right, y down and z towards the viewer. This is the frame and the decomposition that
insightface's ``1k3d68`` landmark model uses for its own pose (its mean shape has x right,
y down and the nose at positive z; it returns ``(pitch, yaw, roll)``), so a ``Face.pose``
from that model (stored by our analyzer as ``(yaw, pitch, roll)``) can be passed to
:func:`check_pose` directly. The sign agreement follows from insightface's published code
and mean shape; it was not checked on the real model's outputs here.

The generic 3D face, in millimetres, origin between the inner eye corners:

- 68 points (iBUG/300-W order, as dlib, 2dfan4 and insightface's ``1k3d68`` give them): only
  the rigid points are used — the nose (27-35), the eye corners (36, 39, 42, 45), the
  mouth corners (48, 54) and the top of the upper lip (51). The jaw line is a silhouette
  that slides over the face as it turns, eyelids blink, the lower lip and chin move when
  the mouth opens; they would bias the fit. Positions are adult averages from
  anthropometry (Farkas' facial norms): inner eye corners 32 mm apart, outer 90 mm, mouth
  width 50 mm, nose width at the nostrils about 28 mm, eye line to mouth corners 66 mm,
  the nose tip 30 mm in front of the inner eye corners.
- 5 points (our ``Face.landmarks_5`` order: image-left eye, image-right eye, nose tip,
  image-left and image-right mouth corner): x and y are the ArcFace alignment template,
  itself a mean of real detections of frontal faces, scaled to the mean adult
  inter-pupillary distance of 63 mm; so the template reads as pose (0, 0, 0). Depths
  follow the 68-point model (pupils 3 mm behind the inner eye corners, nose tip 30 mm and
  mouth corners 5 mm in front).
- 106 points (insightface ``2d106det`` order): the five points 38 (image-left pupil), 88
  (image-right pupil), 86 (nose tip), 52 and 61 (image-left and image-right mouth corner)
  with the 5-point model. These indices are the ones public code that runs ``2d106det``
  uses to build 5-point keypoints; insightface documents the markup only as a picture.

Camera: a pinhole at the image centre with focal length ``max(height, width)`` pixels
(about a 53 degree field of view, a phone or webcam); without an image size, the principal
point is the landmarks' centre and the face is placed 0.5 m from the camera (focal length =
face scale in pixels per mm x 500 mm).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import cv2
import numpy as np
import numpy.typing as npt
import torch

from .errors import BadInputError

logger = logging.getLogger(__name__)

Float64Array = npt.NDArray[np.float64]

#: What to do with a face that fails the pose check: keep the swap, or give back the original face.
FailurePolicy = Literal["keep", "original"]
FAILURE_POLICIES: tuple[str, ...] = get_args(FailurePolicy)

#: Landmark counts :func:`estimate_head_pose` understands.
SUPPORTED_LANDMARK_COUNTS = (5, 68, 106)

# Generic 3D face (mm): x image right, y down, z towards the viewer; origin between the inner eye corners.
_REFERENCE_68_MM: dict[int, tuple[float, float, float]] = {
    27: (0.0, -5.0, 12.0),  # top of the nose ridge, between the eyes
    28: (0.0, 6.0, 17.0),  # nose ridge
    29: (0.0, 17.0, 23.0),  # nose ridge
    30: (0.0, 29.0, 30.0),  # nose tip
    31: (-14.0, 40.0, 10.0),  # image-left nostril wing
    32: (-7.0, 42.0, 13.0),  # image-left nostril
    33: (0.0, 43.0, 15.0),  # below the nose (subnasale)
    34: (7.0, 42.0, 13.0),  # image-right nostril
    35: (14.0, 40.0, 10.0),  # image-right nostril wing
    36: (-45.0, -2.0, -10.0),  # image-left eye, outer corner
    39: (-16.0, 0.0, 0.0),  # image-left eye, inner corner
    42: (16.0, 0.0, 0.0),  # image-right eye, inner corner
    45: (45.0, -2.0, -10.0),  # image-right eye, outer corner
    48: (-25.0, 66.0, 5.0),  # image-left mouth corner
    51: (0.0, 58.0, 17.0),  # top of the upper lip, centre
    54: (25.0, 66.0, 5.0),  # image-right mouth corner
}

#: ArcFace template at 112 px (MODELS.md): eyes, nose tip, mouth corners.
_ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
_INTERPUPILLARY_MM = 63.0
_DEPTHS_5_MM = np.array([-3.0, -3.0, 30.0, 5.0, 5.0])  # pupils, nose tip, mouth corners (z towards the viewer)

#: Indices of the 5 pose points in insightface's 2d106det markup (pupils, nose tip, mouth corners).
LANDMARKS_106_TO_5 = (38, 88, 86, 52, 61)

#: Regions used to find where two landmark sets disagree most, per landmark count.
_REGIONS: dict[int, dict[str, tuple[int, ...]]] = {
    5: {"eyes": (0, 1), "nose": (2,), "mouth": (3, 4)},
    68: {
        "jaw": tuple(range(0, 17)),
        "brows": tuple(range(17, 27)),
        "nose": tuple(range(27, 36)),
        "eyes": tuple(range(36, 48)),
        "mouth": tuple(range(48, 68)),
    },
    106: {
        "jaw": tuple(range(0, 33)),
        "eyes": tuple(range(33, 43)) + tuple(range(87, 97)),
        "brows": tuple(range(43, 52)) + tuple(range(97, 106)),
        "mouth": tuple(range(52, 72)),
        "nose": tuple(range(72, 87)),
    },
}

#: Distance at which a face without a known image size is placed (mm), to derive a focal length.
_ASSUMED_DISTANCE_MM = 500.0


def _reference_5() -> Float64Array:
    centred = _ARCFACE_112 - (_ARCFACE_112[0] + _ARCFACE_112[1]) / 2
    scale = _INTERPUPILLARY_MM / float(np.linalg.norm(_ARCFACE_112[1] - _ARCFACE_112[0]))
    return np.concatenate([centred * scale, _DEPTHS_5_MM[:, None]], axis=1)


def reference_points(num_landmarks: int) -> tuple[tuple[int, ...], Float64Array]:
    """The landmark indices used for pose and their 3D model points (mm; x right, y down, z to the viewer)."""
    if num_landmarks == 68:
        indices = tuple(sorted(_REFERENCE_68_MM))
        return indices, np.array([_REFERENCE_68_MM[i] for i in indices], dtype=np.float64)
    if num_landmarks == 5:
        return (0, 1, 2, 3, 4), _reference_5()
    if num_landmarks == 106:
        return LANDMARKS_106_TO_5, _reference_5()
    raise BadInputError(
        f"head pose needs 5, 68 or 106 landmarks per face, got {num_landmarks}",
        where="estimate_head_pose",
        fix="pass Face.landmarks_5, or dense landmarks from a 68- or 106-point model",
    )


def _as_points(points: object, *, name: str) -> Float64Array:
    """``(B, N, 2)`` (or one ``(N, 2)`` face) as float64 numpy, checked."""
    if isinstance(points, torch.Tensor):
        array = points.detach().to("cpu", torch.float64).numpy()
    else:
        try:
            array = np.asarray(points, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise BadInputError(f"{name} are not numbers: {error}", where=name) from error
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or array.shape[2] != 2:
        raise BadInputError(
            f"expected {name} of shape (faces, points, 2), got {tuple(array.shape)}",
            where=name,
            fix="pass (x, y) pixel coordinates, one row of points per face",
        )
    if not np.all(np.isfinite(array)):
        raise BadInputError(f"{name} contain NaN or infinite values", where=name, fix="check the landmark model output")
    return np.ascontiguousarray(array)


def _landmark_pair(target: object, result: object, *, where: str) -> tuple[Float64Array, Float64Array]:
    """Target and result landmarks ``(B, N, 2)`` as float64 numpy, checked to be of one shape."""
    first = _as_points(target, name="target landmarks")
    second = _as_points(result, name="result landmarks")
    if first.shape != second.shape:
        raise BadInputError(
            f"the target and result landmarks differ in shape: {first.shape} and {second.shape}",
            where=where,
            fix="measure the result with the same landmark model as the target, for the same faces",
        )
    return first, second


def _as_sizes(value: object, count: int, *, name: str) -> Float64Array:
    """A scalar or ``(count,)`` list of positive numbers as ``(count,)`` float64."""
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(value, dtype=np.float64).reshape(-1)
    if array.size == 1:
        array = np.full(count, float(array[0]))
    if array.shape != (count,):
        raise BadInputError(f"{name} has {array.size} values for {count} faces", where=name)
    if not np.all(np.isfinite(array)) or np.any(array <= 0):
        raise BadInputError(f"{name} must be positive numbers", where=name, fix="pass the face sizes in pixels")
    return np.array(array, dtype=np.float64)


def _image_sizes(image_size: object, count: int) -> list[tuple[int, int] | None]:
    """``None``, one ``(height, width)`` for all faces, or one per face."""
    if image_size is None:
        return [None] * count
    sizes = np.asarray(image_size, dtype=np.float64)
    if sizes.shape == (2,):
        sizes = np.broadcast_to(sizes, (count, 2))
    if sizes.shape != (count, 2) or np.any(sizes < 1):
        raise BadInputError(
            f"image_size must be (height, width) or one (height, width) per face, got shape {sizes.shape}",
            where="estimate_head_pose",
        )
    return [(int(h), int(w)) for h, w in sizes]


def euler_to_matrix(yaw: float, pitch: float, roll: float) -> Float64Array:
    """Rotation (camera frame: x right, y down, z away from the viewer) for a pose in degrees.

    Exactly the convention of this module (see the module docstring), so that
    ``project(matrix @ model)`` of a pose reads back as that pose.
    """
    y, p, r = (math.radians(a) for a in (yaw, pitch, roll))
    # In the head frame (z towards the viewer): R = Rz(roll) Ry(yaw) Rx(pitch). The camera frame flips z,
    # which turns Ry(yaw) into Ry(-yaw) and Rx(pitch) into Rx(-pitch) and leaves Rz unchanged.
    rz = np.array([[math.cos(r), -math.sin(r), 0.0], [math.sin(r), math.cos(r), 0.0], [0.0, 0.0, 1.0]])
    ry = np.array([[math.cos(-y), 0.0, math.sin(-y)], [0.0, 1.0, 0.0], [-math.sin(-y), 0.0, math.cos(-y)]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, math.cos(-p), -math.sin(-p)], [0.0, math.sin(-p), math.cos(-p)]])
    return np.asarray(rz @ ry @ rx, dtype=np.float64)


def matrix_to_euler(rotation: Float64Array) -> tuple[float, float, float]:
    """``(yaw, pitch, roll)`` degrees of a camera-frame rotation; the inverse of :func:`euler_to_matrix`."""
    flip = np.diag([1.0, 1.0, -1.0])
    head = flip @ rotation @ flip  # back to the head frame (z towards the viewer)
    pitch = math.atan2(head[2, 1], head[2, 2])
    yaw = math.atan2(-head[2, 0], math.hypot(head[0, 0], head[1, 0]))
    roll = math.atan2(head[1, 0], head[0, 0])
    return math.degrees(yaw), math.degrees(pitch), math.degrees(roll)


def camera_matrix(points: Float64Array, model: Float64Array, image_size: tuple[int, int] | None) -> Float64Array:
    """The pinhole camera used for one face (see the module docstring)."""
    if image_size is not None:
        height, width = image_size
        focal = float(max(height, width))
        centre = ((width - 1) / 2.0, (height - 1) / 2.0)
    else:
        # Face scale in px/mm from the spread of the points against the model's spread (rotation-free).
        spread_px = float(np.sqrt(((points - points.mean(0)) ** 2).sum(1).mean()))
        spread_mm = float(np.sqrt(((model[:, :2] - model[:, :2].mean(0)) ** 2).sum(1).mean()))
        focal = max(spread_px / max(spread_mm, 1e-9), 1e-3) * _ASSUMED_DISTANCE_MM
        low, high = points.min(0), points.max(0)
        centre = (float(low[0] + high[0]) / 2.0, float(low[1] + high[1]) / 2.0)
    return np.array([[focal, 0.0, centre[0]], [0.0, focal, centre[1]], [0.0, 0.0, 1.0]], dtype=np.float64)


def project_points(
    model: Float64Array, rotation: Float64Array, translation: Float64Array, camera: Float64Array
) -> Float64Array:
    """Pinhole projection of head-frame model points (mm, z towards the viewer) to pixels."""
    camera_frame = model * np.array([1.0, 1.0, -1.0])
    points = camera_frame @ rotation.T + translation.reshape(1, 3)
    projected = points @ camera.T
    return np.asarray(projected[:, :2] / projected[:, 2:3], dtype=np.float64)


def _solve_one(points: Float64Array, model: Float64Array, camera: Float64Array) -> tuple[float, float, float]:
    object_points = np.ascontiguousarray(model * np.array([1.0, 1.0, -1.0]))  # camera convention: z away
    image_points = np.ascontiguousarray(points)
    ok, rvec, tvec = cv2.solvePnP(object_points, image_points, camera, None, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:
        return (math.nan, math.nan, math.nan)
    rvec, tvec = cv2.solvePnPRefineLM(object_points, image_points, camera, None, rvec, tvec)
    if float(tvec[2, 0]) <= 0:  # a solution behind the camera is a degenerate fit
        return (math.nan, math.nan, math.nan)
    rotation, _ = cv2.Rodrigues(rvec)
    return matrix_to_euler(np.asarray(rotation, dtype=np.float64))


def estimate_head_pose(
    landmarks: npt.ArrayLike | torch.Tensor,
    image_size: tuple[int, int] | Sequence[tuple[int, int]] | None = None,
) -> Float64Array:
    """Head pose ``(B, 3)`` = yaw, pitch, roll in degrees from ``(B, N, 2)`` landmarks (N = 5, 68 or 106).

    ``image_size`` is ``(height, width)`` of the image the landmarks are in (one for all
    faces, or one per face); it places the camera. Faces whose fit fails get NaN (and a
    debug log line); they fail :func:`check_pose`.
    """
    points = _as_points(landmarks, name="landmarks")
    indices, model = reference_points(points.shape[1])
    sizes = _image_sizes(image_size, points.shape[0])
    poses = np.full((points.shape[0], 3), np.nan, dtype=np.float64)
    for face, size in enumerate(sizes):
        used = points[face, list(indices)]
        if float(np.ptp(used[:, 0])) < 1e-6 and float(np.ptp(used[:, 1])) < 1e-6:
            logger.debug("face %d: all landmarks at one point, no pose", face)
            continue
        poses[face] = _solve_one(used, model, camera_matrix(used, model, size))
        if not np.all(np.isfinite(poses[face])):
            logger.debug("face %d: solvePnP found no pose", face)
    return poses


def landmark_distance(
    a: npt.ArrayLike | torch.Tensor, b: npt.ArrayLike | torch.Tensor, face_size: npt.ArrayLike | torch.Tensor
) -> Float64Array:
    """NME ``(B,)``: mean Euclidean distance between corresponding points, divided by the face size.

    The face size convention is the one of ``Face.size``: the square root of the detection
    box area, in the same pixels as the points (for an ArcFace-aligned crop of side S, the
    crop side S is a fair face size). Scalar ``face_size`` applies to every face.
    """
    first, second = _landmark_pair(a, b, where="landmark_distance")
    sizes = _as_sizes(face_size, first.shape[0], name="face_size")
    distances = np.linalg.norm(first - second, axis=2)  # (B, N)
    return np.asarray(distances.mean(axis=1) / sizes, dtype=np.float64)


def region_distances(
    a: npt.ArrayLike | torch.Tensor, b: npt.ArrayLike | torch.Tensor, face_size: npt.ArrayLike | torch.Tensor
) -> list[dict[str, float]]:
    """Per face, the NME of each facial region (eyes, nose, mouth, ... for 5, 68 and 106 points; else "all")."""
    first, second = _landmark_pair(a, b, where="region_distances")
    sizes = _as_sizes(face_size, first.shape[0], name="face_size")
    regions = _REGIONS.get(first.shape[1], {"all": tuple(range(first.shape[1]))})
    distances = np.linalg.norm(first - second, axis=2) / sizes[:, None]
    return [{name: float(row[list(idx)].mean()) for name, idx in regions.items()} for row in distances]


@dataclass(frozen=True)
class PoseThresholds:
    """Largest differences between target and result a swap may have and still pass.

    Defaults: published swap methods keep head pose within 1.5-3 degrees (FaceForensics++
    protocol) and a landmark-based PnP pose has a few degrees of noise, so 10 degrees of yaw
    or pitch is a clear failure, not noise. Roll is read directly from the eye line and is
    the most precise angle, hence 8. Landmark distances are fractions of the face size
    (sqrt of the box area, about 2.5 inter-pupil distances): two detections of the same
    face in the same pose agree to about 0.01-0.02, so a mean of 0.05, or 0.08 in any one
    region (a mouth that opened, eyes that moved by a fifth of their distance), is an
    expression or geometry change a viewer sees.
    """

    max_yaw_diff: float = 10.0  # degrees
    max_pitch_diff: float = 10.0  # degrees
    max_roll_diff: float = 8.0  # degrees
    max_nme: float = 0.05  # mean landmark distance / face size over all points
    max_region_nme: float = 0.08  # the same, for the worst region (eyes, nose, mouth, brows, jaw)

    def __post_init__(self) -> None:
        for name in ("max_yaw_diff", "max_pitch_diff", "max_roll_diff", "max_nme", "max_region_nme"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise BadInputError(f"{name} must be a non-negative number, got {value!r}", where="PoseThresholds")


@dataclass(frozen=True)
class PoseReport:
    """The pose check of one face: poses are ``(yaw, pitch, roll)`` degrees, ``pose_diff`` absolute differences."""

    image_index: int
    face_index: int
    target_pose: tuple[float, float, float]
    result_pose: tuple[float, float, float]
    pose_diff: tuple[float, float, float]
    nme: float
    passed: bool
    reason: str  # "ok", or every limit that was exceeded, e.g. "yaw differs by 14.2 deg (limit 10.0)"
    worst_region: str = ""  # the region whose landmarks moved most
    worst_region_nme: float = 0.0


def _angle_difference(a: Float64Array, b: Float64Array) -> Float64Array:
    """Absolute angle differences in degrees, wrapped to [0, 180]."""
    return np.asarray(np.abs((a - b + 180.0) % 360.0 - 180.0), dtype=np.float64)


def _as_poses(poses: object, count: int, *, name: str) -> Float64Array:
    if isinstance(poses, torch.Tensor):
        poses = poses.detach().to("cpu", torch.float64).numpy()
    array = np.asarray(poses, dtype=np.float64)
    if array.shape != (count, 3):
        raise BadInputError(
            f"{name} must be (faces, 3) yaw, pitch, roll in degrees for {count} faces, got shape {array.shape}",
            where="check_pose",
        )
    return array


def _as_indices(value: object, count: int, *, default: Sequence[int]) -> list[int]:
    if value is None:
        return list(default)
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value).reshape(-1)
    if array.size == 1:
        array = np.full(count, int(array[0]))
    if array.shape != (count,):
        raise BadInputError(f"expected {count} indices, got {array.size}", where="check_pose")
    return [int(v) for v in array]


def check_pose(
    target_landmarks: npt.ArrayLike | torch.Tensor,
    result_landmarks: npt.ArrayLike | torch.Tensor,
    face_sizes: npt.ArrayLike | torch.Tensor,
    *,
    thresholds: PoseThresholds | None = None,
    image_index: Sequence[int] | torch.Tensor | None = None,
    face_index: Sequence[int] | torch.Tensor | None = None,
    image_size: tuple[int, int] | Sequence[tuple[int, int]] | None = None,
    target_poses: npt.ArrayLike | torch.Tensor | None = None,
    result_poses: npt.ArrayLike | torch.Tensor | None = None,
) -> list[PoseReport]:
    """Compare the swapped faces with their targets; one :class:`PoseReport` per face.

    ``target_landmarks`` and ``result_landmarks`` are ``(B, N, 2)`` in the same pixels
    (the target frame and the swapped frame, or the target crop and the swapped crop);
    ``face_sizes`` ``(B,)`` or a scalar in those pixels. Poses are estimated from the
    landmarks unless given (``(B, 3)`` yaw, pitch, roll, e.g. ``Face.pose`` from
    insightface's 1k3d68). ``image_index`` defaults to ``0..B-1`` and ``face_index`` to 0.
    """
    limits = thresholds or PoseThresholds()
    target, result = _landmark_pair(target_landmarks, result_landmarks, where="check_pose")
    count = target.shape[0]
    nme = landmark_distance(target, result, face_sizes)
    regions = region_distances(target, result, face_sizes)
    pose_a = (
        estimate_head_pose(target, image_size)
        if target_poses is None
        else _as_poses(target_poses, count, name="target_poses")
    )
    pose_b = (
        estimate_head_pose(result, image_size)
        if result_poses is None
        else _as_poses(result_poses, count, name="result_poses")
    )
    diff = _angle_difference(pose_a, pose_b)
    images = _as_indices(image_index, count, default=range(count))
    faces = _as_indices(face_index, count, default=[0] * count)
    reports = []
    for i in range(count):
        problems = []
        if not np.all(np.isfinite(diff[i])):
            problems.append("head pose could not be estimated")
        else:
            for axis, value, limit in zip(
                ("yaw", "pitch", "roll"),
                diff[i],
                (limits.max_yaw_diff, limits.max_pitch_diff, limits.max_roll_diff),
                strict=True,
            ):
                if value > limit:
                    problems.append(f"{axis} differs by {value:.1f} deg (limit {limit:.1f})")
        if nme[i] > limits.max_nme:
            problems.append(f"landmarks moved by {nme[i]:.3f} of the face size (limit {limits.max_nme:.3f})")
        worst = max(regions[i], key=lambda name: regions[i][name])
        worst_value = regions[i][worst]
        if worst_value > limits.max_region_nme:
            problems.append(f"{worst} moved by {worst_value:.3f} of the face size (limit {limits.max_region_nme:.3f})")
        reports.append(
            PoseReport(
                image_index=images[i],
                face_index=faces[i],
                target_pose=(float(pose_a[i, 0]), float(pose_a[i, 1]), float(pose_a[i, 2])),
                result_pose=(float(pose_b[i, 0]), float(pose_b[i, 1]), float(pose_b[i, 2])),
                pose_diff=(float(diff[i, 0]), float(diff[i, 1]), float(diff[i, 2])),
                nme=float(nme[i]),
                passed=not problems,
                reason="; ".join(problems) if problems else "ok",
                worst_region=worst,
                worst_region_nme=worst_value,
            )
        )
    failed = sum(not r.passed for r in reports)
    if failed:
        logger.info("pose check: %d of %d faces failed", failed, count)
    return reports


def apply_pose_policy(
    swapped_crops: torch.Tensor,
    original_crops: torch.Tensor,
    reports: Sequence[PoseReport],
    policy: FailurePolicy = "keep",
) -> torch.Tensor:
    """Crops to paste back: with ``"original"``, each failed face gets its original crop; a new tensor."""
    if policy not in FAILURE_POLICIES:
        raise BadInputError(
            f"unknown pose failure policy {policy!r}",
            where="apply_pose_policy",
            fix=f"use one of {', '.join(FAILURE_POLICIES)}",
        )
    if swapped_crops.shape != original_crops.shape:
        raise BadInputError(
            f"swapped crops {tuple(swapped_crops.shape)} and original crops {tuple(original_crops.shape)} differ",
            where="apply_pose_policy",
        )
    if len(reports) != swapped_crops.shape[0]:
        raise BadInputError(
            f"{len(reports)} pose reports for {swapped_crops.shape[0]} crops", where="apply_pose_policy"
        )
    result = swapped_crops.clone()
    if policy == "keep":
        return result
    failed = torch.tensor([not r.passed for r in reports], dtype=torch.bool, device=swapped_crops.device)
    if bool(failed.any()):
        result[failed] = original_crops[failed].to(result.dtype)
    return result


def format_pose_report(reports: Sequence[PoseReport]) -> str:
    """A fixed-width table of the reports, one line per face, and a summary line."""
    header = (
        f"{'image':>5} {'face':>4}  {'target yaw/pitch/roll':>21}  {'result yaw/pitch/roll':>21}  "
        f"{'diff yaw/pitch/roll':>19}  {'NME':>6}  {'result':<6} reason"
    )
    lines = [header, "-" * len(header)]

    def triple(values: tuple[float, float, float], width: int) -> str:
        return f"{values[0]:6.1f} {values[1]:6.1f} {values[2]:6.1f}".rjust(width)

    for r in reports:
        lines.append(
            f"{r.image_index:>5} {r.face_index:>4}  {triple(r.target_pose, 21)}  {triple(r.result_pose, 21)}  "
            f"{triple(r.pose_diff, 19)}  {r.nme:6.3f}  {'pass' if r.passed else 'FAIL':<6} {r.reason}"
        )
    failed = sum(not r.passed for r in reports)
    lines.append(f"{len(reports) - failed} of {len(reports)} faces passed")
    return "\n".join(lines)


_TARGET_COLOUR = (0.0, 1.0, 0.0)  # green (RGB)
_RESULT_COLOUR = (1.0, 0.0, 0.0)  # red (RGB)


def draw_pose_overlay(
    images: torch.Tensor,
    target_landmarks: npt.ArrayLike | torch.Tensor,
    result_landmarks: npt.ArrayLike | torch.Tensor,
    reports: Sequence[PoseReport] | None = None,
    *,
    image_index: Sequence[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """A debug picture: target landmarks in green, result landmarks in red, a line between pairs.

    ``images`` ``(B, 3, H, W)``; landmarks ``(F, N, 2)`` in image pixels; face ``f`` is drawn
    on ``images[image_index[f]]`` (default: face ``f`` on image ``f``, or on the report's
    image). With ``reports``, each face gets ``pass`` or ``FAIL`` and its worst difference
    written above it. Returns a new tensor (same dtype and device); only drawn pixels change.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise BadInputError("expected (B, 3, H, W) images", where="draw_pose_overlay")
    target, result = _landmark_pair(target_landmarks, result_landmarks, where="draw_pose_overlay")
    count = target.shape[0]
    if reports is not None and len(reports) != count:
        raise BadInputError(f"{len(reports)} reports for {count} faces", where="draw_pose_overlay")
    default = [r.image_index for r in reports] if reports is not None else list(range(count))
    owners = _as_indices(image_index, count, default=default)
    batch, _, height, width = (int(n) for n in images.shape)
    if any(o < 0 or o >= batch for o in owners):
        raise BadInputError(f"a face refers to an image outside the batch of {batch}", where="draw_pose_overlay")

    output = images.detach().clone()
    for index in sorted(set(owners)):
        canvas = np.array(
            images[index].detach().to("cpu", torch.float32).permute(1, 2, 0).numpy(), order="C", copy=True
        )
        for face in (f for f in range(count) if owners[f] == index):
            spread = max(float(np.ptp(target[face][:, 0])), float(np.ptp(target[face][:, 1])), 1.0)
            radius = max(1, round(spread / 60))
            thickness = max(1, round(spread / 150))
            # A result without a face (NaN in its report) has no landmarks of its own: only the target's are drawn.
            measured = reports is None or math.isfinite(reports[face].nme)
            for a, b in zip(target[face], result[face], strict=True):
                start = (round(float(a[0])), round(float(a[1])))
                end = (round(float(b[0])), round(float(b[1])))
                if measured:
                    cv2.line(canvas, start, end, (1.0, 1.0, 0.0), thickness, cv2.LINE_AA)
                cv2.circle(canvas, start, radius, _TARGET_COLOUR, -1, cv2.LINE_AA)
                if measured:
                    cv2.circle(canvas, end, radius, _RESULT_COLOUR, -1, cv2.LINE_AA)
            if reports is not None:
                report = reports[face]
                worst = int(np.argmax(np.asarray(report.pose_diff)))
                text = "pass" if report.passed else "FAIL"
                if measured:
                    text += f" d{('yaw', 'pitch', 'roll')[worst]} {report.pose_diff[worst]:.0f} nme {report.nme:.2f}"
                else:
                    text += f" {report.reason}"
                scale = max(0.3, spread / 250)
                low_x = float(min(target[face][:, 0].min(), result[face][:, 0].min()))
                low_y = float(min(target[face][:, 1].min(), result[face][:, 1].min()))
                origin = (max(0, round(low_x)), max(round(12 * scale), round(low_y - 6 * scale)))
                colour = _TARGET_COLOUR if report.passed else _RESULT_COLOUR
                # OpenCV draws text on 8-bit images only: draw its coverage, then blend the colour in.
                coverage = np.zeros((height, width), dtype=np.uint8)
                cv2.putText(coverage, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, 255, thickness, cv2.LINE_AA)
                alpha = coverage.astype(np.float32)[:, :, None] / 255.0
                touched = coverage > 0
                blended = canvas * (1.0 - alpha) + np.asarray(colour, dtype=np.float32) * alpha
                canvas[touched] = blended[touched]
        drawn = torch.from_numpy(canvas).permute(2, 0, 1).to(device=images.device, dtype=images.dtype)
        # Only pixels the drawing touched change; the rest keep their exact values.
        output[index] = torch.where(drawn != output[index], drawn, output[index])
    logger.debug(
        "pose overlay drawn for %d faces on %d of %d images (%dx%d)", count, len(set(owners)), batch, width, height
    )
    return output
