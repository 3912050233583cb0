"""Many identities to many faces: mapping rules (position, order, reference, gender/age) and the swap with them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from test_tracking import DroppingAnalyzer, face, people
from test_tracking import analyzer as analyzer  # the fixture

from facemagic_core import video
from facemagic_core.analysis import FaceAnalyzer, select_faces
from facemagic_core.errors import BadInputError
from facemagic_core.generators import SwapOutput
from facemagic_core.mapping import FaceMapping, MappingRule
from facemagic_core.pipeline import SwapOptions, swap_faces
from facemagic_core.tracking import TrackingConfig
from facemagic_core.types import Identity


def test_rules_by_position_take_faces_in_the_mapping_order() -> None:
    a, b, c = people(3)
    faces = [face(300, 100, 90, a), face(100, 100, 60, b), face(500, 100, 120, c)]
    left_to_right = FaceMapping((MappingRule(0, 0), MappingRule(1, 1)), order="left_to_right")
    assert left_to_right.assign(faces) == [1, 0, None]
    by_size = FaceMapping((MappingRule(0, 0), MappingRule(1, None)), order="largest")
    assert by_size.assign(faces) == [1, 1, 0]  # the largest gets identity 0, every other face rule 1
    assert by_size.num_identities == 2 and left_to_right.assign([]) == []


def test_a_reference_rule_takes_the_most_similar_face_above_its_threshold() -> None:
    a, b = people(2, seed=5)
    faces = [face(100, 100, 80, a), face(300, 100, 80, b)]
    mapping = FaceMapping(
        (MappingRule(0, 0, reference=b, min_similarity=0.5), MappingRule(1, 0, reference=a, min_similarity=0.5))
    )
    assert mapping.assign(faces) == [1, 0]
    assert mapping.assign(faces[:1]) == [1]  # B left the shot: nobody else takes identity 0
    stranger = face(200, 100, 80, people(1, seed=9)[0])
    assert mapping.assign([stranger]) == [None]


def test_gender_and_age_filters() -> None:
    a, b, c = people(3)
    woman = dataclasses.replace(face(100, 100, 80, a), gender="female", age=34)
    man = dataclasses.replace(face(300, 100, 80, b), gender="male", age=40)
    child = dataclasses.replace(face(500, 100, 50, c), gender="male", age=8)
    mapping = FaceMapping(
        (
            MappingRule(0, None, gender="female"),
            MappingRule(1, None, gender="male", min_age=18),
            MappingRule(2, 0, max_age=12),
        )
    )
    assert mapping.assign([woman, man, child]) == [0, 1, 2]
    with pytest.raises(BadInputError, match="gender or age, but the faces have none") as error:
        mapping.assign([face(0, 0, 50, a)])
    assert "genderage" in str(error.value.fix)
    with pytest.raises(BadInputError, match="min_age 30 is above max_age 20"):
        MappingRule(0, min_age=30, max_age=20)
    with pytest.raises(BadInputError, match="unknown gender"):
        MappingRule(0, gender="other")  # type: ignore[arg-type]


def test_from_selection_picks_what_select_faces_picks() -> None:
    rng = np.random.default_rng(3)
    embeddings = people(5, seed=2)
    places = zip(rng.uniform(0, 900, 5), rng.uniform(40, 90, 5), embeddings, strict=True)
    faces = [face(float(x), 50, float(s), e) for x, s, e in places]
    reference = embeddings[3]
    for order in ("largest", "left_to_right", "best_score"):
        for index in (0, 2, (1, 0), (4, 3, 0), None):
            for ref, threshold in ((None, None), (reference, None), (reference, 0.0)):
                mapping = FaceMapping.from_selection(
                    order=order,
                    index=index,
                    reference=ref,
                    min_similarity=threshold,
                    num_identities=2,  # type: ignore
                )
                rules = mapping.assign(faces)
                chosen = select_faces(faces, order=order, index=index, reference=ref, min_similarity=threshold)  # type: ignore
                numbers = [next(n for n, f in enumerate(faces) if f is one) for one in chosen]
                assert sorted(numbers) == [n for n, rule in enumerate(rules) if rule is not None]
                asked = len(index) if isinstance(index, tuple) else len(numbers)
                if len(numbers) < asked:  # select_faces closes the gaps of faces not found; a rule keeps its own
                    continue
                for position, number in enumerate(numbers):  # the k-th chosen face gets identity k (or the last)
                    assert mapping.rules[rules[number]].identity == min(position, 1)  # type: ignore[index]


class IdentityColour:
    """A SwapModel stand-in that paints each crop in the colour its source identity encodes (its first 3 numbers)."""

    name = "identity_colour"
    input_size = 64
    template = "arcface"
    embedding_model = "arcface_w600k_r50"
    num_blocks = 1
    device = torch.device("cpu")
    dtype = torch.float32

    def swap(
        self, crops: torch.Tensor, source: torch.Tensor, target: torch.Tensor, strength: torch.Tensor
    ) -> SwapOutput:
        colour = (source[:, 0, :3] > 0.1).float()
        return SwapOutput(colour[:, :, None, None].expand_as(crops).clone())


def coloured(red: float, green: float, blue: float) -> Identity:
    vector = np.full(512, 0.01, np.float32)
    vector[:3] = (red, green, blue)
    return Identity(vector, embedding_model="arcface_w600k_r50")


def mean_colour(image: torch.Tensor, mask: torch.Tensor, box: np.ndarray) -> torch.Tensor:
    x1, y1, x2, y2 = (int(v) for v in box)
    region = mask[y1:y2, x1:x2] > 0.9
    return image[:, y1:y2, x1:x2][:, region].mean(dim=1)


def test_two_people_in_one_clip_get_two_identities_in_one_call(clip_path: Path, analyzer: FaceAnalyzer) -> None:
    clip = video.read_frames(clip_path, max_frames=10)
    two = torch.cat([clip, clip.flip(-1)], dim=-1)  # the person and a mirrored twin, side by side: 520x229
    found = analyzer.analyze(two, landmarks=False, embeddings=False)
    assert [len(faces) for faces in found] == [2] * 10
    red, blue = coloured(1, 0, 0), coloured(0, 0, 1)
    mapping = FaceMapping((MappingRule(0, 0), MappingRule(1, 1)), order="left_to_right")
    missing = DroppingAnalyzer(analyzer, (4, 5))
    options = SwapOptions(mapping=mapping, tracking=TrackingConfig(max_gap=3), chunk_size=4, feather=0.0)
    result = swap_faces(two, [red, blue], missing, IdentityColour(), options)
    assert result.face_counts == (2,) * 10 and set(result.tracks) == {0, 1}
    assert sum(result.interpolated) == 4  # both faces in frames 4 and 5
    for frame in range(10):
        left, right = sorted(found[frame], key=lambda f: f.center[0])
        painted_left = mean_colour(result.images[frame], result.masks[frame], left.bbox)
        painted_right = mean_colour(result.images[frame], result.masks[frame], right.bbox)
        torch.testing.assert_close(painted_left, torch.tensor([1.0, 0.0, 0.0]), atol=0.02, rtol=0)
        torch.testing.assert_close(painted_right, torch.tensor([0.0, 0.0, 1.0]), atol=0.02, rtol=0)
    pairs = {(face.image_index, identity) for face, identity in zip(result.faces, result.identity_index, strict=True)}
    assert len(pairs) == 20

    without_tracking = swap_faces(two, [red, blue], analyzer, IdentityColour(), SwapOptions(mapping=mapping))
    assert without_tracking.face_counts == (2,) * 10 and without_tracking.identity_index == (0, 1) * 10


def test_a_mapping_naming_more_identities_than_given_is_refused(clip_path: Path, analyzer: FaceAnalyzer) -> None:
    clip = video.read_frames(clip_path, max_frames=1)
    mapping = FaceMapping((MappingRule(0, 0), MappingRule(2, 1)))
    with pytest.raises(BadInputError, match="names identity 2") as error:
        swap_faces(clip, [coloured(1, 0, 0)], analyzer, IdentityColour(), SwapOptions(mapping=mapping))
    assert "give 3 identities" in str(error.value.fix)
