"""Face analysis: detection, 5-point and dense landmarks, head pose, ArcFace embeddings, face selection.

Two detector backends:

- ``"insightface"``: the models of an insightface pack (buffalo_l: ``det_10g.onnx`` SCRFD,
  ``2d106det.onnx``, ``1k3d68.onnx``, ``w600k_r50.onnx``; antelopev2 names its files
  differently). Every file runs through insightface's own ``model_zoo`` runner, which
  ``insightface.model_zoo.get_model`` picks from the file's input/output shapes; their
  pre-processing and decoders are insightface's, not re-written here.
- ``"yunet"``: OpenCV's ``cv2.FaceDetectorYN`` (box + 5 landmarks), light and fast on a CPU;
  a recogniser and the landmark models can be added as files.

Where the pack's models run (``runtime``): ``"torch"`` converts every file with the package's
graph interpreter (:mod:`facemagic_core.torch_models`: checked against onnxruntime at load,
cached once verified) and runs detection, landmarks, gender/age and embeddings batched on
``device``, the frames crossing to it once as bytes; ``"onnxruntime"`` runs insightface's own
runners per image on ``uint8`` BGR pictures; ``"auto"`` is torch on an accelerator and
onnxruntime on a CPU. A file the interpreter gets wrong runs through onnxruntime, with a
warning. Embeddings are computed on crops aligned with :mod:`facemagic_core.align` in torch,
for all faces of a batch in one recogniser call, with the recogniser runner's own
normalisation (``(pixel - input_mean) / input_std`` on RGB 0..255 values, as its ``get_feat``
does).

Model files given by path are loaded as they are: insightface 2.1's manifest and licence
checks apply only to model-package folders and ``model_task`` calls, never to a plain
``.onnx`` path, which is all this module passes. insightface's pretrained models are for
non-commercial research only (see ../shared/MODELS.md).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, Protocol, get_args

import cv2
import numpy as np
import torch

from . import runtime, torch_models
from .align import align_faces
from .errors import BadInputError, FaceMagicError, ModelIntegrityError, ModelNotFoundError
from .files import check_input_file
from .images import check_images, float_to_bytes, is_byte_frames, tensor_to_bgr_uint8
from .runtime import requested_providers as _requested_providers
from .runtime import resolve_device as _resolve_device
from .torch_models import ModelRuntime, TorchFaceDetector, TorchGenderAge, TorchLandmarks, TorchRecognizer
from .types import FACE_ORDERS, Face, FaceOrder, FloatArray, Identity

logger = logging.getLogger(__name__)

#: Which detector finds the faces.
Backend = Literal["insightface", "yunet"]
BACKENDS: tuple[str, ...] = get_args(Backend)

#: Faces per recogniser call: bounds memory on long videos; a usual batch is one call.
RECOGNIZER_CHUNK = 128
#: YuNet's non-maximum suppression IoU threshold and candidate cap (OpenCV's sample values).
YUNET_NMS_THRESHOLD = 0.3
YUNET_TOP_K = 5000
#: Smallest detector input side, and the step of the sizes allowed (SCRFD's coarsest stride).
MIN_DET_SIZE = 64
DET_SIZE_STEP = 32
#: Registry names of the embedding spaces of recognisers found in packs, by file name stem.
PACK_EMBEDDING_MODELS = {
    "w600k_r50": "arcface_w600k_r50",
    "glintr100": "arcface_glintr100",
    "w600k_mbf": "arcface_w600k_mbf",
}
#: Files of a pack folder that are not analysis models and are never loaded by from_pack.
_PACK_SKIP_PREFIXES = ("inswapper",)

_PACK_HELP = (
    "put an insightface pack there, e.g. buffalo_l (det_10g.onnx, 2d106det.onnx, 1k3d68.onnx, w600k_r50.onnx) "
    "or antelopev2, unzipped so that the .onnx files are directly in the folder"
)


def _missing_model_fix(role: str) -> str:
    if role == "YuNet detector":
        return (
            "get it with 'facemagic models download yunet' (OpenCV model zoo, face_detection_yunet_2023mar.onnx) "
            "or pass the path of a YuNet .onnx file"
        )
    return f"download the model (e.g. 'facemagic models download buffalo_l') or pass the path of the {role} file"


def _check_model_file(path: Path, role: str) -> Path:
    if not path.exists():
        raise ModelNotFoundError(f"the {role} model file does not exist", where=str(path), fix=_missing_model_fix(role))
    check_input_file(path, what=f"{role} model file", fix=_missing_model_fix(role), error=ModelNotFoundError)
    if path.stat().st_size == 0:
        raise ModelIntegrityError(
            f"the {role} model file is empty", where=str(path), fix="delete it and download it again"
        )
    return path


def _load_insightface_runner(path: Path, role: str, requested: Sequence[runtime.ProviderSpec]) -> Any:
    """Load one ``.onnx`` file with ``insightface.model_zoo.get_model``; FaceMagicError on every failure."""
    path = _check_model_file(Path(path), role)
    if path.suffix != ".onnx":
        raise BadInputError(
            f"the {role} model must be an .onnx file (insightface routes only files named *.onnx)",
            where=str(path),
            fix="rename the file to end in .onnx",
        )
    from insightface.model_zoo import get_model

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # static_shape_sessions=False (insightface 2.1): one session that takes every input size, instead
            # of a second fixed-size copy of the detector per size; older insightface ignores the argument.
            runner = get_model(str(path), providers=runtime.usable_providers(requested), static_shape_sessions=False)
    except FaceMagicError:
        raise
    except Exception as error:  # onnxruntime, protobuf and insightface raise many unrelated types
        text = f"{type(error).__name__}: {error}"
        if any(word in text.lower() for word in ("protobuf", "parse", "truncat", "decodeerror", "no graph")):
            fix = "the file is truncated, damaged or not an ONNX model: delete it and download it again"
        else:
            fix = runtime.check_onnxruntime_install() or (
                "the file may be damaged (delete it and download it again), or the model needs a newer onnxruntime"
            )
        raise ModelIntegrityError(f"cannot load the {role} model: {text}", where=str(path), fix=fix) from error
    if runner is None:
        raise ModelIntegrityError(
            f"the file is not a model insightface knows as a {role}: its input/output shapes match no "
            "detector, landmark model, attribute model or recogniser",
            where=str(path),
            fix="check that the path points to the right file of an insightface pack",
        )
    runtime.report_session_providers(runner.session, requested, f"{role} {path.name}")
    return runner


def _analysis_device(
    device: str | torch.device | None, providers: Sequence[runtime.ProviderSpec] | None
) -> torch.device:
    """The torch device of the analysis models. Without one given: the best device (CUDA, MPS) unless the
    onnxruntime providers asked for are CPU-only (a caller that asked for the CPU keeps to it); a provider
    name that is no torch device (tensorrt, directml, coreml, rocm) leaves the torch models on the CPU, so
    ``"auto"`` runs them through onnxruntime with that provider."""
    if device is None:
        if providers is not None:
            names = [spec if isinstance(spec, str) else spec[0] for spec in _requested_providers(providers)]
            if not any(name in runtime.GPU_PROVIDERS for name in names):
                return torch.device("cpu")
        return _resolve_device("auto")
    if isinstance(device, str) and device.strip().lower() in ("tensorrt", "trt", "directml", "dml", "coreml", "rocm"):
        return torch.device("cpu")
    return _resolve_device(device)


@contextmanager
def _model_errors(what: str, where: str) -> Iterator[None]:
    """onnxruntime's and torch's failures (out of memory first) while running ``what``, as FaceMagicErrors."""
    with runtime.onnxruntime_errors(what, where), torch_models.torch_errors(what, where):
        yield


def _load_model(
    path: Path, role: str, requested: Sequence[runtime.ProviderSpec], model_runtime: str, device: torch.device
) -> Any:
    """The runner of one insightface ``.onnx`` file: in torch when ``model_runtime`` is ``"torch"`` and the
    conversion is verified, else insightface's own (onnxruntime), with a warning when torch was refused."""
    if model_runtime == "torch":
        path = _check_model_file(Path(path), role)
        if path.suffix != ".onnx":  # insightface's loader names the problem
            return _load_insightface_runner(path, role, requested)
        from .hub import onnx_external_data

        onnx_external_data(path)  # weights kept outside the file's folder are refused, as onnxruntime does
        runner, reason = torch_models.load_torch_runner(path, device=device)
        if runner is not None:
            return runner
        if reason:
            logger.warning("the %s %s runs through onnxruntime, not in torch: %s", role, path.name, reason)
    return _load_insightface_runner(Path(path), role, requested)


