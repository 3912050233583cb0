"""torch_models.py: every insightface model family converted to torch agrees with onnxruntime and with
insightface's own runners, on tiny models of the real files' signatures.

Tolerances (issue 12): boxes within 1 px, landmarks within 0.5 px, embeddings cosine > 0.9999; the
measured differences are far smaller (about 1e-4 px and cosine 1 - 1e-7 on these models).
"""

from __future__ import annotations

import logging
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np
import pytest
import torch
from tiny_models import (
    write_arcface,
    write_detector,
    write_genderage,
    write_landmarks_3d68,
    write_landmarks_106,
    write_random_detector,
)

from facemagic_core import onnx_graph, torch_models
from facemagic_core.analysis import FaceAnalyzer
from facemagic_core.errors import BadInputError, OutOfMemoryError
from facemagic_core.images import rgb_uint8_to_tensor
from facemagic_core.torch_models import (
    TorchFaceDetector,
    TorchGenderAge,
    TorchLandmarks,
    TorchRecognizer,
    batched_nms,
    choose_runtime,
    conversion_cache_path,
    load_torch_runner,
)
from facemagic_core.types import Face

CPU = torch.device("cpu")
DET_SIZE = 160
BOX_PX = 1.0
LANDMARK_PX = 0.5
MIN_COSINE = 0.9999


def _insightface_runner(path: Path) -> Any:
    from insightface.model_zoo import get_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_model(str(path), providers=["CPUExecutionProvider"], static_shape_sessions=False)


def _insightface_face(box: np.ndarray) -> Any:
    from insightface.app.common import Face as InsightFace

    return InsightFace(bbox=box.astype(np.float32), kps=np.zeros((5, 2), np.float32), det_score=0.9)


