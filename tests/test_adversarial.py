"""An adversarial suite: what a careless or a hostile user gives FaceMagic, and what must come back.

Every bad input must end in one clear :class:`FaceMagicError` (on the command line: one
``facemagic: error:`` line, a non-zero exit, no traceback and no library noise), must leave
nothing partial behind, must not change any input file or tensor, and must not make FaceMagic
read anything outside the model folder. Everything here is tiny (a few KB of models, pictures of
at most 64x64 pixels) and runs on the CPU in seconds.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import stat
import struct
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hub_server import FakeHub, point_hub_client_at
from PIL import Image
from test_gen_onnx import swap_inputs, write_swapper_graph
from tiny_models import tiny_facemagic_config, write_arcface

from facemagic_core import hub
from facemagic_core.cli import main
from facemagic_core.errors import BadInputError, FaceMagicError, ModelIntegrityError
from facemagic_core.files import atomic_path, check_outputs_not_inputs
from facemagic_core.identity import load_identity
from facemagic_core.images import MAX_IMAGE_SIDE, load_image
from facemagic_core.types import Identity

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


def test_train_run_folder_may_not_be_the_data_cache(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "manifest.json").write_text("{}")
    config = Path(__file__).resolve().parents[1] / "configs" / "tiny.json"
    arguments = ["train", "--data", str(cache), "--config", str(config), "-o", str(cache), "--device", "cpu"]
    code, _, err = run([*arguments, "--models", str(tmp_path / "m")], capsys)
    assert "-o would replace an input file" in one_error_line(code, err)
    assert sorted(p.name for p in cache.iterdir()) == ["manifest.json"]


def test_two_outputs_with_the_same_name_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="-o and --preview name the same file"):
        check_outputs_not_inputs([("-o", tmp_path / "x.png"), ("--preview", tmp_path / "." / "x.png")], [])
    with pytest.raises(BadInputError, match="-o and --pose-debug name the same file"):
        check_outputs_not_inputs([("-o", tmp_path / "frame_00003.png"), ("--pose-debug", tmp_path / "frame_*.png")], [])
    check_outputs_not_inputs([("-o", tmp_path / "result.png"), ("--pose-debug", tmp_path / "frame_*.png")], [])


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


def test_sigterm_during_training_is_held_like_ctrl_c() -> None:
    """A long job finishes its step and saves on SIGTERM too (it died mid-step, its state half written)."""
    from facemagic_core.training.interrupt import DeferredInterrupt

    previous = signal.getsignal(signal.SIGTERM)
    with DeferredInterrupt("the step").held() as interrupt:
        os.kill(os.getpid(), signal.SIGTERM)
        assert interrupt.requested
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)  # a second one stops at once
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


# ---------------------------------------------------------------------------------------------
# 4. Pack archives from the (fake) Hub: bombs, strays, encryption, methods Python cannot read

PACK = ("det_10g.onnx", "2d106det.onnx", "1k3d68.onnx", "genderage.onnx", "w600k_r50.onnx")


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with FakeHub() as server:
        point_hub_client_at(server.endpoint, monkeypatch)
        yield server


def zip_bytes(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def patch_member(data: bytes, name: str, *, flags: int | None = None, method: int | None = None) -> bytes:
    """Rewrite the general-purpose flags or the compression method of member ``name`` in both of its headers."""
    out = bytearray(data)
    encoded = name.encode()
    for signature, name_at, flags_at in ((b"PK\x03\x04", 30, 6), (b"PK\x01\x02", 46, 8)):
        start = 0
        while (start := out.find(signature, start)) >= 0:
            if out[start + name_at : start + name_at + len(encoded)] == encoded:
                if flags is not None:
                    out[start + flags_at : start + flags_at + 2] = struct.pack("<H", flags)
                if method is not None:
                    out[start + flags_at + 2 : start + flags_at + 4] = struct.pack("<H", method)
            start += 4
    return bytes(out)


def serve_pack(hub_server: FakeHub, archive: bytes) -> None:
    hub_server.add_file("Gourieff/ReActor", "models/buffalo_l.zip", archive, repo_type="dataset")


def pack_members(**replaced: bytes) -> dict[str, bytes]:
    return {
        name: replaced.get(name.replace(".onnx", "").replace("2d106det", "landmarks"), b"m " + name.encode())
        for name in PACK
    }


def left_in(model_dir: Path) -> list[str]:
    """What a refused download left in the model folder (it must be nothing but an empty lock-free folder)."""
    return sorted(str(p.relative_to(model_dir)) for p in model_dir.rglob("*")) if model_dir.exists() else []


def test_a_zip_bomb_member_is_refused_before_it_is_extracted(fake_hub: FakeHub, tmp_path: Path) -> None:
    """A member expanding 1000:1 was extracted (and kept)."""
    members = {name: b"m" for name in PACK}
    members["det_10g.onnx"] = bytes(20 << 20)  # 20 MB of zeros: about 20 KB compressed
    serve_pack(fake_hub, zip_bytes(members))
    with pytest.raises(ModelIntegrityError, match=r"zip bomb: member det_10g.onnx expands \d+ bytes to 20971520"):
        hub.ensure_model("buffalo_l", tmp_path / "models")
    assert left_in(tmp_path / "models") == []


def test_only_the_pack_files_of_an_archive_are_kept(fake_hub: FakeHub, tmp_path: Path) -> None:
    """Members that are not pack files (a script, a stray model, macOS metadata) were extracted too."""
    members = {f"buffalo_l/{name}": b"m " + name.encode() for name in PACK}
    strays = {
        "buffalo_l/run_me.sh": b"rm -rf ~",
        "buffalo_l/extra.onnx": b"x",
        "__MACOSX/buffalo_l/._det_10g.onnx": b"x",
    }
    serve_pack(fake_hub, zip_bytes({**members, **strays}))
    folder = hub.ensure_model("buffalo_l", tmp_path / "models")
    assert sorted(p.name for p in folder.iterdir()) == sorted(PACK)
    assert left_in(tmp_path / "models") == sorted([hub.LOCK_FILE_NAME, "buffalo_l", *(f"buffalo_l/{n}" for n in PACK)])


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("encrypted", r"is encrypted \(member w600k_r50.onnx\)"),
        ("deflate64", r"compression method 9 \(member w600k_r50.onnx; e.g. 9 is Deflate64\)"),
        ("twice", "holds det_10g.onnx twice"),
        ("too deep", "lacks det_10g.onnx"),
        ("link", "unsafe entry 'det_10g.onnx'"),
        ("truncated", "is damaged"),
        ("too many", "members, more than the 8 accepted"),
        ("too large", "expands to 25 bytes, more than the 20 accepted"),
    ],
)
def test_archives_python_cannot_or_should_not_extract_end_in_one_clear_error(
    damage: str, message: str, fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Encrypted and Deflate64 members ended in a RuntimeError / NotImplementedError traceback."""
    members = {name: b"model" for name in PACK}
    if damage == "twice":
        members["sub/det_10g.onnx"] = b"other"
    if damage == "too deep":
        members["a/b/det_10g.onnx"] = members.pop("det_10g.onnx")
    if damage == "too many":
        members.update({f"readme{n}.txt": b"" for n in range(8)})
        monkeypatch.setattr(hub, "MAX_ARCHIVE_MEMBERS", 8)
    if damage == "too large":
        monkeypatch.setattr(hub, "MAX_ARCHIVE_BYTES", 20)
    data = zip_bytes(members)
    if damage == "encrypted":
        data = patch_member(data, "w600k_r50.onnx", flags=0x1)
    if damage == "deflate64":
        data = patch_member(data, "w600k_r50.onnx", method=9)
    if damage == "link":
        info = zipfile.ZipInfo("det_10g.onnx")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr(info, "/etc/passwd")
            for name in PACK[1:]:
                archive.writestr(name, b"model")
        data = buffer.getvalue()
    if damage == "truncated":
        data = data[: len(data) // 2] + data[len(data) // 2 + 40 :]
    serve_pack(fake_hub, data)
    with pytest.raises(ModelIntegrityError, match=message):
        hub.ensure_model("buffalo_l", tmp_path / "models")
    assert left_in(tmp_path / "models") == []


def test_models_download_of_a_bomb_fails_without_a_traceback(
    fake_hub: FakeHub, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    members = {name: b"m" for name in PACK}
    members["w600k_r50.onnx"] = bytes(8 << 20)
    serve_pack(fake_hub, zip_bytes(members))
    code, _, err = run(["models", "download", "buffalo_l", "--models", str(tmp_path / "models")], capsys)
    assert code == 1 and "zip bomb" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert left_in(tmp_path / "models") == []


# ---------------------------------------------------------------------------------------------
# 5. Model files: external data, links, locks, caches


def onnx_with_external_data(folder: Path, location: str, *, name: str = "model.onnx") -> Path:
    """A tiny valid ONNX (y = x * w) whose weight ``w`` lives in the external file ``location``."""
    import onnx
    from onnx import TensorProto, helper

    weight = onnx.TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[1, 3, 1, 1])
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "12")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["y"])],
        "external",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize("location", ["../../secret.bin", "/etc/hostname", "sub/../../secret.bin", "escape.bin"])
