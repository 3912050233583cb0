"""analysis.py: insightface packs end to end on tiny models, YuNet on real photos, face selection, bad input."""

from __future__ import annotations

import itertools
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import (
    bright_cell_image,
    expected_detection,
    write_arcface,
    write_landmarks_3d68,
    write_pack,
)

from facemagic_core.align import align_faces
from facemagic_core.analysis import FaceAnalyzer, face_similarities, select_faces, sort_faces
from facemagic_core.errors import BadInputError, FaceMagicError, ModelIntegrityError, ModelNotFoundError
from facemagic_core.images import load_image, rgb_uint8_to_tensor, tensor_to_bgr_uint8
from facemagic_core.types import Face, Identity

CPU = ["cpu"]


@pytest.fixture(scope="module")
def pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pack(tmp_path_factory.mktemp("buffalo_tiny"))


@pytest.fixture(scope="module")
def analyzer(pack: Path) -> FaceAnalyzer:
    return FaceAnalyzer.from_pack(pack, providers=CPU)


@pytest.fixture(scope="module")
def cells() -> torch.Tensor:
    """Two 640x640 pictures: three "faces" of different scores in the first, none in the second."""
    first = bright_cell_image([(4, 4, 220), (10, 10, 255), (15, 5, 200)])
    second = bright_cell_image([])
    return torch.cat([rgb_uint8_to_tensor(first), rgb_uint8_to_tensor(second)])


def _insightface_runner(path: Path):  # type: ignore[no-untyped-def]
    from insightface.model_zoo import get_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_model(str(path), providers=["CPUExecutionProvider"])


# ------------------------------------------------------------------------------------------------
# insightface backend on a tiny pack


def test_from_pack_routes_the_files_by_their_shapes(analyzer: FaceAnalyzer, pack: Path, tmp_path: Path) -> None:
    assert analyzer.backend == "insightface"
    assert analyzer.has_recognizer and analyzer.has_dense_landmarks
    assert analyzer.recognizer_input_size == 112
    assert analyzer.embedding_model == "arcface_w600k_r50"
    # antelopev2 names its files differently; routing does not depend on names.
    antelope = tmp_path / "antelopev2"
    antelope.mkdir()
    for source, target in (("det_10g.onnx", "scrfd_10g_bnkps.onnx"), ("w600k_r50.onnx", "glintr100.onnx")):
        shutil.copy(pack / source, antelope / target)
    shutil.copy(pack / "1k3d68.onnx", antelope / "1k3d68.onnx")
    other = FaceAnalyzer.from_pack(antelope, providers=CPU)
    assert other.embedding_model == "arcface_glintr100"
    assert other.has_recognizer and other.has_dense_landmarks
    assert FaceAnalyzer.from_pack(antelope, providers=CPU, embedding_model="mine").embedding_model == "mine"


def test_detect_faces_gives_boxes_scores_and_landmarks(analyzer: FaceAnalyzer, cells: torch.Tensor) -> None:
    before = cells.clone()
    per_image = analyzer.detect_faces(cells)
    assert torch.equal(cells, before)
    assert [len(faces) for faces in per_image] == [3, 0]
    faces = per_image[0]
    scores = [face.score for face in faces]
    assert scores == sorted(scores, reverse=True)
    assert scores[0] > 0.999 and 0.98 < scores[1] < 0.995 and 0.7 < scores[2] < 0.85
    for face, cell in zip(faces, [(10, 10), (4, 4), (15, 5)], strict=True):
        box, landmarks = expected_detection(*cell)
        np.testing.assert_allclose(face.bbox, box, atol=1e-3)
        np.testing.assert_allclose(face.landmarks_5, landmarks, atol=1e-3)
        assert face.image_index == 0 and face.landmarks is None and face.embedding is None
        assert face.bbox.dtype == np.float32 and face.landmarks_5.shape == (5, 2)