def _textured_frames(count: int, size: int = DET_SIZE, seed: int = 0) -> list[np.ndarray]:
    """Blurred-noise RGB frames of different content: the random detector finds a handful of faces in each."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(count):
        noise = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        frames.append(cv2.normalize(cv2.GaussianBlur(noise, (0, 0), 3), None, 0, 255, cv2.NORM_MINMAX))
    return frames


def _pixels(frames: list[np.ndarray]) -> torch.Tensor:
    """``(B, 3, H, W)`` RGB 0..255 of BGR ``uint8`` frames (what insightface's runners read)."""
    return torch.stack([torch.from_numpy(frame[:, :, ::-1].copy()).permute(2, 0, 1) for frame in frames]).float()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("torch_models")
    return {
        "detector": write_random_detector(folder / "det_10g.onnx", score_bias=-2.0),
        "landmarks_106": write_landmarks_106(folder / "2d106det.onnx"),
        "landmarks_3d68": write_landmarks_3d68(folder / "1k3d68.onnx", rotation_degrees=(12, -25, 6)),
        "genderage": write_genderage(folder / "genderage.onnx"),
        "recognizer": write_arcface(folder / "w600k_r50.onnx"),
    }


@pytest.fixture(scope="module")
def runners(models: dict[str, Path]) -> dict[str, Any]:
    loaded = {}
    for role, path in models.items():
        runner, reason = load_torch_runner(path, device=CPU)
        assert runner is not None, reason
        loaded[role] = runner
    return loaded


# ------------------------------------------------------------------------------------------------
# The conversions


def test_each_family_is_routed_converted_verified_and_batched(runners: dict[str, Any], models: dict[str, Path]) -> None:
    kinds = {
        "detector": TorchFaceDetector,
        "landmarks_106": TorchLandmarks,
        "landmarks_3d68": TorchLandmarks,
        "genderage": TorchGenderAge,
        "recognizer": TorchRecognizer,
    }
    for role, runner in runners.items():
        assert isinstance(runner, kinds[role]), role
        assert runner.converted.difference <= 1.0
        assert runner.batchable, role
        assert runner.taskname == _insightface_runner(models[role]).taskname
        assert conversion_cache_path(models[role]).is_file()


def test_conversions_equal_onnxruntime_on_new_random_inputs(runners: dict[str, Any], models: dict[str, Path]) -> None:
    import onnxruntime

    for role, runner in runners.items():
        session = onnxruntime.InferenceSession(str(models[role]), providers=["CPUExecutionProvider"])
        inputs = torch_models.check_inputs(runner.facts, seed=7)
        expected = session.run(None, {session.get_inputs()[0].name: inputs[0].numpy()})
        actual = runner.run(inputs[0])
        for want, got in zip(expected, actual, strict=True):
            scale = max(float(np.abs(want).max()), 1e-6)
            assert float(np.abs(want - got.numpy()).max()) / scale < 1e-4, role


# ------------------------------------------------------------------------------------------------
# SCRFD: decoding, threshold and NMS against insightface's runner


def test_detector_batch_equals_insightface_frame_by_frame(runners: dict[str, Any], models: dict[str, Path]) -> None:
    frames = _textured_frames(3)
    reference = _insightface_runner(models["detector"])
    reference.prepare(0, input_size=(DET_SIZE, DET_SIZE), det_thresh=0.5)
    found = runners["detector"].detect(_pixels(frames), det_size=DET_SIZE, threshold=0.5)
    counts = []
    for frame, ours in zip(frames, found, strict=True):
        boxes, points = reference.detect(frame, input_size=(DET_SIZE, DET_SIZE))
        counts.append(len(boxes))
        assert ours.boxes.shape[0] == len(boxes)
        np.testing.assert_allclose(ours.boxes.numpy(), boxes[:, :4], atol=BOX_PX, rtol=0)
        np.testing.assert_allclose(ours.scores.numpy(), boxes[:, 4], atol=1e-4, rtol=0)
        np.testing.assert_allclose(ours.landmarks.numpy(), points, atol=LANDMARK_PX, rtol=0)
        assert float(np.abs(ours.boxes.numpy() - boxes[:, :4]).max()) < 1e-2  # measured ~1e-4 px
    assert min(counts) >= 2 and len(set(counts)) > 1  # several faces, a different number per frame


def test_a_detector_with_batched_outputs_is_read_like_insightface(tmp_path: Path) -> None:
    """The SCRFD export with ``(1, K, C)`` outputs (insightface's ``batched``) still runs all frames in one call."""
    path = write_random_detector(tmp_path / "scrfd_10g_bnkps.onnx", score_bias=-2.0, batched_outputs=True)
    runner, reason = load_torch_runner(path, device=CPU)
    assert isinstance(runner, TorchFaceDetector) and runner.batchable, reason
    reference = _insightface_runner(path)
    assert reference.batched
    reference.prepare(0, input_size=(DET_SIZE, DET_SIZE), det_thresh=0.5)
    frames = _textured_frames(2, seed=11)
    for frame, ours in zip(frames, runner.detect(_pixels(frames), det_size=DET_SIZE, threshold=0.5), strict=True):
        boxes, points = reference.detect(frame, input_size=(DET_SIZE, DET_SIZE))
        assert ours.boxes.shape[0] == len(boxes) > 0
        np.testing.assert_allclose(ours.boxes.numpy(), boxes[:, :4], atol=BOX_PX, rtol=0)
        np.testing.assert_allclose(ours.landmarks.numpy(), points, atol=LANDMARK_PX, rtol=0)


def test_letterboxed_frames_are_mapped_back_like_insightface(tmp_path: Path) -> None:
    """A 480x360 frame is resized into the 640 square (x 4/3; torch's bilinear resize and OpenCV's
    fixed-point one differ by at most one grey level); boxes and landmarks still agree with insightface."""
    path = write_detector(tmp_path / "det_10g.onnx")
    runner, reason = load_torch_runner(path, device=CPU)
    assert isinstance(runner, TorchFaceDetector), reason
    frame = np.zeros((480, 360, 3), np.uint8)
    for column, row in ((4, 4), (10, 12)):  # 24 px squares: whole 32 px detector cells once scaled by 4/3
        frame[24 * row : 24 * row + 24, 24 * column : 24 * column + 24] = 255
    reference = _insightface_runner(path)
    reference.prepare(0, input_size=(640, 640), det_thresh=0.5)
    boxes, points = reference.detect(frame, input_size=(640, 640))
    ours = runner.detect(_pixels([frame]), det_size=640, threshold=0.5)[0]
    assert len(boxes) == ours.boxes.shape[0] == 2
    np.testing.assert_allclose(ours.boxes.numpy(), boxes[:, :4], atol=BOX_PX, rtol=0)
    np.testing.assert_allclose(ours.scores.numpy(), boxes[:, 4], atol=1e-3, rtol=0)
    np.testing.assert_allclose(ours.landmarks.numpy(), points, atol=LANDMARK_PX, rtol=0)
    centres = ((ours.boxes[:, :2] + ours.boxes[:, 2:]) / 2).numpy()
    np.testing.assert_allclose(sorted(centres.tolist()), [[96, 96], [240, 288]], atol=1.0)  # 24 * (column, row)


def _insightface_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    from insightface.model_zoo.scrfd import SCRFD

    dets = np.hstack([boxes, scores[:, None]]).astype(np.float32)
    order = np.argsort(-scores, kind="stable")
    keep = SCRFD.nms(SimpleNamespace(nms_thresh=threshold), dets[order])
    return sorted(int(order[i]) for i in keep)


@pytest.mark.parametrize("threshold", [0.2, 0.4, 0.7])
def test_batched_nms_keeps_the_boxes_insightface_keeps(threshold: float) -> None:
    rng = np.random.default_rng(int(threshold * 10))
    counts = [0, 1, 37, 120]
    most = max(counts)
    boxes = np.zeros((len(counts), most, 4), np.float32)
    scores = np.zeros((len(counts), most), np.float32)
    valid = np.zeros((len(counts), most), bool)
    for frame, count in enumerate(counts):
        corners = rng.uniform(0, 200, (count, 2))
        sizes = rng.uniform(10, 60, (count, 2))
        boxes[frame, :count] = np.hstack([corners, corners + sizes])
        scores[frame, :count] = rng.random(count)
        scores[frame, : count // 4] = 0.5  # ties keep their input order, as numpy's stable sort does
        valid[frame, :count] = True
        boxes[frame, count:] = rng.uniform(0, 200, (most - count, 4))  # padding must never matter
    keep = batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(valid), threshold)
    total = 0
    for frame, count in enumerate(counts):
        ours = sorted(torch.nonzero(keep[frame]).flatten().tolist())
        expected = _insightface_nms(boxes[frame, :count], scores[frame, :count], threshold) if count else []
        assert ours == expected
        total += len(ours)
    assert total > 40  # enough kept (and dropped) boxes to mean something


# ------------------------------------------------------------------------------------------------
# Landmarks, pose, gender/age, embeddings against insightface's runners

BOXES = np.array([[50, 40, 150, 170], [200.3, 20.7, 300.1, 120.2], [-10, 150, 60, 260], [90, 90, 110, 112]], np.float32)


def _frame_and_boxes() -> tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]:
    frames = _textured_frames(2, size=320, seed=3)
    index = torch.tensor([0, 1, 0, 1])
    return np.stack(frames), _pixels(frames), torch.from_numpy(BOXES), index


