"""Swap quality report (facemagic_core.quality): on real CelebA photos judged by dlib's ResNet, with
copy-paste and unswapped "swaps" whose right answers are known; recogniser independence; the table,
CSV, JSON and plot; flicker on a real clip."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FACES, SHARED

from facemagic_core.align import align_faces
from facemagic_core.blend import create_face_mask, paste_back
from facemagic_core.errors import BadInputError, NoFaceError
from facemagic_core.images import load_image
from facemagic_core.quality import (
    QualityReport,
    SwapQuality,
    SwapSample,
    check_independent_recognizer,
    draw_quality_plot,
    evaluate_swaps,
    independent_recognizer,
)

FACEAPI = SHARED / "models" / "faceapi"
CELEBA = FACES / "celeba"
#: People and photos per person of the CelebA evaluation below.
PEOPLE = 30
PAIRS = "pairs.csv"


def roc_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    greater = (positives[:, None] > negatives[None, :]).mean()
    ties = (positives[:, None] == negatives[None, :]).mean()
    return float(greater + 0.5 * ties)


@pytest.fixture(scope="module")
def judges(yunet_path: Path):
    """A YuNet + dlib ResNet analyzer (the judge of an ArcFace swap) and face-api's 68-point landmarker."""
    if not (FACEAPI / "face_recognition_model-weights_manifest.json").is_file():
        pytest.skip(f"face-api's weights are not available: {FACEAPI} is absent")
    from facemagic_core.analysis import FaceAnalyzer
    from facemagic_core.dlib_resnet import load_dlib_recognizer
    from facemagic_core.landmarks68 import Landmarker68

    analyzer = FaceAnalyzer(backend="yunet", detector=yunet_path, recognizer=load_dlib_recognizer(FACEAPI))
    return analyzer, Landmarker68.from_file(FACEAPI)


def celeba_pairs(count: int) -> list[tuple[Path, Path]]:
    """Two photos of each of the first ``count`` CelebA people."""
    if not CELEBA.is_dir():
        pytest.skip(f"the CelebA photos are not available: {CELEBA} is absent")
    folders = sorted(p for p in CELEBA.iterdir() if p.is_dir())
    pairs = []
    for folder in folders:
        files = sorted(folder.glob("*.jpg"))
        if len(files) >= 2:
            pairs.append((files[0], files[1]))
        if len(pairs) == count:
            break
    return pairs