def test_analyze_adds_landmarks_pose_and_embeddings(analyzer: FaceAnalyzer, cells: torch.Tensor) -> None:
    per_image = analyzer.analyze(cells)
    assert [len(faces) for faces in per_image] == [3, 0]
    for face in per_image[0]:
        assert face.landmarks is not None and face.landmarks.shape == (106, 2)
        # the tiny 2d106 model's points stay inside its 192 px crop around the box (1.5 x 128 px)
        centre = np.array(face.center)
        assert np.abs(face.landmarks - centre).max() < 96
        assert face.pose is not None and len(face.pose) == 3
        assert all(isinstance(angle, float) for angle in face.pose)
        # the tiny 1k3d68 model outputs insightface's mean face, i.e. a frontal head
        assert max(abs(angle) for angle in face.pose) < 3.0
        assert face.embedding is not None and face.embedding.shape == (512,) and face.embedding.dtype == np.float32
    bare = analyzer.analyze(cells, landmarks=False, embeddings=False)[0]
    assert all(face.landmarks is None and face.pose is None and face.embedding is None for face in bare)


def test_gender_and_age_are_insightfaces_reading_of_the_genderage_model(
    analyzer: FaceAnalyzer, pack: Path, cells: torch.Tensor
) -> None:
    from insightface.app.common import Face as InsightFace

    assert analyzer.has_genderage
    faces = analyzer.analyze(cells[:1], landmarks=False, embeddings=False)[0]
    runner = _insightface_runner(pack / "genderage.onnx")
    for face in faces:
        record = InsightFace(bbox=face.bbox, kps=face.landmarks_5, det_score=face.score)
        gender, age = runner.get(tensor_to_bgr_uint8(cells[0]), record)
        assert face.gender == ("male" if gender == 1 else "female")
        assert face.age == age and isinstance(face.age, int)
    bare = analyzer.analyze(cells[:1], attributes=False)[0]
    assert all(face.gender is None and face.age is None for face in bare)
    without = FaceAnalyzer(backend="insightface", detector=pack / "det_10g.onnx", providers=CPU)
    assert not without.has_genderage
    assert all(face.gender is None for face in without.analyze(cells[:1])[0])


def test_68_point_landmarks_when_only_1k3d68_is_given(pack: Path, cells: torch.Tensor) -> None:
    analyzer = FaceAnalyzer(
        backend="insightface", detector=pack / "det_10g.onnx", landmarks_3d68=pack / "1k3d68.onnx", providers=CPU
    )
    faces = analyzer.analyze(cells[:1])[0]
    assert len(faces) == 3
    assert all(face.landmarks is not None and face.landmarks.shape == (68, 2) for face in faces)
    assert all(face.pose is not None for face in faces)
    assert all(face.embedding is None for face in faces)  # no recogniser: analyze skips embeddings
    with pytest.raises(ModelNotFoundError, match="no recogniser"):
        analyzer.embed_faces(cells[:1], faces)


def test_pose_is_yaw_pitch_roll_of_insightface_pitch_yaw_roll(pack: Path, cells: torch.Tensor, tmp_path: Path) -> None:
    turned = write_landmarks_3d68(tmp_path / "1k3d68.onnx", rotation_degrees=(12.0, 25.0, -7.0))
    analyzer = FaceAnalyzer(backend="insightface", detector=pack / "det_10g.onnx", landmarks_3d68=turned, providers=CPU)
    face = analyzer.analyze(cells[:1])[0][0]
    from insightface.app.common import Face as InsightFace

    record = InsightFace(bbox=face.bbox, kps=face.landmarks_5, det_score=face.score)
    points = _insightface_runner(turned).get(tensor_to_bgr_uint8(cells[0]), record)
    pitch, yaw, roll = (float(angle) for angle in record.pose)
    assert face.pose == pytest.approx((yaw, pitch, roll), abs=1e-4)
    assert min(abs(yaw - pitch), abs(yaw - roll), abs(pitch - roll)) > 3.0  # distinct, so an order mix-up shows
    assert max(abs(yaw), abs(pitch), abs(roll)) > 10.0
    np.testing.assert_allclose(face.landmarks, points[:, :2], atol=1e-4)