def test_a_yunet_file_with_data_outside_its_folder_is_never_given_to_opencv(location: str, tmp_path: Path) -> None:
    """OpenCV's loader followed ../.. where onnxruntime refuses."""
    from facemagic_core.analysis import FaceAnalyzer

    (tmp_path / "secret.bin").write_bytes(bytes(12))
    folder = tmp_path / "a" / "b"
    path = onnx_with_external_data(folder, location)
    if location == "escape.bin":  # a link inside the folder that leads out of it
        (folder / "escape.bin").symlink_to(tmp_path / "secret.bin")
    with pytest.raises(ModelIntegrityError, match="outside its own folder"):
        FaceAnalyzer(backend="yunet", detector=path)


def test_the_lock_hashes_the_external_data_of_an_onnx_file(tmp_path: Path) -> None:
    """Only the .onnx was hashed: its weights could be swapped freely."""
    models = tmp_path / "models"
    path = onnx_with_external_data(models, "weights.bin", name="face_detection_yunet_2023mar.onnx")
    (models / "weights.bin").write_bytes(np.ones(3, np.float32).tobytes())
    hub.ensure_model("yunet", models)
    entries = json.loads((models / hub.LOCK_FILE_NAME).read_text())["files"]
    assert entries[path.name]["external_data"] == ["weights.bin"]
    assert entries["weights.bin"]["sha256"] == hashlib.sha256(np.ones(3, np.float32).tobytes()).hexdigest()
    (models / "weights.bin").write_bytes(np.full(3, 2.0, np.float32).tobytes())  # same size, other weights
    with pytest.raises(ModelIntegrityError, match="was altered or damaged"):
        hub.ensure_model("yunet", models)
    assert not [p for p in models.iterdir() if p.suffix == ".lock"]


