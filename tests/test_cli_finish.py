"""facemagic swap --restore / --mask occlusion,region:... / --keep-mouth on a real photo with tiny models."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from finish_models import write_bisenet, write_restorer, write_xseg
from tiny_models import write_arcface

from facemagic_core.cli import main
from facemagic_core.generators import GeneratorConfig, InswapperGenerator, export_inswapper_onnx
from facemagic_core.hub import MODELS
from facemagic_core.images import load_image


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("finish_models")
    torch.manual_seed(0)
    inswapper = InswapperGenerator(GeneratorConfig.inswapper_layout(channels=4, image_size=32, num_blocks=2)).eval()
    with torch.no_grad():
        inswapper.emap.copy_(torch.randn(512, 512) / 512**0.5)
    export_inswapper_onnx(inswapper, folder / "tiny_inswapper.onnx")
    write_arcface(folder / "w600k_r50.onnx")
    write_restorer(folder / MODELS["codeformer"].local_path, size=128, fidelity=True)
    write_xseg(folder / MODELS["xseg_1"].local_path, threshold=0.98)  # only pure green is an occluder
    write_bisenet(folder / MODELS["bisenet_resnet_34"].local_path)
    return folder


def swap(models: Path, yunet: Path, faces: Path, output: Path, *extra: str) -> int:
    return main(
        [
            "swap",
            "--source",
            str(faces / "anni.jpg"),
            "--target",
            str(faces / "portrait_1.png"),
            "-o",
            str(output),
            "--generator",
            str(models / "tiny_inswapper.onnx"),
            "--detector",
            "yunet",
            "--detector-model",
            str(yunet),
            "--recognizer",
            str(models / "w600k_r50.onnx"),
            "--models",
            str(models),
            "--device",
            "cpu",
            *extra,
        ]
    )


def test_restore_with_occlusion_and_region_masks_keeping_the_mouth(
    models: Path, yunet_path: Path, faces_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain, finished = tmp_path / "plain.png", tmp_path / "finished.png"
    assert swap(models, yunet_path, faces_dir, plain) == 0
    code = swap(
        models,
        yunet_path,
        faces_dir,
        finished,
        "--restore",
        "codeformer",
        "--codeformer-fidelity",
        "0.7",
        "--restore-weight",
        "0.8",
        "--mask",
        "occlusion,region:skin+nose",
        "--keep-mouth",
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "Restoring the swapped faces with codeformer (visibility 0.8)" in printed
    target = (load_image(faces_dir / "portrait_1.png")[0] * 255).round()
    a, b = ((load_image(path)[0] * 255).round() for path in (plain, finished))
    changed_plain = (a != target).any(dim=0)
    changed = (b != target).any(dim=0)
    assert bool(changed.any())
    # The masks only take away: nothing changes outside the plain swap's area (a pixel of the plain swap may round
    # to the target's value, so its area is taken as its changed pixels grown by 2 px).
    area = torch.nn.functional.max_pool2d(changed_plain[None, None].float(), 5, 1, 2)[0, 0] > 0
    assert not bool((changed & ~area).any())
    assert int(changed.sum()) < int(changed_plain.sum())  # and they did take some away (mouth, non-skin)
    assert bool(((a != b).any(dim=0) & changed).any())  # the restorer changed the face it pastes


def test_bad_mask_options_are_refused(models: Path, yunet_path: Path, faces_dir: Path, tmp_path: Path) -> None:
    for bad in ("ellipse,box", "occlusion,region:beard", "shadows"):
        with pytest.raises(SystemExit) as stopped:
            swap(models, yunet_path, faces_dir, tmp_path / "x.png", "--mask", bad)
        assert stopped.value.code == 2
    assert not (tmp_path / "x.png").exists()


def test_a_video_is_finished_chunk_by_chunk_with_the_same_result(
    models: Path, yunet_path: Path, faces_dir: Path, tmp_path: Path
) -> None:
    """Restoration and masks run per chunk (bounded memory): 2-frame chunks give what one 4-frame chunk gives."""
    from facemagic_core.video import read_frames

    outputs = []
    for chunk in ("2", "4"):
        output = tmp_path / f"clip_{chunk}.gif"
        code = main(
            [
                "swap",
                "--source",
                str(faces_dir / "anni.jpg"),
                "--target",
                str(faces_dir / "clip_nacho.gif"),
                "-o",
                str(output),
                "--max-frames",
                "4",
                "--chunk",
                chunk,
                "--generator",
                str(models / "tiny_inswapper.onnx"),
                "--detector",
                "yunet",
                "--detector-model",
                str(yunet_path),
                "--recognizer",
                str(models / "w600k_r50.onnx"),
                "--models",
                str(models),
                "--device",
                "cpu",
                "--restore",
                "codeformer",
                "--mask",
                "occlusion",
                "--keep-mouth",
            ]
        )
        assert code == 0
        outputs.append(read_frames(output))
    assert outputs[0].shape[0] == 4 and torch.equal(outputs[0], outputs[1])
    original = read_frames(faces_dir / "clip_nacho.gif", max_frames=4)
    assert float((outputs[0] - original).abs().amax(dim=1).mean()) > 1e-3  # the faces did change
