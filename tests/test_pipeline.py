"""The swap pipeline on real photos: alignment -> tiny random generator -> paste-back, policies, chunks, smoothing."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from tiny_models import tiny_facemagic_config, write_arcface

from facemagic_core.align import estimate_similarity, face_template, invert_affine, transform_points
from facemagic_core.analysis import FaceAnalyzer
from facemagic_core.errors import (
    BadInputError,
    CancelledError,
    FaceMagicError,
    IncompatibleIdentityError,
    ModelIntegrityError,
    NoFaceError,
)
from facemagic_core.generators import SwapGenerator, SwapOutput, TorchSwapper, load_generator
from facemagic_core.images import load_image
from facemagic_core.pipeline import (
    FaceTracker,
    SmoothingConfig,
    SwapOptions,
    align_target_faces,
    blend_swap,
    check_swap_pose,
    forward_swap,
    prepare_swap,
    swap_faces,
)
from facemagic_core.tracking import TrackingConfig
from facemagic_core.types import Face, Identity

MODEL = "arcface_w600k_r50"
CPU = ["CPUExecutionProvider"]
#: The default ellipse mask stays within the face box grown by this fraction of the face size on every side: the
#: aligned crop spans ~1.45 face sizes and is rotated with the face, so the mask may reach past YuNet's tight box.
ELLIPSE_MARGIN = 0.35


def unit_identity(seed: int, dim: int = 512, model: str = MODEL) -> Identity:
    return Identity(np.random.default_rng(seed).standard_normal(dim).astype(np.float32), embedding_model=model)


@pytest.fixture(scope="module")
def analyzer(yunet_path: Path, tmp_path_factory: pytest.TempPathFactory) -> FaceAnalyzer:
    recognizer = write_arcface(tmp_path_factory.mktemp("arcface") / "w600k_r50.onnx")
    return FaceAnalyzer(backend="yunet", detector=yunet_path, recognizer=recognizer, providers=CPU)


@pytest.fixture(scope="module")
def generator() -> TorchSwapper:
    """A tiny random FaceMagic network (3 blocks, 32 px crops, soft mask head)."""
    torch.manual_seed(0)
    cfg = tiny_facemagic_config()
    return TorchSwapper(SwapGenerator.from_config(cfg).eval(), name="tiny", device="cpu")


@pytest.fixture(scope="module")
def portrait(faces_dir: Path) -> torch.Tensor:
    return load_image(faces_dir / "iron_man.jpg")


@pytest.fixture(scope="module")
def clip_frames(clip_path: Path) -> torch.Tensor:
    from facemagic_core.video import read_frames

    return read_frames(clip_path, max_frames=4)


class FakeSwapper:
    """A SwapModel stand-in: 'identity' returns the crop, 'mirror' flips it, 'tint' shifts it by the source's mean.

    It records the source and target identities of every call.
    """

    def __init__(self, mode: str = "identity", size: int = 128, blocks: int = 2, oom_above: int | None = None):
        self.name = f"fake-{mode}"
        self.input_size = size
        self.template = "arcface"
        self.embedding_model = MODEL
        self.num_blocks = blocks
        self.device = torch.device("cpu")
        self.dtype = torch.float32
        self.mode = mode
        self.oom_above = oom_above
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def swap(
        self, crops: torch.Tensor, source: torch.Tensor, target: torch.Tensor, strength: torch.Tensor
    ) -> SwapOutput:
        if self.oom_above is not None and crops.shape[0] > self.oom_above:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.calls.append((source.clone(), target.clone()))
        if self.mode == "mirror":
            return SwapOutput(crops.flip(-1).clone())
        if self.mode == "tint":
            return SwapOutput((crops + source.mean(dim=(1, 2))[:, None, None, None] * 50).clamp(0, 1))
        return SwapOutput(crops.clone())


def crop_coordinates(mask: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Crop-space positions (P, 2) of the frame pixels where ``mask`` (H, W) is positive."""
    ys, xs = torch.nonzero(mask > 0, as_tuple=True)
    points = torch.stack([xs, ys], dim=1).double()[None]
    return transform_points(points, matrix[None].double())[0]