@pytest.mark.parametrize("what", ["the model file", "the pack folder"])
def test_model_files_that_are_links_out_of_the_model_folder_are_refused(what: str, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    models = tmp_path / "models"
    models.mkdir()
    if what == "the model file":
        (elsewhere / "yunet.onnx").write_bytes(b"not read")
        (models / "face_detection_yunet_2023mar.onnx").symlink_to(elsewhere / "yunet.onnx")
        name = "yunet"
    else:
        for file in ("face_landmark_68_model-weights_manifest.json", "face_landmark_68_model.bin"):
            (elsewhere / file).write_bytes(b"not read")
        (models / "faceapi").symlink_to(elsewhere, target_is_directory=True)
        name = "faceapi_landmark68"
    with pytest.raises(ModelIntegrityError, match="outside the model folder"):
        hub.ensure_model(name, models, offline=True)
    assert not (models / hub.LOCK_FILE_NAME).exists()


def test_a_link_inside_the_model_folder_is_fine(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "real.onnx").write_bytes(b"a model")
    (models / "face_detection_yunet_2023mar.onnx").symlink_to(models / "real.onnx")
    assert hub.ensure_model("yunet", models, offline=True) == models / "face_detection_yunet_2023mar.onnx"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("size", None, "size is null"),
        ("sha256", None, "sha256 is null"),
        ("hashed_at_ns", None, "hashed_at_ns is null"),
        ("mtime_ns", "yesterday", 'mtime_ns is "yesterday"'),
        ("sha256", "abc", 'sha256 is "abc"'),
    ],
)
def test_a_damaged_lock_entry_is_named(field: str, value: object, message: str, tmp_path: Path) -> None:
    """A null size ended in a TypeError traceback; a null sha256 called the file altered."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "face_detection_yunet_2023mar.onnx").write_bytes(b"a model")
    hub.ensure_model("yunet", models, offline=True)
    lock = models / hub.LOCK_FILE_NAME
    data = json.loads(lock.read_text())
    data["files"]["face_detection_yunet_2023mar.onnx"][field] = value
    lock.write_text(json.dumps(data))
    with pytest.raises(ModelIntegrityError, match=re.escape(message)) as caught:
        hub.ensure_model("yunet", models, offline=True, verify="full")
    assert "lock file's entry for face_detection_yunet_2023mar.onnx is damaged" in str(caught.value)
    assert "remove the entry" in str(caught.value)


@pytest.mark.parametrize("content", ["[" * 100_000 + "]" * 100_000, '{"files": {}, "archives": null}'])
def test_a_hostile_lock_file_is_set_aside_not_a_traceback(content: str, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / "face_detection_yunet_2023mar.onnx").write_bytes(b"a model")
    (models / hub.LOCK_FILE_NAME).write_text(content)
    assert hub.ensure_model("yunet", models, offline=True).is_file()
    assert "face_detection_yunet_2023mar.onnx" in json.loads((models / hub.LOCK_FILE_NAME).read_text())["files"]


def test_failed_runs_leave_no_lock_files_in_the_model_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every run left empty .facemagic-*.lock files behind (filelock's Unix locks keep their file)."""
    models = tmp_path / "models"
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens: the download fails
    point_hub_client_at("http://127.0.0.1:9", monkeypatch)
    code, _, err = run(["models", "download", "yunet", "--models", str(models)], capsys)
    assert code == 1 and "could not be downloaded" in err, err
    (models / "face_detection_yunet_2023mar.onnx").write_bytes(b"a model")
    hub.ensure_model("yunet", models, offline=True)  # records it (the lock file is written under a lock)
    assert sorted(p.name for p in models.iterdir()) == sorted(["face_detection_yunet_2023mar.onnx", hub.LOCK_FILE_NAME])


