"""hub.py: the registry, downloads through the real huggingface_hub client from a local fake Hub, the lock file."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing
import os
import re
import socket
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_server import FakeHub, point_hub_client_at

from facemagic_core import hub
from facemagic_core.errors import ModelIntegrityError, ModelNotFoundError

INSWAPPER_REPO = "facefusion/models-3.0.0"
BUFFALO_FILES = ("det_10g.onnx", "2d106det.onnx", "1k3d68.onnx", "genderage.onnx", "w600k_r50.onnx")


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    """A fake Hub on 127.0.0.1 that FaceMagic's downloads go to; huggingface_hub's retry pause is removed."""
    with FakeHub() as server:
        point_hub_client_at(server.endpoint, monkeypatch)
        yield server


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return tmp_path / "models"


def payload(size: int, seed: int = 0) -> bytes:
    return hashlib.sha256(str(seed).encode()).digest() * (size // 32) + b"x" * (size % 32)


def lock_data(model_dir: Path) -> dict[str, dict[str, dict[str, object]]]:
    data: dict[str, dict[str, dict[str, object]]] = json.loads((model_dir / hub.LOCK_FILE_NAME).read_text())
    return data


def leftovers(model_dir: Path) -> list[str]:
    """Anything a download may leave behind: staging folders, .incomplete files."""
    return sorted(
        path.name
        for path in model_dir.rglob("*")
        if path.name.startswith(".facemagic-download-") or path.name.endswith(".incomplete")
    )


def serve_inswapper(fake_hub: FakeHub, size: int = 200_000, seed: int = 0) -> bytes:
    data = payload(size, seed)
    fake_hub.add_file(INSWAPPER_REPO, "inswapper_128.onnx", data)
    return data


def count_hashing(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    hashed: list[Path] = []
    real = hub.sha256_file

    def spy(path: Path) -> str:
        hashed.append(Path(path))
        return real(path)

    monkeypatch.setattr(hub, "sha256_file", spy)
    return hashed


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


# --- the registry -----------------------------------------------------------------------------


def test_registry_has_the_names_other_modules_use() -> None:
    for name in (
        "yunet",
        "buffalo_l",
        "arcface_w600k_r50",
        "inswapper_128",
        "inswapper_128_fp16",
        "hyperswap_1a_256",
        "hyperswap_1b_256",
        "hyperswap_1c_256",
        "reswapper_128",
    ):
        assert hub.get_model_spec(name).name == name
    for spec in hub.MODELS.values():
        assert spec.kind in hub.MODEL_KINDS
        assert spec.repo_id.count("/") == 1 and spec.licence and spec.local_path
        assert not Path(spec.local_path).is_absolute() and ".." not in Path(spec.local_path).parts
        if spec.is_pack:
            assert spec.pack_files
        if spec.kind == "swapper":
            assert spec.input_size in (128, 256) and spec.template == "arcface" and spec.embedding
            assert spec.embedding_model == "arcface_w600k_r50"
    inswapper = hub.get_model_spec("inswapper_128")
    assert inswapper.embedding == "arcface normalised @ emap (last initializer)"
    assert inswapper.value_range == (0.0, 1.0)
    assert hub.get_model_spec("hyperswap_1b_256").value_range == (-1.0, 1.0)
    assert "ResearchRAIL" in hub.get_model_spec("hyperswap_1c_256").licence
    assert "non-commercial" in hub.get_model_spec("buffalo_l").licence
    assert hub.get_model_spec("yunet").licence == "MIT"
    with pytest.raises(ModelNotFoundError, match=r"unknown model 'inswapper'.*inswapper_128"):
        hub.get_model_spec("inswapper")


def test_download_urls() -> None:
    endpoint = "https://huggingface.co"
    assert (
        hub.download_url(hub.get_model_spec("buffalo_l"), endpoint=endpoint)
        == "https://huggingface.co/datasets/Gourieff/ReActor/resolve/main/models/buffalo_l.zip"
    )
    assert (
        hub.download_url(hub.get_model_spec("hyperswap_1a_256"), endpoint=endpoint)
        == "https://huggingface.co/facefusion/models-3.3.0/resolve/main/hyperswap_1a_256.onnx"
    )
    antelope = hub.get_model_spec("antelopev2")
    assert antelope.repo_files()[1] == "glintr100.onnx"
    assert (
        hub.download_url(antelope, "glintr100.onnx", endpoint=endpoint)
        == "https://huggingface.co/DIAMONIK7777/antelopev2/resolve/main/glintr100.onnx"
    )


# --- single files -----------------------------------------------------------------------------


def test_first_download_puts_the_file_in_place_and_records_it(fake_hub: FakeHub, model_dir: Path) -> None:
    data = serve_inswapper(fake_hub)
    reports: list[tuple[int, int]] = []
    path = hub.ensure_model("inswapper_128", model_dir, progress=lambda done, total: reports.append((done, total)))
    assert path == model_dir / "inswapper_128.onnx"
    assert path.read_bytes() == data
    entry = lock_data(model_dir)["files"]["inswapper_128.onnx"]
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()
    assert entry["size"] == len(data)
    assert entry["revision"] == fake_hub.commit
    assert entry["repo_id"] == INSWAPPER_REPO and entry["source"] == "download"
    assert fake_hub.count("GET", "inswapper_128.onnx") == 1
    assert reports[-1] == (len(data), len(data))
    assert leftovers(model_dir) == []


def test_download_with_a_huggingface_hub_that_takes_no_tqdm_class(
    fake_hub: FakeHub, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Older huggingface_hub releases (as some ComfyUI installs carry) have no tqdm_class: download anyway."""
    import huggingface_hub

    real = huggingface_hub.hf_hub_download

    def old_download(
        repo_id: str, filename: str, *, repo_type: str, revision: str, local_dir: Path, endpoint: str
    ) -> str:
        return real(repo_id, filename, repo_type=repo_type, revision=revision, local_dir=local_dir, endpoint=endpoint)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", old_download)
    data = serve_inswapper(fake_hub)
    reports: list[tuple[int, int]] = []
    path = hub.ensure_model("inswapper_128", model_dir, progress=lambda done, total: reports.append((done, total)))
    assert path.read_bytes() == data and reports == []


