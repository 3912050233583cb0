"""Writing files so that a crash or a cancelled run never leaves half a file behind."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from .errors import BadInputError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it into place only if the block succeeds.

    The temporary file keeps ``path``'s suffix, so writers that choose a format by suffix
    (OpenCV, Pillow) still work.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.parent / f".{target.stem}.{uuid.uuid4().hex[:12]}.partial{target.suffix}"
    # Created like any new file (permissions from the umask, unlike tempfile's 0600), and never an existing one.
    os.close(os.open(temporary, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    try:
        yield temporary
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as temporary, open(temporary, "wb") as stream:
        stream.write(data)
        stream.flush()
        os.fsync(stream.fileno())


def check_output_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as a Path, or :class:`BadInputError` when no file can be written there (a video or a picture).

    Checked before any work is done: ``path`` must not be a folder, and its folder must exist
    and accept a new file, or be creatable inside the nearest existing folder (probed with a
    temporary file that is removed at once; nothing else is written).
    """
    file = Path(path)
    if file.is_dir():
        raise BadInputError(
            "the output path is a folder, not a file",
            where=str(file),
            fix=f"give a file name, e.g. {file / ('result' + (file.suffix or '.png'))}",
        )
    existing = next((folder for folder in (file.parent, *file.parent.parents) if folder.exists()), Path.cwd())
    if not existing.is_dir():
        raise BadInputError(
            f"{existing} is a file, so the output folder cannot be made there",
            where=str(file),
            fix="choose an output path inside a folder",
        )
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise BadInputError(
            f"cannot write into {existing} ({error.strerror or error})",
            where=str(file),
            fix="choose a folder you can write to",
        ) from error
    return file