def test_the_lock_still_excludes_other_processes(tmp_path: Path) -> None:
    import multiprocessing

    from facemagic_core.files import exclusive_lock

    lock = tmp_path / ".x.lock"
    if "fork" not in multiprocessing.get_all_start_methods():
        pytest.skip("needs fork (a spawned child imports torch: 20 s)")
    context = multiprocessing.get_context("fork")
    with exclusive_lock(lock, timeout=5):
        child = context.Process(target=_try_lock, args=(str(lock),))
        child.start()
        child.join(30)
        assert child.exitcode == 3  # it timed out while we held the lock
    child = context.Process(target=_try_lock, args=(str(lock),))
    child.start()
    child.join(30)
    assert child.exitcode == 0 and not lock.exists()


def _try_lock(path: str) -> None:
    from facemagic_core.files import exclusive_lock

    try:
        with exclusive_lock(path, timeout=0.3):
            pass
    except TimeoutError:
        raise SystemExit(3) from None


def test_a_native_cache_with_altered_tensors_is_not_used(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The .native.safetensors cache was used whenever its metadata named the right source hash."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from facemagic_core.generators import GeneratorConfig, InswapperGenerator, export_inswapper_onnx, load_generator
    from facemagic_core.generators.convert import conversion_cache_path

    torch.manual_seed(0)
    module = InswapperGenerator(GeneratorConfig.inswapper_layout(channels=4, image_size=32, num_blocks=2)).eval()
    with torch.no_grad():
        module.emap.copy_(torch.randn(512, 512) / 512**0.5)
    path = export_inswapper_onnx(module, tmp_path / "swapper.onnx")
    load_generator(path, model_dir=tmp_path, device="cpu")
    cache = conversion_cache_path(path)
    with safe_open(str(cache), framework="pt") as cached:  # type: ignore[no-untyped-call]
        metadata = cached.metadata()
    state = load_file(str(cache))
    name = next(key for key in state if key.endswith("weight"))
    state[name] = state[name] + 1.0  # altered tensors, untouched metadata
    save_file(state, str(cache), metadata=metadata)
    with caplog.at_level("WARNING"):
        loaded = load_generator(path, model_dir=tmp_path, device="cpu")
    assert "does not hold the tensors it was written with" in caplog.text
    reference = dict(module.state_dict())
    assert torch.equal(loaded.module.state_dict()[name].float(), reference[name].float())  # type: ignore[attr-defined]
    assert torch.equal(load_file(str(cache))[name].float(), reference[name].float())  # rewritten


# ---------------------------------------------------------------------------------------------
# 6. The wrong model for a role, broken weights, runtime errors


def test_a_recogniser_given_as_the_yunet_detector_is_named_at_load(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """It loaded and then failed on the first picture with an OpenCV traceback."""
    from facemagic_core.analysis import FaceAnalyzer

    recogniser = write_arcface(tmp_path / "w600k_r50.onnx")
    with pytest.raises(BadInputError, match=r"not a YuNet model.*a face recogniser\?") as caught:
        FaceAnalyzer(backend="yunet", detector=recogniser)
    assert "--detector-model" in str(caught.value)


def test_loading_yunet_prints_no_opencv_noise(yunet_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """OpenCV printed '[ WARN:0] ... setPreferableTarget ...' on every run."""
    from facemagic_core.analysis import FaceAnalyzer

    capfd.readouterr()
    analyzer = FaceAnalyzer(backend="yunet", detector=yunet_path)
    analyzer.detect_faces(torch.rand(1, 3, 64, 64))
    captured = capfd.readouterr()
    assert "setPreferableTarget" not in captured.err and "WARN" not in captured.err, captured.err


def test_nan_weights_in_a_native_generator_are_refused_at_load(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from facemagic_core.generators import SwapGenerator, load_generator

    SwapGenerator.from_config(tiny_facemagic_config()).save_pretrained(tmp_path / "tiny")
    weights = tmp_path / "tiny" / "model.safetensors"
    state = load_file(str(weights))
    name = sorted(state)[3]
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(ModelIntegrityError, match=f"NaN or infinite values \\(tensor {re.escape(name)}\\)"):
        load_generator(tmp_path / "tiny", model_dir=tmp_path, device="cpu")


def test_nan_weights_in_an_onnx_swapper_are_refused_at_load(tmp_path: Path) -> None:
    import onnx
    from onnx import numpy_helper

    from facemagic_core.generators import load_generator

    path = tmp_path / "swapper.onnx"
    write_swapper_graph(path, emap=np.eye(512, dtype=np.float32))
    model = onnx.load(str(path))
    scale = numpy_helper.to_array(model.graph.initializer[0]).copy()
    scale[0, 1] = np.inf
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(scale, model.graph.initializer[0].name))
    onnx.save(model, str(path))
    with pytest.raises(ModelIntegrityError, match=r"NaN or infinite values \(tensor 'scale'\)"):
        load_generator(path, model_dir=tmp_path, device="cpu", prefer_native=False)


class _FailingSession:
    """An onnxruntime session whose run raises onnxruntime's own Fail for batches above ``most`` faces."""

    def __init__(self, session: Any, most: int, message: str) -> None:
        self.session, self.most, self.message, self.batches = session, most, message, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> Any:
        from onnxruntime.capi.onnxruntime_pybind11_state import Fail

        batch = len(next(iter(feeds.values())))
        self.batches.append(batch)
        if batch > self.most:
            raise Fail(self.message)
        return self.session.run(names, feeds)


def _onnx_swapper(tmp_path: Path, most: int, message: str) -> Any:
    import onnxruntime

    from facemagic_core.generators import OnnxSwapper, OnnxSwapperSpec

    path = tmp_path / "swapper.onnx"
    write_swapper_graph(path, size=32)
    session = _FailingSession(
        onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"]), most, message
    )
    return OnnxSwapper(path, spec=OnnxSwapperSpec("tiny", 32, "minus_one_one"), session=session)  # type: ignore[arg-type]


def test_an_onnxruntime_run_error_is_a_facemagic_error(tmp_path: Path) -> None:
    swapper = _onnx_swapper(
        tmp_path, 0, "[ONNXRuntimeError] : 1 : FAIL : Non-zero status code returned while running Mul"
    )
    with pytest.raises(ModelIntegrityError, match="onnxruntime failed while running the swapper tiny: Fail"):
        swapper.swap(*swap_inputs(batch=2))


def test_onnxruntime_out_of_memory_halves_the_chunk(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """onnxruntime's allocation failure escaped as a traceback instead of triggering the halve-the-chunk retry."""
    from tiny_models import bright_cell_image, write_pack

    from facemagic_core.analysis import FaceAnalyzer
    from facemagic_core.pipeline import SwapOptions, swap_faces

    pack = write_pack(tmp_path / "pack")
    analyzer = FaceAnalyzer.from_pack(pack, providers=["CPUExecutionProvider"])
    swapper = _onnx_swapper(tmp_path, 1, "Failed to allocate memory for requested buffer of size 4194304")
    frame = torch.from_numpy(bright_cell_image([(10, 10, 255)])).permute(2, 0, 1).float().div(255)
    frames = frame.expand(2, -1, -1, -1).contiguous()
    before = frames.clone()
    identity = Identity(
        np.random.default_rng(0).standard_normal(512).astype(np.float32), embedding_model="arcface_w600k_r50"
    )
    with caplog.at_level("WARNING"):
        result = swap_faces(frames, identity, analyzer, swapper, SwapOptions(chunk_size=2))
    assert "out of memory" in caplog.text and "retrying with 1 frames per chunk" in caplog.text
    assert list(result.face_counts) == [1, 1] and swapper.session.batches == [2, 1, 1]
    assert torch.equal(frames, before)  # the input batch is untouched


# ---------------------------------------------------------------------------------------------
# 7. Hostile identity files


def identity_file(path: Path, **metadata: str) -> Path:
    """A FaceMagic identity file whose metadata fields are replaced by ``metadata``."""
    from safetensors.numpy import save_file

    vector = np.random.default_rng(0).standard_normal((1, 512)).astype(np.float32)
    base = {"format": "facemagic.identity", "format_version": "1", "embedding_model": "arcface_w600k_r50"}
    save_file({"embeddings": vector / np.linalg.norm(vector)}, str(path), metadata={**base, **metadata})
    return path


def test_the_identity_file_helper_makes_a_readable_identity(tmp_path: Path) -> None:
    assert load_identity(identity_file(tmp_path / "ok.safetensors")).embedding_model == "arcface_w600k_r50"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("extra", "[" * 50_000 + "]" * 50_000, "nested 50000 levels deep"),  # RecursionError in the CLI and node
        ("sources", "[" * 100 + "]" * 100, "nested 100 levels deep"),
        ("weights", "[" + "1," * 600_000 + "1]", "bytes, more than the 1048576 accepted"),
        ("extra", '{"a": "' + "[" * 5000 + '"}', None),  # brackets inside a string are not nesting
        ("sources", '["a"', "not valid JSON"),
        ("extra", '{"k": {"deeper": 1}}', None),  # a nested value is written back as text
    ],
    ids=["deep extra", "deep sources", "huge weights", "brackets in a string", "unclosed", "nested value"],
)
def test_identity_metadata_is_bounded(field: str, value: str, message: str | None, tmp_path: Path) -> None:
    path = identity_file(tmp_path / "me.safetensors", **{field: value})
    if message is None:
        assert load_identity(path).embedding_model == "arcface_w600k_r50"
        return
    with pytest.raises(BadInputError, match=re.escape(message)) as caught:
        load_identity(path)
    assert f"'{field}' metadata" in str(caught.value) and "make it again" in str(caught.value)


def test_a_deeply_nested_identity_fails_the_cli_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    deep = identity_file(tmp_path / "deep.safetensors", extra="[" * 100_000 + "]" * 100_000)
    ok = identity_file(tmp_path / "ok.safetensors")
    code, _, err = run(["similarity", str(deep), str(ok), *DETECTOR, "--models", str(tmp_path / "m")], capsys)
    assert "nested 100000 levels deep" in one_error_line(code, err)
    target = photo(tmp_path / "t.png")
    files = ["--identity", str(deep), "--target", str(target), "-o", str(tmp_path / "o.png")]
    code, _, err = run(["swap", *files, *OFFLINE, "--models", str(tmp_path / "m")], capsys)
    assert "RecursionError" not in err and code != 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "cannot read the identity file"),
        (b"\xff" * 64, "cannot read the identity file"),
        (b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ", "not a FaceMagic identity"),
    ],
)
def test_identity_files_that_are_not_safetensors(content: bytes, message: str, tmp_path: Path) -> None:
    path = tmp_path / "me.safetensors"
    path.write_bytes(content)
    with pytest.raises(BadInputError, match=message):
        load_identity(path)