# ---------------------------------------------------------------------------------------------------------------------
# Alignment -> generator -> paste-back on real photos


def test_swap_changes_only_pixels_under_the_mask_which_lies_on_the_face(
    portrait: torch.Tensor, analyzer: FaceAnalyzer, generator: TorchSwapper
) -> None:
    before = portrait.clone()
    result = swap_faces(portrait, unit_identity(1), analyzer, generator)
    assert torch.equal(portrait, before)  # the input is untouched
    assert result.images.shape == portrait.shape and result.images.dtype == portrait.dtype
    assert result.masks.shape == (1, *portrait.shape[2:])
    assert result.face_counts == (1,) and result.frames_without_face == ()

    mask = result.masks[0]
    changed = (result.images != portrait).any(dim=1)[0]
    assert int(changed.sum()) > 10_000  # the face really changed
    assert not bool((changed & (mask <= 0)).any())  # outside the mask: bit for bit the input
    assert torch.equal(result.images[0][:, mask <= 0], portrait[0][:, mask <= 0])

    face = result.faces[0]
    x0, y0, x1, y1 = (float(v) for v in face.bbox)
    margin = ELLIPSE_MARGIN * face.size
    ys, xs = torch.nonzero(mask > 0, as_tuple=True)
    assert float(xs.min()) >= x0 - margin and float(xs.max()) <= x1 + margin
    assert float(ys.min()) >= y0 - margin and float(ys.max()) <= y1 + margin
    # ...and exactly inside the aligned crop's footprint (a bilinear pixel of slack).
    points = estimate_similarity(
        torch.from_numpy(face.landmarks_5[None].astype(np.float64)), face_template("arcface", 32)
    )
    inside = crop_coordinates(mask, points[0])
    assert float(inside.min()) >= -1.5 and float(inside.max()) <= 32.5


@pytest.mark.parametrize("dtype", [torch.float16, torch.float64])
def test_output_keeps_the_input_dtype_and_untouched_pixels_exactly(
    dtype: torch.dtype, portrait: torch.Tensor, analyzer: FaceAnalyzer, generator: TorchSwapper
) -> None:
    image = F.interpolate(portrait, scale_factor=0.5, mode="area").to(dtype)
    result = swap_faces(image, unit_identity(1), analyzer, generator, SwapOptions(mask="box"))
    assert result.images.dtype == dtype and result.images.shape == image.shape
    outside = result.masks[0] <= 0
    assert torch.equal(result.images[0][:, outside], image[0][:, outside])
    assert bool((result.images != image).any())


