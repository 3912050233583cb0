"""Which identity goes to which target face: many identities to many faces in one swap.

A :class:`FaceMapping` is an ordered list of :class:`MappingRule`. Each rule names the
identity it gives (an index into the identities of the swap) and the faces it takes:

- by position: ``face_index`` counts the faces of a frame in the mapping's ``order``
  (``left_to_right``, ``largest``...), ``None`` takes every face the rule's filters let through;
- by reference photo: with a ``reference`` (an embedding) faces are counted by cosine similarity
  to it, most similar first, and those below ``min_similarity`` are never taken (so another
  person is not swapped when the wanted one leaves the shot);
- by filters: ``gender`` and an age range (``min_age``, ``max_age``, from the analyzer's
  genderage model) limit the faces a rule may take.

Rules are applied in order; a face is taken by the first rule that takes it and no later
one. :meth:`FaceMapping.assign` gives, for the faces of one frame, the rule (and so the
identity) of each face or None. A rule with a ``face_index`` takes one face per frame:
when frames are tracked (:mod:`facemagic_core.tracking`) it stays with one track while that
track lives. The older selection options of :class:`~facemagic_core.pipeline.SwapOptions`
(face order, face index, reference, minimum similarity) are one such mapping
(:meth:`FaceMapping.from_selection`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import BadInputError
from .types import FACE_ORDERS, GENDERS, Face, FaceOrder, FloatArray, Gender

#: Identity similarity a face needs to count as a reference's person when nothing else is said: between
#: identity.DIFFERENT_PEOPLE_THRESHOLD (0.2) and SAME_PERSON_THRESHOLD (0.4) of ArcFace w600k_r50, lenient
#: enough for the turned and blurred faces of video frames.
DEFAULT_REFERENCE_THRESHOLD = 0.3
#: Most rules in one mapping (a frame with more people than this is not a use case of one node).
MAX_RULES = 64


def _unit(vector: object, where: str) -> FloatArray:
    try:
        array = np.asarray(vector, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as error:
        raise BadInputError(
            f"a reference must be an embedding, got {type(vector).__name__}", where=where, fix="pass an embedding"
        ) from error
    norm = float(np.linalg.norm(array)) if array.size else 0.0
    if not np.all(np.isfinite(array)) or norm < 1e-12:
        raise BadInputError(
            "the reference embedding is empty, all zeros or not finite",
            where=where,
            fix="use the identity of a clear photo of the person",
        )
    unit: FloatArray = (array / np.float32(norm)).astype(np.float32)
    return unit


@dataclass(frozen=True, eq=False)
class MappingRule:
    """One identity and the target faces it goes to (see the module docstring)."""

    identity: int  # index of the identity (in the list given to the swap) this rule puts in
    face_index: int | None = 0  # which face among those the filters let through (in order); None = all of them
    reference: FloatArray | None = None  # take the face most like this embedding instead of counting in order
    min_similarity: float | None = None  # with reference: faces less similar than this are never taken
    gender: Gender | None = None  # only faces the genderage model reads as this gender
    min_age: int | None = None  # only faces at least this old (years, genderage estimate)
    max_age: int | None = None  # only faces at most this old

    def __post_init__(self) -> None:
        where = f"mapping rule for identity {self.identity}"
        if isinstance(self.identity, bool) or not isinstance(self.identity, int | np.integer) or self.identity < 0:
            raise BadInputError(f"a rule's identity is a whole number from 0, got {self.identity!r}", where=where)
        if self.face_index is not None and (
            isinstance(self.face_index, bool)
            or not isinstance(self.face_index, int | np.integer)
            or self.face_index < 0
        ):
            raise BadInputError(
                f"a rule's face index is a whole number from 0 (or None for every face), got {self.face_index!r}",
                where=where,
            )
        if self.reference is not None:
            object.__setattr__(self, "reference", _unit(self.reference, where))
        if self.min_similarity is not None:
            value = self.min_similarity
            if isinstance(value, bool) or not isinstance(value, int | float) or not -1.0 <= float(value) <= 1.0:
                raise BadInputError(f"min_similarity must lie in [-1, 1], got {value!r}", where=where)
            if self.reference is None:
                raise BadInputError(
                    "min_similarity needs a reference to compare with", where=where, fix="give the rule a reference"
                )
        if self.gender is not None and self.gender not in GENDERS:
            raise BadInputError(f"unknown gender {self.gender!r}", where=where, fix=f"use one of {', '.join(GENDERS)}")
        for name in ("min_age", "max_age"):
            age = getattr(self, name)
            if age is not None and (isinstance(age, bool) or not isinstance(age, int | np.integer) or age < 0):
                raise BadInputError(f"{name} must be a whole number of years >= 0, got {age!r}", where=where)
        if self.min_age is not None and self.max_age is not None and self.min_age > self.max_age:
            raise BadInputError(
                f"min_age {self.min_age} is above max_age {self.max_age}", where=where, fix="swap the two ages"
            )

    @property
    def takes_one(self) -> bool:
        """Whether the rule takes one face per frame (it has a face index), not every face that passes."""
        return self.face_index is not None

    @property
    def needs_attributes(self) -> bool:
        return self.gender is not None or self.min_age is not None or self.max_age is not None

    def passes(self, face: Face) -> bool:
        """Whether ``face`` passes the rule's gender and age filters (a face without them passes none)."""
        if self.gender is not None and face.gender != self.gender:
            return False
        if self.min_age is not None and (face.age is None or face.age < self.min_age):
            return False
        return not (self.max_age is not None and (face.age is None or face.age > self.max_age))

    def describe(self) -> str:
        parts = []
        counted = "by similarity to its reference" if self.reference is not None else "in order"
        parts.append("every face" if self.face_index is None else f"face {self.face_index} counted {counted}")
        if self.min_similarity is not None:
            parts.append(f"similarity >= {self.min_similarity:g}")
        if self.gender is not None:
            parts.append(self.gender)
        if self.min_age is not None or self.max_age is not None:
            parts.append(f"aged {self.min_age if self.min_age is not None else 0}-{self.max_age or 'any'}")
        return f"identity {self.identity} -> " + ", ".join(parts)


