"""Swap quality: how much of the source's identity a result carries, and how much of the target it keeps.

For every swap, given as a :class:`SwapSample` (a source photo, the target frame(s) and the
result frame(s), all ``(N, 3, H, W)`` RGB in [0, 1]), :func:`evaluate_swaps` measures:

- **identity**: cosine similarity of the result's face to the source's face and to the target's
  face, and the similarity the swap started from (target to source). They are measured by a
  recogniser *other than the one that drove the swap* (a generator trained against ArcFace is
  judged by dlib's ResNet and vice versa): the swap's own recogniser is what the generator was
  optimised to please, so its score says little. :func:`check_independent_recognizer` refuses
  (or, when asked, warns about) the same recogniser on both sides.
- **ID retrieval top-1** (the FaceForensics++ protocol of FaceShifter and SimSwap): every result
  face is matched to the nearest of all the sources of the evaluation; it counts when that is
  its own source. With one source the number says nothing, and the report says so.
- **pose error**: absolute yaw, pitch and roll differences (degrees) between result and target,
  from :func:`facemagic_core.pose.estimate_head_pose` on 68 landmarks (face-api's landmark net
  when given, else the detector's five points);
- **landmark error**: the normalised mean error (NME, fraction of the face size) between the
  result's and the target's landmarks; **expression error**: the same on the eyes and the mouth;
- **flicker** (videos): the mean absolute frame-to-frame change of the result's face that the
  target's face does not have, ``mean |(R[t] - R[t-1]) - (T[t] - T[t-1])|`` in 0..255 units, with
  both cropped through the target's face boxes (so a result equal to its target has none).

The result's face is the one that overlaps the target's face best (the swap keeps its place).
The report (:class:`QualityReport`) formats as a text table, CSV and JSON, and draws a plot
(:func:`draw_quality_plot`, Pillow only: a picture the Swap Quality node shows as an IMAGE).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, ImageDraw, ImageFont

from .align import align_faces
from .errors import BadInputError, NoFaceError
from .images import check_images
from .pose import estimate_head_pose, landmark_distance, region_distances
from .types import Face

logger = logging.getLogger(__name__)

#: Smallest box overlap (IoU) for a face of the result to count as the swapped target face.
MIN_FACE_OVERLAP = 0.3
#: Facial regions whose landmarks carry the expression.
EXPRESSION_REGIONS = ("eyes", "mouth")
#: Side of the crops compared for flicker (pixels).
FLICKER_CROP = 112
#: Recognisers known to this module, with the family they belong to (two of one family are not independent).
RECOGNIZER_FAMILIES = {
    "arcface_w600k_r50": "arcface",
    "arcface_glintr100": "arcface",
    "arcface_w600k_mbf": "arcface",
    "dlib_resnet_v1": "dlib",
}


class AnalyzerLike(Protocol):
    """What evaluation needs of a face analyzer (:class:`~facemagic_core.analysis.FaceAnalyzer`)."""

    @property
    def embedding_model(self) -> str: ...

    def analyze(self, images: torch.Tensor, *, landmarks: bool = True, embeddings: bool = True) -> list[list[Face]]: ...


class LandmarkerLike(Protocol):
    """A dense landmarker (:class:`~facemagic_core.landmarks68.Landmarker68`)."""

    def locate(self, images: torch.Tensor, faces: Sequence[Face]) -> torch.Tensor: ...


# ---------------------------------------------------------------------------------------------
# Inputs and results


@dataclass(frozen=True, eq=False)
class SwapSample:
    """One swap to judge: a source photo, the target frame(s) and the result frame(s).

    ``source`` is ``(1, 3, H, W)`` (its largest face is the source face); ``target`` and ``result``
    are ``(N, 3, H, W)`` batches of the same length (N > 1 for a video). ``source_name`` groups
    samples that share a source (the candidates of ID retrieval); it defaults to ``name``.
    """

    name: str
    source: torch.Tensor
    target: torch.Tensor
    result: torch.Tensor
    source_name: str = ""


@dataclass(frozen=True)
class SwapQuality:
    """The measurements of one :class:`SwapSample` (means over its frames; NaN where nothing was measured)."""

    name: str
    source_name: str
    frames: int  # frames of the target
    faces: int  # frames where both the target's face and the result's face were found
    source_similarity: float  # result to source (higher = more of the source's identity)
    target_similarity: float  # result to target (lower = less of the target's identity left)
    before_similarity: float  # target to source: where the swap started
    retrieval: float  # fraction of the result faces whose nearest source is their own
    retrieved: str  # the source most result faces were nearest to
    yaw_error: float  # mean absolute difference to the target, degrees
    pitch_error: float
    roll_error: float
    landmark_error: float  # NME of all landmarks (fraction of the target's face size)
    expression_error: float  # NME of the eyes and the mouth
    flicker: float | None  # videos only: extra frame-to-frame change of the face, 0..255 units


#: Column names of the table, CSV and JSON, in order, with the text table's headers.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("name", "sample"),
    ("faces", "faces"),
    ("source_similarity", "to src"),
    ("target_similarity", "to tgt"),
    ("before_similarity", "before"),
    ("retrieval", "top-1"),
    ("yaw_error", "yaw"),
    ("pitch_error", "pitch"),
    ("roll_error", "roll"),
    ("landmark_error", "NME"),
    ("expression_error", "expr"),
    ("flicker", "flicker"),
)


def _mean(values: Sequence[float] | npt.NDArray[np.float64]) -> float:
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    return float(array.mean()) if array.size else math.nan


@dataclass(frozen=True)
class QualityReport:
    """Measurements of several swaps, the recognisers behind them, and their summary."""

    samples: tuple[SwapQuality, ...]
    recognizer: str  # the recogniser that measured identity
    swap_recognizer: str  # the recogniser that drove the swap
    landmark_points: int  # 68 (face-api's landmark net) or 5 (the detector's points)
    notes: tuple[str, ...] = field(default=())

    @property
    def num_sources(self) -> int:
        """How many distinct sources ID retrieval chose among."""
        return len({sample.source_name for sample in self.samples})

    @property
    def retrieval_top1(self) -> float:
        """ID retrieval top-1 over all result faces (NaN without faces)."""
        faces = sum(sample.faces for sample in self.samples)
        hits = sum(sample.retrieval * sample.faces for sample in self.samples if sample.faces)
        return hits / faces if faces else math.nan

    def summary(self) -> dict[str, float]:
        """Mean of every measurement over the samples that have it, and ID retrieval top-1 over all faces."""
        means = {
            key: _mean([getattr(s, key) for s in self.samples if getattr(s, key) is not None])
            for key, _ in COLUMNS
            if key not in ("name", "faces", "retrieval")
        }
        return {"retrieval_top1": self.retrieval_top1, **means}

    def to_dict(self) -> dict[str, Any]:
        return {
            "recognizer": self.recognizer,
            "swap_recognizer": self.swap_recognizer,
            "landmark_points": self.landmark_points,
            "num_sources": self.num_sources,
            "summary": _finite_or_none(self.summary()),
            "samples": [_finite_or_none(asdict(sample)) for sample in self.samples],
            "notes": list(self.notes),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["source_name", *(key for key, _ in COLUMNS)])
        for sample in self.samples:
            writer.writerow([sample.source_name, *(_csv_value(getattr(sample, key)) for key, _ in COLUMNS)])
        return buffer.getvalue()

    def format_text(self) -> str:
        """A readable table: one row per sample, then the means and what the numbers mean."""
        header = [title for _, title in COLUMNS]
        rows = [[_text_value(getattr(sample, key), key) for key, _ in COLUMNS] for sample in self.samples]
        summary = self.summary()
        rows.append(
            ["mean", str(sum(s.faces for s in self.samples))]
            + [_text_value(summary.get(key, math.nan), key) for key, _ in COLUMNS[2:]]
        )
        rows[-1][5] = _text_value(self.retrieval_top1, "retrieval")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
        name_width = min(widths[0], 40)
        widths[0] = name_width

        def line(cells: Sequence[str]) -> str:
            first = cells[0] if len(cells[0]) <= name_width else "…" + cells[0][-(name_width - 1) :]
            return "  ".join(
                [first.ljust(name_width), *(cell.rjust(w) for cell, w in zip(cells[1:], widths[1:], strict=True))]
            )

        lines = [line(header), *(line(row) for row in rows[:-1]), "-" * len(line(header)), line(rows[-1])]
        lines += [
            f"identity measured by {self.recognizer} (the swap used {self.swap_recognizer}); "
            f"ID retrieval top-1 among {self.num_sources} source{'s' if self.num_sources != 1 else ''}",
            "to src / to tgt: cosine similarity of the result's face to the source's / target's; before: target to "
            "source; yaw/pitch/roll: pose error to the target, degrees; NME / expr: landmark error to the target "
            f"({self.landmark_points} points; expr = eyes and mouth), fraction of the face size; "
            "flicker: frame-to-frame change the target does not have, 0..255",
            *self.notes,
        ]
        return "\n".join(lines)


def _finite_or_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: (None if isinstance(v, float) and not math.isfinite(v) else v) for key, v in values.items()}


def _csv_value(value: object) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def _text_value(value: object, key: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        if key.endswith("_error") and key in ("yaw_error", "pitch_error", "roll_error"):
            return f"{value:.1f}"
        if key == "flicker":
            return f"{value:.2f}"
        return f"{value:.3f}"
    return str(value)


# ---------------------------------------------------------------------------------------------
# Which recogniser may judge


def check_independent_recognizer(swap_recognizer: str, recognizer: str, *, allow_same: bool = False) -> str | None:
    """Refuse to judge a swap with the recogniser family that drove it; returns a note when ``allow_same``."""
    same = swap_recognizer == recognizer or (
        RECOGNIZER_FAMILIES.get(swap_recognizer, swap_recognizer) == RECOGNIZER_FAMILIES.get(recognizer, recognizer)
    )
    if not same:
        return None
    what = (
        f"the identity is measured by {recognizer}, of the same family as the recogniser that drove the swap "
        f"({swap_recognizer}); the generator was optimised to please it, so its scores flatter the swap"
    )
    if not allow_same:
        raise BadInputError(
            what,
            where="swap evaluation",
            fix="measure with another recogniser (dlib_resnet_v1 for an ArcFace swap, an ArcFace model for a dlib "
            "one), or allow it knowingly",
        )
    warnings.warn(what, stacklevel=2)
    return f"warning: {what}"


def independent_recognizer(swap_recognizer: str) -> str:
    """The recogniser that judges a swap driven by ``swap_recognizer``: dlib for ArcFace, ArcFace otherwise."""
    return "dlib_resnet_v1" if RECOGNIZER_FAMILIES.get(swap_recognizer) == "arcface" else "arcface_w600k_r50"


# ---------------------------------------------------------------------------------------------
# Measuring


def _box_iou(a: npt.NDArray[np.float64], boxes: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    x0 = np.maximum(a[0], boxes[:, 0])
    y0 = np.maximum(a[1], boxes[:, 1])
    x1 = np.minimum(a[2], boxes[:, 2])
    y1 = np.minimum(a[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.asarray(inter / np.maximum(area, 1e-9), dtype=np.float64)


def _largest(faces: Sequence[Face]) -> Face | None:
    return max(faces, key=lambda face: face.size) if faces else None


def _matching(faces: Sequence[Face], target: Face) -> Face | None:
    """The face that overlaps ``target``'s box best, if it overlaps enough."""
    if not faces:
        return None
    overlaps = _box_iou(np.asarray(target.bbox, np.float64), np.stack([np.asarray(f.bbox, np.float64) for f in faces]))
    best = int(overlaps.argmax())
    return faces[best] if overlaps[best] >= MIN_FACE_OVERLAP else None


