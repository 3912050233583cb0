"""Shared fixtures: where the real test data lives, and skips when it is absent."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: ../shared beside the checkout (faces, a clip and a YuNet model); override with FACEMAGIC_SHARED.
SHARED = Path(os.environ.get("FACEMAGIC_SHARED", REPO.parent / "shared"))
FACES = SHARED / "faces"
YUNET = SHARED / "models" / "face_detection_yunet.onnx"
PORTRAITS = (
    sorted(p for p in FACES.glob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"})
    if FACES.is_dir()
    else []
)


def _insightface_image(name: str) -> Path | None:
    try:
        import insightface
    except ImportError:
        return None
    path = Path(insightface.__file__).parent / "data" / "images" / name
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    if not FACES.is_dir():
        pytest.skip(f"real test photos are not available: {FACES} is absent")
    return FACES


@pytest.fixture(scope="session")
def loose_faces_dir(faces_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the loose test photos (the top-level files and aligned/), without celeba/.

    celeba/ holds 3,231 photos: a flat walk of the whole shared folder would prepare all of them."""
    folder = tmp_path_factory.mktemp("loose_faces")
    for path in sorted(faces_dir.iterdir()):
        if path.is_file() and path.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp", ".gif"}:
            shutil.copy(path, folder / path.name)
    if (faces_dir / "aligned").is_dir():
        shutil.copytree(faces_dir / "aligned", folder / "aligned")
    return folder


@pytest.fixture(scope="session")
def yunet_path() -> Path:
    if not YUNET.is_file():
        pytest.skip(f"the real YuNet model is not available: {YUNET} is absent")
    return YUNET


@pytest.fixture(scope="session")
def t1_path() -> Path:
    path = _insightface_image("t1.jpg")
    if path is None:
        pytest.skip("insightface's bundled t1.jpg is not available (insightface not installed?)")
    return path


@pytest.fixture(scope="session")
def clip_path(faces_dir: Path) -> Path:
    path = faces_dir / "clip_nacho.gif"
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path
