"""Turn a folder of photos into a training cache: aligned face crops, embeddings, landmarks, person ids.

Layout of a cache folder::

    manifest.json                 # what is where; written atomically after every shard
    shard_00000.safetensors       # crops uint8 (N, 3, S, S) RGB, embeddings float32 (N, D) raw
    shard_00001.safetensors       #   (not normalised), landmarks_5 float32 (N, 5, 2) in crop
    ...                           #   pixels, person_ids int64 (N,) (-1: unlabelled), and
                                  #   landmarks float32 (N, P, 2) when the analyzer has a dense model
    records_00000.json            # the photos processed with each shard: rows, or no_face / unreadable

Photos come from ``DATA_DIR``: with ``layout="per_person"`` every sub-folder is one person
(VGGFace2, CelebA-by-identity), with ``"flat"`` every photo under the folder is unlabelled,
``"auto"`` picks per_person when the folder holds sub-folders with photos and no photos of its
own. Every photo that was processed is recorded (its shard rows, or "no_face", or
"unreadable" with the reason) in the records file written with its shard, which the manifest
lists (so the manifest stays small for millions of photos); a second run skips recorded
photos and only adds the new ones: the work is resumable at shard granularity, and a broken
file never stops it. Ctrl-C finishes the photo at hand and writes what is done as a last
(smaller) shard before stopping, so nothing processed is lost.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import numpy as np
import torch
from PIL import Image

from ..align import align_faces, transform_points
from ..errors import BadInputError, FaceMagicError, ModelIntegrityError, ModelNotFoundError
from ..files import atomic_path, atomic_write_bytes
from ..images import load_image
from ..types import Face, ProgressCallback
from .interrupt import DeferredInterrupt

if TYPE_CHECKING:
    from ..analysis import FaceAnalyzer

logger = logging.getLogger(__name__)

#: How a data folder says who is who.
Layout = Literal["auto", "flat", "per_person"]
LAYOUTS: tuple[str, ...] = get_args(Layout)
#: What ``facemagic prepare`` reads.
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
MANIFEST_NAME = "manifest.json"
MANIFEST_VERSION = 1
#: Faces per shard file by default (about 200 MB of crops at 256 px).
DEFAULT_SHARD_SIZE = 1024
#: What one bad photo may raise; it is recorded as unreadable and skipped. Besides FaceMagic's own errors:
#: Pillow's decompression-bomb refusal (a header claiming a gigantic picture), and memory or I/O failures of one file.
PHOTO_ERRORS: tuple[type[BaseException], ...] = (FaceMagicError, Image.DecompressionBombError, MemoryError, OSError)


@dataclass(frozen=True)
class Photo:
    """One photo of the data folder: its path relative to the folder, and its person (or "")."""

    relative_path: str
    person: str


@dataclass(frozen=True)
class PrepareSummary:
    """What a :func:`prepare_dataset` call did."""

    cache_dir: Path
    photos_total: int  # photos found in the data folder
    photos_processed: int  # processed in this call (the others were in the manifest already)
    faces_added: int
    faces_total: int
    shards_written: int
    no_face: list[str] = field(default_factory=list)  # photos of this call without a usable face
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (photo, reason), every call so far


def collect_photos(data_dir: Path, layout: Layout = "auto") -> list[Photo]:
    """The photos of ``data_dir`` in a stable order, with their person per ``layout``."""
    root = Path(data_dir)
    if not root.is_dir():
        raise BadInputError("the data folder does not exist", where=str(root), fix="give a folder of photos")
    if layout not in LAYOUTS:
        raise BadInputError(f"unknown layout {layout!r}", fix=f"use one of {', '.join(LAYOUTS)}")

    def images_under(folder: Path) -> list[Path]:
        return sorted(
            path
            for path in folder.rglob("*")
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
        )

    own = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if layout == "auto":
        layout = "per_person" if folders and not own else "flat"
    photos: list[Photo]
    if layout == "flat":
        photos = [Photo(path.relative_to(root).as_posix(), "") for path in images_under(root)]
    else:
        photos = [Photo(path.relative_to(root).as_posix(), "") for path in own]
        for folder in folders:
            photos += [Photo(path.relative_to(root).as_posix(), folder.name) for path in images_under(folder)]
    if not photos:
        raise BadInputError(
            "the data folder holds no photos",
            where=str(root),
            fix=f"put photos ({', '.join(sorted(IMAGE_SUFFIXES))}) in it, or one sub-folder of photos per person",
        )
    return photos


def read_manifest(cache_dir: Path) -> dict[str, Any] | None:
    """The cache's manifest, or None when the folder has none yet."""
    path = Path(cache_dir) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ModelIntegrityError(
            f"the cache manifest cannot be read ({error})",
            where=str(path),
            fix="delete the cache folder and run 'facemagic prepare' again",
        ) from error
    if not isinstance(manifest, dict) or manifest.get("format_version") != MANIFEST_VERSION:
        raise ModelIntegrityError(
            "the cache manifest has an unknown layout",
            where=str(path),
            fix="run 'facemagic prepare' again into a new folder with this FaceMagic version",
        )
    return manifest