def _check_role(runner: Any, path: Path, role: str, tasks: tuple[str, ...]) -> None:
    task = str(getattr(runner, "taskname", "?"))
    if task not in tasks:
        raise BadInputError(
            f"the file given as the {role} is a {task} model",
            where=str(path),
            fix=f"pass a {role} model file (insightface task {' or '.join(tasks)})",
        )


#: The outputs OpenCV's FaceDetectorYN asks a YuNet graph for, by name.
YUNET_OUTPUTS = frozenset(f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps") for stride in (8, 16, 32))


def _check_yunet_file(path: Path) -> None:
    """Refuse, before OpenCV reads it, an ONNX file that is no YuNet (a recogniser given as the detector loaded
    and then failed on the first picture with an OpenCV traceback) or that keeps data outside its folder (OpenCV
    follows ``../..`` where onnxruntime refuses)."""
    import onnx

    from .hub import onnx_external_data

    onnx_external_data(path)
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception:  # protobuf's errors: OpenCV then says the file cannot be read
        return
    outputs = [output.name for output in graph.output]
    if YUNET_OUTPUTS.issubset(outputs):
        return
    shapes = [[d.dim_value or d.dim_param for d in o.type.tensor_type.shape.dim] for o in graph.output]
    looks = (
        " (one 512- or 128-wide output: a face recogniser?)"
        if len(shapes) == 1
        and shapes[0][-1:]
        in (
            [512],
            [128],
        )
        else ""
    )
    raise BadInputError(
        f"the file given as the YuNet detector is not a YuNet model: OpenCV's FaceDetectorYN needs the outputs "
        f"cls/obj/bbox/kps_8/16/32, this file has {', '.join(outputs[:6]) or 'none'}{looks}",
        where=str(path),
        fix="pass face_detection_yunet_2023mar.onnx ('facemagic models download yunet') as --detector-model, "
        "or leave --detector-model out",
    )


def _load_yunet(path: Path, threshold: float) -> cv2.FaceDetectorYN:
    path = _check_model_file(Path(path), "YuNet detector")
    _check_yunet_file(path)
    logging_level = cv2.utils.logging.getLogLevel()
    try:
        # OpenCV 5 warns "setPreferableTarget: Targets are not supported by the new graph engine" on every load.
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        # The input size given here is a placeholder: _detect_yunet sets each picture's own size before detecting.
        placeholder_size = (DET_SIZE_STEP, DET_SIZE_STEP)
        detector = cv2.FaceDetectorYN.create(
            str(path), "", placeholder_size, threshold, YUNET_NMS_THRESHOLD, YUNET_TOP_K
        )
    except cv2.error as error:
        raise ModelIntegrityError(
            f"OpenCV cannot load the YuNet detector: {str(error).strip().splitlines()[-1]}",
            where=str(path),
            fix="the file is damaged or not a YuNet ONNX model: download face_detection_yunet_2023mar.onnx again",
        ) from error
    finally:
        cv2.utils.logging.setLogLevel(logging_level)
    logger.info("YuNet face detector %s loaded (OpenCV %s, CPU)", path.name, cv2.__version__)
    return detector


class Recognizer(Protocol):
    """The recogniser interface (shared with the torch runners): aligned crops in, raw embeddings out."""

    input_size: int  # side of the square aligned crop
    template: str  # alignment template name of facemagic_core.align
    embedding_model: str  # registry name of the embedding space, written into identities

    @property
    def device(self) -> torch.device: ...

    def embed(self, crops: torch.Tensor) -> torch.Tensor: ...


def is_recognizer_object(value: object) -> bool:
    """True for an object of the recogniser interface (not a path, not an insightface runner)."""
    return callable(getattr(value, "embed", None)) and isinstance(getattr(value, "input_size", None), int)


def _recognizer_label(recognizer: Any) -> str:
    if recognizer is None:
        return "none"
    if is_recognizer_object(recognizer):
        return str(getattr(recognizer, "embedding_model", type(recognizer).__name__))
    return Path(recognizer.model_file).name


def _embed_with_object(recognizer: Recognizer, crops: torch.Tensor) -> FloatArray:
    """Raw embeddings ``(B, D)`` from a recogniser object, in chunks of :data:`RECOGNIZER_CHUNK`, as float32 numpy."""
    size = int(recognizer.input_size)
    if crops.ndim != 4 or tuple(crops.shape[1:]) != (3, size, size):
        raise BadInputError(
            f"the recogniser takes (B, 3, {size}, {size}) crops, got {tuple(crops.shape)}",
            where=recognizer.embedding_model,
            fix=f"align the faces with align_faces(..., {size}, {recognizer.template!r})",
        )
    outputs = []
    with torch.no_grad():
        for start in range(0, crops.shape[0], RECOGNIZER_CHUNK):
            part = crops[start : start + RECOGNIZER_CHUNK].to(device=recognizer.device, dtype=torch.float32)
            outputs.append(recognizer.embed(part.clamp(0.0, 1.0)).detach().to("cpu", torch.float32))
    vectors = torch.cat(outputs).reshape(crops.shape[0], -1).numpy() if outputs else np.zeros((0, 0), np.float32)
    if not np.all(np.isfinite(vectors)):
        bad = np.flatnonzero(~np.all(np.isfinite(vectors), axis=1)).tolist()
        raise ModelIntegrityError(
            f"the recogniser returned NaN or infinite embeddings for crops {bad} of {crops.shape[0]}",
            where=recognizer.embedding_model,
            fix="the model file is damaged: delete it and download it again",
        )
    return np.ascontiguousarray(vectors, dtype=np.float32)


def _insightface_face(face: Face) -> Any:
    """insightface's own Face record (what its runners read and write) for one of our faces."""
    from insightface.app.common import Face as InsightFace

    return InsightFace(bbox=face.bbox.astype(np.float32), kps=face.landmarks_5.astype(np.float32), det_score=face.score)


class FaceAnalyzer:
    """Finds faces in image batches and describes them (landmarks, pose, embedding).

    Build it from files (``FaceAnalyzer(backend="yunet", detector=path, recognizer=path)``) or
    from an insightface pack folder (:meth:`from_pack`). Models load once here; the analyzer
    keeps no per-call state, so one instance serves many calls.
    """

    backend: Backend
    embedding_model: str
    det_size: int
    det_threshold: float
    detector_path: Path

    def __init__(
        self,
        *,
        backend: Backend,
        detector: Path,
        recognizer: Path | Recognizer | None = None,
        landmarks_106: Path | None = None,
        landmarks_3d68: Path | None = None,
        genderage: Path | None = None,
        providers: Sequence[runtime.ProviderSpec] | None = None,
        det_size: int = 640,
        det_threshold: float = 0.5,
        embedding_model: str = "arcface_w600k_r50",
        runtime: ModelRuntime = "auto",
        device: str | torch.device | None = None,
    ) -> None:
        """``det_size``: the detector's input side (SCRFD letterboxes to ``det_size`` squared; YuNet
        scales pictures whose long side exceeds it down to it). ``det_threshold``: the lowest
        detection score kept. ``providers``: onnxruntime providers (short or full names),
        default the best available, CPU last. ``embedding_model``: the registry name of the
        recogniser's embedding space, written into identities made from these faces.
        ``runtime``: where the insightface models run (``"torch"``, ``"onnxruntime"``, ``"auto"``:
        torch on an accelerator, onnxruntime on a CPU); ``device``: the torch device (default:
        the best available, or the CPU when ``providers`` are CPU-only).
        ``recognizer`` is an ArcFace ``.onnx`` path, or any object of the recogniser interface
        (:class:`Recognizer`, e.g. :class:`~facemagic_core.dlib_resnet.DlibRecognizer`), whose own
        ``embedding_model`` is then used."""
        if backend not in BACKENDS:
            raise BadInputError(f"unknown analyzer backend {backend!r}", fix=f"use one of {', '.join(BACKENDS)}")
        requested = _requested_providers(providers)
        torch_device = _analysis_device(device, providers)
        model_runtime = torch_models.choose_runtime(str(runtime), torch_device)
        detector_runner = None
        yunet = None
        if backend == "insightface":
            detector_runner = _load_model(Path(detector), "face detector", requested, model_runtime, torch_device)
            _check_role(detector_runner, Path(detector), "face detector", ("detection",))
        else:
            yunet = _load_yunet(Path(detector), det_threshold)
        runners: dict[str, Any] = {}
        recognizer_path: Path | None = None
        if recognizer is not None and is_recognizer_object(recognizer):
            runners["recognizer"] = recognizer
            embedding_model = str(getattr(recognizer, "embedding_model", embedding_model))
        elif recognizer is not None:
            recognizer_path = Path(recognizer)  # type: ignore[arg-type]
        for role, path, tasks in (
            ("recognizer", recognizer_path, ("recognition",)),
            ("landmarks_106", landmarks_106, ("landmark_2d_106",)),
            ("landmarks_3d68", landmarks_3d68, ("landmark_3d_68",)),
            ("genderage", genderage, ("genderage",)),
        ):
            if path is not None:
                label = {"recognizer": "face recogniser", "genderage": "gender/age model"}.get(
                    role, f"{role.replace('_', ' ')} model"
                )
                runners[role] = _load_model(Path(path), label, requested, model_runtime, torch_device)
                _check_role(runners[role], Path(path), label, tasks)
        if isinstance(runners.get("recognizer"), TorchRecognizer):
            runners["recognizer"].embedding_model = embedding_model
        self._setup(
            backend=backend,
            detector_path=Path(detector),
            detector=detector_runner,
            yunet=yunet,
            recognizer=runners.get("recognizer"),
            landmarks_106=runners.get("landmarks_106"),
            landmarks_3d68=runners.get("landmarks_3d68"),
            genderage=runners.get("genderage"),
            det_size=det_size,
            det_threshold=det_threshold,
            embedding_model=embedding_model,
            device=torch_device,
            runtime=str(runtime),
        )

    def _setup(
        self,
        *,
        backend: Backend,
        detector_path: Path,
        detector: Any,
        yunet: cv2.FaceDetectorYN | None,
        recognizer: Any,
        landmarks_106: Any,
        landmarks_3d68: Any,
        genderage: Any,
        det_size: int,
        det_threshold: float,
        embedding_model: str,
        device: torch.device,
        runtime: str,
    ) -> None:
        if (
            isinstance(det_size, bool)
            or not isinstance(det_size, int)
            or det_size < MIN_DET_SIZE
            or det_size % DET_SIZE_STEP
        ):
            raise BadInputError(
                f"det_size must be a multiple of {DET_SIZE_STEP} of at least {MIN_DET_SIZE}, got {det_size!r}",
                where="face analyzer",
                fix="use 640 (the default), 320 for speed or 1024 for small faces",
            )
        if not 0.0 < float(det_threshold) < 1.0:
            raise BadInputError(
                f"det_threshold must lie between 0 and 1, got {det_threshold!r}", where="face analyzer", fix="use 0.5"
            )
        if detector is not None and not getattr(detector, "use_kps", True):
            raise ModelIntegrityError(
                "the face detector gives no 5-point landmarks, which alignment needs",
                where=str(getattr(detector, "model_file", "detector")),
                fix="use an SCRFD model with keypoints (det_10g.onnx, scrfd_10g_bnkps.onnx)",
            )
        if recognizer is not None and not is_recognizer_object(recognizer):
            width, height = recognizer.input_size
            if width != height:
                raise ModelIntegrityError(
                    f"the recogniser takes {width}x{height} crops; only square crops are supported",
                    where=str(recognizer.model_file),
                )
        self.backend = backend
        self.detector_path = detector_path
        self.det_size = int(det_size)
        self.det_threshold = float(det_threshold)
        self.embedding_model = embedding_model
        self._detector = detector
        self._yunet = yunet
        self._recognizer = recognizer
        self._landmarks_106 = landmarks_106
        self._landmarks_3d68 = landmarks_3d68
        self._genderage = genderage
        self.device = device
        self.runtime = runtime
        if detector is not None and not isinstance(detector, TorchFaceDetector):
            detector.prepare(0, input_size=(self.det_size, self.det_size), det_thresh=self.det_threshold)
        logger.info(
            "face analyzer ready: %s detector, landmarks %s, gender/age %s, recogniser %s (%s); runtimes: %s",
            backend,
            "+".join(name for name, runner in (("106", landmarks_106), ("3d68", landmarks_3d68)) if runner) or "5",
            "yes" if genderage is not None else "no",
            _recognizer_label(recognizer),
            embedding_model,
            ", ".join(f"{role} {where}" for role, where in self.model_runtimes.items()) or "none",
        )

    @classmethod
    def from_pack(
        cls,
        pack_dir: Path,
        *,
        providers: Sequence[runtime.ProviderSpec] | None = None,
        det_size: int = 640,
        det_threshold: float = 0.5,
        embedding_model: str | None = None,
        runtime: ModelRuntime = "auto",
        device: str | torch.device | None = None,
    ) -> FaceAnalyzer:
        """An insightface-backend analyzer from a pack folder (buffalo_l, antelopev2...).

        Every ``.onnx`` file of the folder is routed by insightface's ``get_model`` (by its
        input/output shapes, so file names do not matter); the detector, the 106-point and
        68-point landmark models, the genderage model and the recogniser are kept, swappers
        are skipped. ``embedding_model`` defaults to the registry name matching
        the recogniser's file name (w600k_r50 -> arcface_w600k_r50). ``runtime`` and ``device``:
        as for the constructor.
        """
        folder = Path(pack_dir)
        if not folder.is_dir():
            raise ModelNotFoundError(
                "the insightface model pack folder does not exist", where=str(folder), fix=_PACK_HELP
            )
        files = sorted(path for path in folder.iterdir() if path.suffix == ".onnx" and path.is_file())
        requested = _requested_providers(providers)
        torch_device = _analysis_device(device, providers)
        model_runtime = torch_models.choose_runtime(str(runtime), torch_device)
        roles: dict[str, tuple[Path, Any]] = {}
        for path in files:
            if path.stem.lower().startswith(_PACK_SKIP_PREFIXES):
                logger.debug("pack %s: %s is not an analysis model; not loaded", folder.name, path.name)
                continue
            runner = _load_model(path, f"model of pack {folder.name}", requested, model_runtime, torch_device)
            task = str(getattr(runner, "taskname", ""))
            role = {
                "detection": "detector",
                "recognition": "recognizer",
                "landmark_2d_106": "landmarks_106",
                "landmark_3d_68": "landmarks_3d68",
                "genderage": "genderage",
            }.get(task)
            if role is None:
                logger.debug("pack %s: %s is a %s model; not used", folder.name, path.name, task)
                continue
            if role in roles:
                logger.warning(
                    "pack %s holds two %s models, %s and %s; using %s",
                    folder.name,
                    role,
                    roles[role][0].name,
                    path.name,
                    roles[role][0].name,
                )
                continue
            roles[role] = (path, runner)
        if "detector" not in roles:
            found = ", ".join(path.name for path in files) or "no .onnx files"
            raise ModelNotFoundError(
                f"the model pack folder has no face detector (found: {found})", where=str(folder), fix=_PACK_HELP
            )
        recognizer = roles.get("recognizer")
        if embedding_model is None:
            stem = recognizer[0].stem.lower() if recognizer else "w600k_r50"
            embedding_model = PACK_EMBEDDING_MODELS.get(stem, f"arcface_{stem}")
        if recognizer and isinstance(recognizer[1], TorchRecognizer):
            recognizer[1].embedding_model = embedding_model
        analyzer = cls.__new__(cls)
        analyzer._setup(
            backend="insightface",
            detector_path=roles["detector"][0],
            detector=roles["detector"][1],
            yunet=None,
            recognizer=recognizer[1] if recognizer else None,
            landmarks_106=roles.get("landmarks_106", (None, None))[1],
            landmarks_3d68=roles.get("landmarks_3d68", (None, None))[1],
            genderage=roles.get("genderage", (None, None))[1],
            det_size=det_size,
            det_threshold=det_threshold,
            embedding_model=embedding_model,
            device=torch_device,
            runtime=str(runtime),
        )
        return analyzer

    # -----------------------------------------------------------------------------------------
    # What the analyzer can do

    @property
    def model_runtimes(self) -> dict[str, str]:
        """Where each model runs, by role: ``"torch on cuda:0"``, ``"onnxruntime (CPUExecutionProvider)"``..."""
        described = torch_models.describe_runtimes(
            {
                "detector": self._detector,
                "landmarks_106": self._landmarks_106,
                "landmarks_3d68": self._landmarks_3d68,
                "genderage": self._genderage,
                "recognizer": self._recognizer,
            }
        )
        if self._yunet is not None:
            described = {"detector": "OpenCV (CPU)", **described}
        return described

    @property
    def _uses_device_frames(self) -> bool:
        """Whether a model runs in torch, so the frames go to :attr:`device` (once, as bytes)."""
        return any(
            isinstance(runner, TorchFaceDetector | TorchLandmarks | TorchGenderAge | TorchRecognizer)
            for runner in (self._detector, self._landmarks_106, self._landmarks_3d68, self._genderage, self._recognizer)
        )

    @property
    def has_recognizer(self) -> bool:
        return self._recognizer is not None

    @property
    def has_dense_landmarks(self) -> bool:
        return self._landmarks_106 is not None or self._landmarks_3d68 is not None

    @property
    def has_genderage(self) -> bool:
        """Whether faces get a ``gender`` and an ``age`` (the pack's genderage model is loaded)."""
        return self._genderage is not None

    @property
    def recognizer_input_size(self) -> int | None:
        """Side of the aligned crop the recogniser takes (112 for ArcFace), or None without one."""
        if self._recognizer is None:
            return None
        if is_recognizer_object(self._recognizer):
            return int(self._recognizer.input_size)
        return int(self._recognizer.input_size[0])

    def __repr__(self) -> str:
        parts = [f"backend={self.backend!r}", f"det_size={self.det_size}", f"det_threshold={self.det_threshold}"]
        if self._recognizer is not None:
            parts.append(f"recognizer={_recognizer_label(self._recognizer)!r}")
        parts.append(f"embedding_model={self.embedding_model!r}")
        return f"FaceAnalyzer({', '.join(parts)})"

    # -----------------------------------------------------------------------------------------
    # Pipeline

    def detect_faces(self, images: torch.Tensor) -> list[list[Face]]:
        """The faces of every image of a ``(B, 3, H, W)`` batch, each list sorted by score, best first.

        Faces carry a box, a score and 5 landmarks; an image without faces gives an empty list.
        """
        check_images(images, where="images to analyse", allow_bytes=True)
        with _model_errors("the face detector", str(self.detector_path)):
            return self._detect(_Frames(images, self.device))

    #: :meth:`analyze` and :meth:`embed_faces` take ``scan=False`` for frames the caller has checked already.
    takes_checked_frames = True

    def analyze(
        self,
        images: torch.Tensor,
        *,
        landmarks: bool = True,
        embeddings: bool = True,
        attributes: bool = True,
        scan: bool = True,
    ) -> list[list[Face]]:
        """:meth:`detect_faces`, then dense landmarks and pose (when the analyzer has those models
        and ``landmarks``), gender and age (when it has a genderage model and ``attributes``), then
        embeddings of all faces in one batched call (when it has a recogniser and ``embeddings``).
        Models that run in torch take every face of the batch at once. ``scan=False``: the pixels were
        checked by :func:`images.check_images` already (NaN, range); shape, size and dtype are still checked."""
        check_images(images, where="images to analyse", allow_bytes=True, scan=scan)
        with _model_errors("the face analysis models", str(self.detector_path)):
            return self._analyze_checked(images, landmarks=landmarks, embeddings=embeddings, attributes=attributes)

    def _analyze_checked(
        self, images: torch.Tensor, *, landmarks: bool, embeddings: bool, attributes: bool
    ) -> list[list[Face]]:
        # A frame's BGR copy is kept for the later stages only when one of them runs face by face on it.
        runners = ([self._landmarks_3d68, self._landmarks_106] if landmarks else []) + (
            [self._genderage] if attributes else []
        )
        reads_bgr = any(
            runner is not None and not isinstance(runner, TorchLandmarks | TorchGenderAge) for runner in runners
        )
        frames = _Frames(images, self.device, keep_bgr=reads_bgr)
        per_image = self._detect(frames)
        flat = [face for faces in per_image for face in faces]
        if landmarks and self.has_dense_landmarks:
            flat = self._add_landmarks(frames, flat)
        if attributes and self._genderage is not None:
            flat = self._add_gender_age(frames, flat)
        if embeddings and self._recognizer is not None:
            flat = self._embed_frames(frames, flat)
        faces = iter(flat)
        return [[next(faces) for _ in found] for found in per_image]

    def embed_faces(self, images: torch.Tensor, faces: Sequence[Face], *, scan: bool = True) -> list[Face]:
        """Copies of ``faces`` with their raw recogniser embedding, computed for all faces at once.

        Each face is aligned to the ArcFace template at the recogniser's input size from
        ``images[face.image_index]`` (torch, on the images' device), then all crops go through
        the recogniser together (in chunks of :data:`RECOGNIZER_CHUNK`).
        """
        if self._recognizer is None:
            raise ModelNotFoundError(
                "this face analyzer has no recogniser, so it cannot compute identity embeddings",
                where=repr(self),
                fix="pass recognizer=<w600k_r50.onnx> or load a pack that contains one (buffalo_l)",
            )
        check_images(images, where="images to embed", allow_bytes=True, scan=scan)
        with _model_errors("the face recogniser", repr(self)):
            return self._embed_frames(_Frames(images, self.device), faces)

    def _embed_frames(self, frames: _Frames, faces: Sequence[Face]) -> list[Face]:
        """:meth:`embed_faces` for images already checked (each check reads every pixel once)."""
        if self._recognizer is None or not faces:
            return [*faces]
        size = int(self.recognizer_input_size or 0)
        template = str(getattr(self._recognizer, "template", "arcface"))
        if is_byte_frames(frames.images):  # alignment converts only the face regions
            source = frames.images.to(self.device) if self._uses_device_frames else frames.images
        else:
            source = frames.unit() if self._uses_device_frames else frames.images
        crops, _ = align_faces(source, faces, size, template, scan=False)  # type: ignore[arg-type]  # checked
        vectors = self.forward_recognizer(crops)
        return [replace(face, embedding=vectors[i]) for i, face in enumerate(faces)]

    def forward_recognizer(self, crops: torch.Tensor) -> FloatArray:
        """Raw embeddings ``(B, D)`` float32 of aligned ``(B, 3, S, S)`` RGB crops in [0, 1].

        Reproduces the runner's ``get_feat`` pre-processing on the whole batch: RGB values
        scaled to 0..255, minus ``input_mean``, divided by ``input_std`` (127.5 and 127.5 for
        ArcFace files, 0 and 1 for files that normalise inside their graph).
        """
        runner = self._recognizer
        if runner is None:
            raise ModelNotFoundError("this face analyzer has no recogniser", where=repr(self))
        if is_recognizer_object(runner):
            return _embed_with_object(runner, crops)
        size = int(runner.input_size[0])
        if crops.ndim != 4 or tuple(crops.shape[1:]) != (3, size, size):
            raise BadInputError(
                f"the recogniser takes (B, 3, {size}, {size}) crops, got {tuple(crops.shape)}",
                where=Path(runner.model_file).name,
                fix="align the faces with align_faces(..., size, 'arcface')",
            )
        pixels = crops.detach().to(device="cpu", dtype=torch.float32).clamp(0.0, 1.0) * 255.0
        blob = ((pixels - float(runner.input_mean)) / float(runner.input_std)).numpy()
        fixed_batch = runner.input_shape[0] if isinstance(runner.input_shape[0], int) else None
        chunk = fixed_batch if fixed_batch and fixed_batch > 0 else RECOGNIZER_CHUNK
        outputs = []
        for start in range(0, blob.shape[0], chunk):
            part = np.ascontiguousarray(blob[start : start + chunk], dtype=np.float32)
            outputs.append(runner.session.run(runner.output_names, {runner.input_name: part})[0])
        vectors = np.concatenate(outputs, axis=0).astype(np.float32).reshape(blob.shape[0], -1)
        if not np.all(np.isfinite(vectors)):
            bad = np.flatnonzero(~np.all(np.isfinite(vectors), axis=1)).tolist()
            raise ModelIntegrityError(
                f"the recogniser returned NaN or infinite embeddings for crops {bad} of {blob.shape[0]}",
                where=str(runner.model_file),
                fix="the model file is damaged or not an ArcFace recogniser: delete it and download it again",
            )
        return np.ascontiguousarray(vectors)

    # -----------------------------------------------------------------------------------------
    # Detection: the whole batch in torch, or per image (insightface's runner, YuNet)

    def _detect(self, frames: _Frames) -> list[list[Face]]:
        if not isinstance(self._detector, TorchFaceDetector):
            return [self._detect_image(frames.bgr(index), index) for index in range(frames.count)]
        found = self._detector.detect(frames.pixels(), det_size=self.det_size, threshold=self.det_threshold)
        counts = [int(item.scores.shape[0]) for item in found]
        boxes = torch.cat([item.boxes for item in found]).cpu().numpy()  # one transfer for the whole batch
        scores = torch.cat([item.scores for item in found]).cpu().numpy()
        points = torch.cat([item.landmarks for item in found]).cpu().numpy()
        per_image, start = [], 0
        for index, count in enumerate(counts):
            per_image.append(
                [
                    Face(
                        bbox=np.asarray(boxes[row], dtype=np.float32),
                        score=float(scores[row]),
                        landmarks_5=np.asarray(points[row], dtype=np.float32).reshape(5, 2),
                        image_index=index,
                    )
                    for row in range(start, start + count)
                ]
            )
            logger.debug("image %d: %d face(s)", index, count)
            start += count
        return per_image

    def _detect_image(self, bgr: np.ndarray, image_index: int) -> list[Face]:
        if self._yunet is not None:
            faces = self._detect_yunet(self._yunet, bgr, image_index)
        else:
            boxes, points = self._detector.detect(bgr, input_size=(self.det_size, self.det_size))
            faces = [
                Face(
                    bbox=np.asarray(boxes[i, :4], dtype=np.float32),
                    score=float(boxes[i, 4]),
                    landmarks_5=np.asarray(points[i], dtype=np.float32).reshape(5, 2),
                    image_index=image_index,
                )
                for i in range(boxes.shape[0])
            ]
        faces.sort(key=lambda face: -face.score)
        logger.debug("image %d: %d face(s)", image_index, len(faces))
        return faces

    def _detect_yunet(self, yunet: cv2.FaceDetectorYN, bgr: np.ndarray, image_index: int) -> list[Face]:
        height, width = bgr.shape[:2]
        scale = min(1.0, self.det_size / max(height, width))
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            picture = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        else:
            picture = bgr
        small_h, small_w = picture.shape[:2]
        try:
            yunet.setInputSize((small_w, small_h))
            _, rows = yunet.detect(picture)
        except cv2.error as error:
            raise ModelIntegrityError(
                f"OpenCV's YuNet detector failed: {str(error).strip().splitlines()[-1]}",
                where=f"{self.detector_path}, image {image_index + 1}",
                fix="the detector file is damaged or not a YuNet model: download face_detection_yunet_2023mar.onnx",
            ) from error
        if rows is None:
            return []
        # Back to the full image, pixel centres at integers: x = (x_small + 0.5) * width / small_w - 0.5.
        factor = np.array([width / small_w, height / small_h], dtype=np.float64)
        faces = []
        for row in np.asarray(rows, dtype=np.float64):  # x, y, width, height, 5 landmarks (x, y), score
            corners = np.array([[row[0], row[1]], [row[0] + row[2], row[1] + row[3]]])
            # YuNet's order is the subject's right eye, left eye, nose, right and left mouth corner: for a face
            # looking at the camera that is image-left first, which is the order of Face.landmarks_5.
            points = row[4:14].reshape(5, 2)
            faces.append(
                Face(
                    bbox=((corners + 0.5) * factor - 0.5).reshape(4).astype(np.float32),
                    score=float(row[14]),
                    landmarks_5=((points + 0.5) * factor - 0.5).astype(np.float32),
                    image_index=image_index,
                )
            )
        return faces

    # -----------------------------------------------------------------------------------------
    # Landmarks, pose, gender and age: every face at once in torch, or face by face (insightface's runners)

    def _add_landmarks(self, frames: _Frames, faces: list[Face]) -> list[Face]:
        """Dense landmarks (106 points when that model is loaded, else the 68) and the 3D-68 pose."""
        landmarks: list[np.ndarray | None] = [face.landmarks for face in faces]
        poses: list[tuple[float, float, float] | None] = [None] * len(faces)
        if not faces:
            return faces
        if self._landmarks_3d68 is not None:
            points, pitch_yaw_roll = self._landmarks_of(self._landmarks_3d68, frames, faces)
            for i, (face_points, angles) in enumerate(zip(points, pitch_yaw_roll, strict=True)):
                landmarks[i] = np.ascontiguousarray(face_points[:, :2], dtype=np.float32)
                if angles is not None and all(math.isfinite(float(value)) for value in angles):
                    pitch, yaw, roll = (float(value) for value in angles)
                    poses[i] = (yaw, pitch, roll)
        if self._landmarks_106 is not None:
            points, _ = self._landmarks_of(self._landmarks_106, frames, faces)
            landmarks = [np.ascontiguousarray(face_points[:, :2], dtype=np.float32) for face_points in points]
        return [replace(face, landmarks=landmarks[i], pose=poses[i]) for i, face in enumerate(faces)]

    def _landmarks_of(
        self, runner: Any, frames: _Frames, faces: list[Face]
    ) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
        """Each face's points ``(N, 2 or 3)`` and, for a 3D model, its (pitch, yaw, roll)."""
        if isinstance(runner, TorchLandmarks):
            boxes, index = _boxes_and_index(faces, runner.device)
            points, pose = runner.predict(frames.pixels(), boxes, index)
            angles = pose.cpu().numpy() if pose is not None else None
            return list(points.cpu().numpy()), [None if angles is None else angles[i] for i in range(len(faces))]
        all_points, all_angles = [], []
        for face in faces:
            record = _insightface_face(face)
            all_points.append(np.asarray(runner.get(frames.bgr(face.image_index), record), dtype=np.float32))
            all_angles.append(None if record.pose is None else np.asarray(record.pose, dtype=np.float64))
        return all_points, all_angles

    def _add_gender_age(self, frames: _Frames, faces: list[Face]) -> list[Face]:
        """``gender`` and ``age`` from the genderage model (insightface: class 0 female, 1 male; age x 100)."""
        if not faces:
            return faces
        if isinstance(self._genderage, TorchGenderAge):
            boxes, index = _boxes_and_index(faces, self._genderage.device)
            genders, ages = (values.cpu().tolist() for values in self._genderage.predict(frames.pixels(), boxes, index))
        else:
            readings = [self._genderage.get(frames.bgr(face.image_index), _insightface_face(face)) for face in faces]
            genders, ages = [int(gender) for gender, _ in readings], [int(age) for _, age in readings]
        return [
            replace(face, gender="male" if int(gender) == 1 else "female", age=int(age))
            for face, gender, age in zip(faces, genders, ages, strict=True)
        ]


class _Frames:
    """One checked image batch in the forms the runners read, each made once: pixel values 0..255 on the
    torch models' device (the frames cross to it once, as bytes) and per-image ``uint8`` BGR arrays."""

    def __init__(self, images: torch.Tensor, device: torch.device, *, keep_bgr: bool = False) -> None:
        self.images = images
        self.device = device
        self.keep_bgr = keep_bgr  # keep each BGR copy once made (for runners that read it again), else make it anew
        self.count = int(images.shape[0])
        self._pixels: torch.Tensor | None = None
        self._bgr: dict[int, np.ndarray] = {}

    def pixels(self) -> torch.Tensor:
        """``(B, 3, H, W)`` float32 RGB 0..255 (whole numbers, rounded as :func:`tensor_to_bgr_uint8` does)."""
        if self._pixels is None:
            # float frames in [0, 1] become bytes first (the values insightface's runners see); byte frames are so
            as_bytes = self.images.detach() if is_byte_frames(self.images) else float_to_bytes(self.images)
            self._pixels = as_bytes.to(self.device).float()
        return self._pixels

    def unit(self) -> torch.Tensor:
        """:meth:`pixels` in [0, 1] (what alignment warps for the recogniser)."""
        return self.pixels() / 255.0

    def bgr(self, index: int) -> np.ndarray:
        if not self.keep_bgr:
            return tensor_to_bgr_uint8(self.images[index])
        if index not in self._bgr:
            self._bgr[index] = tensor_to_bgr_uint8(self.images[index])
        return self._bgr[index]


def _boxes_and_index(faces: Sequence[Face], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(F, 4)`` boxes and ``(F,)`` image indices of ``faces``, on ``device``."""
    boxes = torch.from_numpy(np.stack([np.asarray(face.bbox, dtype=np.float32) for face in faces]))
    index = torch.tensor([int(face.image_index) for face in faces], dtype=torch.long)
    return boxes.to(device), index.to(device)


# ---------------------------------------------------------------------------------------------
# Choosing faces


def sort_faces(faces: Sequence[Face], order: FaceOrder) -> list[Face]:
    """``faces`` sorted by ``order`` (a stable sort: ties keep their order, usually best score first)."""
    keys = {
        "largest": lambda face: -face.size,
        "smallest": lambda face: face.size,
        "left_to_right": lambda face: face.center[0],
        "right_to_left": lambda face: -face.center[0],
        "top_to_bottom": lambda face: face.center[1],
        "bottom_to_top": lambda face: -face.center[1],
        "best_score": lambda face: -face.score,
    }
    if order not in keys:
        raise BadInputError(f"unknown face order {order!r}", where="face selection", fix=f"use one of {FACE_ORDERS}")
    return sorted(faces, key=keys[order])


#: What faces can be compared with: an embedding vector (numpy or torch) or an identity (its mean row).
Reference = np.ndarray | torch.Tensor | Identity


def _reference_vector(reference: Reference) -> FloatArray:
    if isinstance(reference, Identity):
        return reference.mean_embedding()
    if isinstance(reference, torch.Tensor):
        reference = reference.detach().to("cpu", torch.float32).numpy()
    try:
        return np.asarray(reference, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as error:
        raise BadInputError(
            f"the reference must be an embedding or an identity, got {type(reference).__name__}",
            where="face selection",
            fix="pass an Identity (extract_identity, load_identity) or a face's embedding",
        ) from error


def face_similarities(faces: Sequence[Face], reference: Reference) -> FloatArray:
    """Cosine similarity of every face's embedding to ``reference``, ``(len(faces),)`` float32.

    ``reference`` is an embedding ``(D,)`` (numpy or torch) or an :class:`Identity` (compared
    through its mean row).
    """
    vector = _reference_vector(reference)
    if vector.size == 0 or not np.all(np.isfinite(vector)) or float(np.linalg.norm(vector)) < 1e-12:
        raise BadInputError(
            "the reference embedding is empty, all zeros or not finite",
            where="face selection",
            fix="use an embedding from extract_identity or a face analysed with a recogniser",
        )
    vector = vector / np.float32(np.linalg.norm(vector))
    similarities = np.empty(len(faces), dtype=np.float32)
    for i, face in enumerate(faces):
        if face.embedding is None:
            raise BadInputError(
                "a face has no embedding to compare with the reference",
                where=f"image {face.image_index}, face {i}",
                fix="analyse the images with an analyzer that has a recogniser (analyze(..., embeddings=True))",
            )
        embedding = np.asarray(face.embedding, dtype=np.float32).reshape(-1)
        if embedding.shape != vector.shape:
            raise BadInputError(
                f"the face embedding has {embedding.size} numbers but the reference has {vector.size}",
                where=f"image {face.image_index}, face {i}",
                fix="compare embeddings made by the same recogniser",
            )
        similarities[i] = float(embedding @ vector) / max(float(np.linalg.norm(embedding)), 1e-12)
    return similarities


def select_faces(
    faces: Sequence[Face],
    *,
    order: FaceOrder = "largest",
    index: int | Sequence[int] | None = 0,
    reference: Reference | None = None,
    min_similarity: float | None = None,
) -> list[Face]:
    """Choose faces of one image.

    Without ``reference`` the faces are sorted by ``order``; with it (an embedding or an
    :class:`Identity`) they are sorted by cosine similarity to it, most similar first
    (``order`` is then not used), and faces below ``min_similarity`` are dropped. ``index``
    then picks: an int (0 = first), several ints (in that order), or None for all. Indices
    beyond the faces found are skipped, so the result may be empty; callers that need a face
    raise NoFaceError.
    """
    if reference is not None:
        similarities = face_similarities(faces, reference)
        ranked = sorted(range(len(faces)), key=lambda i: -float(similarities[i]))
        if min_similarity is not None:
            ranked = [i for i in ranked if similarities[i] >= float(min_similarity)]
        candidates = [faces[i] for i in ranked]
    else:
        if min_similarity is not None:
            raise BadInputError(
                "min_similarity needs a reference embedding to compare with",
                where="face selection",
                fix="pass reference=<embedding> or leave min_similarity out",
            )
        candidates = sort_faces(faces, order)
    if index is None:
        return candidates
    indices = [index] if isinstance(index, int | np.integer) else list(index)
    for value in indices:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise BadInputError(
                f"face indices are whole numbers from 0, got {value!r}",
                where="face selection",
                fix="use 0 for the first face, 1 for the second...",
            )
    return [candidates[int(value)] for value in indices if int(value) < len(candidates)]
