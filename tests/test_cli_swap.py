"""``facemagic swap`` end to end on real photos and the clip, with tiny random generators, YuNet and a tiny ArcFace."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import tiny_facemagic_config, write_arcface

from facemagic_core.cli import main
from facemagic_core.generators import GeneratorConfig, InswapperGenerator, SwapGenerator, export_inswapper_onnx
from facemagic_core.identity import load_identity, save_identity
from facemagic_core.images import load_image
from facemagic_core.types import Identity
from facemagic_core.video import read_frames, read_video_info


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    native = SwapGenerator.from_config(tiny_facemagic_config())
    native.save_pretrained(folder / "tiny_facemagic")
    inswapper = InswapperGenerator(GeneratorConfig.inswapper_layout(channels=4, image_size=32, num_blocks=2)).eval()
    with torch.no_grad():
        inswapper.emap.copy_(torch.randn(512, 512) / 512**0.5)
    export_inswapper_onnx(inswapper, folder / "tiny_inswapper.onnx")
    return {
        "dir": folder,
        "native": folder / "tiny_facemagic",
        "onnx": folder / "tiny_inswapper.onnx",
        "recognizer": write_arcface(folder / "w600k_r50.onnx"),
    }


@pytest.fixture
def base_args(models: dict[str, Path], yunet_path: Path) -> list[str]:
    """Options that keep the command offline: local generator, YuNet and a tiny recogniser, the CPU."""
    return [
        "--detector",
        "yunet",
        "--detector-model",
        str(yunet_path),
        "--recognizer",
        str(models["recognizer"]),
        "--models",
        str(models["dir"]),
        "--device",
        "cpu",
    ]


def test_swap_a_photo(
    faces_dir: Path, models: dict[str, Path], base_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = faces_dir / "iron_man.jpg"
    output = tmp_path / "result.png"
    code = main(
        [
            "swap",
            "--source",
            str(faces_dir / "anni.jpg"),
            str(faces_dir / "arnold.jpg"),
            "--target",
            str(target),
            "-o",
            str(output),
            "--generator",
            str(models["native"]),
            "--strength",
            "1",
            "0.5",
            "0",
            *base_args,
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "Swapped 1 face(s)" in printed and "identity from anni.jpg, arnold.jpg" in printed
    before, after = load_image(target), load_image(output)
    assert after.shape == before.shape
    changed = (after != before).any(dim=1)[0]
    ys, xs = torch.nonzero(changed, as_tuple=True)
    assert 5_000 < int(changed.sum()) < 0.5 * changed.numel()  # the face, not the whole picture
    assert 100 < float(xs.float().mean()) < 650 and 250 < float(ys.float().mean()) < 1000


def test_swap_the_clip_into_an_mp4(
    faces_dir: Path,
    clip_path: Path,
    models: dict[str, Path],
    base_args: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    identity = tmp_path / "person.safetensors"
    save_identity(
        Identity(np.random.default_rng(3).standard_normal(512), embedding_model="arcface_w600k_r50"), identity
    )
    output = tmp_path / "clip.mp4"
    code = main(
        [
            "swap",
            "--identity",
            str(identity),
            "--target",
            str(clip_path),
            "-o",
            str(output),
            "--generator",
            str(models["onnx"]),
            "--max-frames",
            "8",
            "--chunk",
            "4",
            "--smooth",
            *base_args,
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    # Progress comes as frames are finished; tracking (on by default) holds up to --track-gap frames back.
    assert "frames 8/8 (100%)" in printed and len(re.findall(r"frames \d/8 \(", printed)) >= 2
    assert "faces swapped in 8 frames" in printed
    info = read_video_info(output)
    assert (info.frame_count, info.width, info.height) == (8, 260, 229)  # stored padded to 230 rows, read back at 229
    assert info.fps == pytest.approx(100 / 9, rel=1e-3)
    swapped = read_frames(output)
    original = read_frames(clip_path, max_frames=8)
    assert float((swapped - original).abs().mean()) > 0.005


def test_mix_pose_check_and_debug_pictures(
    faces_dir: Path, models: dict[str, Path], base_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fine = tmp_path / "fine.safetensors"
    save_identity(Identity(np.random.default_rng(5).standard_normal(512), embedding_model="arcface_w600k_r50"), fine)
    debug = tmp_path / "debug"
    code = main(
        [
            "swap",
            "--mix",
            f"coarse={faces_dir / 'anni.jpg'}",
            f"fine={fine}",
            "--target",
            str(faces_dir / "portrait_1.png"),
            "-o",
            str(tmp_path / "mixed.jpg"),
            "--generator",
            str(models["native"]),
            "--pose-debug",
            str(debug),
            "--mask",
            "box",
            "--colour",
            "lab",
            *base_args,
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "identity from anni.jpg, fine.safetensors" in printed
    assert "faces passed" in printed and "target yaw/pitch/roll" in printed  # the pose table
    assert (tmp_path / "mixed.jpg").is_file()
    assert [path.name for path in debug.iterdir()] == ["frame_00000.png"]


def test_clear_errors(
    faces_dir: Path,
    clip_path: Path,
    models: dict[str, Path],
    base_args: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = str(faces_dir / "anni.jpg")
    generator = ["--generator", str(models["native"])]

    def run(*args: str) -> str:
        assert main(["swap", *args, *generator, *base_args]) == 1
        return capsys.readouterr().err

    missing = run("--source", source, "--target", str(tmp_path / "none.mp4"), "-o", str(tmp_path / "x.mp4"))
    assert "does not exist" in missing and "none.mp4" in missing
    assert "output must be a video" in run(
        "--source", source, "--target", str(clip_path), "-o", str(tmp_path / "x.png")
    )
    assert "exactly one of --source" in run(
        "--source", source, "--identity", "a.safetensors", "--target", source, "-o", str(tmp_path / "y.png")
    )
    blank = tmp_path / "blank.png"
    Image.new("RGB", (200, 200), (128, 128, 128)).save(blank)
    no_face = run("--source", source, "--target", str(blank), "-o", str(tmp_path / "z.png"))
    assert "no face was found" in no_face and "frame 1 of 1" in no_face
    assert not (tmp_path / "z.png").exists() and not (tmp_path / "x.mp4").exists()
    wrong = tmp_path / "glint.safetensors"
    save_identity(Identity(np.ones(512, np.float32), embedding_model="arcface_glintr100"), wrong)
    assert load_identity(wrong).embedding_model == "arcface_glintr100"
    assert "arcface_glintr100" in run("--identity", str(wrong), "--target", source, "-o", str(tmp_path / "w.png"))


def test_an_unwritable_output_is_refused_before_any_model_is_loaded(
    faces_dir: Path, clip_path: Path, base_args: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "taken.png"
    blocker.write_bytes(b"a picture")
    (tmp_path / "folder.mp4").mkdir()
    source = ["--source", str(faces_dir / "anni.jpg")]
    cases = [
        (faces_dir / "iron_man.jpg", blocker / "out.png", "is a file, so the output folder cannot be made there"),
        (clip_path, tmp_path / "folder.mp4", "the output path is a folder"),
    ]
    for target, output, message in cases:
        # a generator that does not exist: the output is checked first, before any model is looked for
        args = ["swap", *source, "--target", str(target), "-o", str(output), "--generator", "no_such_model"]
        assert main([*args, *base_args]) == 1
        error = capsys.readouterr().err
        assert message in error and "no swap model" not in error and "Traceback" not in error
    assert sorted(path.name for path in tmp_path.iterdir()) == ["folder.mp4", "taken.png"]
    assert list((tmp_path / "folder.mp4").iterdir()) == []


def test_help_explains_the_options(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["swap", "--help"])
    text = capsys.readouterr().out
    for option in ("--source", "--identity", "--mix", "--target", "--generator", "--strength", "--face-index",
                   "--all-faces", "--pose-check", "--pose-policy", "--pose-debug", "--mask", "--feather",
                   "--erosion", "--colour", "--weave", "--smooth", "--no-face", "--device", "--dtype", "--models",
                   "--max-frames", "examples:"):  # fmt: skip
        assert option in text


def test_several_identity_files_give_one_identity_per_face(
    t1_path: Path,
    models: dict[str, Path],
    base_args: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import facemagic_core.cli.swap as swap_command

    files = []
    for number in range(2):
        path = tmp_path / f"person{number}.safetensors"
        save_identity(Identity(np.random.default_rng(number).normal(size=512), "arcface_w600k_r50"), path)
        files.append(path)
    seen: list[object] = []
    real_swap_faces = swap_command.swap_faces

    def recording_swap_faces(images, identities, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(identities)
        return real_swap_faces(images, identities, *args, **kwargs)

    monkeypatch.setattr(swap_command, "swap_faces", recording_swap_faces)
    output = tmp_path / "group.png"
    arguments = ["swap", "--identity", *map(str, files), "--target", str(t1_path), "-o", str(output)]
    arguments += ["--all-faces", "--order", "left_to_right", "--generator", str(models["native"]), *base_args]
    assert main(arguments) == 0
    (identities,) = seen
    assert isinstance(identities, list) and len(identities) == 2
    for identity, path in zip(identities, files, strict=True):
        np.testing.assert_array_equal(identity.embeddings, load_identity(path).embeddings)
    out = capsys.readouterr().out
    assert "one per face" in out and "Swapped 6 face(s)" in out


def test_offline_without_models_names_every_missing_model_at_once(
    faces_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A newcomer's first run without network learns every file to fetch, and where, in one message."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    empty = tmp_path / "models"
    photo = str(faces_dir / "anni.jpg")
    output = tmp_path / "out.png"
    arguments = ["swap", "--source", photo, "--target", photo, "-o", str(output), "--models", str(empty)]
    assert main([*arguments, "--device", "cpu"]) == 1
    error = capsys.readouterr().err
    assert "2 models are missing: buffalo_l, inswapper_128" in error
    assert str(empty / "buffalo_l") in error and str(empty / "inswapper_128.onnx") in error
    assert "facefusion/models-3.0.0" in error and "Gourieff/ReActor" in error
    assert not output.exists()
    # With YuNet and a recogniser file given, only the registry files still missing are named.
    assert main([*arguments, "--detector", "yunet", "--recognizer", photo, "--device", "cpu"]) == 1
    error = capsys.readouterr().err
    assert "2 models are missing: yunet, inswapper_128" in error