@pytest.mark.parametrize("normalise_in_graph", [False, True])
def test_embeddings_equal_insightface_get_feat(
    pack: Path, cells: torch.Tensor, tmp_path: Path, normalise_in_graph: bool
) -> None:
    recognizer = write_arcface(tmp_path / "arcface.onnx", normalise_in_graph=normalise_in_graph)
    analyzer = FaceAnalyzer(backend="insightface", detector=pack / "det_10g.onnx", recognizer=recognizer, providers=CPU)
    runner = _insightface_runner(recognizer)
    assert (runner.input_mean, runner.input_std) == ((0.0, 1.0) if normalise_in_graph else (127.5, 127.5))
    faces = analyzer.detect_faces(cells)[0]
    crops, _ = align_faces(cells, faces, 112)
    # Same aligned crop, given to insightface as the uint8 BGR picture its get_feat reads.
    quantised = torch.round(crops * 255) / 255
    theirs = runner.get_feat([tensor_to_bgr_uint8(crop) for crop in quantised])
    ours = analyzer.forward_recognizer(quantised)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    # Coloured crops too: the tiny detector's pictures are grey, which would hide a red/blue swap.
    colours = torch.round(torch.rand(4, 3, 112, 112, generator=torch.Generator().manual_seed(0)) * 255) / 255
    np.testing.assert_allclose(
        analyzer.forward_recognizer(colours),
        runner.get_feat([tensor_to_bgr_uint8(crop) for crop in colours]),
        rtol=1e-4,
        atol=1e-4,
    )
    # The full path (float crops, no uint8 rounding) stays within rounding of it.
    embedded = analyzer.embed_faces(cells, faces)
    for face, reference in zip(embedded, theirs, strict=True):
        assert face.embedding is not None
        cosine = float(face.embedding @ reference) / float(np.linalg.norm(face.embedding) * np.linalg.norm(reference))
        assert cosine > 0.9999


def test_embed_faces_is_one_batched_call(analyzer: FaceAnalyzer, cells: torch.Tensor) -> None:
    faces = analyzer.detect_faces(cells[:1])[0]
    twice = torch.cat([cells[:1], cells[:1]])
    moved = [Face(bbox=f.bbox, score=f.score, landmarks_5=f.landmarks_5, image_index=1) for f in faces]
    session = analyzer._recognizer.session
    calls: list[tuple[int, ...]] = []
    original = session.run

    def counting_run(names, feeds):  # type: ignore[no-untyped-def]
        calls.append(tuple(next(iter(feeds.values())).shape))
        return original(names, feeds)

    session.run = counting_run
    try:
        embedded = analyzer.embed_faces(twice, [*faces, *moved])
    finally:
        del session.run
    assert calls == [(6, 3, 112, 112)]
    for first, second in zip(embedded[:3], embedded[3:], strict=True):  # the same faces in two images
        np.testing.assert_allclose(first.embedding, second.embedding, rtol=1e-5, atol=1e-5)
    assert analyzer.embed_faces(cells, []) == []


def test_fixed_batch_recogniser_runs_face_by_face(pack: Path, cells: torch.Tensor, tmp_path: Path) -> None:
    recognizer = write_arcface(tmp_path / "fixed.onnx", batch=1)
    fixed = FaceAnalyzer(backend="insightface", detector=pack / "det_10g.onnx", recognizer=recognizer, providers=CPU)
    dynamic = FaceAnalyzer(
        backend="insightface",
        detector=pack / "det_10g.onnx",
        recognizer=write_arcface(tmp_path / "d.onnx"),
        providers=CPU,
    )
    faces = fixed.detect_faces(cells[:1])[0]
    np.testing.assert_allclose(
        np.stack([f.embedding for f in fixed.embed_faces(cells, faces)]),
        np.stack([f.embedding for f in dynamic.embed_faces(cells, faces)]),
        rtol=1e-5,
        atol=1e-5,
    )