def _unit(vectors: npt.ArrayLike) -> npt.NDArray[np.float64]:
    array = np.atleast_2d(np.asarray(vectors, dtype=np.float64))
    return np.asarray(array / np.maximum(np.linalg.norm(array, axis=1, keepdims=True), 1e-12), dtype=np.float64)


def _check_sample(sample: SwapSample) -> None:
    where = f"swap sample {sample.name!r}"
    source = check_images(sample.source, where=f"{where}: source")
    target = check_images(sample.target, where=f"{where}: target")
    result = check_images(sample.result, where=f"{where}: result")
    if source.shape[0] != 1:
        raise BadInputError(f"the source is a batch of {source.shape[0]} images", where=where, fix="give one photo")
    if target.shape != result.shape:
        raise BadInputError(
            f"the result {tuple(result.shape)} does not match the target {tuple(target.shape)}",
            where=where,
            fix="give the result of this target: the same number of frames of the same size",
        )


@dataclass(frozen=True)
class _Measured:
    source_embedding: npt.NDArray[np.float64]  # (D,) unit
    result_embeddings: npt.NDArray[np.float64]  # (F, D) unit, F = faces found
    target_similarity: npt.NDArray[np.float64]  # (F,)
    before_similarity: npt.NDArray[np.float64]  # (F,)
    pose_errors: npt.NDArray[np.float64]  # (F, 3)
    landmark_errors: npt.NDArray[np.float64]  # (F,)
    expression_errors: npt.NDArray[np.float64]  # (F,)
    flicker: float | None


