"""Faces followed from frame to frame, so that a missed detection does not leave a frame unswapped.

:class:`FaceTracks` takes the detected faces of consecutive frames (with their embeddings)
and links each face to a track: by box overlap with the track's predicted box (or a centre
within half a face size) and, when both have embeddings, by identity similarity, so that two
people who cross are not swapped over. Each track gets its rule of a
:class:`~facemagic_core.mapping.FaceMapping` (and so its identity) the first time the
mapping gives it one and keeps it while it lives; a rule that takes one face per frame belongs
to one living track at a time, so another face never takes it over while its face is missed.

When a track is missed for up to ``max_gap`` frames and found again, its face in the missed
frames is interpolated between the two detections (box, 5 landmarks, dense landmarks, pose;
the embedding of the nearer one) and swapped like a detected face. At the end of the clip a
track missed in its last frames (again up to ``max_gap``) is extrapolated from its last two
detections. A track missed for longer ends; the frames in between are left as they are.

The tracker streams: :meth:`FaceTracks.push` returns the frames that can no longer change
(``max_gap`` frames behind the newest), :meth:`FaceTracks.finish` the rest. Only faces are kept,
never pictures, so the caller holds at most ``max_gap`` frames beyond its chunk.
"""

from __future__ import annotations

import dataclasses
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import BadInputError
from .mapping import FaceMapping
from .types import Face, FloatArray

#: Frames a tracked face may be missed and still be swapped, when nothing else is said.
DEFAULT_MAX_GAP = 5


@dataclass(frozen=True)
class TrackingConfig:
    """How faces are linked across frames and how long a missed face is filled in."""

    max_gap: int = DEFAULT_MAX_GAP  # frames a tracked face may go undetected and still be swapped (interpolated)
    min_iou: float = 0.2  # smallest overlap of a face's box with the track's predicted box that links them
    min_similarity: float = 0.3  # smallest identity similarity (cosine of the embeddings) that links them
    fill_end: bool = True  # a track missed in the clip's last frames is extrapolated there (up to max_gap)

    def __post_init__(self) -> None:
        if isinstance(self.max_gap, bool) or not isinstance(self.max_gap, int) or not 0 <= self.max_gap <= 1000:
            raise BadInputError(
                f"max_gap must be a whole number of frames from 0 to 1000, got {self.max_gap!r}", where="tracking"
            )
        for name, low in (("min_iou", 0.0), ("min_similarity", -1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not low <= float(value) <= 1.0:
                raise BadInputError(f"{name} must lie in [{low:g}, 1], got {value!r}", where="tracking")


@dataclass(frozen=True, eq=False)
class TrackedFace:
    """A face to swap in one frame: detected, or filled in for a missed detection."""

    face: Face  # image_index is the frame number counted from the first frame pushed
    track: int  # the track's number (0, 1, ... in order of appearance)
    rule: int  # the mapping rule (and so the identity) the track took
    interpolated: bool  # True when the detector missed the face in this frame


def box_iou(a: FloatArray, b: FloatArray) -> float:
    """Intersection over union of two ``x1, y1, x2, y2`` boxes."""
    width = min(float(a[2]), float(b[2])) - max(float(a[0]), float(b[0]))
    height = min(float(a[3]), float(b[3])) - max(float(a[1]), float(b[1]))
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])) - inter
    return inter / union if union > 0 else 0.0


def _unit(embedding: FloatArray | None) -> FloatArray | None:
    if embedding is None:
        return None
    vector = np.asarray(embedding, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(vector))
    return vector / np.float32(norm) if norm > 1e-12 and math.isfinite(norm) else None


def blend_faces(a: Face, b: Face, weight: float, frame: int) -> Face:
    """The face ``weight`` of the way from ``a`` to ``b`` (0 = a, 1 = b; beyond 1 extrapolates), in ``frame``.

    Box, 5 landmarks, pose and (when both have the same kind) dense landmarks move linearly;
    embedding, gender and age come from the nearer face; the score is the lower one.
    """

    def mix(x: np.ndarray, y: np.ndarray) -> FloatArray:
        out: FloatArray = (
            np.asarray(x, np.float64) + weight * (np.asarray(y, np.float64) - np.asarray(x, np.float64))
        ).astype(np.float32)
        return out

    nearer = a if weight < 0.5 else b
    dense = None
    if a.landmarks is not None and b.landmarks is not None and a.landmarks.shape == b.landmarks.shape:
        dense = mix(a.landmarks, b.landmarks)
    elif nearer.landmarks is not None:  # moved with the 5 landmarks' centre
        shift = mix(a.landmarks_5, b.landmarks_5).mean(axis=0) - np.asarray(nearer.landmarks_5).mean(axis=0)
        dense = (np.asarray(nearer.landmarks, np.float32) + shift).astype(np.float32)
    pose = None
    if a.pose is not None and b.pose is not None:
        pose = tuple(float(v) for v in mix(np.array(a.pose), np.array(b.pose)))
    return dataclasses.replace(
        nearer,
        bbox=mix(a.bbox, b.bbox),
        landmarks_5=mix(a.landmarks_5, b.landmarks_5),
        landmarks=dense,
        pose=pose,  # type: ignore[arg-type]
        score=min(a.score, b.score),
        image_index=frame,
    )


@dataclass
class _Track:
    number: int
    last: Face  # the last detection (image_index = its frame)
    previous: Face | None  # the detection before it, for the velocity
    embedding: FloatArray | None  # running mean of the detections' unit embeddings, normalised
    rule: int | None  # the mapping rule the track took, None while it has none

    def predicted_box(self, frame: int) -> FloatArray:
        if self.previous is None:
            return self.last.bbox
        steps = self.last.image_index - self.previous.image_index
        ahead = (frame - self.last.image_index) / max(steps, 1)
        return blend_faces(self.previous, self.last, 1.0 + ahead, frame).bbox


