"""Identities: extract them from photos, compare them, mix them, save and load them.

An :class:`~facemagic_core.types.Identity` is a ``(K, D)`` float32 array of L2-normalised
embeddings plus provenance. ``K == 1`` gives every generator block the same person; a
generator with ``n`` blocks gives block ``i`` the row ``i * K // n``
(:meth:`Identity.for_blocks`).

Mixing methods (all of them return the input when an identity is mixed with itself):

- ``mean``: the re-normalised mean of the normalised embeddings;
- ``weighted``: the same with weights (finite, non-negative, not all zero), normalised to
  sum to one; the normalised weights are recorded in the result;
- ``median``: the element-wise median, re-normalised (robust to one odd photo);
- ``slerp``: spherical interpolation between exactly two identities, ``t`` in [0, 1];
- :func:`mix_coarse_fine`: coarse blocks from one person, fine blocks from another;
- :func:`mix_per_block`: a weighted mix per block.

Identities with different ``K`` are first expanded to the least common multiple of their
``K``. Expanding with ``for_blocks(m * K)`` repeats each row ``m`` times, and a generator of
any size ``n`` then still picks the same row it picked before
(``floor(floor(i * m * K / n) / m) == floor(i * K / n)``), so the expansion never changes
what any generator receives; expanding to the largest ``K`` would, when it is not a multiple
of the others.

Files are ``.safetensors``: one float32 tensor ``embeddings`` of shape ``(K, D)`` and
string metadata (``format_version``, ``embedding_model``, ``sources`` and ``weights`` as
JSON lists, ``mode``, ``created_by``, ``extra`` as a JSON object).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, get_args

import numpy as np
import numpy.typing as npt
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save as save_safetensors

from .errors import BadInputError, IncompatibleIdentityError, NoFaceError
from .files import atomic_write_bytes, check_input_file, load_json_bounded
from .images import check_images
from .types import FACE_ORDERS, Face, FaceOrder, FloatArray, Identity

logger = logging.getLogger(__name__)

#: Version of the identity file layout written by :func:`save_identity`.
IDENTITY_FORMAT_VERSION = 1
#: Largest JSON metadata value read from an identity file (sources, weights, extra of hundreds of photos fit).
MAX_METADATA_BYTES = 1 << 20
#: Value of the ``format`` metadata key that marks a FaceMagic identity file.
IDENTITY_FORMAT_NAME = "facemagic.identity"
#: Suffix of identity files.
IDENTITY_SUFFIX = ".safetensors"

MixMethod = Literal["mean", "weighted", "median", "slerp"]
MIX_METHODS: tuple[str, ...] = get_args(MixMethod)

#: Largest number of block rows a mix may expand to (the lcm of the inputs' row counts).
MAX_BLOCK_ROWS = 1024
#: Rows shorter than this after mixing have cancelled out: no direction is left to normalise.
_CANCEL_NORM = 1e-6
#: Below this angle (radians) between two rows, slerp falls back to normalised linear interpolation.
_PARALLEL_ANGLE = 1e-4
#: Above pi minus this angle the two rows are opposite and the great circle between them is not unique.
#: (Unit float32 rows that are exact negatives already sit about 5e-4 below pi, from rounding.)
_ANTIPARALLEL_ANGLE = 1e-3

ArrayLike = npt.ArrayLike | torch.Tensor


class FaceAnalyzerLike(Protocol):
    """What :func:`extract_identity` needs from a :class:`facemagic_core.analysis.FaceAnalyzer`."""

    @property
    def embedding_model(self) -> str: ...

    def analyze(self, images: torch.Tensor, *, landmarks: bool = True, embeddings: bool = True) -> list[list[Face]]: ...


# --------------------------------------------------------------------------------------------------------------------
# Normalising and comparing


def _as_float64(x: ArrayLike | Identity, *, where: str) -> npt.NDArray[np.float64]:
    if isinstance(x, Identity):
        return x.mean_embedding().astype(np.float64)
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise BadInputError(f"expected an embedding array, got {type(x).__name__}", where=where) from error


def _normalized_float64(x: ArrayLike | Identity, *, where: str) -> npt.NDArray[np.float64]:
    array = _as_float64(x, where=where)
    if array.ndim == 0 or array.shape[-1] == 0:
        raise BadInputError(
            f"expected an embedding vector (D,) or a batch (N, D), got shape {array.shape}", where=where
        )
    if not np.all(np.isfinite(array)):
        raise BadInputError(
            "the embedding contains NaN or infinite values",
            where=where,
            fix="re-extract it from a clear photo; check that the recogniser model file is not corrupt",
        )
    norms = np.linalg.norm(array, axis=-1, keepdims=True)
    if np.any(norms < _CANCEL_NORM):
        raise BadInputError("the embedding is all zeros and has no direction", where=where)
    normalized: npt.NDArray[np.float64] = array / norms
    return normalized


#: Rule of thumb for ArcFace w600k_r50 cosine similarity: above this, usually the same person.
SAME_PERSON_THRESHOLD = 0.4
#: Below this, usually different people; between the two, hard to tell.
DIFFERENT_PEOPLE_THRESHOLD = 0.2
#: The recogniser the two thresholds above were chosen for.
THRESHOLD_MODEL = "arcface_w600k_r50"


#: The same rule of thumb per recogniser: (same person above, different people below). dlib's descriptors
#: all lie in a narrow cone (different people still score about 0.83): on 100 CelebA people x 4 photos,
#: 0.91 keeps 1 % of different-people pairs and 93 % of same-person pairs; below 0.86, 90 % of
#: different-people pairs and 2 % of same-person pairs.
SIMILARITY_THRESHOLDS: dict[str, tuple[float, float]] = {
    THRESHOLD_MODEL: (SAME_PERSON_THRESHOLD, DIFFERENT_PEOPLE_THRESHOLD),
    "dlib_resnet_v1": (0.91, 0.86),
}


def similarity_thresholds(embedding_model: str) -> tuple[float, float]:
    """(same person above, different people below) for ``embedding_model`` (ArcFace's for unknown models)."""
    return SIMILARITY_THRESHOLDS.get(embedding_model, SIMILARITY_THRESHOLDS[THRESHOLD_MODEL])


def describe_similarity(value: float, embedding_model: str = THRESHOLD_MODEL) -> str:
    """A plain-words verdict for a cosine similarity of ``embedding_model`` embeddings (a rule of thumb)."""
    same, different = similarity_thresholds(embedding_model)
    if value >= same:
        return "likely the same person"
    if value >= different:
        return (
            "hard to tell: possibly the same person in very different conditions (age, angle, light, make-up), "
            "or two people who look alike"
        )
    return "likely different people"


def normalize_embedding(x: ArrayLike) -> FloatArray:
    """L2-normalise an embedding ``(D,)`` or each row of a batch ``(..., D)``; returns float32.

    NaN, infinite and all-zero embeddings raise :class:`BadInputError`. The input is not modified.
    """
    return _normalized_float64(x, where="embedding").astype(np.float32)


def cosine_similarity(a: ArrayLike | Identity, b: ArrayLike | Identity) -> float | FloatArray:
    """Cosine similarity of two embeddings, or row by row of two batches.

    ``a`` and ``b`` are vectors ``(D,)``, batches ``(N, D)`` (broadcast against each other) or
    identities (their :meth:`Identity.mean_embedding`). Two vectors give a ``float``; anything
    with a batch gives a float32 array of shape ``(N,)``. Values are clipped to [-1, 1].
    For all pairs of two batches use :func:`similarity_matrix`.
    """
    if isinstance(a, Identity) and isinstance(b, Identity):
        check_compatible([a, b])
    left = _normalized_float64(a, where="first embedding")
    right = _normalized_float64(b, where="second embedding")
    if left.shape[-1] != right.shape[-1]:
        raise IncompatibleIdentityError(
            f"cannot compare embeddings of {left.shape[-1]} and {right.shape[-1]} numbers",
            fix="compare embeddings made by the same recogniser model",
        )
    try:
        similarity = np.clip(np.sum(left * right, axis=-1), -1.0, 1.0)
    except ValueError as error:
        raise BadInputError(
            f"cannot compare batches of shapes {left.shape} and {right.shape} row by row",
            fix="pass batches of the same length, or use similarity_matrix for all pairs",
        ) from error
    if similarity.ndim == 0:
        return float(similarity)
    result: FloatArray = similarity.astype(np.float32)
    return result


def similarity_matrix(a: ArrayLike, b: ArrayLike | None = None) -> FloatArray:
    """Cosine similarity of every row of ``a`` ``(N, D)`` with every row of ``b`` ``(M, D)`` (default ``a``)."""
    left = np.atleast_2d(_normalized_float64(a, where="first embeddings"))
    right = left if b is None else np.atleast_2d(_normalized_float64(b, where="second embeddings"))
    if left.shape[-1] != right.shape[-1] or left.ndim != 2 or right.ndim != 2:
        raise BadInputError(f"expected (N, D) and (M, D) embeddings, got {left.shape} and {right.shape}")
    return np.clip(left @ right.T, -1.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------------------------------
# Extracting


def identity_from_faces(
    faces: Sequence[Face],
    *,
    embedding_model: str,
    sources: Sequence[str],
    extra: Mapping[str, str] | None = None,
) -> Identity:
    """One identity from several photos of one person: the re-normalised mean of their normalised embeddings.

    ``sources[i]`` names where ``faces[i]`` came from (a file name); each source gets the weight ``1 / len(faces)``.
    """
    if len(faces) == 0:
        raise BadInputError("no faces were given to make an identity from", fix="pass at least one face")
    if len(sources) != len(faces):
        raise BadInputError(
            f"got {len(faces)} faces but {len(sources)} source names", fix="give one source name per face"
        )
    rows = []
    for number, (face, source) in enumerate(zip(faces, sources, strict=True)):
        where = f"face {number + 1} of {len(faces)} ({source})"
        if face.embedding is None:
            raise BadInputError(
                "the face has no embedding",
                where=where,
                fix="analyse the image with an analyzer that has a recogniser model (embeddings=True)",
            )
        rows.append(_normalized_float64(face.embedding, where=where).reshape(-1))
    dims = {row.shape[0] for row in rows}
    if len(dims) > 1:
        raise IncompatibleIdentityError(
            f"the faces have embeddings of different sizes {sorted(dims)}",
            fix="analyse all photos with the same recogniser model",
        )
    mean = np.mean(np.stack(rows), axis=0)
    if float(np.linalg.norm(mean)) < _CANCEL_NORM:
        raise BadInputError(
            "the face embeddings cancel out: their mean has no direction",
            where=", ".join(sources),
            fix="use photos of one person",
        )
    return Identity(
        embeddings=(mean / np.linalg.norm(mean)).astype(np.float32)[None, :],
        embedding_model=embedding_model,
        sources=tuple(str(source) for source in sources),
        weights=tuple(1.0 / len(faces) for _ in faces),
        mode="single" if len(faces) == 1 else "mean",
        extra=dict(extra or {}),
    )


def _face_indices(index: int | Sequence[int], count: int) -> list[int]:
    indices = [index] * count if isinstance(index, int) else list(index)
    if len(indices) != count:
        raise BadInputError(
            f"got {len(indices)} face indices for {count} images", fix="give one face index, or one per image"
        )
    for value in indices:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise BadInputError(
                f"a face index is a whole number from 0 up, got {value!r}", fix="use 0 for the first face"
            )
    return [int(value) for value in indices]


@dataclass(frozen=True)
class SourceFace:
    """The face chosen in one source image, and how it was chosen."""

    face: Face  # with its embedding; image_index counts images across all batches given
    source: str  # the image's name (file name, or "image N")
    index: int  # position of the face among the image's faces in the order asked for
    faces_found: int  # how many faces the image holds


def choose_source_faces(
    analyzer: FaceAnalyzerLike,
    images: torch.Tensor | Sequence[torch.Tensor],
    *,
    order: FaceOrder = "largest",
    index: int | Sequence[int] = 0,
    sources: Sequence[str] | None = None,
) -> list[SourceFace]:
    """Analyse ``images`` and choose one face (with its embedding) per image.

    ``images`` is a ``(B, 3, H, W)`` batch, or a sequence of such batches when the photos have
    different sizes (each batch is analysed on its own). The faces of each image are ordered by
    ``order`` and the face at ``index`` is taken (``index`` may be one number per image). The
    chosen faces' ``image_index`` counts images across all batches. An image without a face,
    or with fewer faces than its index asks for, raises :class:`NoFaceError` naming it.
    """
    from .analysis import sort_faces  # imported here: analysis may use this module's similarity helpers

    if order not in FACE_ORDERS:
        raise BadInputError(f"unknown face order {order!r}", fix=f"use one of {', '.join(FACE_ORDERS)}")
    batches = [images] if isinstance(images, torch.Tensor) else list(images)
    if not batches:
        raise BadInputError("no images were given", fix="pass at least one photo of the person")
    counts = [int(batch.shape[0]) if isinstance(batch, torch.Tensor) and batch.ndim == 4 else 1 for batch in batches]
    total = sum(counts)
    names = _source_names(sources, total)
    for number, batch in enumerate(batches):  # all checked before any analysis, each named by its images
        first = sum(counts[:number])
        check_images(batch, where=_batch_name(names[first : first + counts[number]]))
    indices = _face_indices(index, total)

    chosen: list[SourceFace] = []
    offset = 0
    for batch in batches:
        per_image = analyzer.analyze(batch, landmarks=False, embeddings=True)
        if len(per_image) != batch.shape[0]:
            raise BadInputError(
                f"the face analyzer returned results for {len(per_image)} of {batch.shape[0]} images",
                fix="this is a bug in the analyzer; please report it",
            )
        for local, faces in enumerate(per_image):
            number = offset + local
            where = f"image {number + 1} of {total}: {names[number]}"
            wanted = indices[number]
            if not faces:
                raise NoFaceError(
                    "no face was found",
                    where=where,
                    fix="use a photo where the face is clearly visible, not too small and not cut off, "
                    "or try the other detector backend",
                )
            if wanted >= len(faces):
                raise NoFaceError(
                    f"face index {wanted} was asked for, but only {len(faces)} face(s) were found",
                    where=where,
                    fix=f"use a face index from 0 to {len(faces) - 1} (faces are ordered {order})",
                )
            face = sort_faces(faces, order)[wanted]
            if face.image_index != number:
                face = dataclasses.replace(face, image_index=number)
            chosen.append(SourceFace(face=face, source=names[number], index=wanted, faces_found=len(faces)))
        offset += len(per_image)
    return chosen


def _batch_name(names: Sequence[str]) -> str:
    """How an error names a batch of source images: by its file names (the first and last of a long batch)."""
    if len(names) > 3:
        return f"{names[0]} ... {names[-1]} ({len(names)} images)"
    return ", ".join(names) or "an empty batch of source images"


def _source_names(sources: Sequence[str] | None, total: int) -> list[str]:
    names = [f"image {number + 1}" for number in range(total)] if sources is None else [str(s) for s in sources]
    if len(names) != total:
        raise BadInputError(f"got {total} images but {len(names)} source names", fix="give one source name per image")
    return names


def extract_identity(
    analyzer: FaceAnalyzerLike,
    images: torch.Tensor | Sequence[torch.Tensor],
    *,
    order: FaceOrder = "largest",
    index: int | Sequence[int] = 0,
    sources: Sequence[str] | None = None,
) -> Identity:
    """The identity of the person in ``images``: one face per image (see :func:`choose_source_faces`), averaged."""
    chosen = choose_source_faces(analyzer, images, order=order, index=index, sources=sources)
    return identity_from_chosen_faces(chosen, embedding_model=analyzer.embedding_model, order=order)


def identity_from_chosen_faces(chosen: Sequence[SourceFace], *, embedding_model: str, order: str) -> Identity:
    """:func:`identity_from_faces` for the result of :func:`choose_source_faces`, recording the face choice."""
    return identity_from_faces(
        [item.face for item in chosen],
        embedding_model=embedding_model,
        sources=[item.source for item in chosen],
        extra={"face_order": str(order), "face_index": json.dumps([item.index for item in chosen])},
    )


# --------------------------------------------------------------------------------------------------------------------
# Mixing


def check_compatible(identities: Sequence[Identity]) -> None:
    """Raise :class:`IncompatibleIdentityError` unless all identities come from one recogniser with one size."""
    if not identities:
        raise BadInputError("no identities were given", fix="pass at least one identity")
    for identity in identities:
        if not isinstance(identity, Identity):
            raise BadInputError(f"expected an Identity, got {type(identity).__name__}")
    models = list(dict.fromkeys(identity.embedding_model for identity in identities))
    if len(models) > 1:
        raise IncompatibleIdentityError(
            f"cannot mix or compare identities from different embedding models: {', '.join(models)}",
            fix="re-extract all identities with the same recogniser model",
        )
    dims = sorted({identity.dim for identity in identities})
    if len(dims) > 1:
        raise IncompatibleIdentityError(
            f"cannot mix or compare identities of different sizes: {', '.join(map(str, dims))} numbers",
            fix="re-extract all identities with the same recogniser model",
        )


def _ingredient_name(identity: Identity, number: int) -> str:
    return identity.extra.get("name") or "+".join(identity.sources) or f"identity {number + 1}"


def _ingredients_json(identities: Sequence[Identity]) -> str:
    return json.dumps(
        [
            {"sources": list(identity.sources), "weights": list(identity.weights), "mode": identity.mode}
            for identity in identities
        ]
    )


def _common_rows(identities: Sequence[Identity]) -> int:
    rows = 1
    for identity in identities:
        rows = math.lcm(rows, identity.num_blocks)
    if rows > MAX_BLOCK_ROWS:
        raise BadInputError(
            f"mixing these identities needs {rows} block rows, more than the {MAX_BLOCK_ROWS} allowed",
            where=f"block rows {', '.join(str(identity.num_blocks) for identity in identities)}",
            fix="expand the identities to the generator's block count first (Identity.for_blocks)",
        )
    return rows


def _stack_rows(identities: Sequence[Identity], rows: int) -> npt.NDArray[np.float64]:
    """``(n, rows, D)`` float64: every identity expanded to ``rows`` block rows (exact, see the module docstring)."""
    return np.stack([identity.for_blocks(rows).astype(np.float64) for identity in identities])


def _normalize_weights(weights: object, count: int, *, where: str) -> npt.NDArray[np.float64]:
    if isinstance(weights, torch.Tensor):
        weights = weights.detach().cpu().double().numpy()
    try:
        array = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise BadInputError(f"weights must be numbers, got {weights!r}", where=where) from error
    if array.shape != (count,):
        raise BadInputError(f"expected {count} weights, one per identity, got shape {array.shape}", where=where)
    if not np.all(np.isfinite(array)):
        raise BadInputError(f"weights must be finite, got {array.tolist()}", where=where, fix="use plain numbers")
    if np.any(array < 0):
        raise BadInputError(
            f"weights must not be negative, got {array.tolist()}", where=where, fix="use weights of 0 or more"
        )
    total = float(array.sum())
    if total <= 0:
        raise BadInputError("the weights are all zero", where=where, fix="give at least one identity a weight above 0")
    normalized: npt.NDArray[np.float64] = array / total
    return normalized


def _finish_mix(
    rows: npt.NDArray[np.float64],
    identities: Sequence[Identity],
    *,
    mode: str,
    weights: Sequence[float],
    extra: Mapping[str, str] | None = None,
    normalize: bool = True,
) -> Identity:
    norms = np.linalg.norm(rows, axis=-1)
    cancelled = np.flatnonzero(norms < _CANCEL_NORM)
    if cancelled.size:
        raise BadInputError(
            f"the identities cancel out in block row {int(cancelled[0])}: the mix has no direction",
            where=f"{mode} mix of {', '.join(_ingredient_name(i, n) for n, i in enumerate(identities))}",
            fix="use other weights or another mixing method",
        )
    unit_rows = rows / norms[:, None] if normalize else rows
    return Identity(
        unit_rows.astype(np.float32),
        embedding_model=identities[0].embedding_model,
        sources=tuple(_ingredient_name(identity, number) for number, identity in enumerate(identities)),
        weights=tuple(float(weight) for weight in weights),
        mode=mode,
        extra={"ingredients": _ingredients_json(identities), **(extra or {})},
    )


def _slerp_rows(start: npt.NDArray[np.float64], end: npt.NDArray[np.float64], t: float) -> npt.NDArray[np.float64]:
    """Spherical interpolation of unit rows ``(K, D)``, row by row, ``t`` in [0, 1]."""
    dots = np.clip(np.sum(start * end, axis=-1), -1.0, 1.0)
    angles = np.arccos(dots)
    result = np.empty_like(start)
    parallel = angles < _PARALLEL_ANGLE
    opposite = angles > math.pi - _ANTIPARALLEL_ANGLE
    regular = ~(parallel | opposite)
    if np.any(regular):
        angle = angles[regular][:, None]
        sine = np.sin(angle)
        result[regular] = (np.sin((1 - t) * angle) * start[regular] + np.sin(t * angle) * end[regular]) / sine
    if np.any(parallel):  # the arc is a straight line at this scale; the formula would divide by ~0
        line = (1 - t) * start[parallel] + t * end[parallel]
        result[parallel] = line / np.linalg.norm(line, axis=-1, keepdims=True)
    if np.any(opposite):  # every great circle joins opposite points: take a fixed one, say so
        logger.warning(
            "slerp between nearly opposite embeddings (block rows %s): the path between them is not unique; "
            "a fixed direction is used",
            np.flatnonzero(opposite).tolist(),
        )
        origin = start[opposite]
        axis = np.zeros_like(origin)
        axis[np.arange(origin.shape[0]), np.argmin(np.abs(origin), axis=-1)] = 1.0
        perpendicular = axis - np.sum(axis * origin, axis=-1, keepdims=True) * origin
        perpendicular /= np.linalg.norm(perpendicular, axis=-1, keepdims=True)
        result[opposite] = math.cos(t * math.pi) * origin + math.sin(t * math.pi) * perpendicular
    return result


def mix_identities(
    identities: Sequence[Identity],
    *,
    method: MixMethod = "mean",
    weights: Sequence[float] | npt.NDArray[np.floating] | torch.Tensor | None = None,
    t: float | None = None,
) -> Identity:
    """Mix identities of one embedding model into one (see the module docstring for the methods).

    ``weights`` (one per identity) are used by ``weighted``; ``slerp`` takes ``t`` (0 gives the
    first identity, 1 the second; default 0.5) or two weights (then ``t`` is the second's share).
    The result records its ingredients as ``sources``, their weights, and the method as ``mode``.
    """
    check_compatible(identities)
    if method not in MIX_METHODS:
        raise BadInputError(f"unknown mixing method {method!r}", fix=f"use one of {', '.join(MIX_METHODS)}")
    count = len(identities)
    where = f"{method} mix of {count} identities"
    rows = _stack_rows(identities, _common_rows(identities))

    if method == "slerp":
        if count != 2:
            raise BadInputError(
                f"slerp mixes exactly two identities, got {count}",
                fix="use mean, weighted or median for more than two",
            )
        if t is not None and weights is not None:
            raise BadInputError("give slerp either t or weights, not both", where=where)
        if t is None:
            t = 0.5 if weights is None else float(_normalize_weights(weights, 2, where=where)[1])
        if isinstance(t, bool) or not isinstance(t, int | float | np.floating):
            raise BadInputError(f"slerp needs t as a number between 0 and 1, got {t!r}", where=where)
        t = float(t)
        if not (math.isfinite(t) and 0.0 <= t <= 1.0):
            raise BadInputError(f"slerp needs t between 0 and 1, got {t}", where=where)
        endpoint = t in (0.0, 1.0)  # exactly the first or the second identity, bit for bit
        mixed = rows[int(t)] if endpoint else _slerp_rows(rows[0], rows[1], t)
        return _finish_mix(
            mixed, identities, mode="slerp", weights=(1.0 - t, t), extra={"t": repr(t)}, normalize=not endpoint
        )

    if t is not None:
        raise BadInputError(f"t is used by slerp only, not by {method}", where=where, fix="use weights instead")
    if method == "weighted":
        if weights is None:
            raise BadInputError("the weighted mix needs weights", where=where, fix="give one weight per identity")
        normalized = _normalize_weights(weights, count, where=where)
        mixed = np.tensordot(normalized, rows, axes=1)
        return _finish_mix(mixed, identities, mode="weighted", weights=normalized.tolist())
    if weights is not None:
        raise BadInputError(
            f"weights are used by the weighted mix, not by {method}", where=where, fix="use method='weighted'"
        )
    if method == "median":
        return _finish_mix(np.median(rows, axis=0), identities, mode="median", weights=())
    return _finish_mix(rows.mean(axis=0), identities, mode="mean", weights=[1.0 / count] * count)


def mix_coarse_fine(
    coarse: Identity, fine: Identity, *, num_blocks: int = 6, coarse_blocks: int | None = None
) -> Identity:
    """Coarse blocks (rows ``0 .. coarse_blocks - 1``) from ``coarse``, the others from ``fine``.

    The result has ``num_blocks`` rows (block order kept), so a generator with ``num_blocks``
    blocks takes them one to one. ``coarse_blocks`` defaults to half, rounded up. Each input
    gives the rows it would give a ``num_blocks`` generator on its own.
    """
    check_compatible([coarse, fine])
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
        raise BadInputError(f"num_blocks must be a whole number of at least 1, got {num_blocks!r}")
    split = (num_blocks + 1) // 2 if coarse_blocks is None else coarse_blocks
    if isinstance(split, bool) or not isinstance(split, int) or not 0 <= split <= num_blocks:
        raise BadInputError(
            f"coarse_blocks must be a whole number from 0 to {num_blocks}, got {coarse_blocks!r}",
            fix="give the number of blocks, counted from the coarsest, that take the coarse identity",
        )
    coarse_rows, fine_rows = coarse.for_blocks(num_blocks)[:split], fine.for_blocks(num_blocks)[split:]
    rows = np.concatenate([coarse_rows, fine_rows], axis=0).astype(np.float64)
    return _finish_mix(
        rows,
        [coarse, fine],
        mode="coarse_fine",
        weights=(split / num_blocks, (num_blocks - split) / num_blocks),
        extra={"num_blocks": str(num_blocks), "coarse_blocks": str(split)},
    )


def mix_per_block(identities: Sequence[Identity], block_weights: npt.ArrayLike | torch.Tensor) -> Identity:
    """Per-block weighted mix: block row ``r`` is the weighted mean of the identities' row ``r``.

    ``block_weights`` has shape ``(num_blocks, len(identities))``; each row must be finite,
    non-negative and not all zero, and is normalised to sum to one. The result has
    ``num_blocks`` rows. Its ``weights`` are each identity's mean share over the blocks; the full
    normalised table is kept in ``extra["block_weights"]`` (JSON).
    """
    check_compatible(identities)
    if isinstance(block_weights, torch.Tensor):
        block_weights = block_weights.detach().cpu().double().numpy()
    try:
        table = np.asarray(block_weights, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise BadInputError(f"block weights must be numbers, got {block_weights!r}") from error
    count = len(identities)
    if table.ndim != 2 or table.shape[0] < 1 or table.shape[1] != count:
        raise BadInputError(
            f"block weights must have shape (num_blocks, {count}), got {table.shape}",
            fix="give one row per generator block and one column per identity",
        )
    num_blocks = table.shape[0]
    normalized = np.stack(
        [_normalize_weights(row, count, where=f"block {block} weights") for block, row in enumerate(table)]
    )
    rows = _stack_rows(identities, num_blocks)  # (n, num_blocks, D)
    mixed = np.einsum("bn,nbd->bd", normalized, rows)
    return _finish_mix(
        mixed,
        identities,
        mode="per_block",
        weights=normalized.mean(axis=0).tolist(),
        extra={"num_blocks": str(num_blocks), "block_weights": json.dumps(normalized.tolist())},
    )


# --------------------------------------------------------------------------------------------------------------------
# Files


def save_identity(identity: Identity, path: str | os.PathLike[str]) -> None:
    """Write ``identity`` to a ``.safetensors`` file atomically (see the module docstring for the layout)."""
    from . import __version__

    file = Path(path)
    if not isinstance(identity, Identity):
        raise BadInputError(
            f"save_identity writes an Identity, got {type(identity).__name__}",
            where=str(file),
            fix="wrap an embedding first: Identity(embedding, embedding_model='arcface_w600k_r50'), "
            "or make one with extract_identity",
        )
    if file.suffix.lower() != IDENTITY_SUFFIX:
        raise BadInputError(
            "identity files must end in .safetensors",
            where=str(file),
            fix=f"name the file {file.with_suffix(IDENTITY_SUFFIX).name}",
        )
    metadata = {
        "format": IDENTITY_FORMAT_NAME,
        "format_version": str(IDENTITY_FORMAT_VERSION),
        "embedding_model": identity.embedding_model,
        "sources": json.dumps(list(identity.sources)),
        "weights": json.dumps([float(weight) for weight in identity.weights]),
        "mode": identity.mode,
        "created_by": f"facemagic {__version__}",
        "extra": json.dumps(dict(identity.extra)),
    }
    tensors = {"embeddings": np.ascontiguousarray(identity.embeddings, dtype=np.float32)}
    try:
        atomic_write_bytes(file, save_safetensors(tensors, metadata=metadata))
    except OSError as error:
        raise BadInputError(
            f"cannot write the identity file ({error.strerror or error})",
            where=str(file),
            fix="choose a file in a folder you can write to (and a disk with free space)",
        ) from error
    logger.debug("saved identity %s (%s, %d block rows)", file, identity.embedding_model, identity.num_blocks)


def _damaged(file: Path, what: str) -> BadInputError:
    return BadInputError(
        what,
        where=str(file),
        fix="the file is damaged or is not a FaceMagic identity; make it again with 'facemagic identity' "
        "or the Save Identity node",
    )


def _json_metadata(metadata: Mapping[str, str], key: str, default: str, file: Path) -> object:
    try:  # bounded: deeply nested JSON raised RecursionError out of every handler (CLI and node)
        return load_json_bounded(metadata.get(key, default), where=f"'{key}' metadata", max_bytes=MAX_METADATA_BYTES)
    except BadInputError as error:
        raise _damaged(file, f"the identity file's '{key}' metadata is unusable: {error.what}") from error


def load_identity(path: str | os.PathLike[str], *, embedding_model: str | None = None) -> Identity:
    """Read an identity written by :func:`save_identity`; the round trip is exact.

    ``embedding_model``, when given, is the recogniser in use: an identity made by another one
    raises :class:`IncompatibleIdentityError`. Missing, damaged or truncated files and NaN values
    raise :class:`BadInputError`; files from a newer FaceMagic raise :class:`IncompatibleIdentityError`.
    """
    file = Path(path)
    if file.is_dir():
        raise BadInputError(
            "expected an identity file, got a folder",
            where=str(file),
            fix="name a .safetensors file made by 'facemagic identity' or the Save Identity node",
        )
    check_input_file(
        file,
        what="identity file",
        missing="identity file not found",
        fix="check the path; identity files are made with 'facemagic identity' or the Save Identity node",
    )
    try:
        with safe_open(str(file), framework="numpy") as reader:
            metadata: dict[str, str] = dict(reader.metadata() or {})
            names = set(reader.keys())
            stored = reader.get_tensor("embeddings") if "embeddings" in names else None
    except (SafetensorError, OSError, ValueError) as error:
        raise _damaged(file, f"cannot read the identity file: {error}") from error

    version_text = metadata.get("format_version")
    if version_text is None or stored is None or metadata.get("format", IDENTITY_FORMAT_NAME) != IDENTITY_FORMAT_NAME:
        raise _damaged(
            file,
            "this .safetensors file is not a FaceMagic identity "
            f"(format {metadata.get('format', 'not stated')!r}, tensors {sorted(names) or 'none'})",
        )
    try:
        version = int(version_text)
    except ValueError as error:
        raise _damaged(file, f"the identity format version {version_text!r} is not a number") from error
    if version > IDENTITY_FORMAT_VERSION:
        raise IncompatibleIdentityError(
            f"the identity was saved by a newer FaceMagic (identity format {version}; "
            f"this version reads format {IDENTITY_FORMAT_VERSION} and older)",
            where=str(file),
            fix="upgrade FaceMagic",
        )
    if version < 1:
        raise _damaged(file, f"unknown identity format version {version}")

    stored_model = metadata.get("embedding_model", "")
    if not stored_model:
        raise _damaged(file, "the identity file does not say which embedding model made it")
    if embedding_model is not None and stored_model != embedding_model:
        raise IncompatibleIdentityError(
            f"the identity was made with the recogniser '{stored_model}', but '{embedding_model}' is in use",
            where=str(file),
            fix=f"re-extract the identity from the source photos with '{embedding_model}' "
            f"(or use an analyzer/generator that takes '{stored_model}' embeddings)",
        )

    if not np.issubdtype(stored.dtype, np.floating) or stored.ndim not in (1, 2) or stored.size == 0:
        raise _damaged(file, f"the identity embeddings have dtype {stored.dtype} and shape {stored.shape}")
    if not np.all(np.isfinite(stored)):
        raise BadInputError(
            "the identity file holds NaN or infinite values",
            where=str(file),
            fix="make the identity again from the source photos",
        )
    sources = _json_metadata(metadata, "sources", "[]", file)
    weights = _json_metadata(metadata, "weights", "[]", file)
    extra = _json_metadata(metadata, "extra", "{}", file)
    if not isinstance(sources, list) or not isinstance(weights, list) or not isinstance(extra, dict):
        raise _damaged(file, "the identity file's sources, weights or extra metadata have the wrong type")
    try:
        weight_values = tuple(float(weight) for weight in weights)
    except (TypeError, ValueError) as error:
        raise _damaged(file, f"the identity weights are not numbers: {weights!r}") from error

    try:
        identity = Identity(
            np.ascontiguousarray(np.atleast_2d(stored), dtype=np.float32),
            embedding_model=stored_model,
            sources=tuple(str(source) for source in sources),
            weights=weight_values,
            mode=metadata.get("mode", "single"),
            extra={str(key): str(value) for key, value in extra.items()},
        )
    except BadInputError as error:  # e.g. an all-zero row: say which file holds it
        raise BadInputError(error.what, where=str(file), fix=error.fix) from error
    logger.debug("loaded identity %s (%s, %d block rows)", file, stored_model, identity.num_blocks)
    return identity