class _Analyses:
    """Faces and landmarks of each image batch, computed once per evaluation (a source shared by many
    swaps, or a result that is its own target, is analysed once)."""

    def __init__(self, analyzer: AnalyzerLike, landmarker: LandmarkerLike | None) -> None:
        self.analyzer = analyzer
        self.landmarker = landmarker
        self._faces: dict[int, tuple[torch.Tensor, list[list[Face]]]] = {}
        self._points: dict[tuple[int, tuple[int, ...]], npt.NDArray[np.float64]] = {}

    def faces(self, images: torch.Tensor) -> list[list[Face]]:
        known = self._faces.get(id(images))
        if known is None or known[0] is not images:
            known = (images, self.analyzer.analyze(images, landmarks=False))
            self._faces[id(images)] = known  # the tensor is kept, so its id is not reused
        return known[1]

    def landmarks(self, images: torch.Tensor, faces: Sequence[Face]) -> npt.NDArray[np.float64]:
        """``(F, P, 2)`` landmarks of faces found by :meth:`faces` in ``images``."""
        key = (id(images), tuple(id(face) for face in faces))
        if key not in self._points:
            if self.landmarker is not None:
                points = self.landmarker.locate(images, faces).detach().cpu().numpy()
            else:
                points = np.stack([np.asarray(face.landmarks_5, np.float64) for face in faces])
            self._points[key] = np.asarray(points, dtype=np.float64)
        return self._points[key]