def write_manifest(cache_dir: Path, manifest: dict[str, Any]) -> None:
    atomic_write_bytes(Path(cache_dir) / MANIFEST_NAME, (json.dumps(manifest, indent=1) + "\n").encode("utf-8"))


def _new_manifest(
    data_dir: Path, image_size: int, template: str, analyzer: FaceAnalyzer, layout: str
) -> dict[str, Any]:
    return {
        "format_version": MANIFEST_VERSION,
        "image_size": image_size,
        "template": template,
        "embedding_model": analyzer.embedding_model,
        "detector": analyzer.backend,
        "data_dir": str(Path(data_dir).resolve()),
        "layout": layout,
        "persons": [],
        "shards": [],
        "records": [],
        "unreadable": [],
        "num_faces": 0,
    }


def _check_resumable(
    manifest: dict[str, Any], image_size: int, template: str, embedding_model: str, where: Path
) -> None:
    for key, value in (("image_size", image_size), ("template", template), ("embedding_model", embedding_model)):
        if manifest.get(key) != value:
            raise BadInputError(
                f"the cache was prepared with {key}={manifest.get(key)!r}, this run asks for {value!r}",
                where=str(where),
                fix="use another output folder for a different size, template or recogniser",
            )
    for shard in manifest["shards"]:
        path = where / shard["file"]
        if not path.is_file() or path.stat().st_size != shard["bytes"]:
            raise ModelIntegrityError(
                "a shard listed in the manifest is missing or has another size",
                where=str(path),
                fix="delete the cache folder and prepare it again",
            )


@dataclass
class _Buffer:
    """Faces gathered for the next shard, and the photos they came from."""

    crops: list[torch.Tensor] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)
    landmarks_5: list[np.ndarray] = field(default_factory=list)
    landmarks: list[np.ndarray | None] = field(default_factory=list)
    person_ids: list[int] = field(default_factory=list)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)  # photo -> manifest entry (rows local)

    @property
    def faces(self) -> int:
        return len(self.person_ids)


def _choose_faces(faces: Sequence[Face], all_faces: bool, min_face_size: float) -> list[Face]:
    usable = [face for face in faces if face.size >= min_face_size and face.embedding is not None]
    if not usable:
        return []
    if all_faces:
        return usable
    return [max(usable, key=lambda face: face.size)]