def _similarities(faces: Sequence[Face], reference: FloatArray) -> FloatArray:
    values = np.full(len(faces), -math.inf, dtype=np.float32)
    for number, face in enumerate(faces):
        if face.embedding is None:
            raise BadInputError(
                "a face has no embedding to compare with a mapping rule's reference",
                where=f"frame {face.image_index}, face {number}",
                fix="use an analyzer with a recogniser",
            )
        embedding = np.asarray(face.embedding, dtype=np.float32).reshape(-1)
        if embedding.shape != reference.shape:
            raise BadInputError(
                f"the face embedding has {embedding.size} numbers but the reference has {reference.size}",
                where=f"frame {face.image_index}, face {number}",
                fix="make the reference with the recogniser that analyses the target",
            )
        values[number] = float(embedding @ reference) / max(float(np.linalg.norm(embedding)), 1e-12)
    return values


@dataclass(frozen=True, eq=False)
class FaceMapping:
    """An ordered list of rules giving identities to the faces of a frame (see the module docstring)."""

    rules: tuple[MappingRule, ...]
    order: FaceOrder = "left_to_right"  # how faces are counted for the rules' face_index

    def __post_init__(self) -> None:
        if isinstance(self.rules, list):
            object.__setattr__(self, "rules", tuple(self.rules))
        if not isinstance(self.rules, tuple) or not self.rules:
            raise BadInputError("a face mapping needs at least one rule", where="face mapping")
        if len(self.rules) > MAX_RULES:
            raise BadInputError(f"a face mapping takes at most {MAX_RULES} rules, got {len(self.rules)}")
        for rule in self.rules:
            if not isinstance(rule, MappingRule):
                raise BadInputError(f"expected MappingRule, got {type(rule).__name__}", where="face mapping")
        if self.order not in FACE_ORDERS:
            raise BadInputError(f"unknown face order {self.order!r}", fix=f"use one of {', '.join(FACE_ORDERS)}")

    @classmethod
    def from_selection(
        cls,
        *,
        order: FaceOrder = "largest",
        index: int | Sequence[int] | None = 0,
        reference: FloatArray | None = None,
        min_similarity: float | None = None,
        num_identities: int = 1,
    ) -> FaceMapping:
        """The plain selection options as a mapping (what :func:`~facemagic_core.analysis.select_faces` picks).

        Face ``index[k]`` (counted in ``order``, or by similarity to ``reference``) gets identity ``k``,
        the last identity repeating; ``index=None`` gives the ``k``-th face identity ``k`` and every
        further face the last identity. One difference: when face ``index[0]`` is not found,
        :func:`~facemagic_core.analysis.select_faces` moves face ``index[1]`` up to identity 0; a
        rule keeps its identity."""
        last = max(int(num_identities), 1) - 1
        if index is None:
            rules = [MappingRule(k, k, reference, min_similarity) for k in range(last)]
            rules.append(MappingRule(last, None, reference, min_similarity))
        else:
            indices = [int(index)] if isinstance(index, int | np.integer) else [int(value) for value in index]
            rules = [
                MappingRule(min(k, last), position, reference, min_similarity) for k, position in enumerate(indices)
            ]
        return cls(tuple(rules), order)

    @property
    def num_identities(self) -> int:
        """How many identities the swap must be given (the largest identity a rule names, plus one)."""
        return max(rule.identity for rule in self.rules) + 1

    @property
    def needs_attributes(self) -> bool:
        return any(rule.needs_attributes for rule in self.rules)

    @property
    def needs_embeddings(self) -> bool:
        return any(rule.reference is not None for rule in self.rules)

    def assign(self, faces: Sequence[Face]) -> list[int | None]:
        """For each face of one frame, the number of the rule that takes it, or None."""
        if not faces:
            return []
        if self.needs_attributes:
            for number, face in enumerate(faces):
                if face.gender is None or face.age is None:
                    raise BadInputError(
                        "a mapping rule filters by gender or age, but the faces have none",
                        where=f"frame {face.image_index}, face {number}",
                        fix="use an analyzer with a gender/age model (the insightface detector with the buffalo_l "
                        "pack, which holds genderage.onnx)",
                    )
        from .analysis import sort_faces

        position = {id(face): number for number, face in enumerate(faces)}
        ordered = [position[id(face)] for face in sort_faces(faces, self.order)]
        taken: list[int | None] = [None] * len(faces)
        for number, rule in enumerate(self.rules):
            allowed = [i for i in ordered if rule.passes(faces[i])]
            if rule.reference is not None:
                similarity = _similarities(faces, rule.reference)
                allowed.sort(key=lambda i: -float(similarity[i]))  # a stable sort: ties keep the mapping order
                if rule.min_similarity is not None:
                    allowed = [i for i in allowed if similarity[i] >= float(rule.min_similarity)]
            if rule.face_index is None:
                chosen = allowed
            else:
                chosen = [allowed[rule.face_index]] if rule.face_index < len(allowed) else []
            for i in chosen:
                if taken[i] is None:
                    taken[i] = number
        return taken


