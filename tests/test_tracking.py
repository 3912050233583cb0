"""Tracking faces across frames: missed detections filled in, identities kept per track, reference thresholds."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_video import BrightenSwapper
from tiny_models import write_arcface

from facemagic_core import video
from facemagic_core.analysis import FaceAnalyzer
from facemagic_core.errors import BadInputError
from facemagic_core.mapping import FaceMapping, MappingRule
from facemagic_core.pipeline import SwapOptions, swap_faces, swap_video
from facemagic_core.tracking import FaceTracks, TrackingConfig, blend_faces
from facemagic_core.types import Face, Identity

CLIP_FRAMES = 24
DROPPED = (9, 10, 11)  # the detector misses the face in these frames
DROPPED_AT_END = (22, 23)


class DroppingAnalyzer:
    """Wraps an analyzer; returns no face for the chosen frames (counted over the calls, in order)."""

    def __init__(self, inner: FaceAnalyzer, dropped: Sequence[int]) -> None:
        self.inner = inner
        self.dropped = set(dropped)
        self.seen = 0
        self.embedding_model = inner.embedding_model
        self.has_dense_landmarks = inner.has_dense_landmarks

    def analyze(self, images: torch.Tensor, **options: Any) -> list[list[Face]]:
        found = self.inner.analyze(images, **options)
        kept = [[] if self.seen + n in self.dropped else faces for n, faces in enumerate(found)]
        self.seen += int(images.shape[0])
        return kept

    def embed_faces(self, images: torch.Tensor, faces: Sequence[Face]) -> list[Face]:
        return self.inner.embed_faces(images, faces)


@pytest.fixture(scope="module")
def analyzer(yunet_path: Path, tmp_path_factory: pytest.TempPathFactory) -> FaceAnalyzer:
    recognizer = write_arcface(tmp_path_factory.mktemp("arcface") / "w600k_r50.onnx")
    return FaceAnalyzer(backend="yunet", detector=yunet_path, recognizer=recognizer, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def clip(clip_path: Path) -> torch.Tensor:
    return video.read_frames(clip_path, max_frames=CLIP_FRAMES)


@pytest.fixture(scope="module")
def truth(clip: torch.Tensor, analyzer: FaceAnalyzer) -> list[list[Face]]:
    found = analyzer.analyze(clip, landmarks=False)
    assert [len(faces) for faces in found] == [1] * CLIP_FRAMES  # one face in every frame of the clip
    return found


def identity() -> Identity:
    return Identity(np.ones(512, np.float32), embedding_model="arcface_w600k_r50")


def test_missed_frames_are_swapped_with_the_face_in_place(
    clip: torch.Tensor, analyzer: FaceAnalyzer, truth: list[list[Face]]
) -> None:
    missing = DroppingAnalyzer(analyzer, DROPPED + DROPPED_AT_END)
    plain = swap_faces(clip, identity(), missing, BrightenSwapper(), SwapOptions(chunk_size=8, no_face="pass"))
    assert plain.frames_without_face == DROPPED + DROPPED_AT_END  # without tracking the face flickers

    missing = DroppingAnalyzer(analyzer, DROPPED + DROPPED_AT_END)
    options = SwapOptions(chunk_size=8, no_face="pass", tracking=TrackingConfig(max_gap=4))
    result = swap_faces(clip, identity(), missing, BrightenSwapper(), options)
    assert result.face_counts == (1,) * CLIP_FRAMES and result.frames_without_face == ()
    filled = {face.image_index: face for face, flag in zip(result.faces, result.interpolated, strict=True) if flag}
    assert sorted(filled) == [*DROPPED, *DROPPED_AT_END]
    for frame in DROPPED:  # between two detections: within 2 px of what the detector finds there
        assert np.abs(filled[frame].bbox - truth[frame][0].bbox).max() < 2.0
        assert np.abs(filled[frame].landmarks_5 - truth[frame][0].landmarks_5).max() < 2.5
    for frame in DROPPED_AT_END:  # extrapolated from the last two detections
        assert np.abs(filled[frame].bbox - truth[frame][0].bbox).max() < 6.0
    assert set(result.tracks) == {0} and set(result.identity_index) == {0}

    # The filled-in frames look like frames where the face was detected: the swap is pasted in place.
    detected = swap_faces(clip, identity(), analyzer, BrightenSwapper(), SwapOptions(chunk_size=8))
    for frame in DROPPED:
        changed = (result.images[frame] - clip[frame]).abs().mean()
        assert float(changed) > 0.01
        assert float((result.images[frame] - detected.images[frame]).abs().mean()) < 0.1 * float(changed)
        assert float((result.masks[frame] - detected.masks[frame]).abs().mean()) < 0.05


def test_a_gap_longer_than_max_gap_is_left_unswapped(clip: torch.Tensor, analyzer: FaceAnalyzer) -> None:
    missing = DroppingAnalyzer(analyzer, range(6, 12))
    options = SwapOptions(chunk_size=5, no_face="pass", tracking=TrackingConfig(max_gap=3))
    result = swap_faces(clip[:16], identity(), missing, BrightenSwapper(), options)
    assert result.frames_without_face == tuple(range(6, 12))
    assert not any(result.interpolated) and set(result.tracks) == {0, 1}  # a new track after the long gap


def test_swap_video_tracks_across_chunks(clip_path: Path, analyzer: FaceAnalyzer, tmp_path: Path) -> None:
    missing = DroppingAnalyzer(analyzer, (3, 4))  # across the chunk boundary 3 | 4
    output = tmp_path / "tracked.gif"
    options = SwapOptions(chunk_size=4, no_face="pass", tracking=TrackingConfig(max_gap=2))
    seen: list[tuple[int, int]] = []
    summary = swap_video(
        clip_path, output, identity(), missing, BrightenSwapper(), options, lambda *p: seen.append(p), max_frames=10
    )
    assert summary.frames == 10 and summary.face_counts == (1,) * 10 and summary.frames_without_face == ()
    assert seen[-1] == (10, 10) and [done for done, _ in seen] == sorted(done for done, _ in seen)
    assert summary.interpolated_faces == 2


def face(x: float, y: float, size: float, embedding: np.ndarray, frame: int = 0) -> Face:
    points = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]], np.float32) * size
    return Face(
        bbox=np.array([x, y, x + size, y + size], np.float32),
        score=0.9,
        landmarks_5=(points + np.array([x, y], np.float32)).astype(np.float32),
        image_index=frame,
        embedding=embedding.astype(np.float32),
    )


def people(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=512).astype(np.float32) for _ in range(count)]


def test_two_people_who_cross_keep_their_identities() -> None:
    a, b = people(2)
    mapping = FaceMapping((MappingRule(0, 0), MappingRule(1, 1)), order="left_to_right")
    tracks = FaceTracks(mapping, TrackingConfig(max_gap=2))
    frames = []
    for t in range(11):  # A walks right, B walks left; they overlap in the middle frames
        frames.append([face(100 + 20 * t, 100, 80, a, t), face(300 - 20 * t, 104, 80, b, t)])
    settled = tracks.push(frames) + tracks.finish()
    assert len(settled) == 11
    for t, items in enumerate(settled):
        by_identity = {item.rule: item.face for item in items}
        assert len(items) == 2
        # Frame 0: A is on the left and takes rule 0; it keeps it after crossing to the right.
        assert float(by_identity[0].bbox[0]) == pytest.approx(100 + 20 * t)
        assert float(by_identity[1].bbox[0]) == pytest.approx(300 - 20 * t)


def test_a_rule_taking_one_face_is_not_taken_over_while_its_face_is_missed() -> None:
    a, b = people(2, seed=1)
    reference = a / np.linalg.norm(a)
    mapping = FaceMapping((MappingRule(0, 0, reference=reference, min_similarity=0.5),))
    tracks = FaceTracks(mapping, TrackingConfig(max_gap=3))
    frames = [[face(100, 100, 80, a, 0), face(300, 100, 80, b, 0)], [face(300, 100, 80, b, 1)]]
    frames += [[face(300, 100, 80, b, 2)], [face(101, 100, 80, a, 3), face(300, 100, 80, b, 3)]]
    settled = tracks.push(frames) + tracks.finish()
    assert [[(item.track, item.interpolated) for item in items] for items in settled] == [
        [(0, False)],
        [(0, True)],
        [(0, True)],
        [(0, False)],
    ]  # B is never swapped: it is below the reference threshold, and A's rule stays with A
    assert settled[1][0].face.bbox[0] == pytest.approx(100 + 1 / 3, abs=1e-4)


def test_blend_faces_interpolates_and_extrapolates_linearly() -> None:
    (a,) = people(1)
    first, second = face(100, 100, 80, a, 0), face(110, 90, 100, a, 4)
    halfway = blend_faces(first, second, 0.5, 2)
    np.testing.assert_allclose(halfway.bbox, [105, 95, 195, 185], atol=1e-4)
    np.testing.assert_allclose(halfway.landmarks_5, (first.landmarks_5 + second.landmarks_5) / 2, atol=1e-4)
    beyond = blend_faces(first, second, 1.5, 6)
    np.testing.assert_allclose(beyond.bbox, [115, 85, 225, 195], atol=1e-4)
    assert halfway.image_index == 2 and beyond.embedding is second.embedding


def test_tracking_options_are_checked() -> None:
    with pytest.raises(BadInputError, match="max_gap"):
        TrackingConfig(max_gap=-1)
    with pytest.raises(BadInputError, match="min_iou"):
        TrackingConfig(min_iou=2.0)
    with pytest.raises(BadInputError, match="FaceMapping"):
        FaceTracks("left", None)  # type: ignore[arg-type]


def test_swap_video_checks_the_mapping_before_reading_frames(
    clip_path: Path, analyzer: FaceAnalyzer, tmp_path: Path
) -> None:
    mapping = FaceMapping((MappingRule(0, 0), MappingRule(1, 1)))
    options = SwapOptions(mapping=mapping, tracking=TrackingConfig(), no_face="pass")
    with pytest.raises(BadInputError, match="names identity 1"):
        swap_video(clip_path, tmp_path / "out.mp4", identity(), analyzer, BrightenSwapper(), options, max_frames=4)
    assert list(tmp_path.iterdir()) == []
