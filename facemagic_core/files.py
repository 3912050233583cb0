"""Writing files so that a crash or a cancelled run never leaves half a file behind."""

from __future__ import annotations

import contextlib
import fnmatch
import os
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from .errors import BadInputError, FaceMagicError


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


def describe_file_kind(path: Path) -> str:
    """What kind of thing ``path`` is when it is not a regular file: "a folder", "a FIFO (named pipe)", ...."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError:
        return "missing"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a regular file" if stat.S_ISREG(mode) else "not a regular file"


def check_input_file(
    path: str | os.PathLike[str],
    *,
    what: str = "input file",
    fix: str = "check the path",
    missing: str | None = None,
    error: type[FaceMagicError] = BadInputError,
) -> Path:
    """``path`` as a Path when it is an existing regular file, else ``error`` (BadInputError) saying what it is.

    ``missing`` replaces the message for a path that does not exist ("the {what} does not exist").
    A FIFO, a device or a socket is never opened (reading one could block forever or never end).
    """
    file = Path(path)
    kind = describe_file_kind(file)
    if kind == "missing":
        if file.is_symlink():
            raise error(f"the {what} is a broken link", where=str(file), fix=fix)
        raise error(missing or f"the {what} does not exist", where=str(file), fix=fix)
    if kind != "a regular file":
        raise error(f"the {what} is {kind}, not a regular file", where=str(file), fix=f"give a file; {fix}")
    return file


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return _real(a) == _real(b)


def check_outputs_not_inputs(
    outputs: Sequence[tuple[str, str | os.PathLike[str] | None]],
    inputs: Sequence[str | os.PathLike[str]],
    *,
    where: str = "facemagic",
    rename: str = "_out",
) -> None:
    """Refuse any output that would replace an input file (or another output) of the same command.

    ``outputs`` are ``(option, path)`` pairs; ``None`` paths are skipped. The file name of an
    output may be a glob pattern for the numbered files a command writes into a folder (e.g.
    ``debug/frame_*.png``): an input in that folder whose name matches it would be replaced
    too. Links and hard links are followed (``os.path.samefile``), so another spelling of an
    input's path is caught as well.
    """
    given = [(option, Path(path)) for option, path in outputs if path is not None]
    files = [Path(path) for path in inputs]
    for option, output in given:
        pattern = any(character in output.name for character in "*?[")
        for file in files:
            if pattern:
                clash = (
                    file.parent.exists()
                    and output.parent.exists()
                    and _same_file(file.parent, output.parent)
                    and fnmatch.fnmatch(file.name, output.name)
                )
            else:
                clash = file.exists() and output.exists() and _same_file(file, output)
            if clash:
                if pattern:
                    fix = f"write them to another folder, e.g. {option} {output.parent / 'facemagic_output'}"
                else:
                    other = output.with_name(output.stem + rename + output.suffix)
                    fix = f"write it to another file, e.g. {option} {other}"
                raise BadInputError(
                    f"{option} would replace an input file ({file}), and the original would be lost",
                    where=f"{where}: {output}",
                    fix=fix,
                )
    for number, (option, output) in enumerate(given):
        for other_option, other in given[number + 1 :]:
            glob, name = (other, output) if any(c in other.name for c in "*?[") else (output, other)
            matches = _real(glob.parent) == _real(name.parent) and fnmatch.fnmatch(name.name, glob.name)
            if _real(output) == _real(other) or matches:
                raise BadInputError(
                    f"{option} and {other_option} name the same file, so one would replace the other",
                    where=f"{where}: {output}",
                    fix=f"give {other_option} another name",
                )


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], *, timeout: float) -> Iterator[None]:
    """Hold an exclusive lock named by the file ``path`` across processes; the file is removed again on release.

    filelock's Unix lock leaves its (empty) lock file behind, so every model folder gathered
    ``.lock`` files, one per model and run. Here the holder deletes the file while it still
    holds the lock; a waiter that then gets the lock on the deleted file notices (the path no
    longer names the file it locked) and tries again on the new one. Without ``fcntl``
    (Windows) filelock is used, which removes its file there itself.
    """
    import time

    lock_path = Path(path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows
        from filelock import FileLock

        with FileLock(str(lock_path), timeout=timeout):
            yield
        return
    deadline = time.monotonic() + timeout
    while True:
        descriptor = os.open(lock_path, os.O_CREAT | os.O_RDWR, 0o666)
        try:
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"could not lock {lock_path} within {timeout:g} s") from None
                    time.sleep(0.05)
            try:
                current = os.stat(lock_path)
            except FileNotFoundError:
                current = None
            held = os.fstat(descriptor)
            if current is None or (current.st_ino, current.st_dev) != (held.st_ino, held.st_dev):
                continue  # the previous holder removed this file: lock the new one
            try:
                yield
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(lock_path)
            return
        finally:
            os.close(descriptor)  # closing releases the lock


#: Limits of the JSON FaceMagic reads from files it did not write itself (identity metadata, lock files, configs).
MAX_JSON_BYTES = 16 << 20
MAX_JSON_DEPTH = 64


def load_json_bounded(
    text: str | bytes, *, where: str, max_bytes: int = MAX_JSON_BYTES, max_depth: int = MAX_JSON_DEPTH
) -> object:
    """``json.loads`` that refuses text over ``max_bytes`` or nested deeper than ``max_depth`` with BadInputError.

    Deeply nested JSON (``[[[[...]]]]``) made ``json.loads`` raise RecursionError, which
    escaped every handler. The depth is measured before parsing, outside string literals.
    Invalid JSON raises BadInputError as well.
    """
    import json
    import re

    import numpy as np

    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else bytes(text)
    if len(data) > max_bytes:
        raise BadInputError(f"the JSON is {len(data)} bytes, more than the {max_bytes} accepted", where=where)
    bare = re.sub(rb'"(?:[^"\\]|\\.)*"', b'""', data)
    codes = np.frombuffer(bare, dtype=np.uint8)
    steps = np.isin(codes, (ord("["), ord("{"))).astype(np.int32) - np.isin(codes, (ord("]"), ord("}")))
    depth = int(np.cumsum(steps).max()) if steps.size else 0
    if depth > max_depth:
        raise BadInputError(f"the JSON is nested {depth} levels deep, more than the {max_depth} accepted", where=where)
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as error:
        raise BadInputError(f"not valid JSON: {error}", where=where) from error
