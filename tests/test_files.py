"""Atomic writes: all or nothing, and files get the same permissions as any new file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from facemagic_core.files import atomic_path, atomic_write_bytes


def test_atomic_write_replaces_whole_file_with_umask_permissions(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.bin"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second version")
    assert target.read_bytes() == b"second version"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.bin"]  # no temporary left


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "identity.safetensors"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as temporary:
        assert temporary.suffix == ".safetensors"  # writers that pick a format by suffix still work
        temporary.write_bytes(b"half")
        raise RuntimeError("cancelled half way")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["identity.safetensors"]


def test_an_image_too_large_to_open_safely_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from facemagic_core.errors import BadInputError
    from facemagic_core.images import load_image

    path = tmp_path / "big.png"
    Image.new("RGB", (64, 64)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses images over twice this many pixels
    with pytest.raises(BadInputError, match="too large to open safely") as error:
        load_image(path)
    assert "big.png" in str(error.value)