def _flicker(target: torch.Tensor, result: torch.Tensor, faces: Sequence[Face]) -> float | None:
    """Extra frame-to-frame change of the result's face over the target's, both cropped through the target's boxes."""
    if len(faces) < 2:
        return None
    target_crops, _ = align_faces(target, faces, FLICKER_CROP, "arcface")
    result_crops, _ = align_faces(result, faces, FLICKER_CROP, "arcface")
    change = (result_crops[1:] - result_crops[:-1]) - (target_crops[1:] - target_crops[:-1])
    return float(change.abs().mean()) * 255.0


def _measure(sample: SwapSample, analyses: _Analyses) -> _Measured:
    where = f"swap sample {sample.name!r}"
    source_face = _largest(analyses.faces(sample.source)[0])
    if source_face is None or source_face.embedding is None:
        raise NoFaceError("no face was found in the source photo", where=where, fix="use a photo with a visible face")
    frames = sample.target.shape[0]
    target_faces = analyses.faces(sample.target)
    result_faces = analyses.faces(sample.result)
    pairs: list[tuple[Face, Face]] = []
    for frame in range(frames):
        target_face = _largest(target_faces[frame])
        if target_face is None:
            logger.debug("%s: no face in target frame %d", where, frame)
            continue
        result_face = _matching(result_faces[frame], target_face)
        if result_face is None:
            logger.debug("%s: no face at the target's place in result frame %d", where, frame)
            continue
        pairs.append((target_face, result_face))
    if not pairs:
        logger.warning("%s: no frame where both the target's and the result's face were found", where)
    source_embedding = _unit(np.asarray(source_face.embedding))[0]
    dim = source_embedding.shape[0]
    if not pairs:
        empty = np.zeros((0,), np.float64)
        return _Measured(source_embedding, np.zeros((0, dim)), empty, empty, np.zeros((0, 3)), empty, empty, None)
    targets = [t for t, _ in pairs]
    results = [r for _, r in pairs]
    target_embeddings = _unit(np.stack([np.asarray(t.embedding) for t in targets]))
    result_embeddings = _unit(np.stack([np.asarray(r.embedding) for r in results]))
    target_points = analyses.landmarks(sample.target, targets)
    result_points = analyses.landmarks(sample.result, results)
    height, width = int(sample.target.shape[2]), int(sample.target.shape[3])
    target_pose = estimate_head_pose(target_points, (height, width))
    result_pose = estimate_head_pose(result_points, (height, width))
    pose_errors = np.abs((result_pose - target_pose + 180.0) % 360.0 - 180.0)
    sizes = np.array([t.size for t in targets], np.float64)
    regions = region_distances(result_points, target_points, sizes)
    expression = np.array([_mean([r[name] for name in EXPRESSION_REGIONS if name in r]) for r in regions])
    flicker = _flicker(sample.target, sample.result, targets) if frames > 1 else None
    return _Measured(
        source_embedding=source_embedding,
        result_embeddings=result_embeddings,
        target_similarity=np.sum(result_embeddings * target_embeddings, axis=1),
        before_similarity=target_embeddings @ source_embedding,
        pose_errors=pose_errors,
        landmark_errors=landmark_distance(result_points, target_points, sizes),
        expression_errors=expression,
        flicker=flicker,
    )


