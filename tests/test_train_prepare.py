"""facemagic prepare: shards and manifest from real photos, resumable, broken files reported and skipped."""

from __future__ import annotations

import json
import os
import shutil
import signal
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tiny_models import write_arcface

from facemagic_core.align import face_template
from facemagic_core.analysis import FaceAnalyzer
from facemagic_core.errors import BadInputError
from facemagic_core.images import load_image
from facemagic_core.training.data import FaceCache
from facemagic_core.training.prepare import collect_photos, prepare_dataset, read_manifest, read_records

SIZE = 64
PEOPLE = {"alice": ["anni.jpg", "zhuyin.jpg"], "bob": ["arnold.jpg", "elon.webp"]}


@pytest.fixture(scope="module")
def analyzer(yunet_path: Path, tmp_path_factory: pytest.TempPathFactory) -> FaceAnalyzer:
    recognizer = write_arcface(tmp_path_factory.mktemp("models") / "arcface.onnx")
    return FaceAnalyzer(backend="yunet", detector=yunet_path, recognizer=recognizer, providers=["cpu"])


def _png_header(width: int, height: int) -> bytes:
    """A PNG that claims ``width`` x ``height`` pixels (and holds almost nothing)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0")) + chunk(b"IEND", b"")


@pytest.fixture
def data_dir(faces_dir: Path, tmp_path: Path) -> Path:
    """Two people, two photos each; bob's folder also holds two broken files and a picture without a face."""
    root = tmp_path / "photos"
    for person, names in PEOPLE.items():
        (root / person).mkdir(parents=True)
        for name in names:
            shutil.copy(faces_dir / name, root / person / name)
    (root / "bob" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    (root / "bob" / "huge.png").write_bytes(_png_header(40_000, 40_000))  # Pillow refuses it as a decompression bomb
    grey = np.full((120, 160, 3), 128, dtype=np.uint8)
    import cv2

    cv2.imwrite(str(root / "bob" / "wall.png"), grey)
    return root


def test_prepare_writes_shards_and_manifest(analyzer: FaceAnalyzer, data_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    summary = prepare_dataset(data_dir, cache, analyzer, image_size=SIZE, shard_size=3)
    assert (summary.photos_total, summary.photos_processed, summary.faces_added) == (7, 7, 4)
    assert summary.shards_written == 2 and summary.no_face == ["bob/wall.png"]
    assert [name for name, _ in summary.unreadable] == ["bob/broken.jpg", "bob/huge.png"]
    assert "cannot read the image" in summary.unreadable[0][1]
    assert "too large to open safely: 40000x40000 pixels" in summary.unreadable[1][1]

    manifest = read_manifest(cache)
    assert manifest is not None
    assert manifest["persons"] == ["alice", "bob"] and manifest["layout"] == "per_person"
    assert (manifest["image_size"], manifest["template"], manifest["num_faces"]) == (SIZE, "arcface", 4)
    assert [shard["faces"] for shard in manifest["shards"]] == [3, 1]
    records = read_records(cache)
    assert len(records) == 7 and manifest["records"] == ["records_00000.json", "records_00001.json"]
    assert records["bob/broken.jpg"]["status"] == "unreadable"
    assert records["bob/wall.png"] == {"status": "no_face", "reason": "no face found"}
    assert manifest["unreadable"][0]["file"] == "bob/broken.jpg"

    shard = load_file(str(cache / "shard_00000.safetensors"))
    assert shard["crops"].dtype == torch.uint8 and tuple(shard["crops"].shape) == (3, 3, SIZE, SIZE)
    assert tuple(shard["embeddings"].shape) == (3, 512) and shard["embeddings"].dtype == torch.float32
    assert shard["person_ids"].tolist() == [0, 0, 1]  # alice, alice, bob (sorted file order)
    # landmarks in crop pixels sit on the template the crops were aligned to (least-squares residual only)
    template = torch.from_numpy(face_template("arcface", SIZE))
    assert float((shard["landmarks_5"] - template).abs().max()) < 4.0
    # the stored embedding is the analyzer's embedding of that photo's face
    record = records["bob/arnold.jpg"]
    assert record["shard"] == 0 and record["person"] == 1
    faces = analyzer.analyze(load_image(data_dir / "bob" / "arnold.jpg"))[0]
    largest = max(faces, key=lambda face: face.size)
    np.testing.assert_allclose(shard["embeddings"][record["rows"][0]].numpy(), largest.embedding, rtol=1e-5)


def test_prepare_resumes_and_adds_only_new_photos(
    analyzer: FaceAnalyzer, data_dir: Path, faces_dir: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    prepare_dataset(data_dir, cache, analyzer, image_size=SIZE, shard_size=3)
    first_shards = {path.name: path.stat().st_mtime_ns for path in cache.glob("shard_*.safetensors")}
    again = prepare_dataset(data_dir, cache, analyzer, image_size=SIZE, shard_size=3)
    assert (again.photos_processed, again.faces_added, again.shards_written) == (0, 0, 0)

    (data_dir / "carol").mkdir()
    shutil.copy(faces_dir / "chenglong.jpg", data_dir / "carol" / "chenglong.jpg")
    more = prepare_dataset(data_dir, cache, analyzer, image_size=SIZE, shard_size=3)
    assert (more.photos_processed, more.faces_added, more.shards_written, more.faces_total) == (1, 1, 1, 5)
    assert {path.name: path.stat().st_mtime_ns for path in cache.glob("shard_0000[01].safetensors")} == first_shards
    manifest = read_manifest(cache)
    assert manifest is not None and manifest["persons"] == ["alice", "bob", "carol"]
    assert len(manifest["unreadable"]) == 2  # the broken files are not retried or listed twice

    faces = FaceCache(cache)
    assert len(faces) == 5 and faces.person_ids.tolist() == [0, 0, 1, 1, 2]
    crops = faces.read_rows("crops", torch.tensor([4, 0]))
    assert tuple(crops.shape) == (2, 3, SIZE, SIZE)
    assert torch.equal(crops[1], load_file(str(cache / "shard_00000.safetensors"))["crops"][0])

    with pytest.raises(BadInputError, match="image_size"):
        prepare_dataset(data_dir, cache, analyzer, image_size=2 * SIZE)


def test_flat_layout_of_the_shared_faces(analyzer: FaceAnalyzer, loose_faces_dir: Path, tmp_path: Path) -> None:
    photos = collect_photos(loose_faces_dir, "flat")
    assert all(photo.person == "" for photo in photos) and any("/" in photo.relative_path for photo in photos)
    summary = prepare_dataset(loose_faces_dir, tmp_path / "cache", analyzer, image_size=SIZE, layout="flat")
    assert summary.faces_total == len(photos) and not summary.unreadable  # YuNet finds one face in each
    manifest = read_manifest(tmp_path / "cache")
    assert manifest is not None and manifest["persons"] == []
    assert FaceCache(tmp_path / "cache").person_ids.eq(-1).all()
    assert json.loads((tmp_path / "cache" / "manifest.json").read_text())["num_faces"] == len(photos)


def test_ctrl_c_keeps_the_photos_done_and_the_next_run_goes_on(
    analyzer: FaceAnalyzer, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    analyze = analyzer.analyze
    calls: list[int] = []

    def pressed_during_the_second_photo(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return analyze(*args, **kwargs)

    monkeypatch.setattr(analyzer, "analyze", pressed_during_the_second_photo)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(data_dir, cache, analyzer, image_size=SIZE, shard_size=100)
    assert sorted(read_records(cache)) == ["alice/anni.jpg", "alice/zhuyin.jpg"]  # the photo at hand was finished
    assert FaceCache(cache).person_ids.tolist() == [0, 0]  # ... and written as a shard
    monkeypatch.undo()
    rest = prepare_dataset(data_dir, cache, analyzer, image_size=SIZE, shard_size=100)
    assert (rest.photos_processed, rest.faces_added, rest.faces_total) == (5, 2, 4)