@dataclass(frozen=True)
class FaceChoice:
    """A rule's choice of faces as written: ``"1"``, ``"all"``, ``"ref:bob.jpg"``, ``"female,age:18-60"``."""

    face_index: int | None  # None: every face the filters let through
    reference: str | None  # what follows "ref:" ("" for a bare "ref"); None without a reference
    gender: Gender | None
    min_age: int | None
    max_age: int | None

    def rule(self, identity: int, reference: FloatArray | None, min_similarity: float | None) -> MappingRule:
        """The rule giving ``identity`` to these faces (``reference``: the embedding ``self.reference`` names)."""
        return MappingRule(
            identity,
            self.face_index,
            reference,
            min_similarity if reference is not None else None,
            self.gender,
            self.min_age,
            self.max_age,
        )


def parse_age_range(text: str) -> tuple[int | None, int | None]:
    """``"20-40"`` -> (20, 40); ``"18-"`` -> (18, None); ``"-12"`` -> (None, 12)."""
    low, sep, high = text.strip().partition("-")
    try:
        ages = (int(low) if low.strip() else None, int(high) if high.strip() else None)
    except ValueError:
        ages = (-1, -1)
    backwards = ages[0] is not None and ages[1] is not None and ages[0] > ages[1]
    if not sep or backwards or any(age is not None and age < 0 for age in ages):
        raise BadInputError(
            f"expected an age range from low to high such as 20-40, 18- or -12, got {text!r}", where="face choice"
        )
    return ages


def parse_face_choice(text: str) -> FaceChoice:
    """Parse comma-separated parts: a face number, ``all``, ``ref``/``ref:NAME``, ``female``/``male``, ``age:LOW-HIGH``.

    Without a face number or ``all``, a choice with a reference takes the most similar face, one
    with only gender/age filters every face that passes, and an empty one face 0.
    """
    index: int | None = None
    every = False
    reference: str | None = None
    gender: Gender | None = None
    ages: tuple[int | None, int | None] = (None, None)
    for raw in str(text).split(","):
        part = raw.strip()
        if not part:
            continue
        if part.isdigit():
            index = int(part)
        elif part.lower() == "all":
            every = True
        elif part.lower() == "ref" or part.lower().startswith("ref:"):
            reference = part[4:]
        elif part.lower() in GENDERS:
            gender = part.lower()  # type: ignore[assignment]
        elif part.lower().startswith("age:"):
            ages = parse_age_range(part[4:])
        else:
            raise BadInputError(
                f"unknown face choice {part!r} in {text!r}",
                where="face choice",
                fix=f"use a face number (0, 1...), all, ref, {' or '.join(GENDERS)}, age:LOW-HIGH, joined by commas",
            )
    if every and index is not None:
        raise BadInputError(f"give a face number or 'all', not both, in {text!r}", where="face choice")
    if index is None and not every and (reference is not None or (gender is None and ages == (None, None))):
        index = 0
    return FaceChoice(index, reference, gender, ages[0], ages[1])