@pytest.mark.parametrize("role", ["landmarks_106", "landmarks_3d68"])
def test_landmarks_and_pose_equal_insightface_landmark(
    role: str, runners: dict[str, Any], models: dict[str, Path]
) -> None:
    frames, pixels, boxes, index = _frame_and_boxes()
    points, pose = runners[role].predict(pixels, boxes, index)
    reference = _insightface_runner(models[role])
    worst = 0.0
    for face in range(len(BOXES)):
        record = _insightface_face(BOXES[face])
        expected = np.asarray(reference.get(frames[int(index[face])], record))
        assert points[face].shape == expected.shape
        worst = max(worst, float(np.abs(points[face].numpy()[:, :2] - expected[:, :2]).max()))
        if role == "landmarks_3d68":
            assert pose is not None
            np.testing.assert_allclose(pose[face].numpy(), record.pose, atol=0.05)  # pitch, yaw, roll degrees
            assert abs(float(pose[face, 1]) + 25) < 2  # the tiny model's face is turned by -25 degrees of yaw
    assert worst < LANDMARK_PX  # measured about 0.05 px (crop sampling)


def test_gender_and_age_equal_insightface_attribute(runners: dict[str, Any], models: dict[str, Path]) -> None:
    frames, pixels, boxes, index = _frame_and_boxes()
    genders, ages = runners["genderage"].predict(pixels, boxes, index)
    reference = _insightface_runner(models["genderage"])
    expected = [reference.get(frames[int(index[i])], _insightface_face(BOXES[i])) for i in range(len(BOXES))]
    assert genders.tolist() == [int(gender) for gender, _ in expected]
    assert ages.tolist() == [int(age) for _, age in expected]