def test_second_load_makes_no_request(fake_hub: FakeHub, model_dir: Path) -> None:
    serve_inswapper(fake_hub)
    first = hub.ensure_model("inswapper_128", model_dir)
    fake_hub.reset_requests()
    assert hub.ensure_model("inswapper_128", model_dir) == first
    assert fake_hub.count() == 0


def test_unchanged_file_is_not_hashed_again_but_full_verify_is(
    fake_hub: FakeHub, model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serve_inswapper(fake_hub)
    path = hub.ensure_model("inswapper_128", model_dir)
    hashed = count_hashing(monkeypatch)
    hub.ensure_model("inswapper_128", model_dir)
    assert len(hashed) == 1  # just downloaded: inside the racy window, hashed again
    old = path.stat().st_mtime_ns - 60 * 10**9
    os.utime(path, ns=(old, old))  # as if the file had been written a minute before
    hub.ensure_model("inswapper_128", model_dir)
    assert len(hashed) == 2  # mtime changed: hashed, and the lock file now knows the new mtime
    hub.ensure_model("inswapper_128", model_dir)
    hub.ensure_model("inswapper_128", model_dir)
    assert len(hashed) == 2  # size and mtime unchanged since a hash well after the write: trusted
    # the documented limit of the fast check: an edit that restores the modification time
    data = bytearray(path.read_bytes())
    data[1000] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(old, old))
    hub.ensure_model("inswapper_128", model_dir)
    with pytest.raises(ModelIntegrityError, match="altered or damaged"):
        hub.ensure_model("inswapper_128", model_dir, verify="full")


def test_file_altered_after_download_is_refused(fake_hub: FakeHub, model_dir: Path) -> None:
    serve_inswapper(fake_hub)
    path = hub.ensure_model("inswapper_128", model_dir)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, one bit flipped, right after the download
    path.write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError) as caught:
        hub.ensure_model("inswapper_128", model_dir)
    message = str(caught.value)
    assert "altered or damaged" in message and str(path) in message
    assert f"delete {path}; it will be downloaded again" in message