def _add_photo(
    buffer: _Buffer,
    photo: Photo,
    image: torch.Tensor,
    faces: Sequence[Face],
    *,
    image_size: int,
    template: str,
    person_id: int,
) -> int:
    crops, matrices = align_faces(image, faces, image_size, template)  # type: ignore[arg-type]
    crops_uint8 = crops.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    points = torch.from_numpy(np.stack([face.landmarks_5 for face in faces]).astype(np.float32))
    points_crop = transform_points(points, matrices).numpy()
    start = buffer.faces
    for number, face in enumerate(faces):
        buffer.crops.append(crops_uint8[number])
        buffer.embeddings.append(np.asarray(face.embedding, dtype=np.float32).reshape(-1))
        buffer.landmarks_5.append(points_crop[number])
        if face.landmarks is not None:
            dense = torch.from_numpy(np.asarray(face.landmarks, dtype=np.float32)[None])
            buffer.landmarks.append(transform_points(dense, matrices[number : number + 1]).numpy()[0])
        else:
            buffer.landmarks.append(None)
        buffer.person_ids.append(person_id)
    buffer.records[photo.relative_path] = {"status": "ok", "rows": [start, buffer.faces], "person": person_id}
    return len(faces)


def _flush(buffer: _Buffer, manifest: dict[str, Any], cache_dir: Path) -> bool:
    """Write the buffer as a shard (when it holds faces) and record its photos; True when a shard was written."""
    from safetensors.torch import save_file

    wrote = False
    if buffer.faces:
        index = len(manifest["shards"])
        name = f"shard_{index:05d}.safetensors"
        offset = int(manifest["num_faces"])
        tensors = {
            "crops": torch.stack(buffer.crops).contiguous(),
            "embeddings": torch.from_numpy(np.stack(buffer.embeddings)),
            "landmarks_5": torch.from_numpy(np.stack(buffer.landmarks_5)),
            "person_ids": torch.tensor(buffer.person_ids, dtype=torch.int64),
        }
        dense = [points for points in buffer.landmarks if points is not None]
        if len(dense) == buffer.faces and len({points.shape for points in dense}) == 1:
            tensors["landmarks"] = torch.from_numpy(np.stack(dense))  # type: ignore[arg-type]
        with atomic_path(cache_dir / name) as temporary:
            save_file(tensors, str(temporary), metadata={"format": "facemagic-faces", "version": "1"})
        manifest["shards"].append(
            {"file": name, "faces": buffer.faces, "first": offset, "bytes": (cache_dir / name).stat().st_size}
        )
        manifest["num_faces"] = offset + buffer.faces
        for record in buffer.records.values():
            if record["status"] == "ok":
                record["shard"] = index
                record["rows"] = [offset + record["rows"][0], offset + record["rows"][1]]
        wrote = True
    if buffer.records:
        name = f"records_{len(manifest['records']):05d}.json"
        atomic_write_bytes(cache_dir / name, (json.dumps(buffer.records, indent=0) + "\n").encode("utf-8"))
        manifest["records"].append(name)
    for photo, record in buffer.records.items():
        if record["status"] == "unreadable":
            manifest["unreadable"].append({"file": photo, "reason": record["reason"]})
    write_manifest(cache_dir, manifest)
    return wrote