@pytest.mark.parametrize("in_graph", [False, True])
def test_embeddings_equal_insightface_arcface(in_graph: bool, tmp_path: Path) -> None:
    path = write_arcface(tmp_path / "w600k_r50.onnx", normalise_in_graph=in_graph)
    runner, reason = load_torch_runner(path, device=CPU)
    assert isinstance(runner, TorchRecognizer), reason
    reference = _insightface_runner(path)
    assert (runner.input_mean, runner.input_std) == (reference.input_mean, reference.input_std)
    crops = torch.rand(6, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    ours = runner.embed(crops).numpy()
    expected = reference.forward((crops * 255).numpy())
    cosine = (ours * expected).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() > MIN_COSINE
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), np.linalg.norm(expected, axis=1), rtol=1e-4)


# ------------------------------------------------------------------------------------------------
# The analyzer: runtime choice, torch vs onnxruntime, batch vs frame by frame


@pytest.fixture(scope="module")
def pack(models: dict[str, Path]) -> Path:
    return models["detector"].parent


@pytest.fixture(scope="module")
def analyzers(pack: Path, runners: dict[str, Any]) -> dict[str, FaceAnalyzer]:
    return {
        name: FaceAnalyzer.from_pack(pack, runtime=name, device="cpu", det_size=DET_SIZE)  # type: ignore[arg-type]
        for name in ("torch", "onnxruntime")
    }


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    return torch.cat([rgb_uint8_to_tensor(frame) for frame in _textured_frames(3, seed=5)])


def _compare_faces(ours: list[list[Face]], reference: list[list[Face]]) -> int:
    compared = 0
    for mine, theirs in zip(ours, reference, strict=True):
        assert len(mine) == len(theirs)
        for a, b in zip(mine, theirs, strict=True):
            assert np.abs(a.bbox - b.bbox).max() < BOX_PX and abs(a.score - b.score) < 1e-4
            assert np.abs(a.landmarks_5 - b.landmarks_5).max() < LANDMARK_PX
            assert a.landmarks is not None and b.landmarks is not None and a.landmarks.shape == (106, 2)
            assert np.abs(a.landmarks - b.landmarks).max() < LANDMARK_PX
            assert a.pose is not None and b.pose is not None
            assert np.abs(np.subtract(a.pose, b.pose)).max() < 0.05
            assert (a.gender, a.age) == (b.gender, b.age)
            assert a.embedding is not None and b.embedding is not None
            cosine = float(a.embedding @ b.embedding) / float(np.linalg.norm(a.embedding) * np.linalg.norm(b.embedding))
            assert cosine > MIN_COSINE
            compared += 1
    return compared


def test_torch_analyzer_equals_insightfaces_runners(analyzers: dict[str, FaceAnalyzer], batch: torch.Tensor) -> None:
    torch_analyzer, onnx_analyzer = analyzers["torch"], analyzers["onnxruntime"]
    assert set(torch_analyzer.model_runtimes.values()) == {"torch on cpu"}
    assert all(where.startswith("onnxruntime") for where in onnx_analyzer.model_runtimes.values())
    assert torch_analyzer.embedding_model == onnx_analyzer.embedding_model == "arcface_w600k_r50"
    assert _compare_faces(torch_analyzer.analyze(batch), onnx_analyzer.analyze(batch)) >= 6