# ---------------------------------------------------------------------------------------------
# 8. Pictures that are not what they claim


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.png", b""),
        ("text.jpg", b"hello, I am not a picture"),
        ("cut.png", None),  # a PNG cut in half
        ("html.webp", b"<html><body>404</body></html>"),
    ],
)
def test_pictures_that_cannot_be_read_are_one_clear_error(name: str, content: bytes | None, tmp_path: Path) -> None:
    path = tmp_path / name
    if content is None:
        whole = photo(tmp_path / "whole.png").read_bytes()
        content = whole[: len(whole) // 2]
    path.write_bytes(content)
    with pytest.raises(BadInputError, match="cannot read the image") as caught:
        load_image(path)
    assert name in str(caught.value)


def test_a_16_bit_grey_picture_keeps_its_precision(tmp_path: Path) -> None:
    grey = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(grey).save(tmp_path / "deep.png")
    image = load_image(tmp_path / "deep.png")
    assert image.shape == (1, 3, 64, 64) and float(image.max()) == pytest.approx(grey.max() / 65535)


def test_an_exif_rotated_photo_is_upright_and_the_file_unchanged(tmp_path: Path) -> None:
    picture = Image.fromarray(np.zeros((40, 64, 3), np.uint8))
    exif = picture.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    picture.save(tmp_path / "phone.jpg", exif=exif)
    before = (tmp_path / "phone.jpg").read_bytes()
    assert load_image(tmp_path / "phone.jpg").shape == (1, 3, 64, 40)
    assert (tmp_path / "phone.jpg").read_bytes() == before


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (torch.rand(1, 3, 16, 16), "too small"),
        (torch.rand(0, 3, 64, 64), "empty"),
        (torch.rand(1, 3, 64, 64).double() * 255, "0..255"),
        (torch.full((1, 3, 64, 64), float("inf")), "NaN or infinite"),
        (torch.rand(1, 2, 64, 64), "grey \\+ alpha"),
    ],
)
def test_bad_tensors_are_refused_before_detection_and_never_changed(image: torch.Tensor, message: str) -> None:
    from facemagic_core.images import check_images

    before = image.clone()
    with pytest.raises(BadInputError, match=message):
        check_images(image)
    assert torch.equal(image, before) or bool(torch.isinf(image).all())


