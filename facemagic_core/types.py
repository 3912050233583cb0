"""The shared vocabulary of FaceMagic: faces, identities and option names.

Layout conventions used everywhere in ``facemagic_core``:

- images are ``torch.Tensor`` of shape ``(B, 3, H, W)``, float32, RGB, values in [0, 1];
- points are ``(x, y)`` in pixels of the image they belong to, pixel centres at integers
  (OpenCV's convention);
- an embedding is a float32 vector of ``EMBEDDING_DIM`` numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt
import torch

from .errors import BadInputError

FloatArray = npt.NDArray[np.float32]
Device = str | torch.device

#: Called as ``progress(done, total)`` while long work runs; may raise ``CancelledError``.
ProgressCallback = Callable[[int, int], None]

#: Size of an ArcFace embedding.
EMBEDDING_DIM = 512

#: How faces found in one image are ordered before one is chosen by index.
FaceOrder = Literal[
    "largest", "smallest", "left_to_right", "right_to_left", "top_to_bottom", "bottom_to_top", "best_score"
]
FACE_ORDERS: tuple[str, ...] = get_args(FaceOrder)

#: A face's gender as a genderage model reads it (insightface's class 0 is female, 1 male).
Gender = Literal["female", "male"]
GENDERS: tuple[str, ...] = get_args(Gender)


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face in one image of a batch."""

    bbox: FloatArray  # (4,) x1, y1, x2, y2 in pixels
    score: float  # detector confidence in [0, 1]
    landmarks_5: FloatArray  # (5, 2): left eye, right eye, nose tip, left and right mouth corner (image left/right)
    image_index: int = 0  # which image of the batch the face is in
    landmarks: FloatArray | None = None  # (106, 2) or (68, 2) dense landmarks, when the analyzer has a model for them
    pose: tuple[float, float, float] | None = None  # yaw, pitch, roll in degrees
    embedding: FloatArray | None = None  # (EMBEDDING_DIM,) raw recogniser output, not normalised
    gender: Gender | None = None  # what the analyzer's genderage model reads, when it has one
    age: int | None = None  # years, the genderage model's estimate (rounded as insightface rounds it)

    @property
    def width(self) -> float:
        return float(self.bbox[2] - self.bbox[0])

    @property
    def height(self) -> float:
        return float(self.bbox[3] - self.bbox[1])

    @property
    def size(self) -> float:
        """Square root of the box area: the face scale used for masks and thresholds."""
        return math.sqrt(max(self.width, 0.0) * max(self.height, 0.0))

    @property
    def center(self) -> tuple[float, float]:
        return float(self.bbox[0] + self.bbox[2]) / 2, float(self.bbox[1] + self.bbox[3]) / 2


@dataclass(frozen=True, eq=False)
class Identity:
    """What the generator injects: one L2-normalised embedding per injection block.

    ``embeddings`` has shape ``(K, D)``. ``K == 1`` means the same identity for every block.
    A generator with ``n`` blocks gives block ``i`` the row ``i * K // n`` (see
    :meth:`for_blocks`), so ``K == 2`` is a coarse half and a fine half, and ``K == n`` is one
    row per block. Rows are normalised on construction (``embeddings`` may be given as any float
    array or tensor, on any device; it is stored as a new float32 numpy array, the input is not modified).
    """

    embeddings: FloatArray
    embedding_model: str  # registry name of the recogniser that made the embeddings, e.g. "arcface_w600k_r50"
    sources: tuple[str, ...] = ()  # where each ingredient came from (file names, identity names)
    weights: tuple[float, ...] = ()  # the weight each source got when mixed
    mode: str = "single"  # how the identity was made: single, mean, weighted, median, slerp, coarse_fine, per_block
    extra: dict[str, str] = field(default_factory=dict)  # free-form provenance kept in saved files

    def __post_init__(self) -> None:
        if not isinstance(self.embedding_model, str) or not self.embedding_model.strip():
            raise BadInputError(
                f"an identity must name the recogniser that made it, got {self.embedding_model!r}",
                fix="pass the registry name of the recogniser, e.g. 'arcface_w600k_r50'",
            )
        raw: object = self.embeddings
        if isinstance(raw, torch.Tensor):
            raw = raw.detach().to("cpu", torch.float32).numpy()
        try:
            array = np.asarray(raw, dtype=np.float32)
        except (TypeError, ValueError) as error:
            raise BadInputError(
                f"an identity needs numbers, got {type(self.embeddings).__name__}",
                where=f"identity from {', '.join(self.sources) or 'unknown source'}",
                fix="pass a float array of embeddings (one row per generator block)",
            ) from error
        if array.ndim == 1:
            array = array[None, :]
        if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
            raise BadInputError(
                f"an identity needs a (blocks, dim) array of embeddings, got shape {tuple(np.shape(self.embeddings))}",
                fix="pass one embedding vector or one row per generator block",
            )
        if not np.all(np.isfinite(array)):
            raise BadInputError(
                "the identity embedding contains NaN or infinite values",
                where=f"identity from {', '.join(self.sources) or 'unknown source'}",
                fix="re-extract the identity from a clear photo; check that the recogniser model file is not corrupt",
            )
        norms = np.linalg.norm(array.astype(np.float64), axis=1, keepdims=True)
        if np.any(norms < 1e-6):
            raise BadInputError(
                "the identity embedding is all zeros",
                where=f"identity from {', '.join(self.sources) or 'unknown source'}",
                fix="re-extract the identity from a clear photo of a face",
            )
        # Rows already of unit length are kept bit for bit: dividing a unit float32 row by its computed norm can
        # move it by one ulp, which would make save -> load and mixes of an identity with itself inexact.
        unit = np.abs(norms - 1.0) <= 1e-6
        normalised = np.where(unit, array, (array / norms).astype(np.float32))
        object.__setattr__(self, "embeddings", np.ascontiguousarray(normalised, dtype=np.float32))

    @property
    def num_blocks(self) -> int:
        return int(self.embeddings.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    def for_blocks(self, num_blocks: int) -> FloatArray:
        """The ``(num_blocks, D)`` embeddings a generator with ``num_blocks`` blocks receives."""
        if num_blocks < 1:
            raise BadInputError(f"a generator has at least one block, got {num_blocks}")
        rows = [i * self.num_blocks // num_blocks for i in range(num_blocks)]
        return np.ascontiguousarray(self.embeddings[rows], dtype=np.float32)

    def mean_embedding(self) -> FloatArray:
        """One normalised vector summarising all blocks (for similarity read-outs)."""
        mean: FloatArray = self.embeddings.mean(axis=0, dtype=np.float32)
        return mean / np.float32(max(float(np.linalg.norm(mean)), 1e-12))