def test_truncated_file_is_refused(fake_hub: FakeHub, model_dir: Path) -> None:
    data = serve_inswapper(fake_hub)
    path = hub.ensure_model("inswapper_128", model_dir)
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelIntegrityError, match=f"truncated: {len(data) // 3} bytes instead of the {len(data)}"):
        hub.ensure_model("inswapper_128", model_dir)


def test_download_cut_off_half_way_leaves_nothing_and_a_retry_works(fake_hub: FakeHub, model_dir: Path) -> None:
    data = serve_inswapper(fake_hub)
    fake_hub.cut_off(INSWAPPER_REPO, "inswapper_128.onnx")
    with pytest.raises(ModelNotFoundError) as caught:
        hub.ensure_model("inswapper_128", model_dir)
    message = str(caught.value)
    assert "could not be downloaded" in message
    assert "inswapper_128.onnx" in message and INSWAPPER_REPO in message and str(model_dir) in message
    assert fake_hub.count("GET", "inswapper_128.onnx") >= 1
    assert not (model_dir / "inswapper_128.onnx").exists()
    assert leftovers(model_dir) == []
    assert not (model_dir / hub.LOCK_FILE_NAME).exists()
    fake_hub.cut_off(INSWAPPER_REPO, "inswapper_128.onnx", enabled=False)
    path = hub.ensure_model("inswapper_128", model_dir)
    assert path.read_bytes() == data
    assert leftovers(model_dir) == []


def test_download_that_does_not_match_the_hub_etag_is_refused(fake_hub: FakeHub, model_dir: Path) -> None:
    fake_hub.add_file(INSWAPPER_REPO, "inswapper_128.onnx", payload(5000), announced_etag="ab" * 32)
    with pytest.raises(ModelIntegrityError, match="the Hub announced abab"):
        hub.ensure_model("inswapper_128", model_dir)
    assert not (model_dir / "inswapper_128.onnx").exists()
    assert leftovers(model_dir) == []


def test_redownload_is_pinned_to_the_recorded_file(fake_hub: FakeHub, model_dir: Path) -> None:
    data = serve_inswapper(fake_hub)
    path = hub.ensure_model("inswapper_128", model_dir)
    path.unlink()  # the user follows the fix text after a damaged file
    fake_hub.reset_requests()
    assert hub.ensure_model("inswapper_128", model_dir).read_bytes() == data
    assert fake_hub.count("GET", f"/resolve/{fake_hub.commit}/inswapper_128.onnx") == 1
    path.unlink()
    serve_inswapper(fake_hub, seed=1)  # the upstream file changed
    with pytest.raises(ModelIntegrityError, match="recorded at its first download"):
        hub.ensure_model("inswapper_128", model_dir)
    assert not path.exists()


def test_missing_file_on_the_hub(fake_hub: FakeHub, model_dir: Path) -> None:
    fake_hub.add_file(INSWAPPER_REPO, "other.onnx", b"1234")
    with pytest.raises(
        ModelNotFoundError, match=re.escape("the Hub has no file inswapper_128.onnx in facefusion/models-3.0.0")
    ):
        hub.ensure_model("inswapper_128", model_dir)


