"""The ``facemagic identity`` and ``facemagic similarity`` commands, with a fake face analyzer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facemagic_core.cli import DEFAULT_MODEL_DIR, main
from facemagic_core.cli import identity as identity_command
from facemagic_core.errors import ModelNotFoundError
from facemagic_core.hub import get_model_spec
from facemagic_core.identity import load_identity, save_identity
from facemagic_core.types import Face, Identity

MODEL = "arcface_w600k_r50"
SIDE = 96


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector, axis=-1, keepdims=True)


def make_face(size: float, embedding: np.ndarray, x: float = 8.0) -> Face:
    bbox = np.array([x, 8.0, x + size, 8.0 + size * 1.2], dtype=np.float32)
    landmarks = np.array([[0.34, 0.46], [0.66, 0.46], [0.5, 0.64], [0.37, 0.82], [0.63, 0.82]], np.float32)
    return Face(
        bbox=bbox, score=0.9, landmarks_5=landmarks * np.float32(size) + np.float32([x, 8.0]), embedding=embedding
    )


class ColourKeyedAnalyzer:
    """Finds the faces registered for an image's red value (each test photo is one flat colour)."""

    embedding_model = MODEL

    def __init__(self, faces_by_red: dict[int, list[Face]]) -> None:
        self.faces_by_red = faces_by_red

    def analyze(self, images: torch.Tensor, *, landmarks: bool = True, embeddings: bool = True) -> list[list[Face]]:
        return [self.faces_by_red[round(float(image[0, 0, 0]) * 255)] for image in images]


def write_photo(path: Path, red: int) -> Path:
    Image.new("RGB", (SIDE, SIDE), (red, 80, 120)).save(path)
    return path


@pytest.fixture
def people() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    alice = rng.standard_normal(512)
    return {
        "alice_1": (alice + 0.5 * rng.standard_normal(512)).astype(np.float32),
        "alice_2": (2.0 * alice + 0.8 * rng.standard_normal(512)).astype(np.float32),
        "bob": rng.standard_normal(512).astype(np.float32),
        "carol": rng.standard_normal(512).astype(np.float32),
    }


@pytest.fixture
def analyzer(people: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch) -> ColourKeyedAnalyzer:
    fake = ColourKeyedAnalyzer(
        {
            10: [make_face(60, people["alice_1"])],
            20: [make_face(30, people["carol"], x=2), make_face(70, people["alice_2"], x=20)],
            30: [make_face(60, people["bob"])],
            40: [],
        }
    )
    built: list[tuple[Path, str, str]] = []

    def build_analyzer(model_dir: Path, backend: str, device: str, **files: Path | None) -> ColourKeyedAnalyzer:
        built.append((model_dir, backend, device))
        return fake

    monkeypatch.setattr(identity_command, "build_analyzer", build_analyzer)
    fake.built = built  # type: ignore[attr-defined]
    return fake