def pair_batches(
    sources: torch.Tensor, targets: torch.Tensor, results: torch.Tensor, *, video: bool = False
) -> list[SwapSample]:
    """Swap samples from ``(B, 3, H, W)`` batches, as the Swap Quality node receives them.

    ``video=False``: result ``i`` is the swap of target ``i``, with source ``i`` (or the one source for
    all). ``video=True``: targets and results are the frames of one video, swapped from the first source.
    """
    source_batch = check_images(sources, where="sources")
    target_batch = check_images(targets, where="targets")
    result_batch = check_images(results, where="results")
    if target_batch.shape != result_batch.shape:
        raise BadInputError(
            f"the results {tuple(result_batch.shape)} do not match the targets {tuple(target_batch.shape)}",
            where="swap evaluation",
            fix="connect the swap's result of these targets: as many images, of the same size",
        )
    if video:
        if source_batch.shape[0] != 1:
            logger.info("video evaluation: the first of %d sources is used", source_batch.shape[0])
        return [SwapSample("video", source_batch[:1], target_batch, result_batch, source_name="source 1")]
    count = int(target_batch.shape[0])
    if source_batch.shape[0] not in (1, count):
        raise BadInputError(
            f"{source_batch.shape[0]} sources for {count} targets",
            where="swap evaluation",
            fix="give one source for all targets, or one per target in the same order",
        )
    return [
        SwapSample(
            f"image {i + 1}",
            source_batch[i : i + 1] if source_batch.shape[0] > 1 else source_batch,
            target_batch[i : i + 1],
            result_batch[i : i + 1],
            source_name=f"source {i + 1 if source_batch.shape[0] > 1 else 1}",
        )
        for i in range(count)
    ]