def read_records(cache_dir: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Every processed photo of a cache: ``{photo: record}``.

    A record is ``{"status": "ok", "shard", "rows": [first, end), "person"}``, or status
    ``"no_face"`` / ``"unreadable"`` with a ``"reason"``.
    """
    folder = Path(cache_dir)
    manifest = read_manifest(folder)
    records: dict[str, dict[str, Any]] = {}
    for name in manifest["records"] if manifest is not None else []:
        path = folder / name
        try:
            records.update(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ModelIntegrityError(
                f"a records file of the cache cannot be read ({error})",
                where=str(path),
                fix="delete the cache folder and run 'facemagic prepare' again",
            ) from error
    return records


def prepare_dataset(
    data_dir: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str],
    analyzer: FaceAnalyzer,
    *,
    image_size: int,
    template: str = "arcface",
    layout: Layout = "auto",
    shard_size: int = DEFAULT_SHARD_SIZE,
    all_faces: bool = False,
    min_face_size: float = 0.0,
    progress: ProgressCallback | None = None,
) -> PrepareSummary:
    """Detect, align and embed the faces of every photo in ``data_dir`` into shards in ``cache_dir``.

    One face per photo (the largest) unless ``all_faces``; faces smaller than
    ``min_face_size`` pixels (square root of the box area) are skipped. Photos already
    recorded in the manifest are skipped; unreadable photos are recorded and skipped.
    ``progress(done, total)`` is called after every photo of this call.
    """
    from ..analysis import FaceAnalyzer

    if not isinstance(analyzer, FaceAnalyzer) or not analyzer.has_recognizer:
        raise ModelNotFoundError(
            "preparing training data needs a face analyzer with a recogniser (for the identity embeddings)",
            where="facemagic prepare",
            fix="build the analyzer with recognizer=<w600k_r50.onnx> or from a pack that holds one (buffalo_l)",
        )
    if shard_size < 1:
        raise BadInputError(f"shard_size must be at least 1, got {shard_size}", fix="use e.g. 1024")
    source = Path(data_dir)
    target = Path(cache_dir)
    photos = collect_photos(source, layout)
    target.mkdir(parents=True, exist_ok=True)
    manifest = read_manifest(target)
    resolved_layout = "per_person" if any(photo.person for photo in photos) else "flat"
    if manifest is None:
        manifest = _new_manifest(source, image_size, template, analyzer, resolved_layout)
    else:
        _check_resumable(manifest, image_size, template, analyzer.embedding_model, target)
    persons: list[str] = manifest["persons"]
    person_index = {name: number for number, name in enumerate(persons)}
    recorded = read_records(target)
    pending = [photo for photo in photos if photo.relative_path not in recorded]
    logger.info(
        "preparing %d photo(s) of %s (%d already in %s)", len(pending), source, len(photos) - len(pending), target
    )
    buffer = _Buffer()
    faces_added = shards_written = 0
    no_face: list[str] = []
    with DeferredInterrupt("this photo").held() as request:
        for done, photo in enumerate(pending, start=1):
            if photo.person and photo.person not in person_index:
                person_index[photo.person] = len(persons)
                persons.append(photo.person)
            person_id = person_index[photo.person] if photo.person else -1
            try:
                image = load_image(source / photo.relative_path)
                faces = analyzer.analyze(image, landmarks=True, embeddings=True)[0]
            except PHOTO_ERRORS as error:
                reason = str(error) if isinstance(error, FaceMagicError) else f"cannot read the image: {error}"
                logger.warning("skipping %s: %s", photo.relative_path, reason)
                buffer.records[photo.relative_path] = {"status": "unreadable", "reason": reason}
            else:
                chosen = _choose_faces(faces, all_faces, min_face_size)
                if chosen:
                    faces_added += _add_photo(
                        buffer, photo, image, chosen, image_size=image_size, template=template, person_id=person_id
                    )
                else:
                    reason = "no face found" if not faces else f"no face of at least {min_face_size:g} px"
                    buffer.records[photo.relative_path] = {"status": "no_face", "reason": reason}
                    no_face.append(photo.relative_path)
            if buffer.faces >= shard_size or request.requested:
                shards_written += _flush(buffer, manifest, target)
                buffer = _Buffer()
            if request.requested:
                logger.warning(
                    "stopped after %d of %d photo(s); the same command goes on from there", done, len(pending)
                )
                raise KeyboardInterrupt
            if progress is not None:
                progress(done, len(pending))
    shards_written += _flush(buffer, manifest, target)  # also writes the manifest of a call with nothing new
    return PrepareSummary(
        cache_dir=target,
        photos_total=len(photos),
        photos_processed=len(pending),
        faces_added=faces_added,
        faces_total=int(manifest["num_faces"]),
        shards_written=shards_written,
        no_face=no_face,
        unreadable=[(item["file"], item["reason"]) for item in manifest["unreadable"]],
    )