def copy_paste_swap(analyzer, source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The target with the source's face crop pasted over its face (aligned on the five points, feathered)."""
    (source_face,) = [max(analyzer.detect_faces(source)[0], key=lambda f: f.size)]
    (target_face,) = [max(analyzer.detect_faces(target)[0], key=lambda f: f.size)]
    crops, _ = align_faces(source, [source_face], 256, "ffhq")
    _, matrices = align_faces(target, [target_face], 256, "ffhq")
    masks = create_face_mask("ellipse", 256, 1, erosion=0.05, feather=0.1)
    pasted, _ = paste_back(target, crops, masks, matrices, [0])
    return pasted


@pytest.fixture(scope="module")
def celeba_report(judges) -> QualityReport:
    """Unswapped results of PEOPLE people: each person's photo B judged against every person's photo A
    (PEOPLE same-person pairs, PEOPLE * (PEOPLE - 1) different-person pairs; each photo analysed once)."""
    analyzer, landmarker = judges
    pairs = celeba_pairs(PEOPLE)
    sources = [load_image(first) for first, _ in pairs]
    targets = [load_image(second) for _, second in pairs]
    samples = [
        SwapSample(f"{number}-{other}", sources[other], target, target, source_name=f"person-{other}")
        for number, target in enumerate(targets)
        for other in range(len(pairs))
    ]
    return evaluate_swaps(samples, analyzer, swap_recognizer="arcface_w600k_r50", landmarker=landmarker)


def _is_same(sample: SwapQuality) -> bool:
    number, other = sample.name.split("-")
    return number == other


def test_same_person_pairs_score_above_different_person_pairs(celeba_report) -> None:
    report = celeba_report
    same = np.array([s.source_similarity for s in report.samples if _is_same(s)])
    other = np.array([s.source_similarity for s in report.samples if not _is_same(s)])
    assert np.isfinite(same).sum() >= PEOPLE - 1 and np.isfinite(other).sum() >= (PEOPLE - 1) ** 2
    auc = roc_auc(same[np.isfinite(same)], other[np.isfinite(other)])
    same_rows = [s for s in report.samples if _is_same(s) and s.faces]
    top1 = float(np.mean([s.retrieval for s in same_rows]))
    print(f"CelebA {PEOPLE} people, dlib ResNet: AUC {auc:.4f}, same {np.nanmean(same):.3f}, "
          f"different {np.nanmean(other):.3f}, ID retrieval top-1 {top1:.3f}")  # fmt: skip
    assert auc >= 0.95, auc  # measured 0.967 (one photo per person on each side)
    assert np.nanmean(same) > np.nanmean(other) + 0.1
    # ID retrieval over the PEOPLE sources: the unswapped photo B of a person is nearest to their photo A.
    assert top1 >= 0.8, top1
    assert report.num_sources == PEOPLE
    # An unswapped result is its own target, and its similarity to the source is the one it started from.
    for sample in report.samples:
        if sample.faces:
            assert sample.target_similarity == pytest.approx(1.0, abs=1e-5)
            assert sample.source_similarity == pytest.approx(sample.before_similarity, abs=1e-6)
            assert sample.yaw_error == pytest.approx(0.0, abs=1e-6) and sample.landmark_error == pytest.approx(0.0)
            assert sample.flicker is None


def test_an_unswapped_target_scores_as_the_target(celeba_report) -> None:
    report = celeba_report
    other = [s for s in report.samples if not _is_same(s) and s.faces]
    assert other
    # Judged against another person's photo, the untouched target keeps all of its own identity.
    assert np.mean([s.target_similarity for s in other]) == pytest.approx(1.0, abs=1e-5)
    assert np.mean([s.source_similarity for s in other]) < 0.9  # dlib: below its same-person threshold
    assert np.mean([s.retrieval for s in other]) <= 0.2  # its nearest source is itself, not the source asked for


def test_a_copy_paste_swap_scores_as_the_source(judges) -> None:
    analyzer, landmarker = judges
    pairs = celeba_pairs(6)
    samples = []
    for number in range(0, 6, 2):
        source = load_image(pairs[number][0])
        target = load_image(pairs[number + 1][1])
        result = copy_paste_swap(analyzer, source, target)
        samples.append(SwapSample(f"paste-{number}", source, target, result, source_name=f"person-{number}"))
        samples.append(SwapSample(f"none-{number}", source, target, target, source_name=f"person-{number}"))
    report = evaluate_swaps(samples, analyzer, swap_recognizer="arcface_w600k_r50", landmarker=landmarker)
    pasted = [s for s in report.samples if s.name.startswith("paste")]
    untouched = {s.name.split("-")[1]: s for s in report.samples if s.name.startswith("none")}
    for sample in pasted:
        before = untouched[sample.name.split("-")[1]]
        assert sample.faces == 1
        assert sample.source_similarity > 0.93, sample  # the source's own face: above dlib's same-person 0.91
        assert sample.source_similarity > before.source_similarity + 0.1
        assert sample.target_similarity < 0.9 and sample.target_similarity < before.target_similarity - 0.1
        assert sample.retrieval == 1.0 and sample.retrieved == sample.source_name
        assert sample.before_similarity == pytest.approx(before.before_similarity, abs=1e-6)
        assert sample.landmark_error > before.landmark_error  # the pasted face's features are the source's
        assert sample.yaw_error + sample.pitch_error > 5.0  # and so is its pose: a copy-paste keeps no pose
    assert report.retrieval_top1 >= 0.5  # every pasted face found its source (an untouched one may, by chance of 3)
    print(report.format_text())


def test_flicker_of_a_video(judges, clip_path: Path) -> None:
    from facemagic_core.video import read_frames

    analyzer, _ = judges
    frames = read_frames(clip_path, max_frames=6) * 0.9 + 0.05
    source = frames[:1]
    offsets = torch.tensor([0.02 * (-1) ** t for t in range(6)]).view(6, 1, 1, 1)
    noisy = frames + offsets  # brightness that flips every frame, the target's own motion unchanged
    report = evaluate_swaps(
        [SwapSample("copy", source, frames, frames.clone()), SwapSample("noisy", source, frames, noisy)],
        analyzer,
        swap_recognizer="arcface_w600k_r50",
    )
    copy, flickering = report.samples
    assert copy.frames == 6 and copy.faces == 6
    assert copy.flicker == pytest.approx(0.0, abs=1e-6)
    # Every pixel of the face changes by 0.04 from frame to frame more than the target's (less only where
    # a crop reaches past the picture's edge).
    expected = 0.04 * 255
    assert flickering.flicker is not None and 0.9 * expected < flickering.flicker < expected + 1e-3
    print(f"flicker {flickering.flicker:.2f} (expected {expected:.2f})")
    assert report.landmark_points == 5
    assert "ID retrieval had one source" not in report.format_text()  # two samples, two sources ('copy', 'noisy')


# ---------------------------------------------------------------------------------------------
# Recogniser independence, bad input


def test_the_swaps_own_recogniser_is_refused_or_flagged() -> None:
    assert independent_recognizer("arcface_w600k_r50") == "dlib_resnet_v1"
    assert independent_recognizer("dlib_resnet_v1") == "arcface_w600k_r50"
    assert check_independent_recognizer("arcface_w600k_r50", "dlib_resnet_v1") is None
    with pytest.raises(BadInputError, match=r"same family.*another recogniser"):
        check_independent_recognizer("arcface_w600k_r50", "arcface_glintr100")
    with pytest.warns(UserWarning, match="flatter the swap"):
        note = check_independent_recognizer("dlib_resnet_v1", "dlib_resnet_v1", allow_same=True)
    assert note is not None and note.startswith("warning:")


class _FakeAnalyzer:
    """One face per image, at a fixed place, with a fixed embedding (for checks that need no real model)."""

    embedding_model = "dlib_resnet_v1"

    def __init__(self, embedding: np.ndarray | None = None) -> None:
        self.embedding = embedding if embedding is not None else np.ones(4, np.float32)
        self.calls = 0

    def analyze(self, images: torch.Tensor, *, landmarks: bool = True, embeddings: bool = True):
        from facemagic_core.types import Face

        self.calls += 1
        points = np.array([[20, 24], [44, 24], [32, 36], [22, 48], [42, 48]], np.float32)
        face = Face(bbox=np.array([8, 8, 56, 60], np.float32), score=0.9, landmarks_5=points, embedding=self.embedding)
        return [[face] if float(images[i].std()) > 0 else [] for i in range(images.shape[0])]


def _image(seed: int, frames: int = 1) -> torch.Tensor:
    return torch.rand((frames, 3, 64, 64), generator=torch.Generator().manual_seed(seed))


def test_bad_samples_are_named() -> None:
    analyzer = _FakeAnalyzer()
    with pytest.raises(BadInputError, match="no swaps"):
        evaluate_swaps([], analyzer, swap_recognizer="arcface_w600k_r50")
    with pytest.raises(BadInputError, match=r"does not match the target.*'clip'"):
        evaluate_swaps([SwapSample("clip", _image(0), _image(1, 3), _image(2, 2))], analyzer, swap_recognizer="x")
    with pytest.raises(BadInputError, match="source is a batch of 2"):
        evaluate_swaps([SwapSample("a", _image(0, 2), _image(1), _image(2))], analyzer, swap_recognizer="x")
    with pytest.raises(BadInputError, match="same name"):
        evaluate_swaps([SwapSample("a", _image(0), _image(1), _image(2))] * 2, analyzer, swap_recognizer="x")
    with pytest.raises(BadInputError, match="same family"):
        evaluate_swaps([SwapSample("a", _image(0), _image(1), _image(2))], analyzer, swap_recognizer="dlib_resnet_v1")
    grey = torch.zeros((1, 3, 64, 64)) + 0.5
    with pytest.raises(NoFaceError, match=r"source photo.*'a'"):
        evaluate_swaps([SwapSample("a", grey, _image(1), _image(2))], analyzer, swap_recognizer="x")
    target = _image(1)
    before = target.clone()
    report = evaluate_swaps([SwapSample("a", _image(0), target, grey)], analyzer, swap_recognizer="x")
    assert torch.equal(target, before)  # inputs are never modified
    (sample,) = report.samples
    assert sample.faces == 0 and math.isnan(sample.source_similarity)
    assert "faces not found in every frame of: a" in report.format_text()


# ---------------------------------------------------------------------------------------------
# Table, CSV, JSON, plot


def _report() -> QualityReport:
    rows = (
        SwapQuality("a.jpg", "me", 1, 1, 0.8, 0.3, 0.1, 1.0, "me", 2.0, 3.0, 1.0, 0.02, 0.03, None),
        SwapQuality("clip.mp4", "you", 4, 3, 0.6, 0.5, 0.2, 2 / 3, "you", 4.0, 1.0, 0.5, 0.04, 0.05, 1.5),
        SwapQuality("none.jpg", "me", 1, 0, *(math.nan,) * 4, "", *(math.nan,) * 5, None),
    )
    return QualityReport(rows, recognizer="dlib_resnet_v1", swap_recognizer="arcface_w600k_r50", landmark_points=68)


def test_summary_table_csv_and_json() -> None:
    report = _report()
    summary = report.summary()
    assert summary["retrieval_top1"] == pytest.approx(3 / 4)  # 1 of 1 and 2 of 3 faces
    assert summary["source_similarity"] == pytest.approx(0.7) and summary["flicker"] == pytest.approx(1.5)
    text = report.format_text()
    assert text.splitlines()[0].split()[:3] == ["sample", "faces", "to"]
    assert "clip.mp4" in text and "measured by dlib_resnet_v1 (the swap used arcface_w600k_r50)" in text
    assert "among 2 sources" in text
    mean_line = next(line for line in text.splitlines() if line.startswith("mean"))
    assert "0.700" in mean_line and "0.750" in mean_line
    rows = list(csv.DictReader(io.StringIO(report.to_csv())))
    assert [row["name"] for row in rows] == ["a.jpg", "clip.mp4", "none.jpg"]
    assert float(rows[1]["retrieval"]) == pytest.approx(2 / 3, abs=1e-5) and rows[2]["source_similarity"] == ""
    data = json.loads(report.to_json())
    assert data["summary"]["retrieval_top1"] == pytest.approx(0.75)
    assert data["samples"][2]["source_similarity"] is None and data["num_sources"] == 2


def test_plot_is_an_image_with_the_swaps_drawn() -> None:
    report = _report()
    plot = draw_quality_plot(report, height=240)
    assert plot.shape == (1, 3, 240, 480) and plot.dtype == torch.float32
    assert float(plot.min()) >= 0.0 and float(plot.max()) <= 1.0
    blue = (plot[0, 2] > 0.6) & (plot[0, 0] < 0.2)
    assert int(blue[:, :240].sum()) > 10  # result dots on the left panel
    red = (plot[0, 0] > 0.7) & (plot[0, 1] < 0.3)
    assert int(red[:, 240:].sum()) > 50  # the NME bars on the right
    with pytest.raises(BadInputError, match="at least 120"):
        draw_quality_plot(report, height=50)


# ---------------------------------------------------------------------------------------------
# facemagic eval


def test_cli_eval_of_a_run_folder_writes_table_csv_json_and_plot(
    judges, yunet_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from facemagic_core.cli import main
    from facemagic_core.images import save_image

    analyzer, _ = judges
    pairs = celeba_pairs(3)
    run = tmp_path / "run"
    for name in ("sources", "targets", "results"):
        (run / name).mkdir(parents=True)
    source = load_image(pairs[0][0])
    save_image(source[0], run / "sources" / "me.png")
    for stem, (_, photo) in zip(("pasted", "untouched"), pairs[1:], strict=True):
        target = load_image(photo)
        save_image(target[0], run / "targets" / f"{stem}.png")
        result = copy_paste_swap(analyzer, source, target) if stem == "pasted" else target
        save_image(result[0], run / "results" / f"{stem}.png")
    common = ["--detector", "yunet", "--detector-model", str(yunet_path), "--models", str(tmp_path / "models")]
    recognizer = str(FACEAPI / "face_recognition_model-weights_manifest.json")
    prefix = tmp_path / "out" / "report"
    argv = ["eval", str(run), *common, "--recognizer", recognizer, "--landmarks68", str(FACEAPI), "-o", str(prefix)]
    assert main([*argv, "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "measured by dlib_resnet_v1 (the swap used arcface_w600k_r50)" in out
    assert "ID retrieval had one source" in out and f"wrote {prefix}.png" in out
    rows = {row["name"]: row for row in csv.DictReader(io.StringIO(Path(f"{prefix}.csv").read_text("utf-8")))}
    assert set(rows) == {"pasted.png", "untouched.png"}
    assert float(rows["pasted.png"]["source_similarity"]) > 0.93
    assert float(rows["untouched.png"]["target_similarity"]) == pytest.approx(1.0, abs=1e-5)
    assert float(rows["untouched.png"]["yaw_error"]) == pytest.approx(0.0, abs=1e-6)
    data = json.loads(Path(f"{prefix}.json").read_text(encoding="utf-8"))
    assert data["landmark_points"] == 68 and data["recognizer"] == "dlib_resnet_v1"
    plot = load_image(f"{prefix}.png")
    assert plot.shape == (1, 3, 360, 720)
    # The swap's own recogniser is refused, with the way out.
    assert main([*argv, "--swap-recognizer", "dlib_resnet_v1"]) == 1
    assert "--allow-same-recognizer" not in capsys.readouterr().err  # the message names the fix in words
    with pytest.warns(UserWarning, match="flatter the swap"):
        assert main([*argv, "--swap-recognizer", "dlib_resnet_v1", "--allow-same-recognizer"]) == 0
    assert "warning: the identity is measured by dlib_resnet_v1" in capsys.readouterr().out


def test_cli_eval_names_bad_file_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from facemagic_core.cli import main

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    assert main(["eval", "--source", str(a), "--target", str(a), str(b), "--result", str(b)]) == 1
    assert "2 targets but 1 results" in capsys.readouterr().err
    assert main(["eval", "--source", str(a), str(b), str(a), "--target", str(a), str(b), "--result", str(a), str(b)])
    assert "3 sources for 2 targets" in capsys.readouterr().err
    assert main(["eval", str(tmp_path), "--source", str(a)]) == 1
    assert "not both" in capsys.readouterr().err
    (tmp_path / "run" / "targets").mkdir(parents=True)
    (tmp_path / "run" / "sources").mkdir()
    (tmp_path / "run" / "results").mkdir()
    (tmp_path / "run" / "targets" / "x.png").write_bytes(b"")
    assert main(["eval", str(tmp_path / "run")]) == 1
    assert "no result for the target x.png" in capsys.readouterr().err
    (tmp_path / "run" / PAIRS).write_text("source,result\nme.png,x.png\n", encoding="utf-8")
    assert main(["eval", str(tmp_path / "run")]) == 1
    assert "needs a header source,target,result" in capsys.readouterr().err
    assert main(["eval"]) == 1
    assert "nothing to evaluate" in capsys.readouterr().err