def evaluate_swaps(
    samples: Sequence[SwapSample],
    analyzer: AnalyzerLike,
    *,
    swap_recognizer: str,
    landmarker: LandmarkerLike | None = None,
    allow_same_recognizer: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> QualityReport:
    """Measure every swap of ``samples`` (see the module docstring); ``analyzer`` must hold the judging recogniser.

    ``swap_recognizer`` names the recogniser that drove the swap (``arcface_w600k_r50`` for the
    native generator and inswapper); the analyzer's must be of another family, else
    :class:`~facemagic_core.errors.BadInputError` (a warning with ``allow_same_recognizer``).
    ``landmarker`` (face-api's 68-point net) gives the pose and landmark errors 68 points; without
    it they come from the detector's five.
    """
    if not samples:
        raise BadInputError("there are no swaps to evaluate", where="swap evaluation", fix="give at least one sample")
    note = check_independent_recognizer(swap_recognizer, analyzer.embedding_model, allow_same=allow_same_recognizer)
    names = [sample.name for sample in samples]
    if len(set(names)) != len(names):
        raise BadInputError("two swap samples have the same name", where="swap evaluation", fix="name each once")
    for sample in samples:
        _check_sample(sample)
    analyses = _Analyses(analyzer, landmarker)
    measured: list[_Measured] = []
    for number, sample in enumerate(samples):
        measured.append(_measure(sample, analyses))
        if progress is not None:
            progress(number + 1, len(samples))
    source_names = [sample.source_name or sample.name for sample in samples]
    candidates = sorted(set(source_names))
    gallery = np.zeros((len(candidates), measured[0].source_embedding.shape[0]))
    for name, item in zip(source_names, measured, strict=True):  # the first photo of a source stands for it
        row = candidates.index(name)
        if not gallery[row].any():
            gallery[row] = item.source_embedding
    rows = []
    for sample, name, item in zip(samples, source_names, measured, strict=True):
        nearest = (
            (item.result_embeddings @ gallery.T).argmax(axis=1) if len(item.result_embeddings) else np.zeros(0, int)
        )
        retrieved = [candidates[int(i)] for i in nearest]
        top = max(set(retrieved), key=retrieved.count) if retrieved else ""
        faces = len(item.result_embeddings)
        rows.append(
            SwapQuality(
                name=sample.name,
                source_name=name,
                frames=int(sample.target.shape[0]),
                faces=faces,
                source_similarity=_mean(item.result_embeddings @ item.source_embedding),
                target_similarity=_mean(item.target_similarity),
                before_similarity=_mean(item.before_similarity),
                retrieval=(retrieved.count(name) / faces) if faces else math.nan,
                retrieved=top,
                yaw_error=_mean(item.pose_errors[:, 0]),
                pitch_error=_mean(item.pose_errors[:, 1]),
                roll_error=_mean(item.pose_errors[:, 2]),
                landmark_error=_mean(item.landmark_errors),
                expression_error=_mean(item.expression_errors),
                flicker=item.flicker,
            )
        )
    notes = [note] if note else []
    if len(candidates) == 1:
        notes.append("ID retrieval had one source to choose from, so its top-1 says nothing")
    missing = [row.name for row in rows if row.faces < row.frames]
    if missing:
        notes.append(f"faces not found in every frame of: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    return QualityReport(
        samples=tuple(rows),
        recognizer=analyzer.embedding_model,
        swap_recognizer=swap_recognizer,
        landmark_points=68 if landmarker is not None else 5,
        notes=tuple(notes),
    )


# ---------------------------------------------------------------------------------------------
# The plot

_PLOT_COLOURS = {
    "axis": (60, 60, 60),
    "grid": (225, 225, 225),
    "before": (150, 150, 150),
    "after": (31, 119, 180),
    "yaw": (31, 119, 180),
    "pitch": (255, 127, 14),
    "roll": (44, 160, 44),
    "nme": (214, 39, 40),
}


def draw_quality_plot(report: QualityReport, *, height: int = 360) -> torch.Tensor:
    """The report as a picture ``(1, 3, H, 2H)`` float32 in [0, 1] (Pillow only).

    Left: each swap as an arrow from where it started (similarity to the target 1, to the source
    ``before``) to the result (similarity to the target, to the source); a good swap ends top
    left. Right: mean pose errors (degrees) and landmark NME (x 100) over the samples.
    """
    if height < 120:
        raise BadInputError(f"the plot needs a height of at least 120 pixels, got {height}", where="quality plot")
    width = 2 * height
    picture = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(picture)
    font = ImageFont.load_default()
    margin = max(30, height // 9)
    panel = width // 2
    # Left panel: similarity to the target (x) against similarity to the source (y), both over [low, 1]: low fits
    # the numbers (dlib's similarities of different people are around 0.8, ArcFace's around 0).
    x0, y0, x1, y1 = margin, margin // 2, panel - margin // 2, height - margin
    shown = [
        value
        for sample in report.samples
        for value in (sample.source_similarity, sample.target_similarity, sample.before_similarity)
        if math.isfinite(value)
    ]
    low = min(0.8, max(-1.0, math.floor((min(shown, default=0.0) - 0.05) * 10) / 10))

    def to_xy(target_sim: float, source_sim: float) -> tuple[float, float]:
        fx = (min(max(target_sim, low), 1.0) - low) / (1.0 - low)
        fy = (min(max(source_sim, low), 1.0) - low) / (1.0 - low)
        return x0 + fx * (x1 - x0), y1 - fy * (y1 - y0)

    for tick in np.linspace(low, 1.0, 5).round(2).tolist():
        gx, gy = to_xy(tick, tick)
        draw.line([(gx, y0), (gx, y1)], fill=_PLOT_COLOURS["grid"])
        draw.line([(x0, gy), (x1, gy)], fill=_PLOT_COLOURS["grid"])
        draw.text((gx - 8, y1 + 3), f"{tick:g}", fill=_PLOT_COLOURS["axis"], font=font)
        draw.text((x0 - 28, gy - 5), f"{tick:g}", fill=_PLOT_COLOURS["axis"], font=font)
    draw.rectangle([x0, y0, x1, y1], outline=_PLOT_COLOURS["axis"])
    draw.text((x0, y1 + 15), "similarity to target", fill=_PLOT_COLOURS["axis"], font=font)
    draw.text((x0 + 4, y0 + 3), "similarity to source (up = better)", fill=_PLOT_COLOURS["axis"], font=font)
    radius = max(2, height // 120)
    for sample in report.samples:
        if not (math.isfinite(sample.source_similarity) and math.isfinite(sample.target_similarity)):
            continue
        start = to_xy(1.0, sample.before_similarity) if math.isfinite(sample.before_similarity) else None
        end = to_xy(sample.target_similarity, sample.source_similarity)
        if start is not None:
            draw.line([start, end], fill=_PLOT_COLOURS["before"])
            draw.ellipse([start[0] - radius, start[1] - radius, start[0] + radius, start[1] + radius],
                         outline=_PLOT_COLOURS["before"])  # fmt: skip
        draw.ellipse([end[0] - radius, end[1] - radius, end[0] + radius, end[1] + radius], fill=_PLOT_COLOURS["after"])
    # Right panel: bars of the mean errors.
    summary = report.summary()
    bars = [
        ("yaw", summary["yaw_error"], "yaw"),
        ("pitch", summary["pitch_error"], "pitch"),
        ("roll", summary["roll_error"], "roll"),
        ("NME x100", summary["landmark_error"] * 100.0, "nme"),
        ("expr x100", summary["expression_error"] * 100.0, "nme"),
    ]
    finite = [value for _, value, _ in bars if math.isfinite(value)]
    top = max([10.0, *finite]) * 1.15
    bx0, by0, bx1, by1 = panel + margin, margin // 2, width - margin // 2, height - margin
    draw.rectangle([bx0, by0, bx1, by1], outline=_PLOT_COLOURS["axis"])
    draw.text((bx0 + 4, by0 + 3), "mean error to target (deg; NME x100)", fill=_PLOT_COLOURS["axis"], font=font)
    step = (bx1 - bx0) / len(bars)
    for number, (label, value, colour) in enumerate(bars):
        left = bx0 + number * step + step * 0.2
        right = bx0 + (number + 1) * step - step * 0.2
        if math.isfinite(value):
            bar_top = by1 - (by1 - by0 - 16) * value / top
            draw.rectangle([left, bar_top, right, by1], fill=_PLOT_COLOURS[colour])
            draw.text((left, bar_top - 12), f"{value:.1f}", fill=_PLOT_COLOURS["axis"], font=font)
        draw.text((left, by1 + 3), label, fill=_PLOT_COLOURS["axis"], font=font)
    top1 = report.retrieval_top1
    caption = f"{report.recognizer}; top-1 {top1:.2f} of {report.num_sources}" if math.isfinite(top1) else ""
    draw.text((bx0, by1 + 15), caption, fill=_PLOT_COLOURS["axis"], font=font)
    pixels = torch.from_numpy(np.asarray(picture, dtype=np.uint8).copy())
    return pixels.permute(2, 0, 1).unsqueeze(0).to(torch.float32) / 255.0
