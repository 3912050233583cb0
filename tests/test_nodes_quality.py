"""The Swap Quality node (report text + IMAGE plot) through the ComfyUI stand-in, and the yunet_dlib analyzer
it needs to judge ArcFace swaps, on real CelebA photos."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import SHARED

from facemagic_core.analysis import FaceAnalyzer
from facemagic_core.errors import BadInputError
from facemagic_core.identity import cosine_similarity
from facemagic_core.types import Identity

pytest_plugins = ["comfy_stub.fixtures"]

FACEAPI = SHARED / "models" / "faceapi"


def test_swap_quality_of_pictures_gives_table_plot_and_similarity(
    nodes: dict[str, Any],
    analyzer: FaceAnalyzer,
    person_a: torch.Tensor,
    person_b: torch.Tensor,
    identity_a: Identity,
    identity_b: Identity,
) -> None:
    node = nodes["FaceMagicSwapQuality"]
    targets = torch.cat([person_b, person_b])
    common = {"mode": "pictures", "swap_recognizer": "dlib_resnet_v1", "landmarks": "detector 5 points",
              "allow_same_recognizer": False}  # fmt: skip
    output = node.run(analyzer=analyzer, source=person_a, target=targets, result=targets.clone(), **common)
    report, plot, similarity = output.args
    expected = float(cosine_similarity(identity_a, identity_b))
    assert similarity == pytest.approx(expected, abs=1e-4)  # an unswapped result is as far from the source as before
    lines = report.splitlines()
    assert lines[0].split()[:2] == ["sample", "faces"]
    assert lines[1].startswith("image 1") and lines[2].startswith("image 2")
    assert "measured by arcface_w600k_r50 (the swap used dlib_resnet_v1)" in report
    assert plot.shape == (1, 360, 720, 3) and plot.dtype == torch.float32
    assert float(plot.min()) >= 0 and float(plot.max()) <= 1
    assert output.ui["text"] == [report] and output.ui["facemagic_similarity"] == [similarity]
    # A judge of the swap's own family is refused, or flagged when allowed.
    with pytest.raises(BadInputError, match="another recogniser"):
        node.run(analyzer=analyzer, source=person_a, target=targets, result=targets, **{
            **common, "swap_recognizer": "arcface_w600k_r50"})  # fmt: skip
    with pytest.warns(UserWarning, match="flatter"):
        flagged = node.run(analyzer=analyzer, source=person_a, target=person_b, result=person_b, **{
            **common, "swap_recognizer": "arcface_glintr100", "allow_same_recognizer": True})  # fmt: skip
    assert "warning: the identity is measured by arcface_w600k_r50" in flagged.args[0]


def test_swap_quality_of_a_video_measures_flicker(
    nodes: dict[str, Any], analyzer: FaceAnalyzer, person_a: torch.Tensor, person_b: torch.Tensor
) -> None:
    node = nodes["FaceMagicSwapQuality"]
    frames = torch.cat([person_b] * 3)
    common = {"swap_recognizer": "dlib_resnet_v1", "landmarks": "detector 5 points", "allow_same_recognizer": False}
    steady = node.run(analyzer=analyzer, source=person_a, target=frames, result=frames, mode="video", **common)
    flicker = torch.cat([frames[:1], (frames[1:2] + 0.05).clamp(0, 1), frames[2:]])
    flickering = node.run(analyzer=analyzer, source=person_a, target=frames, result=flicker, mode="video", **common)
    row = lambda text: next(line for line in text.splitlines() if line.startswith("video")).split()  # noqa: E731
    assert row(steady.args[0])[1] == "3" and float(row(steady.args[0])[-1]) == pytest.approx(0.0)
    assert row(flickering.args[0])[1] == "3", flickering.args[0]
    assert float(row(flickering.args[0])[-1]) > 1.0
    with pytest.raises(BadInputError, match="do not match the targets"):
        node.run(analyzer=analyzer, source=person_a, target=frames, result=frames[:2], mode="video", **common)
    with pytest.raises(BadInputError, match="2 sources for 3 targets"):
        node.run(analyzer=analyzer, source=torch.cat([person_a] * 2), target=frames, result=frames,
                 mode="pictures", **common)  # fmt: skip


def test_the_yunet_dlib_analyzer_judges_a_copy_paste_swap_of_real_photos(
    nodes: dict[str, Any], models_dir: Path, yunet_path: Path
) -> None:
    if not (FACEAPI / "face_recognition_model-weights_manifest.json").is_file():
        pytest.skip(f"face-api's weights are not available: {FACEAPI} is absent")
    from test_quality import celeba_pairs, copy_paste_swap

    from facemagic_core.images import load_image

    folder = models_dir / "facemagic"
    shutil.copy(yunet_path, folder / "face_detection_yunet_2023mar.onnx")
    shutil.copytree(FACEAPI, folder / "faceapi")  # dlib's ResNet and the 68-point net, as face-api's tfjs files
    (first, _), (_, other) = celeba_pairs(2)
    source, target = load_image(first), load_image(other)
    judge = nodes["FaceMagicAnalyzerLoader"].run(model="yunet_dlib", device="cpu", det_size=640, det_threshold=0.5)
    analyzer = judge.args[0]
    assert analyzer.embedding_model == "dlib_resnet_v1"
    result = copy_paste_swap(analyzer, source, target)
    output = nodes["FaceMagicSwapQuality"].run(
        analyzer=analyzer,
        source=source.permute(0, 2, 3, 1),
        target=torch.cat([target, target]).permute(0, 2, 3, 1),
        result=torch.cat([result, target]).permute(0, 2, 3, 1),
        mode="pictures",
        swap_recognizer="arcface_w600k_r50",
        landmarks="faceapi_landmark68",
        allow_same_recognizer=False,
    )
    report = output.args[0]
    pasted, untouched = (line.split() for line in report.splitlines()[1:3])
    assert float(pasted[3]) > 0.93 and float(untouched[4]) == pytest.approx(1.0, abs=1e-3)  # "image 1": 2 words
    assert "(68 points" in report and "measured by dlib_resnet_v1" in report