def test_a_batch_gives_what_frame_by_frame_gives(analyzers: dict[str, FaceAnalyzer], batch: torch.Tensor) -> None:
    analyzer = analyzers["torch"]
    together = analyzer.analyze(batch)
    one_by_one = [analyzer.analyze(batch[i : i + 1])[0] for i in range(batch.shape[0])]
    assert len({len(faces) for faces in together}) > 1  # frames of different content, different face counts
    for faces, alone in zip(together, one_by_one, strict=True):
        assert len(faces) == len(alone)
        for a, b in zip(faces, alone, strict=True):
            np.testing.assert_allclose(a.bbox, b.bbox, atol=1e-3)
            np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-3)
            np.testing.assert_allclose(a.embedding, b.embedding, rtol=1e-4, atol=1e-5)
            assert (a.gender, a.age) == (b.gender, b.age)


def test_inputs_are_not_modified_and_results_are_on_the_cpu(
    analyzers: dict[str, FaceAnalyzer], batch: torch.Tensor
) -> None:
    before = batch.clone()
    faces = analyzers["torch"].analyze(batch)
    assert torch.equal(batch, before)
    face = faces[0][0]
    assert isinstance(face.bbox, np.ndarray) and isinstance(face.embedding, np.ndarray)


def test_the_analysis_device_follows_the_device_and_providers_asked_for() -> None:
    from facemagic_core.analysis import _analysis_device

    assert _analysis_device(None, ["cpu"]) == CPU  # asked for the CPU: torch models stay there (auto: onnxruntime)
    assert _analysis_device("tensorrt", None) == CPU  # an onnxruntime provider, not a torch device
    assert _analysis_device("cpu", None) == CPU
    best = torch.device("cuda") if torch.cuda.is_available() else None
    if best is not None:
        assert _analysis_device(None, None).type == "cuda"
        assert _analysis_device(None, ["cuda"]).type == "cuda"


