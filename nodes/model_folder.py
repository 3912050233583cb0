"""The ``facemagic`` model folder: registration with ComfyUI, listings for the UI, safe name resolution.

ComfyUI's ``folder_paths`` keeps, per folder name, a list of directories. FaceMagic registers
``<ComfyUI models>/facemagic`` under the name ``facemagic``. Directories given for
``facemagic`` in ``extra_model_paths.yaml`` (or with ``--extra-model-paths-config``) are
loaded by ComfyUI before custom nodes; they are kept, in front, so the first of them is where
downloads go and where identities are saved. Layout of each directory::

    facemagic/
        buffalo_l/ ...               insightface pack (analyzer)
        face_detection_yunet_2023mar.onnx, arcface_w600k_r50.onnx
        inswapper_128.onnx ...       registry swappers (file names from facemagic_core.hub)
        my_generator/                native generators: config.json + model.safetensors
        my_model.onnx                any other ONNX swapper
        identities/<name>.safetensors
        facemagic-lock.json          sha256 of every model file, recorded on first use

Names coming from the UI are relative paths inside these directories; anything that would
leave them (``..``, absolute paths, drive letters) is refused with a ``BadInputError``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from facemagic_core.errors import BadInputError, ModelNotFoundError
from facemagic_core.hub import MODELS, ensure_model
from facemagic_core.types import ProgressCallback

from ._comfy import folder_paths

logger = logging.getLogger(__name__)

FOLDER_NAME = "facemagic"
IDENTITY_FOLDER = "identities"
IDENTITY_SUFFIX = ".safetensors"
#: File types listed from the folder (ONNX swappers, native generators' config + weights, identities).
EXTENSIONS = frozenset({".onnx", ".safetensors", ".json"})
NATIVE_CONFIG = "config.json"
NATIVE_WEIGHTS = "model.safetensors"


def register_model_folder() -> list[Path]:
    """Register the ``facemagic`` folder with ComfyUI (idempotent); return its directories, first = default."""
    default = os.path.join(folder_paths.models_dir, FOLDER_NAME)
    existing = folder_paths.folder_names_and_paths.get(FOLDER_NAME)
    paths = list(existing[0]) if existing else []
    if default not in paths:
        paths.append(default)
    folder_paths.folder_names_and_paths[FOLDER_NAME] = (paths, set(EXTENSIONS))
    if len(paths) > 1:
        logger.info("FaceMagic model folders (first is where downloads go): %s", ", ".join(paths))
    return [Path(path) for path in paths]


def model_dirs() -> list[Path]:
    """The directories of the ``facemagic`` folder, the default (download target) first."""
    if FOLDER_NAME not in folder_paths.folder_names_and_paths:
        register_model_folder()
    return [Path(path) for path in folder_paths.get_folder_paths(FOLDER_NAME)]


def download_dir() -> Path:
    """Where missing models are downloaded and new identities saved."""
    return model_dirs()[0]


def identities_dir() -> Path:
    return download_dir() / IDENTITY_FOLDER


def _with_article(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"


def check_relative_name(name: str, *, what: str) -> PurePosixPath:
    """``name`` as a relative path that stays inside a model directory, else ``BadInputError``."""
    text = str(name).strip()
    fix = (
        f"choose {_with_article(what)} from the list, or give a plain name (letters, digits, - _ .) "
        "without folders above it"
    )
    if not text:
        raise BadInputError(f"the {what} name is empty", fix=fix)
    if "\x00" in text:
        raise BadInputError(f"the {what} name contains a NUL character", where=repr(text), fix=fix)
    if any(ord(character) < 32 or ord(character) == 127 for character in text):
        raise BadInputError(
            f"the {what} name contains a control character (a line break or tab)", where=repr(text), fix=fix
        )
    posix = PurePosixPath(text.replace("\\", "/"))
    if posix.is_absolute() or PureWindowsPath(text).drive or PureWindowsPath(text).is_absolute():
        raise BadInputError(
            f"the {what} name is an absolute path; only names inside the FaceMagic model folder are accepted",
            where=text,
            fix=fix,
        )
    if any(part in ("..", "") for part in posix.parts) or posix == PurePosixPath("."):
        raise BadInputError(f"the {what} name points outside the FaceMagic model folder", where=text, fix=fix)
    return posix


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _staying_inside(path: Path, folder: Path, *, what: str, fix: str) -> Path:
    """``path``, unless links take it out of ``folder`` (then ``BadInputError``)."""
    if not _inside(path, folder):
        raise BadInputError(
            f"the {what} is reached through a link that leads outside the FaceMagic model folder",
            where=str(path),
            fix=fix,
        )
    return path


def resolve_name(name: str, *, what: str, folders: list[Path] | None = None, subfolder: str = "") -> Path:
    """The existing file or folder called ``name`` in the model directories (first match).

    Symbolic links that lead outside the directory are refused too.
    """
    relative = check_relative_name(name, what=what)
    searched = folders if folders is not None else model_dirs()
    for folder in searched:
        base = folder / subfolder if subfolder else folder
        candidate = base / Path(*relative.parts)
        try:
            exists = candidate.exists()
        except OSError as error:  # a name too long for the file system, a file where a folder should be
            raise BadInputError(
                f"the {what} {name!r} cannot be looked up: {error.strerror or error}",
                where=str(base),
                fix=f"pick {_with_article(what)} from the list",
            ) from error
        if exists:
            return _staying_inside(
                candidate, base, what=f"{what} {name!r}", fix="copy the file into the folder instead of linking it"
            )
    places = ", ".join(str(folder / subfolder if subfolder else folder) for folder in searched)
    raise ModelNotFoundError(
        f"the {what} {name!r} was not found",
        where=places,
        fix=f"put it into {searched[0] / subfolder if subfolder else searched[0]}, or pick another one from the list",
    )


def _registry_paths() -> dict[str, str]:
    """Registry ``local_path`` (posix) -> model name, for every registry model."""
    return {PurePosixPath(spec.local_path).as_posix(): name for name, spec in MODELS.items()}


def swapper_names() -> list[str]:
    return sorted(name for name, spec in MODELS.items() if spec.kind == "swapper")


def list_local_generators() -> list[str]:
    """ONNX files and native generator folders found in the model directories (relative posix names).

    Registry files (listed by their registry name instead), analyzer packs and identities are left out.
    """
    try:
        files = folder_paths.get_filename_list(FOLDER_NAME)
    except (KeyError, OSError) as error:
        logger.warning("cannot list the FaceMagic model folder: %s", error)
        return []
    registry = _registry_paths()
    packs = {PurePosixPath(spec.local_path).as_posix() for spec in MODELS.values() if spec.is_pack}
    present = {PurePosixPath(name.replace("\\", "/")).as_posix() for name in files}
    found: set[str] = set()
    for name in present:
        path = PurePosixPath(name)
        if path.parts[0] in (IDENTITY_FOLDER, *packs) or name in registry:
            continue
        if path.suffix.lower() == ".onnx":
            found.add(name)
        elif path.name == NATIVE_CONFIG and (path.parent / NATIVE_WEIGHTS).as_posix() in present:
            found.add(path.parent.as_posix() if path.parent != PurePosixPath(".") else ".")
    found.discard(".")
    return sorted(found)


def generator_choices() -> list[str]:
    """What the generator loader offers: registry swappers first, then local files and folders."""
    return [*swapper_names(), *list_local_generators()]


def list_identities() -> list[str]:
    """Saved identities (names without the folder and suffix), from every model directory."""
    names: set[str] = set()
    for folder in model_dirs():
        base = folder / IDENTITY_FOLDER
        if not base.is_dir():
            continue
        for path in base.rglob(f"*{IDENTITY_SUFFIX}"):
            if path.is_file() and not path.name.startswith("."):
                names.add(path.relative_to(base).with_suffix("").as_posix())
    return sorted(names)


def identity_path_for_saving(name: str) -> Path:
    """Where the identity ``name`` is saved (``identities/<name>.safetensors`` in the default directory).

    A sub-folder that is a link leading outside the identities folder is refused, as when loading.
    """
    relative = check_relative_name(name, what="identity")
    if relative.suffix.lower() == IDENTITY_SUFFIX:
        relative = relative.with_suffix("")
    base = identities_dir()
    path = base / Path(*relative.parts).with_name(relative.name + IDENTITY_SUFFIX)
    return _staying_inside(
        path, base, what=f"identity {name!r}", fix="choose a name whose folders are inside models/facemagic/identities"
    )


def resolve_identity(name: str) -> Path:
    """The saved identity ``name`` (with or without ``.safetensors``) in any model directory."""
    relative = check_relative_name(name, what="identity")
    file_name = (
        relative.as_posix() if relative.suffix.lower() == IDENTITY_SUFFIX else relative.as_posix() + IDENTITY_SUFFIX
    )
    return resolve_name(file_name, what="identity", subfolder=IDENTITY_FOLDER)


def ensure_registry_model(name: str, *, progress: ProgressCallback | None = None) -> Path:
    """The local path of registry model ``name``: found in any model directory, else downloaded into the first.

    Downloads report to ``progress(done_bytes, total_bytes)`` (ComfyUI's progress bar); every file is
    verified against the lock file of the directory it is in (facemagic_core.hub).
    """
    folders = model_dirs()
    return ensure_model(name, folders[0], search_dirs=folders[1:], progress=progress)


def folder_holding(path: Path) -> Path:
    """The model directory ``path`` lies in (the default directory when none)."""
    for folder in model_dirs():
        if _inside(path, folder):
            return folder
    return download_dir()


def _registry_location(name: str) -> Path | None:
    """Where registry model ``name`` already is in the model directories (None when it is not there yet)."""
    spec = MODELS[name]
    for folder in model_dirs():
        candidate = folder / Path(*PurePosixPath(spec.local_path).parts)
        if candidate.exists():
            return candidate
    return None


def model_fingerprint(names: list[str]) -> str:
    """Size and modification time of the files behind model ``names`` (registry names or folder names).

    For a loader's ``fingerprint_inputs``: when a model file is replaced (a generator retrained into the
    same folder, a pack copied over), ComfyUI loads it again instead of reusing its cached output.
    A model that is not there yet reads as missing, so it is loaded once it appears. Cheap: no hashing.
    """
    parts: list[str] = []
    for name in names:
        try:
            path = _registry_location(name) if name in MODELS else resolve_name(name, what="model")
        except (BadInputError, ModelNotFoundError, OSError) as error:  # the loader reports it when it runs
            parts.append(f"{name}: unreadable ({error})")
            continue
        if path is None:
            parts.append(f"{name}: missing")
            continue
        files = sorted(item for item in path.rglob("*") if item.is_file()) if path.is_dir() else [path]
        for item in files:
            try:
                stat = item.stat()
            except OSError as error:
                parts.append(f"{item}: {error}")
                continue
            parts.append(f"{item}:{stat.st_size}:{stat.st_mtime_ns}")
    return "\n".join(parts)