# ------------------------------------------------------------------------------------------------
# Model files that are missing, damaged or of the wrong kind


def test_missing_and_corrupt_models_are_reported(pack: Path, tmp_path: Path, yunet_path: Path) -> None:
    missing = tmp_path / "nowhere" / "det_10g.onnx"
    with pytest.raises(ModelNotFoundError, match="does not exist") as caught:
        FaceAnalyzer(backend="insightface", detector=missing, providers=CPU)
    assert str(missing) in str(caught.value) and caught.value.fix
    truncated = tmp_path / "det_10g.onnx"
    truncated.write_bytes((pack / "det_10g.onnx").read_bytes()[:5000])
    with pytest.raises(ModelIntegrityError) as caught:
        FaceAnalyzer(backend="insightface", detector=truncated, providers=CPU)
    assert str(truncated) in str(caught.value) and "download it again" in str(caught.value)
    garbage = tmp_path / "w600k_r50.onnx"
    garbage.write_bytes(b"\x00not an onnx file" * 100)
    with pytest.raises(ModelIntegrityError):
        FaceAnalyzer(backend="insightface", detector=pack / "det_10g.onnx", recognizer=garbage, providers=CPU)
    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    with pytest.raises(ModelIntegrityError, match="empty"):
        FaceAnalyzer(backend="yunet", detector=empty)
    with pytest.raises(ModelIntegrityError, match="YuNet"):
        FaceAnalyzer(backend="yunet", detector=garbage)
    with pytest.raises(BadInputError, match="recognition model"):
        FaceAnalyzer(backend="insightface", detector=pack / "w600k_r50.onnx", providers=CPU)
    with pytest.raises(BadInputError, match="landmark_2d_106"):
        FaceAnalyzer(backend="yunet", detector=yunet_path, landmarks_106=pack / "1k3d68.onnx", providers=CPU)


def test_recogniser_that_returns_nan_is_reported(pack: Path, cells: torch.Tensor, tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(write_arcface(tmp_path / "arcface.onnx")))
    for number, initializer in enumerate(model.graph.initializer):
        if initializer.name == "fc_b":
            broken = numpy_helper.to_array(initializer).copy()
            broken[7] = np.nan
            model.graph.initializer[number].CopyFrom(numpy_helper.from_array(broken, "fc_b"))
    onnx.save(model, str(tmp_path / "broken.onnx"))
    analyzer = FaceAnalyzer(
        backend="insightface", detector=pack / "det_10g.onnx", recognizer=tmp_path / "broken.onnx", providers=CPU
    )
    with pytest.raises(ModelIntegrityError, match=r"NaN or infinite embeddings for crops \[0, 1, 2\] of 3") as caught:
        analyzer.analyze(cells[:1])
    assert "broken.onnx" in str(caught.value) and "download it again" in str(caught.value)