@pytest.mark.parametrize(
    "options",
    [
        SwapOptions(),
        SwapOptions(mask="box", colour="lab", erosion=0.1),
        SwapOptions(poisson=True),
    ],
    ids=["default", "box-lab", "poisson"],
)
def test_byte_frames_swap_like_float_frames(
    options: SwapOptions, clip_frames: torch.Tensor, analyzer: FaceAnalyzer, generator: TorchSwapper
) -> None:
    """A video's uint8 frames are swapped without converting whole frames: the result is the float swap's,
    rounded (within two levels, a few pixels), bytes in and bytes out, untouched pixels and the input kept."""
    as_bytes = (clip_frames[:2] * 255 + 0.5).to(torch.uint8).contiguous(memory_format=torch.channels_last)
    before = as_bytes.clone()
    limit = torch.ones(2, *as_bytes.shape[2:])
    limit[:, :, : as_bytes.shape[3] // 2] = 0.0  # the left half may not change
    limit[:, :, as_bytes.shape[3] // 2 :] = 0.6  # the right half only partly
    ours = swap_faces(as_bytes, unit_identity(1), analyzer, generator, options, external_mask=limit)
    theirs = swap_faces(as_bytes.float() / 255, unit_identity(1), analyzer, generator, options, external_mask=limit)
    assert torch.equal(as_bytes, before)
    assert ours.images.dtype == torch.uint8 and ours.masks.dtype == torch.uint8
    assert ours.face_counts == theirs.face_counts and sum(ours.face_counts) == 2
    rounded = (theirs.images * 255 + 0.5).clamp(0, 255).to(torch.uint8)
    difference = (ours.images.int() - rounded.int()).abs()
    assert int(difference.max()) <= 2 and float((difference > 0).float().mean()) < 1e-3
    changed = (ours.images != as_bytes).any(dim=1)
    assert int(changed.sum()) > 500 and not bool(changed[:, :, : as_bytes.shape[3] // 2].any())
    assert not bool((changed & (ours.masks == 0)).any())
    assert float((ours.masks.float() / 255 - theirs.masks).abs().max()) <= 0.5 / 255 + 1e-6
    # A byte limit (a byte swap's own mask, 0..255) limits as its float form does.
    as_byte_limit = limit.mul(255).round().byte()  # 153 for 0.6
    byte_limit = swap_faces(as_bytes, unit_identity(1), analyzer, generator, options, external_mask=as_byte_limit)
    assert int((byte_limit.images.int() - ours.images.int()).abs().max()) <= 1
    assert int((byte_limit.masks.int() - ours.masks.int()).abs().max()) <= 1
    assert 100 < int(byte_limit.masks.max()) <= 153  # limited to 0.6, not read as a 0/1 mask


def test_float_frames_are_scanned_once(
    monkeypatch: pytest.MonkeyPatch, clip_frames: torch.Tensor, analyzer: FaceAnalyzer, generator: TorchSwapper
) -> None:
    """swap_faces reads every pixel once for NaN and range (on entry); the analyzer does not scan the chunks again."""
    scanned: list[int] = []
    real = torch.aminmax

    def counting(tensor: torch.Tensor, *args: object, **kwargs: object) -> object:
        if tensor.ndim == 4 and tuple(tensor.shape[2:]) == tuple(clip_frames.shape[2:]):
            scanned.append(int(tensor.shape[0]))
        return real(tensor, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(torch, "aminmax", counting)
    result = swap_faces(clip_frames, unit_identity(1), analyzer, generator, SwapOptions(chunk_size=2))
    assert sum(result.face_counts) == clip_frames.shape[0]
    assert sum(scanned) == clip_frames.shape[0]  # not 4x: entry, detection, embedding and its alignment each did
    analyzer.analyze(clip_frames[:1])  # on its own the analyzer still checks what it is given
    assert sum(scanned) == clip_frames.shape[0] + 1
    scanned.clear()  # faces followed across chunks (swap_stream): also once
    swap_faces(clip_frames, unit_identity(1), analyzer, generator, SwapOptions(chunk_size=2, tracking=TrackingConfig()))
    assert sum(scanned) == clip_frames.shape[0]


def test_frames_without_a_face_are_passed_through_and_reported(
    clip_frames: torch.Tensor, analyzer: FaceAnalyzer, generator: TorchSwapper
) -> None:
    frames = clip_frames[:3].clone()
    frames = torch.cat([frames[:1], torch.full_like(frames[:1], 0.5), frames[1:]])  # frame 1: flat grey, no face
    result = swap_faces(frames, unit_identity(2), analyzer, generator, SwapOptions(no_face="pass"))
    assert result.frames_without_face == (1,)
    assert result.face_counts == (1, 0, 1, 1)
    assert result.images.shape == frames.shape  # not dropped
    assert torch.equal(result.images[1], frames[1]) and float(result.masks[1].max()) == 0.0
    for frame in (0, 2, 3):
        assert bool((result.images[frame] != frames[frame]).any())

    with pytest.raises(NoFaceError, match=r"frame 2 of 4 \(index 1\)"):
        swap_faces(frames, unit_identity(2), analyzer, generator, SwapOptions(no_face="error"))


def test_all_six_faces_of_t1_are_swapped_each_with_its_identity(t1_path: Path, analyzer: FaceAnalyzer) -> None:
    image = load_image(t1_path)
    fake = FakeSwapper("tint", size=64)
    identities = [unit_identity(10), unit_identity(11)]
    options = SwapOptions(face_index=None, face_order="left_to_right", mask="box")
    result = swap_faces(image, identities, analyzer, fake, options)
    assert result.face_counts == (6,)
    faces = result.faces
    assert [f.center[0] for f in faces] == sorted(f.center[0] for f in faces)  # selection order: left to right
    for face in faces:  # every face region changed
        x0, y0, x1, y1 = (round(float(v)) for v in face.bbox)
        centre = result.masks[0, (y0 + y1) // 2 - 2 : (y0 + y1) // 2 + 2, (x0 + x1) // 2 - 2 : (x0 + x1) // 2 + 2]
        assert float(centre.min()) > 0.5
    ((source, target),) = fake.calls
    expected = [identities[min(i, 1)].for_blocks(2) for i in range(6)]  # the last identity repeats
    torch.testing.assert_close(source, torch.from_numpy(np.stack(expected)))
    embeddings = np.stack([f.embedding / np.linalg.norm(f.embedding) for f in faces])
    torch.testing.assert_close(target, torch.from_numpy(embeddings.astype(np.float32)))  # the targets' own identities


def test_identity_of_the_wrong_size_or_recogniser_is_refused(
    portrait: torch.Tensor, analyzer: FaceAnalyzer, generator: TorchSwapper
) -> None:
    with pytest.raises(IncompatibleIdentityError, match="256 numbers per embedding") as caught:
        swap_faces(portrait, unit_identity(1, dim=256), analyzer, generator)
    assert isinstance(caught.value, FaceMagicError) and caught.value.fix
    with pytest.raises(IncompatibleIdentityError, match="arcface_glintr100"):
        swap_faces(portrait, unit_identity(1, model="arcface_glintr100"), analyzer, generator)
    with pytest.raises(BadInputError, match="2 strength values for a generator with 3"):
        swap_faces(portrait, unit_identity(1), analyzer, generator, SwapOptions(strength=(1.0, 0.5)))
    # a stage-level mismatch: crops prepared for another generator
    batch = prepare_swap(portrait, analyzer, FakeSwapper(size=64))
    with pytest.raises(BadInputError, match="prepare the swap with the generator"):
        forward_swap(batch, generator, unit_identity(1))


def test_a_hull_mask_without_a_landmark_model_is_refused_before_any_work(
    portrait: torch.Tensor, analyzer: FaceAnalyzer
) -> None:
    fake = FakeSwapper()
    assert not analyzer.has_dense_landmarks  # YuNet alone: five points per face
    with pytest.raises(BadInputError, match="hull mask needs 68- or 106-point landmarks") as error:
        swap_faces(portrait, unit_identity(1), analyzer, fake, SwapOptions(mask="hull"))
    assert fake.calls == [] and error.value.fix and "ellipse" in error.value.fix


def test_corrupt_model_file_is_never_loaded(tmp_path: Path) -> None:
    broken = tmp_path / "inswapper_128.onnx"
    broken.write_bytes(b"\x08\x07\x12\x04this is not a complete protobuf" * 3)
    with pytest.raises(ModelIntegrityError, match=str(broken.name)):
        load_generator(broken, model_dir=tmp_path, device="cpu")


def test_stage_functions_compose_like_swap_faces(
    portrait: torch.Tensor, analyzer: FaceAnalyzer, generator: TorchSwapper
) -> None:
    options = SwapOptions(weave=2, strength=(1.0, 0.5, 0.0))
    batch = prepare_swap(portrait, analyzer, generator, weave=2)
    assert batch.crops.shape == (1, 3, 64, 64) and batch.num_frames == 1 and batch.face_index == (0,)
    swapped = forward_swap(batch, generator, unit_identity(3), options.strength)
    assert swapped.images.shape == (1, 3, 64, 64) and swapped.mask is not None
    images, masks = blend_swap(portrait, batch, swapped)
    result = swap_faces(portrait, unit_identity(3), analyzer, generator, options)
    torch.testing.assert_close(result.images, images)
    torch.testing.assert_close(result.masks, masks)
    # an external mask of zeros keeps every pixel; keep_faces=False does too
    untouched, _ = blend_swap(portrait, batch, swapped, external_mask=torch.zeros(1, *portrait.shape[2:]))
    assert torch.equal(untouched, portrait)
    kept, _ = blend_swap(portrait, batch, swapped, keep_faces=[False])
    assert torch.equal(kept, portrait)
    with pytest.raises(BadInputError, match="68- or 106-point"):
        blend_swap(portrait, batch, swapped, mask="hull")


# ---------------------------------------------------------------------------------------------------------------------
# Pose check


def test_pose_check_passes_an_unchanged_face_and_fails_a_mirrored_one(
    portrait: torch.Tensor, analyzer: FaceAnalyzer
) -> None:
    image = F.interpolate(portrait, scale_factor=0.5, mode="area")
    same = FakeSwapper("identity")
    batch = prepare_swap(image, analyzer, same)
    report = check_swap_pose(batch, forward_swap(batch, same, unit_identity(1)), analyzer).reports[0]
    assert report.passed and report.nme < 0.01 and max(report.pose_diff) < 1.0

    mirror = FakeSwapper("mirror")
    original = swap_faces(
        image, unit_identity(1), analyzer, mirror, SwapOptions(pose_check=True, pose_policy="original")
    )
    assert not original.pose_reports[0].passed
    assert original.pose_reports[0].pose_diff[0] > 10  # mirroring negates the yaw of this turned head
    assert torch.equal(original.images, image)  # the failed face was left exactly as it was
    kept = swap_faces(image, unit_identity(1), analyzer, mirror, SwapOptions(pose_check=True, pose_policy="keep"))
    assert not kept.pose_reports[0].passed and bool((kept.images != image).any())
    targets, results = kept.pose_landmarks  # type: ignore[misc]
    assert targets.shape == results.shape == (1, 5, 2)


# ---------------------------------------------------------------------------------------------------------------------
# Chunks, progress, out-of-memory, cancelling


def test_chunks_report_progress_and_match_one_call(clip_frames: torch.Tensor, analyzer: FaceAnalyzer) -> None:
    fake = FakeSwapper("tint", size=64)
    calls: list[tuple[int, int]] = []
    chunked = swap_faces(
        clip_frames, unit_identity(4), analyzer, fake, SwapOptions(chunk_size=3), lambda d, t: calls.append((d, t))
    )
    assert calls == [(3, 4), (4, 4)]
    whole = swap_faces(clip_frames, unit_identity(4), analyzer, fake, SwapOptions(chunk_size=4))
    torch.testing.assert_close(chunked.images, whole.images, rtol=0, atol=1e-6)  # float rounding of the warps
    assert chunked.face_counts == whole.face_counts == (1, 1, 1, 1)


def test_out_of_memory_halves_the_chunk_and_retries(clip_frames: torch.Tensor, analyzer: FaceAnalyzer) -> None:
    fake = FakeSwapper("tint", size=64, oom_above=1)
    result = swap_faces(clip_frames, unit_identity(4), analyzer, fake, SwapOptions(chunk_size=4))
    reference = swap_faces(clip_frames, unit_identity(4), analyzer, FakeSwapper("tint", size=64))
    torch.testing.assert_close(result.images, reference.images, rtol=0, atol=1e-6)
    assert all(source.shape[0] == 1 for source, _ in fake.calls)
    hopeless = FakeSwapper("tint", size=64, oom_above=0)  # even one face does not fit
    with pytest.raises(BadInputError, match="out of memory on cpu even with one frame per chunk") as error:
        swap_faces(clip_frames, unit_identity(4), analyzer, hopeless, SwapOptions(chunk_size=4))
    assert "frame 1 of 4" in str(error.value) and error.value.fix


def test_a_cancelling_progress_callback_stops_the_run(clip_frames: torch.Tensor, analyzer: FaceAnalyzer) -> None:
    def cancel(done: int, total: int) -> None:
        raise CancelledError("cancelled by the user", where=f"frame {done} of {total}")

    with pytest.raises(CancelledError):
        swap_faces(clip_frames, unit_identity(4), analyzer, FakeSwapper(size=64), SwapOptions(chunk_size=2), cancel)


# ---------------------------------------------------------------------------------------------------------------------
# Temporal smoothing


def synthetic_track(seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    """A 200 px face: still for 30 frames, moving right by 2 % of its size per frame for 30, still for 30.

    Landmarks carry Gaussian noise of 1 % of the face size per coordinate (a jittery detector)."""
    rng = np.random.default_rng(seed)
    size = 200.0
    shape = (face_template("arcface", 112).astype(np.float64) - 56.0) / 112.0 * size
    x, clean, noisy = 400.0, [], []
    for frame in range(90):
        if 30 <= frame < 60:
            x += 0.02 * size
        points = shape + np.array([x, 300.0])
        clean.append(points)
        noisy.append(points + rng.normal(0.0, 0.01 * size, points.shape))
    return np.array(clean), np.array(noisy), size


def crop_corners(landmarks: np.ndarray) -> np.ndarray:
    """Where the four corners of the 128 px aligned crop land in the frame, per frame: (T, 4, 2)."""
    matrices = estimate_similarity(torch.from_numpy(landmarks), face_template("arcface", 128))
    corners = torch.tensor([[0.0, 0.0], [127.0, 0.0], [0.0, 127.0], [127.0, 127.0]], dtype=torch.float64)
    return transform_points(corners.expand(len(landmarks), 4, 2), invert_affine(matrices)).numpy()


def test_landmark_smoothing_steadies_the_crop_and_follows_the_motion() -> None:
    clean, noisy, size = synthetic_track()
    tracker = FaceTracker(SmoothingConfig())
    smoothed = []
    for chunk in np.array_split(np.arange(90), 7):  # in chunks, like a streamed video
        faces = []
        for frame in chunk:
            centre = noisy[frame].mean(axis=0)
            box = np.concatenate([centre - size / 2, centre + size / 2]).astype(np.float32)
            faces.append([Face(bbox=box, score=0.9, landmarks_5=noisy[frame].astype(np.float32))])
        smoothed.extend(faces[0].landmarks_5 for faces in tracker.smooth(faces))
    truth, raw, smooth = crop_corners(clean), crop_corners(noisy), crop_corners(np.array(smoothed, np.float64))

    def jitter(corners: np.ndarray, frames: slice) -> float:
        """RMS frame-to-frame movement of the crop corners beyond the true movement (pixels)."""
        extra = (np.diff(corners, axis=0) - np.diff(truth, axis=0))[frames]
        return float(np.sqrt((extra**2).sum(-1).mean()))

    still = slice(5, 29)
    assert jitter(raw, still) / jitter(smooth, still) > 6.0  # measured 9.2x on still stretches
    assert jitter(raw, slice(None)) / jitter(smooth, slice(None)) > 2.5  # measured 3.4x over the whole track
    error = np.sqrt(((smooth - truth) ** 2).sum(-1).mean(-1)) / size  # crop position error, in face sizes
    assert float(error[30:60].mean()) < 0.03  # follows the motion: lag below 3 % of the face size
    assert float(error[75:].mean()) < 0.01  # and settles on the new position once the face stops


def test_tracker_keeps_two_faces_apart() -> None:
    tracker = FaceTracker()
    base = (face_template("arcface", 112).astype(np.float32) - 56) / 112 * 100

    def face(x: float) -> Face:
        box = np.array([x - 50, 150, x + 50, 250], np.float32)
        return Face(bbox=box, score=0.9, landmarks_5=base + np.float32([x, 200]))

    tracker.smooth([[face(100), face(400)]])
    ((left, right),) = tracker.smooth([[face(402), face(101)]])  # listed in the other order
    assert abs(left.center[0] - 402) < 1 and float(left.landmarks_5[:, 0].mean()) > 390
    assert float(right.landmarks_5[:, 0].mean()) < 110  # each face smoothed on its own track


def test_options_are_checked() -> None:
    with pytest.raises(BadInputError, match="mask kind"):
        SwapOptions(mask="circle")  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="strength"):
        SwapOptions(strength=1.5)
    with pytest.raises(BadInputError, match="weave"):
        SwapOptions(weave=9)
    assert dataclasses.replace(SwapOptions(), face_index=None).face_index is None
    with pytest.raises(BadInputError, match="1 face lists for 2 frames"):
        align_target_faces(torch.zeros(2, 3, 64, 64), [[]], FakeSwapper())


class DenseLandmarkAnalyzer:
    """Finds one face in the middle of every picture, with 106 fixed landmarks (a stand-in for 2d106det)."""

    embedding_model = MODEL
    has_dense_landmarks = True

    def __init__(self, pattern: np.ndarray) -> None:
        self.pattern = pattern  # (106, 2) as fractions of the picture side

    def analyze(self, images: torch.Tensor, *, landmarks: bool = True, embeddings: bool = True) -> list[list[Face]]:
        side = images.shape[-1]
        points = (self.pattern * side).astype(np.float32)
        box = np.array([side * 0.3, side * 0.3, side * 0.7, side * 0.7], np.float32)
        five = points[[38, 88, 86, 52, 61]]
        return [
            [Face(bbox=box, score=0.9, landmarks_5=five, image_index=i, landmarks=points)] for i in range(len(images))
        ]

    def embed_faces(self, images: torch.Tensor, faces: list[Face]) -> list[Face]:
        return [dataclasses.replace(face, embedding=np.ones(512, np.float32)) for face in faces]


def test_pose_check_uses_dense_landmarks_and_maps_them_to_the_frame(portrait: torch.Tensor) -> None:
    rng = np.random.default_rng(0)
    pattern = 0.35 + 0.3 * rng.random((106, 2))
    analyzer = DenseLandmarkAnalyzer(pattern)
    batch = prepare_swap(portrait, analyzer, FakeSwapper())
    check = check_swap_pose(batch, batch.crops.clone(), analyzer)
    assert check.target_landmarks.shape == check.result_landmarks.shape == (1, 106, 2)
    assert check.reports[0].passed and check.reports[0].nme == pytest.approx(0.0, abs=1e-6)
    # The canvas is twice the crop, the crop in its middle: canvas point p is crop point p - 64, then crop -> frame.
    crop_points = torch.from_numpy(pattern * 256 - 64)[None]
    expected = transform_points(crop_points, invert_affine(batch.matrices.double()))[0].numpy()
    np.testing.assert_allclose(check.target_landmarks[0], expected, atol=1e-3)


def test_check_recognisers_refuses_an_analyzer_of_another_embedding_space() -> None:
    from types import SimpleNamespace

    from facemagic_core.errors import IncompatibleIdentityError
    from facemagic_core.pipeline import check_recognisers

    generator = SimpleNamespace(name="tiny", embedding_model="arcface_w600k_r50")
    check_recognisers(SimpleNamespace(embedding_model="arcface_w600k_r50"), generator)  # type: ignore[arg-type]
    with pytest.raises(IncompatibleIdentityError, match="arcface_glintr100") as error:
        check_recognisers(SimpleNamespace(embedding_model="arcface_glintr100"), generator, where="FaceMagic Swap")  # type: ignore[arg-type]
    assert error.value.where == "FaceMagic Swap" and "buffalo_l" in str(error.value)