class FaceTracks:
    """Tracks faces through consecutive frames of one clip (see the module docstring).

    Stateful: push the frames of one clip in order, then call :meth:`finish`; use a new
    instance for another clip.
    """

    def __init__(self, mapping: FaceMapping, config: TrackingConfig | None = None) -> None:
        if not isinstance(mapping, FaceMapping):
            raise BadInputError(f"expected a FaceMapping, got {type(mapping).__name__}", where="FaceTracks")
        self.mapping = mapping
        self.config = config or TrackingConfig()
        self._tracks: list[_Track] = []
        self._pending: deque[list[TrackedFace]] = deque()  # frames not returned yet, oldest first
        self._first_pending = 0  # frame number of self._pending[0]
        self._frame = 0  # frames pushed so far
        self._count = 0  # tracks made so far
        self.interpolated = 0  # faces filled in so far

    @property
    def frames_pushed(self) -> int:
        return self._frame

    def push(self, faces_per_frame: Sequence[Sequence[Face]]) -> list[list[TrackedFace]]:
        """Add the detected faces of the next frames; returns the frames that are now settled, oldest first."""
        for faces in faces_per_frame:
            self._push_frame(list(faces))
        settled = max(self._frame - self.config.max_gap, self._first_pending)
        return self._release(settled)

    def finish(self) -> list[list[TrackedFace]]:
        """Every frame not returned yet; a track missed in the last frames is extrapolated there."""
        end = self._frame
        if self.config.fill_end:
            for track in self._tracks:
                last = track.last.image_index
                if track.rule is None or last >= end - 1 or end - 1 - last > self.config.max_gap:
                    continue
                for frame in range(last + 1, end):
                    if track.previous is None:  # one detection: held where it was
                        face = dataclasses.replace(track.last, image_index=frame)
                    else:  # moving on as it moved between its last two detections
                        steps = max(last - track.previous.image_index, 1)
                        face = blend_faces(track.previous, track.last, 1.0 + (frame - last) / steps, frame)
                    self._add(frame, TrackedFace(face, track.number, track.rule, True))
        self._tracks = []
        return self._release(end)

    # -----------------------------------------------------------------------------------------

    def _release(self, stop: int) -> list[list[TrackedFace]]:
        out = []
        while self._first_pending < stop and self._pending:
            out.append(sorted(self._pending.popleft(), key=lambda item: (item.rule, item.track)))
            self._first_pending += 1
        return out

    def _add(self, frame: int, item: TrackedFace) -> None:
        self._pending[frame - self._first_pending].append(item)
        if item.interpolated:
            self.interpolated += 1

    def _link(self, faces: list[Face], frame: int) -> list[_Track | None]:
        config = self.config
        pairs: list[tuple[float, int, int]] = []
        for f, face in enumerate(faces):
            embedding = _unit(face.embedding)
            size = max(face.size, 1.0)
            for t, track in enumerate(self._tracks):
                box = track.predicted_box(frame)
                iou = box_iou(face.bbox, box)
                centre = (np.asarray(box[:2], np.float64) + np.asarray(box[2:], np.float64)) / 2
                near = float(np.linalg.norm(np.array(face.center) - centre)) < 0.5 * size
                if iou < config.min_iou and not near:
                    continue
                similarity = 0.0
                if embedding is not None and track.embedding is not None:
                    similarity = float(embedding @ track.embedding)
                    if similarity < config.min_similarity:
                        continue
                pairs.append((iou + similarity, f, t))
        pairs.sort(key=lambda pair: -pair[0])
        linked: list[_Track | None] = [None] * len(faces)
        used: set[int] = set()
        for _, f, t in pairs:
            if linked[f] is None and t not in used:
                linked[f] = self._tracks[t]
                used.add(t)
        return linked

    def _rule_free(self, rule: int, track: _Track | None) -> bool:
        if not self.mapping.rules[rule].takes_one:
            return True
        return all(other.rule != rule or other is track for other in self._tracks)

    def _push_frame(self, faces: list[Face]) -> None:
        frame = self._frame
        config = self.config
        self._pending.append([])
        faces = [face if face.image_index == frame else dataclasses.replace(face, image_index=frame) for face in faces]
        self._tracks = [t for t in self._tracks if frame - t.last.image_index - 1 <= config.max_gap]
        linked = self._link(faces, frame)
        choices = self.mapping.assign(faces)
        # Faces of known tracks first (a track keeps its rule), then new tracks take the rules still free.
        for f in sorted(range(len(faces)), key=lambda f: linked[f] is None):
            face, track, choice = faces[f], linked[f], choices[f]
            if track is None:
                track = _Track(self._count, face, None, _unit(face.embedding), None)
                self._count += 1
                self._tracks.append(track)
            else:
                gap_from = track.last.image_index
                if track.rule is not None:
                    for missed in range(gap_from + 1, frame):
                        weight = (missed - gap_from) / (frame - gap_from)
                        filled = blend_faces(track.last, face, weight, missed)
                        self._add(missed, TrackedFace(filled, track.number, track.rule, True))
                track.previous, track.last = track.last, face
                embedding = _unit(face.embedding)
                if embedding is not None:
                    total = embedding if track.embedding is None else track.embedding * 4.0 + embedding
                    track.embedding = _unit(total)
            if track.rule is None and choice is not None and self._rule_free(choice, track):
                track.rule = choice
            if track.rule is not None:
                self._add(frame, TrackedFace(face, track.number, track.rule, False))
        self._frame += 1