# ---------------------------------------------------------------------------------------------
# 9. Command-line paths


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["identity", "{tmp}/none.jpg", "-o", "{tmp}/me.safetensors"], "image file not found"),
        (["identity", "{tmp}/empty_dir", "-o", "{tmp}/me.safetensors"], "the folder holds no image files"),
        (["identity", "{photo}", "-o", "{tmp}/me.json"], "must end in .safetensors"),
        (["identity", "{photo}", "-o", "{photo}/me.safetensors"], "is a file, so the output folder cannot be made"),
        (["identity", "{photo}", "-o", "{tmp}/me.safetensors", "--preview", "{tmp}"], "the preview is a picture"),
        (["similarity", "{tmp}/a.safetensors", "{photo}", "--face-index", "0,1,2"], "--face-index got 3 numbers"),
        (["similarity", "{tmp}/none.safetensors", "{photo}"], "identity file not found"),
        (["swap", "--source", "{photo}", "--target", "{tmp}/clip.mp4", "-o", "{tmp}/o.png"], "must be a video too"),
        (["swap", "--source", "{photo}", "--target", "{photo}", "-o", "{tmp}/o.txt"], "must be a picture"),
        (["swap", "--identity", "{photo}", "--target", "{photo}", "-o", "{tmp}/o.png"], "--identity takes identity"),
        (["prepare", "{tmp}/none", "-o", "{tmp}/cache"], "the data folder does not exist"),
    ],
)
def test_command_line_mistakes_are_one_line_before_any_model(
    arguments: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    picture = photo(tmp_path / "p.png")
    (tmp_path / "empty_dir").mkdir()
    filled = [word.format(tmp=tmp_path, photo=picture) for word in arguments]
    options = OFFLINE if filled[0] == "swap" else ([] if filled[0] == "prepare" else DETECTOR)
    before = snapshot(tmp_path)
    code, _, err = run([*filled, *options, "--models", str(tmp_path / "models")], capsys)
    assert message in one_error_line(code, err)
    assert snapshot(tmp_path) == before and not (tmp_path / "models").exists()


# ---------------------------------------------------------------------------------------------
# 10. Node names from the UI


@pytest.fixture(scope="module")
def comfy_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from comfy_stub.harness import installed_pack, node_classes

    models = tmp_path_factory.mktemp("comfy_models")
    (models / "facemagic" / "identities").mkdir(parents=True)
    with installed_pack(models) as pack:
        yield {"models": models, **node_classes(pack)}


@pytest.mark.parametrize(
    "name", ["../../etc/passwd", "/etc/passwd", "..", "", "a\x00b", "C:\\Windows\\win.ini", "\\\\server\\share\\x"]
)
def test_load_identity_names_stay_inside_the_model_folder(name: str, comfy_nodes: dict[str, Any]) -> None:
    message = comfy_nodes["FaceMagicLoadIdentity"].validate_inputs(name=name)
    assert isinstance(message, str) and message, message
    with pytest.raises(FaceMagicError):
        comfy_nodes["FaceMagicLoadIdentity"].execute(name=name)


def test_load_identity_node_names_a_deeply_nested_file(comfy_nodes: dict[str, Any]) -> None:
    folder = comfy_nodes["models"] / "facemagic" / "identities"
    identity_file(folder / "deep.safetensors", extra="[" * 100_000 + "]" * 100_000)
    with pytest.raises(BadInputError, match="nested 100000 levels deep"):
        comfy_nodes["FaceMagicLoadIdentity"].execute(name="deep")


# ---------------------------------------------------------------------------------------------
# 11. Videos and damaged inputs, found before any model loads


def _tiny_gif(path: Path, side: int) -> Path:
    frames = [Image.new("RGB", (side, side), (40 * i, 0, 0)) for i in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    return path


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("fake.mp4", "cannot read the video"),
        ("empty.gif", "the video file is empty"),
        ("small.gif", "the video frames are 8x8 pixels, too small"),
        ("cut.png", "cannot read the image"),
    ],
)
def test_a_damaged_target_is_named_before_any_model_loads(
    target: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each was found only after the models had loaded (or been downloaded)."""
    (tmp_path / "fake.mp4").write_text("not a video")
    (tmp_path / "empty.gif").write_bytes(b"")
    _tiny_gif(tmp_path / "small.gif", 8)
    whole = photo(tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    source = photo(tmp_path / "s.png", seed=1)
    output = tmp_path / ("o.png" if target.endswith(".png") else "o.mp4")
    files = ["--source", str(source), "--target", str(tmp_path / target), "-o", str(output)]
    code, _, err = run(["swap", *files, *OFFLINE, "--models", str(tmp_path / "models")], capsys)
    assert message in one_error_line(code, err)
    assert not output.exists() and not (tmp_path / "models").exists()


@pytest.mark.parametrize("option", ["--source", "--mix"])
def test_a_damaged_source_photo_is_named_before_any_model_loads(
    option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = photo(tmp_path / "t.png")
    broken = tmp_path / "me.jpg"
    broken.write_bytes(b"\xff\xd8\xff not really a JPEG")
    who = ["--source", str(broken)] if option == "--source" else ["--mix", f"coarse={broken}", f"fine={target}"]
    files = [*who, "--target", str(target), "-o", str(tmp_path / "o.png")]
    code, _, err = run(["swap", *files, *OFFLINE, "--models", str(tmp_path / "models")], capsys)
    assert "cannot read the image" in one_error_line(code, err) and "me.jpg" in err
    assert not (tmp_path / "models").exists()


def test_a_downloaded_onnx_whose_data_lies_outside_is_refused_and_not_kept(fake_hub: FakeHub, tmp_path: Path) -> None:
    staged = onnx_with_external_data(tmp_path / "made", "../../../../etc/hostname")
    fake_hub.add_file("opencv/face_detection_yunet", "face_detection_yunet_2023mar.onnx", staged.read_bytes())
    with pytest.raises(ModelIntegrityError, match="outside its own folder"):
        hub.ensure_model("yunet", tmp_path / "models")
    assert left_in(tmp_path / "models") == []


def test_a_downloaded_onnx_records_its_external_data_list(fake_hub: FakeHub, tmp_path: Path) -> None:
    staged = onnx_with_external_data(tmp_path / "made", "weights.bin")
    fake_hub.add_file("opencv/face_detection_yunet", "face_detection_yunet_2023mar.onnx", staged.read_bytes())
    hub.ensure_model("yunet", tmp_path / "models")
    entry = json.loads((tmp_path / "models" / hub.LOCK_FILE_NAME).read_text())["files"]
    assert entry["face_detection_yunet_2023mar.onnx"]["external_data"] == ["weights.bin"]


def test_a_gigantic_target_picture_is_one_line_not_a_pillow_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The animation check opened it first and let Pillow's DecompressionBombError out."""
    target = _png_header(tmp_path / "big.png", 16000, 12000)
    files = ["--source", str(photo(tmp_path / "s.png")), "--target", str(target), "-o", str(tmp_path / "o.png")]
    code, _, err = run(["swap", *files, *OFFLINE, "--models", str(tmp_path / "m")], capsys)
    assert "16000x12000 pixels (192 megapixels)" in one_error_line(code, err)


def test_a_large_picture_under_the_limit_gives_no_pillow_warning(
    tmp_path: Path, recwarn: pytest.WarningsRecorder
) -> None:
    """Pictures between 89 and 179 megapixels printed Pillow's DecompressionBombWarning on stderr."""
    with pytest.raises(BadInputError, match="cannot read the image"):
        load_image(_png_header(tmp_path / "mid.png", 10000, 10000))  # accepted size, broken pixel data
    assert not [w for w in recwarn if "DecompressionBomb" in type(w.message).__name__]


# ---------------------------------------------------------------------------------------------
# 12. Animations (the video lane's animation-aware reading and writing)


def _noise_frames(count: int, side: int = 48) -> list[Image.Image]:
    rng = np.random.default_rng(3)
    return [Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)) for _ in range(count)]