def test_hub_unreachable(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    point_hub_client_at(f"http://127.0.0.1:{closed_port()}", monkeypatch)
    with pytest.raises(ModelNotFoundError) as caught:
        hub.ensure_model("hyperswap_1a_256", model_dir)
    message = str(caught.value)
    assert "hyperswap_1a_256.onnx" in message
    assert "facefusion/models-3.3.0" in message
    assert f"put it at {model_dir / 'hyperswap_1a_256.onnx'} (folder {model_dir})" in message
    assert "/facefusion/models-3.3.0/resolve/main/hyperswap_1a_256.onnx" in message
    assert leftovers(model_dir) == []


@pytest.mark.parametrize("how", ["environment", "argument"])
def test_offline_mode(fake_hub: FakeHub, model_dir: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    serve_inswapper(fake_hub)
    if how == "environment":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError) as caught:
        hub.ensure_model("inswapper_128", model_dir, offline=True if how == "argument" else None)
    message = str(caught.value)
    assert "offline" in message
    assert "inswapper_128.onnx" in message and INSWAPPER_REPO in message and str(model_dir) in message
    assert f"{fake_hub.endpoint}/facefusion/models-3.0.0/resolve/main/inswapper_128.onnx" in message
    assert fake_hub.count() == 0


def test_file_placed_by_hand_is_trusted_on_first_use(
    fake_hub: FakeHub, model_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model_dir.mkdir()
    placed = model_dir / "face_detection_yunet_2023mar.onnx"
    placed.write_bytes(b"a yunet model")
    with caplog.at_level(logging.WARNING, logger="facemagic_core.hub"):
        assert hub.ensure_model("yunet", model_dir) == placed
    assert "trusting it on first use" in caplog.text
    entry = lock_data(model_dir)["files"]["face_detection_yunet_2023mar.onnx"]
    assert entry["source"] == "local" and entry["sha256"] == hashlib.sha256(b"a yunet model").hexdigest()
    placed.write_bytes(b"a yunet modem")
    with pytest.raises(ModelIntegrityError):
        hub.ensure_model("yunet", model_dir)
    assert fake_hub.count() == 0


def test_search_dirs_are_used_before_downloading(fake_hub: FakeHub, model_dir: Path, tmp_path: Path) -> None:
    other = tmp_path / "insightface"
    other.mkdir()
    (other / "inswapper_128.onnx").write_bytes(b"an inswapper")
    assert hub.ensure_model("inswapper_128", model_dir, search_dirs=[other]) == other / "inswapper_128.onnx"
    assert fake_hub.count() == 0
    assert str((other / "inswapper_128.onnx").resolve()) in lock_data(model_dir)["files"]


def _ensure_in_child(name: str, model_dir: Path, results: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        results.put(str(hub.ensure_model(name, model_dir)))
    except Exception as error:  # reported to the parent, which asserts on it
        results.put(f"{type(error).__name__}: {error}")


def test_concurrent_processes_download_once_and_share_the_file(fake_hub: FakeHub, model_dir: Path) -> None:
    data = payload(300_000)
    fake_hub.add_file(INSWAPPER_REPO, "inswapper_128.onnx", data, delay=0.5)  # the downloads would overlap
    context = multiprocessing.get_context("fork")  # the children inherit the fake Hub's address and patches
    results = context.Queue()
    workers = [context.Process(target=_ensure_in_child, args=("inswapper_128", model_dir, results)) for _ in range(3)]
    for worker in workers:
        worker.start()
    outcomes = sorted(results.get(timeout=60) for _ in workers)
    for worker in workers:
        worker.join(timeout=10)
    assert outcomes == [str(model_dir / "inswapper_128.onnx")] * 3
    assert fake_hub.count("GET", "inswapper_128.onnx") == 1  # one process downloaded, the others waited
    assert (model_dir / "inswapper_128.onnx").read_bytes() == data
    assert lock_data(model_dir)["files"]["inswapper_128.onnx"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert leftovers(model_dir) == []


# --- packs ------------------------------------------------------------------------------------


def make_zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def serve_buffalo(fake_hub: FakeHub, members: dict[str, bytes]) -> bytes:
    archive = make_zip(members)
    fake_hub.add_file("Gourieff/ReActor", "models/buffalo_l.zip", archive, repo_type="dataset")
    return archive


@pytest.mark.parametrize("top_folder", ["", "buffalo_l/"])
def test_pack_archive_is_extracted_into_its_folder(fake_hub: FakeHub, model_dir: Path, top_folder: str) -> None:
    contents = {name: f"model {name}".encode() for name in BUFFALO_FILES}
    archive = serve_buffalo(fake_hub, {top_folder + name: data for name, data in contents.items()})
    folder = hub.ensure_model("buffalo_l", model_dir)
    assert folder == model_dir / "buffalo_l"
    assert sorted(path.name for path in folder.iterdir()) == sorted(BUFFALO_FILES)
    assert all((folder / name).read_bytes() == data for name, data in contents.items())
    assert fake_hub.count("GET", "/datasets/Gourieff/ReActor/resolve/") == 1
    lock = lock_data(model_dir)
    assert lock["archives"]["buffalo_l/"]["sha256"] == hashlib.sha256(archive).hexdigest()
    entry = lock["files"]["buffalo_l/det_10g.onnx"]
    assert entry["sha256"] == hashlib.sha256(contents["det_10g.onnx"]).hexdigest()
    assert entry["source"] == "archive"
    assert not (model_dir / "buffalo_l.zip").exists() and leftovers(model_dir) == []
    fake_hub.reset_requests()
    assert hub.ensure_model("buffalo_l", model_dir) == folder
    assert fake_hub.count() == 0
    (folder / "w600k_r50.onnx").write_bytes(b"model w600k_r51")
    with pytest.raises(ModelIntegrityError, match="buffalo_l"):
        hub.ensure_model("buffalo_l", model_dir)


def test_pack_archive_missing_a_model_is_refused(fake_hub: FakeHub, model_dir: Path) -> None:
    serve_buffalo(fake_hub, {name: b"m" for name in BUFFALO_FILES[:-1]})
    with pytest.raises(ModelIntegrityError, match=re.escape("lacks w600k_r50.onnx")):
        hub.ensure_model("buffalo_l", model_dir)
    assert not (model_dir / "buffalo_l").exists() and leftovers(model_dir) == []


def test_pack_archive_with_unsafe_names_is_refused(fake_hub: FakeHub, model_dir: Path) -> None:
    serve_buffalo(fake_hub, {**{name: b"m" for name in BUFFALO_FILES}, "../escape.onnx": b"x"})
    with pytest.raises(ModelIntegrityError, match=re.escape("unsafe entry '../escape.onnx'")):
        hub.ensure_model("buffalo_l", model_dir)
    assert not (model_dir.parent / "escape.onnx").exists()
    assert not (model_dir / "buffalo_l").exists()


def test_offline_pack_error_says_how_to_extract(model_dir: Path) -> None:
    with pytest.raises(ModelNotFoundError) as caught:
        hub.ensure_model("buffalo_l", model_dir, offline=True)
    message = str(caught.value)
    assert "Gourieff/ReActor (dataset repo" in message and "models/buffalo_l.zip" in message
    assert f"extract it into the folder {model_dir / 'buffalo_l'}" in message


def test_multi_file_pack(fake_hub: FakeHub, model_dir: Path) -> None:
    spec = hub.get_model_spec("antelopev2")
    for name in spec.pack_files:
        fake_hub.add_file(spec.repo_id, name, f"antelope {name}".encode())
    folder = hub.ensure_model(spec, model_dir)
    assert all((folder / name).read_bytes() == f"antelope {name}".encode() for name in spec.pack_files)
    assert fake_hub.count("GET") == len(spec.pack_files)
    assert hub.model_status(spec, model_dir) == "present"
    (folder / "glintr100.onnx").unlink()
    assert hub.model_status(spec, model_dir) == "partial"
    assert hub.model_status("inswapper_128", model_dir) == "missing"


def test_partial_pack_download_still_verifies_the_files_present(fake_hub: FakeHub, model_dir: Path) -> None:
    spec = hub.get_model_spec("antelopev2")
    for name in spec.pack_files:
        fake_hub.add_file(spec.repo_id, name, f"antelope {name}".encode())
    folder = hub.ensure_model(spec, model_dir)
    (folder / "glintr100.onnx").write_bytes(b"antelope glintr101.onnx")  # altered, same size
    (folder / "genderage.onnx").unlink()  # and another file missing: the pack is fetched again
    fake_hub.reset_requests()
    with pytest.raises(ModelIntegrityError, match="altered or damaged") as caught:
        hub.ensure_model(spec, model_dir)
    assert str(folder / "glintr100.onnx") in str(caught.value)
    assert fake_hub.count("GET", "glintr100.onnx") == 0


# --- the command line -------------------------------------------------------------------------


def test_cli_models_list(model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from facemagic_core.cli import main

    model_dir.mkdir()
    (model_dir / "inswapper_128.onnx").write_bytes(b"placed by hand")
    assert main(["models", "list", "--models", str(model_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"model folder: {model_dir}"
    assert lines[1].split() == ["NAME", "KIND", "HUB", "FILE", "LOCAL", "PATH", "STATUS", "LICENCE"]
    rows = {cells[0]: cells for cells in (re.split(r"\s{2,}", line) for line in lines[2 : 2 + len(hub.MODELS)])}
    assert list(rows) == list(hub.MODELS)
    assert rows["inswapper_128"][:5] == [
        "inswapper_128",
        "swapper",
        "facefusion/models-3.0.0/inswapper_128.onnx",
        "inswapper_128.onnx",
        "present",
    ]
    assert rows["buffalo_l"][1:5] == ["pack", "datasets/Gourieff/ReActor/models/buffalo_l.zip", "buffalo_l/", "missing"]
    assert rows["hyperswap_1a_256"][4:] == ["missing", "ResearchRAIL"]


def test_cli_models_download_and_verify(fake_hub: FakeHub, model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from facemagic_core.cli import main

    data = serve_inswapper(fake_hub)
    assert main(["models", "download", "inswapper_128", "--models", str(model_dir)]) == 0
    out = capsys.readouterr().out
    assert f"inswapper_128: {model_dir / 'inswapper_128.onnx'}" in out
    assert f"sha256 {hashlib.sha256(data).hexdigest()}  inswapper_128.onnx" in out
    assert main(["models", "verify", "--models", str(model_dir)]) == 0
    assert capsys.readouterr().out.strip() == "inswapper_128: ok"
    path = model_dir / "inswapper_128.onnx"
    damaged = bytearray(path.read_bytes())
    damaged[7] ^= 0x80
    path.write_bytes(bytes(damaged))
    assert main(["models", "verify", "inswapper_128", "--models", str(model_dir)]) == 1
    assert "inswapper_128: FAILED: the model file of inswapper_128 was altered" in capsys.readouterr().err
    assert main(["models", "download", "no_such_model", "--models", str(model_dir)]) == 1
    assert "unknown model 'no_such_model'" in capsys.readouterr().err


def test_cli_models_doctor(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import onnxruntime

    from facemagic_core import runtime
    from facemagic_core.cli import main

    def distributions(installed: dict[str, str]) -> None:
        monkeypatch.setattr(runtime, "_installed_version", lambda name: installed.get(name))

    monkeypatch.setattr(
        onnxruntime, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    distributions({"onnxruntime-gpu": "1.31.1"})
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a machine with two GPUs
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    assert main(["models", "doctor", "--models", str(model_dir), "--device", "cuda:1"]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime distributions: onnxruntime-gpu 1.31.1" in out
    assert "providers for --device cuda:1: CUDAExecutionProvider {'device_id': 1}, CPUExecutionProvider" in out
    assert out.rstrip().endswith("onnxruntime install: ok")
    assert re.search(r"inswapper_128 +swapper +missing +torch \(converted", out)  # on a GPU: torch
    assert re.search(r"buffalo_l +pack +missing +torch \(converted", out)
    distributions({"onnxruntime": "1.32.0"})  # what a fresh install has
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert main(["models", "doctor", "--models", str(model_dir), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.split() and line.split()[0] in hub.MODELS}
    assert set(rows) == set(hub.MODELS)  # one line per model: where it runs
    assert rows["dlib_resnet_v1"].split()[-2:] == ["torch", "cpu"]
    assert rows["yunet"].split()[-2:] == ["opencv", "cpu"]
    assert "onnxruntime (uniform swaps) + torch (per-block mixing)" in rows["inswapper_128"]
    assert rows["hyperswap_1a_256"].split()[-3] == "onnxruntime"
    assert out.rstrip().endswith("onnxruntime install: ok")
    distributions({"onnxruntime": "1.31.1", "onnxruntime-gpu": "1.31.1"})
    assert main(["models", "doctor", "--models", str(model_dir)]) == 1
    out = capsys.readouterr().out
    assert "onnxruntime install: PROBLEM" in out
    assert "-m pip uninstall -y onnxruntime onnxruntime-gpu && " in out


def test_read_only_model_folder_still_serves_files(
    model_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    model_dir.mkdir()
    (model_dir / "face_detection_yunet_2023mar.onnx").write_bytes(b"yunet")

    def refuse(path: Path, data: bytes) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(hub, "atomic_write_bytes", refuse)
    with caplog.at_level(logging.WARNING, logger="facemagic_core.hub"):
        assert hub.ensure_model("yunet", model_dir).read_bytes() == b"yunet"
    assert "could not record face_detection_yunet_2023mar.onnx" in caplog.text
    assert "Permission denied" in caplog.text
