"""An adversarial suite: what a careless or a hostile user gives FaceMagic, and what must come back.

Every bad input must end in one clear :class:`FaceMagicError` (on the command line: one
``facemagic: error:`` line, a non-zero exit, no traceback and no library noise), must leave
nothing partial behind, must not change any input file or tensor, and must not make FaceMagic
read anything outside the model folder. Everything here is tiny (a few KB of models, pictures of
at most 64x64 pixels) and runs on the CPU in seconds.
"""

from __future__ import annotations

import os
import signal
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facemagic_core.cli import main
from facemagic_core.errors import BadInputError
from facemagic_core.files import atomic_path, check_outputs_not_inputs
from facemagic_core.identity import load_identity
from facemagic_core.images import MAX_IMAGE_SIDE, load_image

#: Options that never reach a model: every case that uses them is refused before anything is loaded.
DETECTOR = ["--detector", "yunet", "--device", "cpu"]
OFFLINE = [*DETECTOR, "--generator", "nothing"]


def run(arguments: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the command line in-process; return (exit code, stdout, stderr)."""
    code = main(arguments)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error_line(code: int, err: str) -> str:
    """The single ``facemagic: error:`` line of a failed command (no traceback, no other noise)."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code != 0, err
    assert len(lines) == 1 and lines[0].startswith("facemagic: error: "), err
    assert "Traceback" not in err
    return lines[0]


def photo(path: Path, size: int = 64, seed: int = 0) -> Path:
    """A small random RGB picture."""
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
    return path


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes (to show that nothing changed and nothing was added)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def fifo(tmp_path: Path) -> Iterator[Path]:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this system")
    path = tmp_path / "pipe.png"
    os.mkfifo(path)
    yield path


# ---------------------------------------------------------------------------------------------
# 1. No output may replace an input


@pytest.mark.parametrize("link", ["same path", "other spelling", "symlink", "hard link"])
def test_identity_preview_never_replaces_a_source_photo(
    link: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--preview`` named a source photo and overwrote it with the crops."""
    source = photo(tmp_path / "me.png")
    preview = {
        "same path": source,
        "other spelling": tmp_path / "." / "me.png",
        "symlink": tmp_path / "link.png",
        "hard link": tmp_path / "hard.png",
    }[link]
    if link == "symlink":
        preview.symlink_to(source)
    if link == "hard link":
        os.link(source, preview)
    before = snapshot(tmp_path)
    arguments = ["identity", str(source), "-o", str(tmp_path / "me.safetensors"), "--preview", str(preview)]
    code, _, err = run([*arguments, *DETECTOR, "--models", str(tmp_path / "models")], capsys)
    line = one_error_line(code, err)
    assert "--preview would replace an input file" in line and "_out.png" in line, line
    assert snapshot(tmp_path) == before


def test_identity_preview_may_not_replace_a_photo_of_a_source_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    photo(folder / "a.png")
    photo(folder / "b.png", seed=1)
    before = snapshot(tmp_path)
    arguments = ["identity", str(folder), "-o", str(tmp_path / "me.safetensors"), "--preview", str(folder / "b.png")]
    code, _, err = run([*arguments, *DETECTOR, "--models", str(tmp_path / "models")], capsys)
    assert "would replace an input file" in one_error_line(code, err)
    assert snapshot(tmp_path) == before


def test_swap_pose_debug_folder_may_not_overwrite_a_target_frame(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--pose-debug FOLDER`` wrote frame_00000.png over the target of the same name."""
    target = photo(tmp_path / "frame_00000.png")
    source = photo(tmp_path / "me.png", seed=1)
    before = snapshot(tmp_path)
    files = ["--source", str(source), "--target", str(target), "-o", str(tmp_path / "out.png")]
    code, _, err = run(
        ["swap", *files, "--pose-debug", str(tmp_path), *OFFLINE, "--models", str(tmp_path / "m")], capsys
    )
    line = one_error_line(code, err)
    assert "--pose-debug would replace an input file" in line and "another folder" in line, line
    assert snapshot(tmp_path) == before and not (tmp_path / "m").exists()


@pytest.mark.parametrize("kind", ["symlink to the target", "symlink to the source"])
def test_swap_output_that_is_a_link_to_an_input_is_refused(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = photo(tmp_path / "t.png")
    source = photo(tmp_path / "s.png", seed=1)
    output = tmp_path / "out.png"
    output.symlink_to(target if "target" in kind else source)
    before = snapshot(tmp_path)
    files = ["--source", str(source), "--target", str(target), "-o", str(output)]
    code, _, err = run(["swap", *files, *OFFLINE, "--models", str(tmp_path / "m")], capsys)
    assert "-o would replace an input file" in one_error_line(code, err)
    assert snapshot(tmp_path) == before


def test_prepare_cache_may_not_be_the_photo_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo(tmp_path / "a.png")
    before = snapshot(tmp_path)
    code, _, err = run(["prepare", str(tmp_path), "-o", str(tmp_path), "--models", str(tmp_path / "m")], capsys)
    assert "the cache folder is the data folder" in one_error_line(code, err)
    assert snapshot(tmp_path) == before


def test_two_outputs_with_the_same_name_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="-o and --preview name the same file"):
        check_outputs_not_inputs([("-o", tmp_path / "x.png"), ("--preview", tmp_path / "." / "x.png")], [])


# ---------------------------------------------------------------------------------------------
# 2. Pictures: FIFOs, devices, huge headers


def test_a_fifo_is_named_as_such_and_never_opened(fifo: Path) -> None:
    """A FIFO was reported as "not found" (and opening one blocks forever)."""
    with pytest.raises(BadInputError, match=r"is a FIFO \(named pipe\), not a regular file"):
        load_image(fifo)
    with pytest.raises(BadInputError, match="FIFO"):
        load_identity(fifo)


def test_a_device_is_named_as_such() -> None:
    if not Path("/dev/null").exists():
        pytest.skip("no /dev/null")
    with pytest.raises(BadInputError, match="is a device, not a regular file"):
        load_image("/dev/null")


def test_swap_names_a_fifo_target(fifo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = photo(tmp_path / "s.png")
    files = ["--source", str(source), "--target", str(fifo), "-o", str(tmp_path / "out.png")]
    code, _, err = run(["swap", *files, *OFFLINE, "--models", str(tmp_path / "m")], capsys)
    line = one_error_line(code, err)
    assert "target file is a FIFO" in line and "does not exist" not in line, line


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims ``width`` x ``height`` pixels (its pixel data is a few bytes)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


def test_a_picture_over_the_pixel_limit_gets_a_size_that_would_work(tmp_path: Path) -> None:
    """16000x12000 was refused with the advice to go below 16384 px per side, which it already is."""
    with pytest.raises(BadInputError) as caught:
        load_image(_png_header(tmp_path / "big.png", 16000, 12000))
    message = str(caught.value)
    assert "16000x12000 pixels (192 megapixels)" in message and "megapixels FaceMagic opens" in message, message
    assert f"below {MAX_IMAGE_SIDE}" not in message
    suggested = [int(n) for n in message.rsplit("e.g. to ", 1)[1].split("x")]
    assert suggested[0] * suggested[1] <= 2 * 89_478_485 and suggested[0] / suggested[1] == pytest.approx(4 / 3, 1e-3)


def test_a_picture_too_wide_names_the_side_limit(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    with pytest.raises(BadInputError, match=f"20000x100 pixels .*more than {MAX_IMAGE_SIDE} px per side"):
        load_image(_png_header(tmp_path / "wide.png", 20000, 100))
    with pytest.raises(BadInputError, match=r"e\.g\. to 16384x81"):
        load_image(_png_header(tmp_path / "wide.png", 20000, 100))
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]


# ---------------------------------------------------------------------------------------------
# 3. The command line: options checked before any model loads; no options that do nothing


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "exactly one of --source, --identity or --mix"),
        (["--source", "S", "--erosion", "0.9"], "--erosion must lie between 0 and 0.5, got 0.9"),
        (["--source", "S", "--feather", "0.5", "--strength", "0.5", "0.5", "--coarse-blocks", "2"], "--coarse-blocks"),
        (["--source", "S", "--mask", "hull"], "--detector insightface"),
    ],
)
def test_swap_options_are_checked_before_any_model_loads(
    extra: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each was found only after the models loaded (or downloaded): minutes for a typo."""
    target = photo(tmp_path / "t.png")
    extra = [str(photo(tmp_path / "s.png", seed=1)) if word == "S" else word for word in extra]
    files = ["--target", str(target), "-o", str(tmp_path / "out.png"), *extra]
    models = tmp_path / "models"
    code, _, err = run(["swap", *files, *OFFLINE, "--models", str(models)], capsys)
    assert message in one_error_line(code, err)
    assert not models.exists()


def test_mix_help_says_which_generators_have_several_blocks(capsys: pytest.CaptureFixture[str]) -> None:
    """It said ONNX swappers have one block, but converted inswapper files have six."""
    with pytest.raises(SystemExit):
        main(["swap", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "converted to six blocks" in text and "ONNX swappers have one)" not in text


@pytest.mark.parametrize("action", ["list", "verify", "download"])
def test_models_commands_that_run_no_model_take_no_device(action: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["models", action, "--help"])
    assert "--device" not in capsys.readouterr().out
    with pytest.raises(SystemExit) as leaving:
        main(["models", action, "x", "--device", "cpu"])
    assert leaving.value.code == 2


def test_sigterm_removes_the_file_being_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM killed the process without running its clean-up: a half-written .partial file stayed."""
    from facemagic_core.cli import models as models_command

    def killed_while_writing(args: object) -> int:
        with atomic_path(tmp_path / "result.mp4") as partial, open(partial, "wb") as stream:
            stream.write(b"half a video")
            os.kill(os.getpid(), signal.SIGTERM)
        return 0

    monkeypatch.setattr(models_command, "run_list", killed_while_writing)
    previous = signal.getsignal(signal.SIGTERM)
    code, _, err = run(["models", "list", "--models", str(tmp_path / "m")], capsys)
    assert code == 143 and "stopped by SIGTERM" in err and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == previous


def test_pose_overlay_draws_no_result_points_when_the_result_has_no_face() -> None:
    """With no face in the result, its 'landmarks' were the target's: red dots covered the green ones."""
    import math

    from facemagic_core.pose import PoseReport, draw_pose_overlay

    image = torch.zeros(1, 3, 64, 64)
    points = np.array([[[20.0, 20.0], [44.0, 20.0], [32.0, 32.0], [24.0, 44.0], [40.0, 44.0]]], np.float32)
    nan3 = (math.nan, math.nan, math.nan)
    report = PoseReport(0, 0, (0.0, 0.0, 0.0), nan3, nan3, math.nan, False, "no face found in the swapped crop")
    drawn = draw_pose_overlay(image, points, points, [report])
    red = (drawn[0, 0] > 0.5) & (drawn[0, 1] < 0.2)
    green = (drawn[0, 1] > 0.5) & (drawn[0, 0] < 0.2)
    at_points = [(int(y), int(x)) for x, y in points[0]]
    assert all(bool(green[y, x]) for y, x in at_points) and not any(bool(red[y, x]) for y, x in at_points)
    assert torch.equal(image, torch.zeros(1, 3, 64, 64))  # the input is untouched