def test_identity_command_writes_the_mean_and_warns_about_an_odd_photo(
    tmp_path: Path, people: dict[str, np.ndarray], analyzer: ColourKeyedAnalyzer, capsys: pytest.CaptureFixture[str]
) -> None:
    photos = [
        write_photo(tmp_path / "a1.png", 10),
        write_photo(tmp_path / "a2.png", 20),
        write_photo(tmp_path / "b.png", 30),
    ]
    output = tmp_path / "out" / "person.safetensors"
    code = main(["identity", *map(str, photos), "-o", str(output), "--detector", "yunet", "--device", "cpu"])
    printed = capsys.readouterr().out
    assert code == 0
    assert analyzer.built == [(DEFAULT_MODEL_DIR, "yunet", "cpu")]  # type: ignore[attr-defined]

    identity = load_identity(output, embedding_model=MODEL)
    raw = np.stack([people["alice_1"], people["alice_2"], people["bob"]]).astype(np.float64)
    np.testing.assert_allclose(identity.embeddings[0], unit(unit(raw).mean(axis=0)), atol=1e-6)
    assert identity.sources == ("a1.png", "a2.png", "b.png")
    assert identity.extra["face_order"] == "largest"

    assert "Faces used (3 photos)" in printed
    assert "2. a2.png: face 0 of 2 (largest first)" in printed
    pair = float(unit(raw[0]) @ unit(raw[1]))
    matrix_row_1 = next(line.split() for line in printed.splitlines() if line.split()[:2] == ["1", "1.00"])
    assert matrix_row_1[2] == f"{pair:.2f}"
    warnings = [line for line in printed.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "photo 3 (b.png) looks like a different person" in warnings[0]
    assert f"Saved the identity ({MODEL}) to {output}" in printed


def test_identity_command_folder_face_index_and_preview(
    tmp_path: Path, people: dict[str, np.ndarray], analyzer: ColourKeyedAnalyzer, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    write_photo(folder / "2.png", 20)
    write_photo(folder / "1.png", 10)
    (folder / "notes.txt").write_text("not a photo")
    output = tmp_path / "person.safetensors"
    preview = tmp_path / "crops.png"
    code = main(["identity", str(folder), "-o", str(output), "--face-index", "0,1", "--preview", str(preview)])
    printed = capsys.readouterr().out
    assert code == 0
    identity = load_identity(output)
    assert identity.sources == ("1.png", "2.png")
    # photo 2's faces by size: alice_2 (70 px) then carol (30 px); index 1 takes carol
    expected = unit(unit(people["alice_1"].astype(np.float64)) + unit(people["carol"].astype(np.float64)))
    np.testing.assert_allclose(identity.embeddings[0], expected, atol=1e-6)
    assert "face 1 of 2" in printed
    assert "warning: the two photos look like different people" in printed  # alice and carol
    with Image.open(preview) as picture:
        assert picture.size == (2 * identity_command.PREVIEW_SIZE, identity_command.PREVIEW_SIZE)


def test_identity_command_errors_exit_1(
    tmp_path: Path, analyzer: ColourKeyedAnalyzer, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = write_photo(tmp_path / "empty.png", 40)
    good = write_photo(tmp_path / "good.png", 10)
    assert main(["identity", str(good), str(empty), "-o", str(tmp_path / "p.safetensors")]) == 1
    error = capsys.readouterr().err
    assert "no face was found" in error and "image 2 of 2: empty.png" in error
    assert main(["identity", str(good), "-o", str(tmp_path / "p.pt")]) == 1
    assert "p.safetensors" in capsys.readouterr().err
    assert main(["identity", str(good), "--face-index", "3", "-o", str(tmp_path / "p.safetensors")]) == 1
    assert "only 1 face" in capsys.readouterr().err
    assert not (tmp_path / "p.safetensors").exists()


def test_similarity_command_photos_and_identity_files(
    tmp_path: Path, people: dict[str, np.ndarray], analyzer: ColourKeyedAnalyzer, capsys: pytest.CaptureFixture[str]
) -> None:
    a1, a2, bob = (
        write_photo(tmp_path / "a1.png", 10),
        write_photo(tmp_path / "a2.png", 20),
        write_photo(tmp_path / "b.png", 30),
    )
    same = float(unit(people["alice_1"].astype(np.float64)) @ unit(people["alice_2"].astype(np.float64)))
    assert same > 0.4

    assert main(["similarity", str(a1), str(a2)]) == 0
    printed = capsys.readouterr().out
    assert f"similarity: {same:.4f}" in printed and "verdict: likely the same person" in printed
    assert "rule of thumb" in printed

    assert main(["similarity", str(a1), str(bob)]) == 0
    assert "verdict: likely different people" in capsys.readouterr().out

    alice = tmp_path / "alice.safetensors"
    save_identity(Identity(people["alice_1"], embedding_model=MODEL, sources=("a1.png",)), alice)
    assert main(["similarity", str(alice), str(a2)]) == 0
    printed = capsys.readouterr().out
    assert f"similarity: {same:.4f}" in printed and "alice.safetensors: identity from 1 source" in printed

    # two identity files: no analyzer is built
    analyzer.built.clear()  # type: ignore[attr-defined]
    assert main(["similarity", str(alice), str(alice)]) == 0
    assert "similarity: 1.0000" in capsys.readouterr().out
    assert analyzer.built == []  # type: ignore[attr-defined]

    other = tmp_path / "other.safetensors"
    save_identity(Identity(people["bob"], embedding_model="glintr100"), other)
    assert main(["similarity", str(other), str(a2)]) == 1
    error = capsys.readouterr().err
    assert "glintr100" in error and MODEL in error


def test_help_texts(capsys: pytest.CaptureFixture[str]) -> None:
    for command, words in (
        ("identity", ["photos of the person", "--face-index", "--preview"]),
        ("similarity", ["rule of thumb", "identity file"]),
    ):
        with pytest.raises(SystemExit) as caught:
            main([command, "--help"])
        assert caught.value.code == 0
        printed = capsys.readouterr().out.lower()
        for word in words:
            assert word in printed, (command, word)


@pytest.mark.parametrize("detector", ["insightface", "yunet"])
def test_missing_models_offline_exit_1(
    tmp_path: Path, detector: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: never the real Hub
    models = tmp_path / "models"
    models.mkdir()
    photo = write_photo(tmp_path / "me.png", 10)
    with pytest.raises(ModelNotFoundError):
        identity_command.build_analyzer(models, detector, "cpu")
    code = main(
        [
            "identity",
            str(photo),
            "-o",
            str(tmp_path / "me.safetensors"),
            "--models",
            str(models),
            "--detector",
            detector,
        ]
    )
    assert code == 1
    error = capsys.readouterr().err
    assert "facemagic: error:" in error and str(models) in error
    # every missing file is named at once, with its repo, its URL and where exactly to put it
    needed = ["buffalo_l"] if detector == "insightface" else ["yunet", "arcface_w600k_r50"]
    for name in needed:
        spec = get_model_spec(name)
        assert spec.repo_id in error and f"/resolve/main/{spec.filename}" in error, name
        assert str(models / spec.local_path) in error, name
    if len(needed) > 1:
        assert "2 models are missing: yunet, arcface_w600k_r50" in error
    assert not (tmp_path / "me.safetensors").exists()
    assert sorted(path.name for path in models.iterdir()) == []  # nothing was written to the model folder


def test_identity_command_with_the_real_yunet_and_models_trusted_on_first_use(
    tmp_path: Path,
    faces_dir: Path,
    yunet_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The issue's "done when": YuNet and an ArcFace file placed by hand in the model folder, no network."""
    from tiny_models import write_arcface

    from facemagic_core.hub import LOCK_FILE_NAME

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(yunet_path, models / get_model_spec("yunet").local_path)
    write_arcface(models / get_model_spec("arcface_w600k_r50").local_path)
    output = tmp_path / "anni.safetensors"
    command = ["identity", str(faces_dir / "anni.jpg"), "-o", str(output), "--detector", "yunet"]
    assert main([*command, "--models", str(models), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "1. anni.jpg: face 0 of 1 (largest first)" in printed
    identity = load_identity(output, embedding_model=MODEL)
    assert identity.sources == ("anni.jpg",) and identity.num_blocks == 1
    lock = json.loads((models / LOCK_FILE_NAME).read_text())["files"]
    assert {entry["source"] for entry in lock.values()} == {"local"} and len(lock) == 2
    # a model file changed after that first use is refused, never loaded
    (models / get_model_spec("arcface_w600k_r50").local_path).write_bytes(b"not the recorded file")
    assert main([*command, "--models", str(models), "--device", "cpu"]) == 1
    assert "arcface_w600k_r50 is truncated" in capsys.readouterr().err


def test_photos_are_read_upright_and_16_bit_grey_keeps_its_levels(tmp_path: Path) -> None:
    from facemagic_core.images import load_image

    picture = np.zeros((40, 60, 3), np.uint8)
    picture[:10, :10] = 255  # a white corner, top left as the camera stored it
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation 6: turn 90 degrees clockwise to show it
    Image.fromarray(picture).save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    upright = load_image(tmp_path / "phone.jpg")
    assert upright.shape == (1, 3, 60, 40)  # portrait, as any viewer shows it
    assert float(upright[0, :, :10, -10:].mean()) > 0.9  # the corner is now top right
    assert float(upright[0, :, :10, :10].mean()) < 0.1

    levels = np.linspace(0, 65535, 48 * 48).reshape(48, 48).astype(np.uint16)
    Image.fromarray(levels).save(tmp_path / "scan.png")
    grey = load_image(tmp_path / "scan.png")
    assert grey.shape == (1, 3, 48, 48) and grey.dtype == torch.float32
    np.testing.assert_allclose(grey[0, 1].numpy(), levels / 65535.0, atol=1e-6)
    assert torch.equal(grey[0, 0], grey[0, 2])


def test_unwritable_preview_is_a_clear_error(
    tmp_path: Path, analyzer: ColourKeyedAnalyzer, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = write_photo(tmp_path / "a1.png", 10)
    (tmp_path / "file").write_text("a file where a folder should be")
    preview = tmp_path / "file" / "crops.png"
    assert main(["identity", str(photo), "-o", str(tmp_path / "p.safetensors"), "--preview", str(preview)]) == 1
    error = capsys.readouterr().err
    assert "is a file, so the output folder cannot be made" in error and str(preview) in error
    assert not (tmp_path / "p.safetensors").exists()  # refused before the identity file is written


def test_commands_end_to_end_with_a_tiny_model_pack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No fakes: the registry finds a (tiny) buffalo_l pack in the model folder and the real analyzer runs it."""
    from tiny_models import bright_cell_image, write_pack

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    models = tmp_path / "models"
    write_pack(models / "buffalo_l")
    # the tiny detector reports a 128 px face centred on each bright 32 px cell (column, row)
    Image.fromarray(bright_cell_image([(5, 5, 255), (12, 9, 255)])).save(tmp_path / "two.png")
    Image.fromarray(bright_cell_image([(8, 8, 255)])).save(tmp_path / "one.png")
    output, preview = tmp_path / "person.safetensors", tmp_path / "crops.png"
    common = ["--models", str(models), "--device", "cpu"]
    photos = [str(tmp_path / "two.png"), str(tmp_path / "one.png")]
    arguments = ["--order", "left_to_right", "--face-index", "1,0", "--preview", str(preview)]
    assert main(["identity", *photos, "-o", str(output), *arguments, *common]) == 0
    printed = capsys.readouterr().out
    assert "1. two.png: face 1 of 2 (left_to_right first), 128x128 px at (320, 224)" in printed
    assert "2. one.png: face 0 of 1" in printed
    identity = load_identity(output, embedding_model=MODEL)
    assert identity.sources == ("two.png", "one.png") and identity.mode == "mean"
    with Image.open(preview) as picture:
        assert picture.size == (224, 112)

    assert main(["similarity", str(output), str(tmp_path / "one.png"), *common]) == 0
    printed = capsys.readouterr().out
    value = float(next(line for line in printed.splitlines() if line.startswith("similarity:")).split()[1])
    assert -1.0 <= value <= 1.0 and "verdict:" in printed


def test_identity_and_similarity_take_detector_and_recognizer_files(
    faces_dir: Path,
    yunet_path: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Model files given by path need nothing from the (empty, offline) model folder, as with facemagic swap."""
    from tiny_models import write_arcface

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    recognizer = write_arcface(tmp_path / "my_arcface.onnx")
    files = ["--detector", "yunet", "--detector-model", str(yunet_path), "--recognizer", str(recognizer)]
    files += ["--models", str(tmp_path / "empty"), "--device", "cpu"]
    output = tmp_path / "anni.safetensors"
    assert main(["identity", str(faces_dir / "anni.jpg"), "-o", str(output), *files]) == 0
    assert load_identity(output).sources == ("anni.jpg",)
    assert main(["similarity", str(faces_dir / "anni.jpg"), str(output), *files]) == 0
    assert "1.000" in capsys.readouterr().out
    # Only the recogniser given: the YuNet file is the one registry model named as missing.
    assert main(["identity", str(faces_dir / "anni.jpg"), "-o", str(output), *files[:2], *files[4:]]) == 1
    error = capsys.readouterr().err
    assert "face_detection_yunet" in error and "arcface" not in error.split("Fix:")[0].lower()
