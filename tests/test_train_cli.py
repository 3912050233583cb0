"""End to end on the command line: facemagic prepare -> train -> resume -> swap with the new checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from tiny_models import write_arcface, write_landmarks_106

from facemagic_core.cli import main
from facemagic_core.generators import load_generator
from facemagic_core.training.trainer import read_losses

REPO = Path(__file__).resolve().parents[1]
PHOTOS = ["anni.jpg", "arnold.jpg", "chenglong.jpg", "elon.webp", "zhoujielun.jpg", "aligned/cage.jpg"]


@pytest.fixture
def setup(faces_dir: Path, yunet_path: Path, tmp_path: Path) -> dict[str, Path]:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in PHOTOS:
        shutil.copy(faces_dir / name, photos / Path(name).name)
    (photos / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    models = tmp_path / "models"
    config = json.loads((REPO / "configs" / "tiny.json").read_text())
    config.update(steps=4, sample_every=2, checkpoint_every=2)
    (tmp_path / "tiny.json").write_text(json.dumps(config))
    return {
        "photos": photos,
        "models": models,
        "config": tmp_path / "tiny.json",
        "yunet": yunet_path,
        "arcface": write_arcface(models / "tiny_arcface.onnx"),
        "landmarks": write_landmarks_106(models / "tiny_2d106.onnx"),
        "root": tmp_path,
    }


def test_prepare_train_resume_and_swap_on_the_command_line(
    setup: dict[str, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    root, models = setup["root"], setup["models"]
    common = ["--models", str(models), "--device", "cpu"]
    analyzer = ["--detector", "yunet", "--detector-model", str(setup["yunet"]), "--recognizer", str(setup["arcface"])]
    cache = root / "cache"
    assert (
        main(["prepare", str(setup["photos"]), "-o", str(cache), "--config", str(setup["config"]), *analyzer, *common])
        == 0
    )
    out = capsys.readouterr().out
    assert "7 new photo(s) of 7: 6 face(s) added" in out and "truncated.png" in out
    manifest = json.loads((cache / "manifest.json").read_text())
    assert manifest["image_size"] == 64 and manifest["num_faces"] == 6

    uploads: list[dict[str, Any]] = []

    class RecordingApi:
        def __init__(self, **kwargs: Any) -> None:
            pass

        def create_repo(self, repo_id: str, **kwargs: Any) -> None:
            pass

        def upload_folder(self, **kwargs: Any) -> str:
            uploads.append(kwargs)
            return "http://hub.test/commit"

    monkeypatch.setattr("huggingface_hub.HfApi", RecordingApi)
    run = root / "run"
    teachers = ["--recognizer", str(setup["arcface"]), "--landmarks", str(setup["landmarks"])]
    train = ["train", "--data", str(cache), "-o", str(run), *teachers, *common]
    assert main([*train, "--config", str(setup["config"]), "--push-to-hub", "me/tiny"]) == 0
    out = capsys.readouterr().out
    assert "trained steps 0 -> 4" in out and "uploaded to http://hub.test/commit" in out
    assert uploads[0]["repo_id"] == "me/tiny" and Path(uploads[0]["folder_path"]) == run / "checkpoint"
    assert (run / "checkpoint" / "README.md").is_file()
    assert sorted(path.name for path in (run / "samples").iterdir()) == ["step_0000002.png", "step_0000004.png"]

    assert main([*train, "--resume", "--steps", "6"]) == 0  # the run's own config, two more steps
    assert "trained steps 4 -> 6" in capsys.readouterr().out
    assert [int(row["step"]) for row in read_losses(run)] == [1, 2, 3, 4, 5, 6]

    generator = load_generator(run / "checkpoint", model_dir=models, device="cpu", dtype="fp32")
    assert generator.input_size == 64 and generator.num_blocks == 3

    result = root / "swapped.png"
    source, target = setup["photos"] / "anni.jpg", setup["photos"] / "arnold.jpg"
    swap = ["swap", "--source", str(source), "--target", str(target), "-o", str(result)]
    assert main([*swap, "--generator", str(run / "checkpoint"), *analyzer, *common]) == 0
    with Image.open(result) as swapped, Image.open(target) as original:
        assert swapped.size == original.size


def test_train_refuses_a_new_run_without_config(setup: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["train", "--data", str(setup["root"] / "missing"), "-o", str(setup["root"] / "run"), "--device", "cpu"]
    )
    assert code == 1 and "a new run needs --config" in capsys.readouterr().err