def test_pack_folder_problems(tmp_path: Path, pack: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        FaceAnalyzer.from_pack(tmp_path / "buffalo_l", providers=CPU)
    partial = tmp_path / "partial"
    partial.mkdir()
    shutil.copy(pack / "w600k_r50.onnx", partial / "w600k_r50.onnx")
    with pytest.raises(ModelNotFoundError, match=r"no face detector \(found: w600k_r50.onnx\)"):
        FaceAnalyzer.from_pack(partial, providers=CPU)


def test_settings_are_checked(pack: Path) -> None:
    for det_size in (0, 100, 48):
        with pytest.raises(BadInputError, match="det_size"):
            FaceAnalyzer.from_pack(pack, providers=CPU, det_size=det_size)
    with pytest.raises(BadInputError, match="det_threshold"):
        FaceAnalyzer.from_pack(pack, providers=CPU, det_threshold=1.5)
    with pytest.raises(BadInputError, match="unknown analyzer backend"):
        FaceAnalyzer(backend="dlib", detector=pack / "det_10g.onnx")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    ("images", "words"),
    [
        (torch.zeros(0, 3, 64, 64), "empty"),
        (torch.zeros(1, 1, 64, 64), "grey"),
        (torch.zeros(1, 4, 64, 64), "RGBA"),
        (torch.zeros(1, 3, 16, 16), "16x16"),
        (torch.full((1, 3, 64, 64), float("nan")), "NaN"),
        (torch.zeros(3, 64, 64), "batch"),
        (np.zeros((1, 3, 64, 64), np.float32), "tensor"),
        (torch.full((1, 3, 64, 64), 200.0), "divide the images by 255"),
        (torch.full((1, 3, 64, 64), -1.0), r"\(images \+ 1\) / 2"),
        (torch.zeros(1, 3, 64, 64, dtype=torch.int16), "float"),
    ],
    ids=["empty", "grey", "rgba", "tiny", "nan", "unbatched", "numpy", "0..255", "-1..1", "int16"],
)
def test_bad_images_raise_clear_errors(analyzer: FaceAnalyzer, images: object, words: str) -> None:
    for call in (analyzer.detect_faces, analyzer.analyze):
        with pytest.raises(FaceMagicError, match=words) as caught:
            call(images)  # type: ignore[arg-type]
        assert isinstance(caught.value, BadInputError) and caught.value.fix


def test_byte_frames_are_analysed_like_float_frames(analyzer: FaceAnalyzer, cells: torch.Tensor) -> None:
    """uint8 frames (0..255, as a video decodes) give the faces their float form gives, and stay as they were."""
    as_bytes = (cells * 255 + 0.5).clamp(0, 255).to(torch.uint8)
    before = as_bytes.clone()
    from_bytes, from_floats = analyzer.analyze(as_bytes), analyzer.analyze(as_bytes.float() / 255)
    assert torch.equal(as_bytes, before)
    assert [len(faces) for faces in from_bytes] == [len(faces) for faces in from_floats] and sum(map(len, from_bytes))
    pairs = zip(itertools.chain(*from_bytes), itertools.chain(*from_floats), strict=True)
    for ours, theirs in pairs:
        assert np.abs(ours.bbox - theirs.bbox).max() < 1e-3 and ours.score == pytest.approx(theirs.score, abs=1e-5)
        if theirs.embedding is not None:
            assert ours.embedding is not None
            cosine = float(ours.embedding @ theirs.embedding) / float(
                np.linalg.norm(ours.embedding) * np.linalg.norm(theirs.embedding)
            )
            assert cosine > 0.9999


def test_small_overshoots_are_accepted_and_inputs_kept(analyzer: FaceAnalyzer, cells: torch.Tensor) -> None:
    """Resamplers overshoot [0, 1] a little; such images are analysed as if clamped, and never changed."""
    overshoot = cells[:1] + 0.03 * (cells[:1] == 1.0) - 0.02 * (cells[:1] == 0.0)  # clamps back to cells[:1]
    before = overshoot.clone()
    faces = analyzer.detect_faces(overshoot)[0]
    assert torch.equal(overshoot, before)
    assert [face.score for face in faces] == pytest.approx([f.score for f in analyzer.detect_faces(cells[:1])[0]])


# ------------------------------------------------------------------------------------------------
# YuNet backend on real photos


@pytest.fixture(scope="module")
def yunet(yunet_path: Path) -> FaceAnalyzer:
    return FaceAnalyzer(backend="yunet", detector=yunet_path)


def _check_face_geometry(face: Face, where: str) -> None:
    left_eye, right_eye, nose, left_mouth, right_mouth = face.landmarks_5
    assert left_eye[0] < right_eye[0] and left_mouth[0] < right_mouth[0], f"{where}: image-left points come first"
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(left_mouth[1], right_mouth[1]), where
    x1, y1, x2, y2 = face.bbox
    assert np.all((face.landmarks_5[:, 0] > x1) & (face.landmarks_5[:, 0] < x2)), where
    assert np.all((face.landmarks_5[:, 1] > y1) & (face.landmarks_5[:, 1] < y2)), where