def test_an_animated_webp_target_is_a_video_not_a_still(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An animated WebP was swapped to a single still picture."""
    frames = _noise_frames(3)
    frames[0].save(tmp_path / "moving.webp", save_all=True, append_images=frames[1:], duration=100)
    files = ["--source", str(photo(tmp_path / "s.png")), "--target", str(tmp_path / "moving.webp")]
    code, _, err = run(
        ["swap", *files, "-o", str(tmp_path / "o.png"), *OFFLINE, "--models", str(tmp_path / "m")], capsys
    )
    assert "the output must be a video too" in one_error_line(code, err)
    from facemagic_core.video import read_video_info

    assert read_video_info(tmp_path / "moving.webp").frame_count == 3


def test_a_truncated_gif_is_named_not_read_as_fewer_frames(tmp_path: Path) -> None:
    """A GIF cut short was read as fewer frames (with garbage), without a word."""
    from facemagic_core.video import read_frames

    frames = _noise_frames(6)
    frames[0].save(tmp_path / "whole.gif", save_all=True, append_images=frames[1:], duration=100)
    data = (tmp_path / "whole.gif").read_bytes()
    (tmp_path / "cut.gif").write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(BadInputError, match=r"ends inside frame \d+"):
        read_frames(tmp_path / "cut.gif")
    assert read_frames(tmp_path / "whole.gif").shape[0] == 6


def test_sigterm_while_writing_a_video_leaves_no_partial_file(tmp_path: Path) -> None:
    from facemagic_core.video import write_video

    def chunks() -> Iterator[torch.Tensor]:
        yield torch.rand(2, 3, 32, 32)
        os.kill(os.getpid(), signal.SIGTERM)
        yield torch.rand(2, 3, 32, 32)

    with pytest.raises(KeyboardInterrupt):
        write_video(tmp_path / "out.gif", chunks(), 10.0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", [["models", "list"], ["models", "download", "yunet"], ["models", "verify"]])
@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_a_model_folder_that_is_a_file_is_named(
    command: list[str], where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--models photo.jpg ended in a FileExistsError traceback (or listed every model as missing)."""
    picture = photo(tmp_path / "p.png")
    models = picture if where == "a file" else picture / "models"
    code, _, err = run([*command, "--models", str(models)], capsys)
    assert "is a file, not a folder" in one_error_line(code, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png"]