def test_out_of_memory_in_a_torch_runner_is_a_facemagic_error(
    analyzers: dict[str, FaceAnalyzer], batch: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunked callers answer OutOfMemoryError by halving the chunk; torch's own error must become it."""

    def out_of_memory(self: object, inputs: torch.Tensor) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(TorchFaceDetector, "run", out_of_memory)
    with pytest.raises(OutOfMemoryError, match="out of memory while torch ran the face analysis models") as error:
        analyzers["torch"].analyze(batch)
    assert "--chunk" in str(error.value)


def test_runtime_choice() -> None:
    assert choose_runtime("auto", torch.device("cpu")) == "onnxruntime"
    assert choose_runtime("auto", torch.device("cuda")) == "torch"
    assert choose_runtime("torch", torch.device("cpu")) == "torch"
    assert choose_runtime("onnxruntime", torch.device("cuda")) == "onnxruntime"
    with pytest.raises(BadInputError, match="unknown model runtime 'tensorflow'"):
        choose_runtime("tensorflow", torch.device("cpu"))


# ------------------------------------------------------------------------------------------------
# Fallback to onnxruntime, and the cache of verified conversions


def _wrong_relu(inputs: list[torch.Tensor | None], attributes: Any) -> list[torch.Tensor]:
    value = inputs[0]
    assert value is not None
    return [value.abs()]  # an operator the interpreter "gets wrong"


@pytest.mark.parametrize(
    ("writer", "role"),
    [(write_landmarks_106, "landmarks_106"), (write_arcface, "recognizer")],
)
def test_a_conversion_that_differs_falls_back_to_onnxruntime_with_a_warning(
    writer: Callable[[Path], Path],
    role: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = writer(tmp_path / f"{role}.onnx")
    monkeypatch.setitem(onnx_graph.OPS, "Relu", _wrong_relu)  # type: ignore[attr-defined]
    runner, reason = load_torch_runner(path, device=CPU)
    assert runner is None and "differs from onnxruntime" in reason
    assert not conversion_cache_path(path).exists()  # nothing unverified is cached

    pack = tmp_path / "pack"
    pack.mkdir()
    write_random_detector(pack / "det_10g.onnx", score_bias=-2.0)
    shutil.copy(path, pack / ("2d106det.onnx" if role == "landmarks_106" else "w600k_r50.onnx"))
    with caplog.at_level(logging.WARNING, logger="facemagic_core.analysis"):
        analyzer = FaceAnalyzer.from_pack(pack, runtime="torch", device="cpu", det_size=DET_SIZE)
    warned = [record.getMessage() for record in caplog.records if "runs through onnxruntime" in record.getMessage()]
    assert len(warned) == 1 and "differs from onnxruntime" in warned[0]
    assert analyzer.model_runtimes["detector"] == "torch on cpu"
    assert analyzer.model_runtimes[role].startswith("onnxruntime")
    faces = analyzer.analyze(torch.cat([rgb_uint8_to_tensor(frame) for frame in _textured_frames(1)]))
    assert faces[0] and all(
        (face.landmarks if role == "landmarks_106" else face.embedding) is not None for face in faces[0]
    )


def test_an_operator_the_interpreter_lacks_falls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_genderage(tmp_path / "genderage.onnx")
    monkeypatch.delitem(onnx_graph.OPS, "Relu")  # type: ignore[attr-defined]
    runner, reason = load_torch_runner(path, device=CPU)
    assert runner is None and "cannot run it" in reason and "Relu" in reason


def test_a_verified_conversion_is_cached_and_needs_no_onnxruntime_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_landmarks_3d68(tmp_path / "1k3d68.onnx")
    first, _ = load_torch_runner(path, device=CPU)
    cache = conversion_cache_path(path)
    assert isinstance(first, TorchLandmarks) and cache.is_file()

    def no_session(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cached conversion must not be checked again")

    monkeypatch.setattr("facemagic_core.runtime.create_session", no_session)
    second, _ = load_torch_runner(path, device=CPU)
    assert isinstance(second, TorchLandmarks)
    _, pixels, boxes, index = _frame_and_boxes()
    torch.testing.assert_close(second.predict(pixels, boxes, index)[0], first.predict(pixels, boxes, index)[0])

    # A damaged cache is reported and made again; a cache of another file is not used.
    monkeypatch.undo()
    cache.write_bytes(cache.read_bytes()[:100])
    with caplog.at_level(logging.WARNING, logger="facemagic_core.torch_models"):
        third, _ = load_torch_runner(path, device=CPU)
    assert isinstance(third, TorchLandmarks) and "cannot be used" in caplog.text
    stale = cache.read_bytes()
    write_landmarks_3d68(path, seed=9)  # the ONNX file changes: the old cache must not be used
    fourth, _ = load_torch_runner(path, device=CPU)
    assert isinstance(fourth, TorchLandmarks) and cache.read_bytes() != stale
    reference = _insightface_runner(path)
    frames, pixels, boxes, index = _frame_and_boxes()
    expected = np.asarray(reference.get(frames[0], _insightface_face(BOXES[0])))
    assert np.abs(fourth.predict(pixels, boxes, index)[0][0].numpy() - expected).max() < LANDMARK_PX


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_the_gpu_the_torch_analyzer_equals_onnxruntime(pack: Path, batch: torch.Tensor) -> None:
    on_gpu = FaceAnalyzer.from_pack(pack, runtime="auto", device="cuda", det_size=DET_SIZE)
    assert set(on_gpu.model_runtimes.values()) == {f"torch on {torch.device('cuda', 0)}"} or all(
        where.startswith("torch on cuda") for where in on_gpu.model_runtimes.values()
    )
    reference = FaceAnalyzer.from_pack(pack, runtime="onnxruntime", device="cpu", det_size=DET_SIZE)
    assert _compare_faces(on_gpu.analyze(batch.cuda()), reference.analyze(batch)) >= 6