def test_yunet_finds_the_six_faces_of_t1(yunet: FaceAnalyzer, t1_path: Path) -> None:
    image = load_image(t1_path)
    (faces,) = yunet.detect_faces(image)
    assert len(faces) == 6
    assert [face.score for face in faces] == sorted((face.score for face in faces), reverse=True)
    for i, face in enumerate(faces):
        assert face.score > 0.5 and face.size > 60
        _check_face_geometry(face, f"t1 face {i}")
    # Detection on the full 1280 px picture finds the same faces as the default (long side scaled to
    # det_size = 640, then mapped back). YuNet's landmarks move by 3-4 px between any two scales (the same
    # at 960 or 1024 px), but the mapping back to full-size pixels adds no systematic shift.
    full = FaceAnalyzer(backend="yunet", detector=yunet.detector_path, det_size=1280).detect_faces(image)[0]
    offsets = []
    for face in faces:
        nearest = min(full, key=lambda other: float(np.abs(other.landmarks_5 - face.landmarks_5).mean()))
        distances = np.linalg.norm(nearest.landmarks_5 - face.landmarks_5, axis=1)
        assert distances.mean() < 0.1 * face.size
        offsets.append(face.landmarks_5 - nearest.landmarks_5)
    assert np.abs(np.mean(offsets, axis=(0, 1))).max() < 2.0


def test_yunet_maps_points_of_a_downscaled_picture_back_exactly(yunet: FaceAnalyzer, faces_dir: Path) -> None:
    """A picture twice as large as det_size is detected at det_size and mapped back to its own pixels.

    Each pixel of ``small`` becomes a 2x2 block of ``large``, so YuNet sees exactly ``small`` again
    (INTER_AREA averages the blocks) and must report the same points; pixel ``i`` of ``small`` covers
    pixels ``2i`` and ``2i + 1`` of ``large``, so a point ``p`` maps to ``2p + 0.5`` (pixel centres at integers).
    """
    small = load_image(faces_dir / "anni.jpg")
    assert max(small.shape[2:]) == yunet.det_size
    large = small.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    (at_small,), (at_large,) = yunet.detect_faces(small), yunet.detect_faces(large)
    assert len(at_small) == len(at_large) == 1
    np.testing.assert_allclose(at_large[0].landmarks_5, 2 * at_small[0].landmarks_5 + 0.5, atol=1e-3)
    np.testing.assert_allclose(at_large[0].bbox, 2 * at_small[0].bbox + 0.5, atol=1e-3)
    assert at_large[0].score == pytest.approx(at_small[0].score, abs=1e-6)


