"""The Swap Several People node on tiny models, through the ComfyUI stand-in."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from comfy_stub.samples import comfy_image
from test_nodes_swap import ALL_IN_ONE_DEFAULTS

from facemagic_core.analysis import FaceAnalyzer
from facemagic_core.errors import BadInputError
from facemagic_core.types import Identity

pytest_plugins = ["comfy_stub.fixtures"]

SETTINGS = {
    "face_choices": "0\n1",
    "face_order": "left_to_right",
    "reference_threshold": 0.3,
    "track_gap": 5,
    "strength": 1.0,
    "mask": "ellipse",
    "no_face": "error",
}


@pytest.fixture(scope="module")
def two_people() -> torch.Tensor:
    """Three frames with two "faces" each."""
    return torch.cat([comfy_image([(1, 3, 255), (6, 3, 235)])] * 3)


def test_two_identities_go_to_two_faces_in_one_node(
    nodes: dict[str, Any],
    generator: Any,
    analyzer: FaceAnalyzer,
    identity_a: Identity,
    identity_b: Identity,
    two_people: torch.Tensor,
) -> None:
    common = {"images": two_people, "generator": generator, "analyzer": analyzer}
    output = nodes["FaceMagicSwapSeveralPeople"].run(**common, identity_1=identity_a, identity_2=identity_b, **SETTINGS)
    images, mask, report = output.args
    assert report.startswith("6 face(s) swapped in 3 frame(s)")
    assert ": 3 face(s)" in report.splitlines()[1] and ": 3 face(s)" in report.splitlines()[2]
    single = nodes["FaceMagicSwapFaces"]
    settings = {**ALL_IN_ONE_DEFAULTS, "face_order": "left_to_right"}
    left, left_mask, _ = single.run(**common, identity=identity_a, **{**settings, "face_index": 0}).args
    right, right_mask, _ = single.run(**common, identity=identity_b, **{**settings, "face_index": 1}).args
    on_left, on_right = left_mask > 0, right_mask > 0
    assert bool(on_left.any()) and bool(on_right.any()) and not bool((on_left & on_right).any())
    left_as_b, right_as_a = (
        single.run(**common, identity=one, **{**settings, "face_index": index}).args[0]
        for one, index in ((identity_b, 0), (identity_a, 1))
    )

    def distance(x: torch.Tensor, y: torch.Tensor, where: torch.Tensor) -> float:
        return float((x[where] - y[where]).abs().mean())

    # Person A on the left face, person B on the right one: the one-node result is (up to float rounding of the
    # batched recogniser) the single swaps, and far from the swaps with the identities the other way round.
    assert distance(images, left, on_left) < 0.2 * distance(left_as_b, left, on_left)
    assert distance(images, right, on_right) < 0.2 * distance(right_as_a, right, on_right)
    torch.testing.assert_close(mask, torch.maximum(left_mask, right_mask), atol=1e-3, rtol=0)


def test_choices_name_their_problem(
    nodes: dict[str, Any], generator: Any, analyzer: FaceAnalyzer, identity_a: Identity, two_people: torch.Tensor
) -> None:
    common = {"images": two_people, "generator": generator, "analyzer": analyzer, "identity_1": identity_a}
    node = nodes["FaceMagicSwapSeveralPeople"]
    with pytest.raises(BadInputError, match="says ref, but reference_1 is not connected"):
        node.run(**common, **{**SETTINGS, "face_choices": "ref"})
    with pytest.raises(BadInputError, match="identity_2 is empty but identity_3 is connected"):
        node.run(**common, identity_3=identity_a, **SETTINGS)
    with pytest.raises(BadInputError, match="unknown face choice 'left'"):
        node.run(**common, **{**SETTINGS, "face_choices": "left"})


def test_all_in_one_follows_faces_and_keeps_a_reference_threshold(
    nodes: dict[str, Any], generator: Any, analyzer: FaceAnalyzer, identity_a: Identity, identity_b: Identity
) -> None:
    frames = torch.cat([comfy_image([(4, 5, 240)]), comfy_image([]), comfy_image([(4, 5, 240)])])
    common = {"images": frames, "identity": identity_b, "generator": generator, "analyzer": analyzer}
    settings = {**ALL_IN_ONE_DEFAULTS, "no_face": "pass"}
    node = nodes["FaceMagicSwapFaces"]
    plain = node.run(**common, **settings).args[2]
    assert "1 frame without the face asked for" in plain  # the middle frame, where the detector finds nothing
    followed_mask, followed = node.run(**common, **settings, track_gap=2).args[1:]
    assert followed.startswith("3 face(s) swapped in 3 frame(s)") and "without" not in followed
    filled, detected = followed_mask[1] > 0.01, followed_mask[0] > 0.01  # filled in where the face was
    assert float((filled & detected).sum()) > 0.9 * float((filled | detected).sum()) > 0
    # A reference that is not this person, with a threshold above its similarity: nobody is swapped.
    strict = node.run(**common, **settings, reference=identity_a, reference_threshold=0.999).args[2]
    assert strict.startswith("0 face(s) swapped")
    loose = node.run(**common, **settings, reference=identity_a, reference_threshold=-1.0).args[2]
    assert loose.startswith("2 face(s) swapped")