def test_yunet_finds_one_face_in_every_portrait(yunet: FaceAnalyzer, faces_dir: Path) -> None:
    files = sorted(p for p in faces_dir.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp", ".gif"})
    assert len(files) >= 10
    for path in files:  # the .gif is read as its first frame
        (faces,) = yunet.detect_faces(load_image(path))
        assert len(faces) == 1, f"{path.name}: {len(faces)} faces"
        _check_face_geometry(faces[0], path.name)


def test_yunet_with_a_recogniser_embeds_faces(yunet_path: Path, faces_dir: Path, tmp_path: Path) -> None:
    analyzer = FaceAnalyzer(
        backend="yunet",
        detector=yunet_path,
        recognizer=write_arcface(tmp_path / "arcface.onnx"),
        landmarks_3d68=write_landmarks_3d68(tmp_path / "1k3d68.onnx"),
        providers=CPU,
    )
    images = torch.cat([load_image(faces_dir / "portrait_1.png")[:, :, :224, :224]] * 2)
    per_image = analyzer.analyze(images)
    assert [len(faces) for faces in per_image] == [1, 1]
    first, second = per_image[0][0], per_image[1][0]
    assert first.image_index == 0 and second.image_index == 1
    assert first.embedding is not None and second.embedding is not None
    np.testing.assert_allclose(first.embedding, second.embedding, rtol=1e-5, atol=1e-5)
    assert first.landmarks is not None and first.landmarks.shape == (68, 2) and first.pose is not None


# ------------------------------------------------------------------------------------------------
# Choosing faces


def _face(x: float, y: float, size: float, score: float, embedding: list[float] | None = None) -> Face:
    return Face(
        bbox=np.array([x, y, x + size, y + size], np.float32),
        score=score,
        landmarks_5=np.zeros((5, 2), np.float32),
        embedding=None if embedding is None else np.array(embedding, np.float32),
    )


def test_sort_and_select_faces_by_order_and_index() -> None:
    a = _face(0, 50, 40, 0.9)  # left, middle height, middle size
    b = _face(200, 0, 80, 0.6)  # right, top, large
    c = _face(100, 300, 20, 0.99)  # centre, bottom, small
    faces = [a, b, c]
    assert sort_faces(faces, "largest") == [b, a, c]
    assert sort_faces(faces, "smallest") == [c, a, b]
    assert sort_faces(faces, "left_to_right") == [a, c, b]
    assert sort_faces(faces, "right_to_left") == [b, c, a]
    assert sort_faces(faces, "top_to_bottom") == [b, a, c]
    assert sort_faces(faces, "bottom_to_top") == [c, a, b]
    assert sort_faces(faces, "best_score") == [c, a, b]
    assert select_faces(faces) == [b]
    assert select_faces(faces, order="left_to_right", index=1) == [c]
    assert select_faces(faces, order="smallest", index=[2, 0, 7]) == [b, c]
    assert select_faces(faces, order="best_score", index=None) == [c, a, b]
    assert select_faces(faces, index=5) == []
    assert select_faces([], index=0) == []
    with pytest.raises(BadInputError, match="unknown face order"):
        sort_faces(faces, "random")  # type: ignore[arg-type]
    with pytest.raises(BadInputError, match="whole numbers"):
        select_faces(faces, index=-1)


def test_select_faces_by_similarity_to_a_reference() -> None:
    a = _face(0, 0, 50, 0.9, [1.0, 0.0, 0.0])
    b = _face(100, 0, 60, 0.8, [0.6, 0.8, 0.0])
    c = _face(200, 0, 70, 0.7, [0.0, 0.0, 2.0])
    reference = np.array([0.0, 3.0, 0.0])
    np.testing.assert_allclose(face_similarities([a, b, c], reference), [0.0, 0.8, 0.0], atol=1e-6)
    assert select_faces([a, b, c], reference=reference) == [b]
    assert select_faces([a, b, c], reference=np.array([0.0, 0.1, 1.0]), index=None)[0] is c
    assert select_faces([a, b, c], reference=reference, min_similarity=0.5, index=None) == [b]
    assert select_faces([a, c], reference=reference, min_similarity=0.5) == []
    with pytest.raises(BadInputError, match="reference embedding"):
        select_faces([a], min_similarity=0.5)
    with pytest.raises(BadInputError, match="no embedding"):
        select_faces([_face(0, 0, 10, 0.5)], reference=reference)
    with pytest.raises(BadInputError, match="3 numbers but the reference has 2"):
        select_faces([a], reference=np.ones(2))
    with pytest.raises(BadInputError, match="all zeros"):
        select_faces([a], reference=np.zeros(3))
    # an identity (its mean row) or a torch vector is a reference as well
    identity = Identity(np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.2]]), embedding_model="arcface_w600k_r50")
    assert select_faces([a, b, c], reference=identity) == [b]
    assert select_faces([a, b, c], reference=torch.tensor([0.0, 0.0, 1.0])) == [c]
    with pytest.raises(BadInputError, match="embedding or an identity"):
        select_faces([a], reference="person.safetensors")  # type: ignore[arg-type]
