"""Identity maths, face choice, mixing and the identity file format."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

from facemagic_core.errors import (
    BadInputError,
    FaceMagicError,
    IncompatibleIdentityError,
    NoFaceError,
)
from facemagic_core.identity import (
    IDENTITY_FORMAT_VERSION,
    choose_source_faces,
    cosine_similarity,
    extract_identity,
    identity_from_faces,
    load_identity,
    mix_coarse_fine,
    mix_identities,
    mix_per_block,
    normalize_embedding,
    save_identity,
    similarity_matrix,
)
from facemagic_core.types import Face, Identity

MODEL = "arcface_w600k_r50"


def unit(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector, axis=-1, keepdims=True)


def random_identity(seed: int, rows: int = 1, dim: int = 512, model: str = MODEL, name: str = "") -> Identity:
    embeddings = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return Identity(embeddings, embedding_model=model, sources=(name or f"person{seed}.jpg",))


def make_face(size: float, embedding: np.ndarray | None, x: float = 10.0, score: float = 0.9) -> Face:
    bbox = np.array([x, 10.0, x + size, 10.0 + size * 1.2], dtype=np.float32)
    landmarks = np.array(
        [[0.34, 0.46], [0.66, 0.46], [0.5, 0.64], [0.37, 0.82], [0.63, 0.82]], dtype=np.float32
    ) * np.float32(size) + np.float32([x, 10.0])
    return Face(bbox=bbox, score=score, landmarks_5=landmarks.astype(np.float32), embedding=embedding)


class FakeAnalyzer:
    """Hands out prepared faces, image by image, in the order images arrive."""

    embedding_model = MODEL

    def __init__(self, faces_per_image: list[list[Face]]) -> None:
        self.faces_per_image = faces_per_image
        self.calls: list[tuple[int, ...]] = []
        self.next = 0

    def analyze(self, images: torch.Tensor, *, landmarks: bool = True, embeddings: bool = True) -> list[list[Face]]:
        assert embeddings
        self.calls.append(tuple(images.shape))
        result = []
        for local in range(images.shape[0]):
            faces = self.faces_per_image[self.next]
            result.append(
                [Face(f.bbox, f.score, f.landmarks_5, image_index=local, embedding=f.embedding) for f in faces]
            )
            self.next += 1
        return result


# ------------------------------------------------------------------------------------------------ normalise, compare


def test_normalize_embedding_unit_rows_and_input_untouched() -> None:
    raw = np.array([[3.0, 4.0], [0.0, -2.0]], dtype=np.float32)
    before = raw.copy()
    result = normalize_embedding(raw)
    np.testing.assert_allclose(result, [[0.6, 0.8], [0.0, -1.0]], atol=1e-7)
    assert result.dtype == np.float32
    np.testing.assert_array_equal(raw, before)
    np.testing.assert_allclose(normalize_embedding(torch.tensor([0.0, 5.0])), [0.0, 1.0])


@pytest.mark.parametrize("bad", [np.zeros(8), np.array([1.0, np.nan, 0.0]), np.array([np.inf, 1.0])])
def test_normalize_embedding_refuses_zero_and_non_finite(bad: np.ndarray) -> None:
    with pytest.raises(BadInputError):
        normalize_embedding(bad)


def test_cosine_similarity_vectors_batches_and_identities() -> None:
    value = cosine_similarity(np.array([1.0, 0.0]), np.array([2.0, 2.0]))
    assert isinstance(value, float)
    assert value == pytest.approx(math.sqrt(0.5), abs=1e-7)
    batch = cosine_similarity(np.array([[1.0, 0.0], [0.0, 3.0], [-1.0, 0.0]]), np.array([1.0, 0.0]))
    np.testing.assert_allclose(batch, [1.0, 0.0, -1.0], atol=1e-7)
    rows = cosine_similarity(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 1.0], [0.0, -1.0]]))
    np.testing.assert_allclose(rows, [math.sqrt(0.5), -1.0], atol=1e-6)
    a, b = random_identity(1), random_identity(2)
    assert cosine_similarity(a, a) == pytest.approx(1.0, abs=1e-6)
    expected = float(a.embeddings[0].astype(np.float64) @ b.embeddings[0].astype(np.float64))
    assert cosine_similarity(a, b) == pytest.approx(expected, abs=1e-6)
    with pytest.raises(IncompatibleIdentityError, match="different embedding models"):
        cosine_similarity(a, random_identity(3, model="glintr100"))
    with pytest.raises(IncompatibleIdentityError):
        cosine_similarity(np.ones(4), np.ones(5))


def test_similarity_matrix_is_symmetric_with_unit_diagonal() -> None:
    rows = np.random.default_rng(0).standard_normal((4, 16))
    matrix = similarity_matrix(rows * np.array([[1.0], [2.0], [0.5], [9.0]]))
    np.testing.assert_allclose(np.diag(matrix), 1.0, atol=1e-6)
    np.testing.assert_allclose(matrix, matrix.T, atol=1e-7)
    np.testing.assert_allclose(matrix[0, 1], cosine_similarity(rows[0], rows[1]), atol=1e-6)


# ------------------------------------------------------------------------------------------------ extract


def test_identity_from_faces_averages_normalised_embeddings() -> None:
    rng = np.random.default_rng(5)
    raw = rng.standard_normal((3, 512)).astype(np.float32) * np.float32([[1.0], [20.0], [0.1]])
    faces = [make_face(50, row) for row in raw]
    identity = identity_from_faces(faces, embedding_model=MODEL, sources=["a.jpg", "b.jpg", "c.jpg"])
    expected = unit(unit(raw.astype(np.float64)).mean(axis=0))
    np.testing.assert_allclose(identity.embeddings[0], expected, atol=1e-6)
    assert identity.sources == ("a.jpg", "b.jpg", "c.jpg")
    assert identity.weights == pytest.approx((1 / 3,) * 3)
    assert identity.mode == "mean"
    single = identity_from_faces(faces[:1], embedding_model=MODEL, sources=["a.jpg"])
    assert single.mode == "single" and single.weights == (1.0,)
    with pytest.raises(BadInputError, match="no embedding"):
        identity_from_faces([make_face(50, None)], embedding_model=MODEL, sources=["x.jpg"])
    with pytest.raises(BadInputError, match="source names"):
        identity_from_faces(faces, embedding_model=MODEL, sources=["a.jpg"])


def test_extract_identity_picks_the_face_asked_for() -> None:
    rng = np.random.default_rng(7)
    small, large, other = (rng.standard_normal(512).astype(np.float32) for _ in range(3))
    # image 1: a small face listed before a large one; image 2: one face
    faces = [[make_face(30, small, x=5), make_face(80, large, x=50)], [make_face(60, other)]]
    images = torch.rand(2, 3, 160, 160)

    identity = extract_identity(FakeAnalyzer(faces), images, sources=["one.jpg", "two.jpg"])
    np.testing.assert_allclose(identity.embeddings[0], unit(unit(large) + unit(other)), atol=1e-6)
    assert identity.sources == ("one.jpg", "two.jpg")
    assert json.loads(identity.extra["face_index"]) == [0, 0]
    assert identity.extra["face_order"] == "largest"

    chosen = choose_source_faces(FakeAnalyzer(faces), images, index=[1, 0])
    np.testing.assert_array_equal(chosen[0].face.embedding, small)
    assert (chosen[0].index, chosen[0].faces_found, chosen[1].faces_found) == (1, 2, 1)
    assert [item.source for item in chosen] == ["image 1", "image 2"]

    left_first = choose_source_faces(FakeAnalyzer(faces), images, order="left_to_right")
    np.testing.assert_array_equal(left_first[0].face.embedding, small)


def test_choose_source_faces_takes_batches_of_different_sizes() -> None:
    rng = np.random.default_rng(8)
    embeddings = rng.standard_normal((3, 512)).astype(np.float32)
    analyzer = FakeAnalyzer([[make_face(40, row)] for row in embeddings])
    images = [torch.rand(1, 3, 64, 80), torch.rand(2, 3, 96, 96)]
    chosen = choose_source_faces(analyzer, images, sources=["a", "b", "c"])
    assert analyzer.calls == [(1, 3, 64, 80), (2, 3, 96, 96)]
    assert [item.face.image_index for item in chosen] == [0, 1, 2]
    np.testing.assert_array_equal(chosen[2].face.embedding, embeddings[2])


def test_no_face_error_names_the_image() -> None:
    embedding = np.ones(512, dtype=np.float32)
    analyzer = FakeAnalyzer([[make_face(40, embedding)], [], [make_face(40, embedding)]])
    with pytest.raises(NoFaceError) as caught:
        extract_identity(analyzer, torch.rand(3, 3, 64, 64), sources=["a.jpg", "b.jpg", "c.jpg"])
    assert "image 2 of 3: b.jpg" in str(caught.value)
    assert "no face" in str(caught.value)

    analyzer = FakeAnalyzer([[make_face(40, embedding)], [make_face(40, embedding), make_face(30, embedding)]])
    with pytest.raises(NoFaceError) as caught:
        extract_identity(analyzer, torch.rand(2, 3, 64, 64), index=2, sources=["a.jpg", "b.jpg"])
    message = str(caught.value)
    assert "image 1 of 2: a.jpg" in message and "face index 2" in message and "only 1 face" in message


def test_extract_identity_refuses_bad_choices() -> None:
    analyzer = FakeAnalyzer([[make_face(40, np.ones(512, dtype=np.float32))]] * 2)
    images = torch.rand(2, 3, 64, 64)
    with pytest.raises(BadInputError, match="2 images"):
        extract_identity(analyzer, images, index=[0, 0, 0])
    with pytest.raises(BadInputError, match="face index"):
        extract_identity(analyzer, images, index=-1)
    with pytest.raises(BadInputError, match="face order"):
        extract_identity(analyzer, images, order="tallest")  # type: ignore[arg-type]
    with pytest.raises(BadInputError):
        extract_identity(analyzer, torch.rand(2, 4, 64, 64))


# ------------------------------------------------------------------------------------------------ mix


def test_weighted_mix_normalises_and_records_weights() -> None:
    a, b = random_identity(1, name="a"), random_identity(2, name="b")
    mixed = mix_identities([a, b], method="weighted", weights=[1.0, 3.0])
    assert mixed.weights == (0.25, 0.75)
    assert sum(mixed.weights) == pytest.approx(1.0)
    assert mixed.mode == "weighted" and mixed.sources == ("a", "b")
    expected = unit(0.25 * a.embeddings[0].astype(np.float64) + 0.75 * b.embeddings[0])
    np.testing.assert_allclose(mixed.embeddings[0], expected, atol=1e-6)
    ingredients = json.loads(mixed.extra["ingredients"])
    assert [item["sources"] for item in ingredients] == [["a"], ["b"]]

    mean = mix_identities([a, b, random_identity(3)], method="mean")
    assert mean.weights == pytest.approx((1 / 3,) * 3)


@pytest.mark.parametrize(
    ("weights", "message"),
    [([0.0, 0.0], "all zero"), ([1.0, -1.0], "negative"), ([1.0, float("nan")], "finite"), ([1.0], "2 weights")],
)
def test_weighted_mix_refuses_bad_weights(weights: list[float], message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        mix_identities([random_identity(1), random_identity(2)], method="weighted", weights=weights)


@pytest.mark.parametrize("rows", [1, 6])
def test_mixing_an_identity_with_itself_gives_itself(rows: int) -> None:
    a = random_identity(4, rows=rows)
    for method in ("mean", "median"):
        for count in (2, 3):
            mixed = mix_identities([a] * count, method=method)  # type: ignore[arg-type]
            np.testing.assert_allclose(mixed.embeddings, a.embeddings, atol=1e-6, err_msg=method)
    weighted = mix_identities([a, a, a], method="weighted", weights=[0.2, 5.0, 1.0])
    np.testing.assert_allclose(weighted.embeddings, a.embeddings, atol=1e-6)
    for t in (0.0, 0.3, 1.0):
        np.testing.assert_allclose(mix_identities([a, a], method="slerp", t=t).embeddings, a.embeddings, atol=1e-6)
    np.testing.assert_allclose(mix_coarse_fine(a, a).embeddings, a.for_blocks(6), atol=1e-6)
    table = np.array([[1.0, 0.0], [0.3, 0.7], [0.0, 2.0], [1.0, 1.0], [5.0, 1.0], [0.1, 0.0]])
    np.testing.assert_allclose(mix_per_block([a, a], table).embeddings, a.for_blocks(6), atol=1e-6)


def test_median_of_three_is_element_wise() -> None:
    a = Identity(np.array([1.0, 0.0, 0.0, 0.0]), embedding_model=MODEL)
    b = Identity(np.array([0.0, 1.0, 0.0, 0.0]), embedding_model=MODEL)
    c = Identity(np.array([0.6, 0.8, 0.0, 0.0]), embedding_model=MODEL)
    d = Identity(np.array([0.0, 0.0, 0.6, 0.8]), embedding_model=MODEL)
    np.testing.assert_allclose(mix_identities([a, b, c], method="median").embeddings[0], [0.6, 0.8, 0, 0], atol=1e-7)
    # an odd one out (d) does not pull the median off the two who agree
    np.testing.assert_allclose(mix_identities([c, c, d], method="median").embeddings[0], [0.6, 0.8, 0, 0], atol=1e-7)
    # element-wise median of [a, b, d] is (0, 0, 0, 0): the mix cancels out
    with pytest.raises(BadInputError, match="cancel out"):
        mix_identities([a, b, d], method="median")


def test_slerp_endpoints_and_angles() -> None:
    a, b = random_identity(10), random_identity(11)
    start, end = a.embeddings[0].astype(np.float64), b.embeddings[0].astype(np.float64)
    angle = math.acos(float(start @ end))
    np.testing.assert_array_equal(mix_identities([a, b], method="slerp", t=0.0).embeddings, a.embeddings)
    np.testing.assert_array_equal(mix_identities([a, b], method="slerp", t=1.0).embeddings, b.embeddings)
    for t in (0.25, 0.5, 0.9):
        mixed = mix_identities([a, b], method="slerp", t=t)
        row = mixed.embeddings[0].astype(np.float64)
        assert np.linalg.norm(row) == pytest.approx(1.0, abs=1e-6)
        assert math.acos(float(np.clip(row @ start, -1, 1))) == pytest.approx(t * angle, abs=1e-5)
        assert math.acos(float(np.clip(row @ end, -1, 1))) == pytest.approx((1 - t) * angle, abs=1e-5)
        assert mixed.weights == pytest.approx((1 - t, t))
    by_weights = mix_identities([a, b], method="slerp", weights=[1.0, 3.0])
    np.testing.assert_allclose(by_weights.embeddings, mix_identities([a, b], method="slerp", t=0.75).embeddings)
    with pytest.raises(BadInputError, match="exactly two"):
        mix_identities([a, b, a], method="slerp")
    with pytest.raises(BadInputError, match="between 0 and 1"):
        mix_identities([a, b], method="slerp", t=1.5)


def test_slerp_nearly_parallel_and_opposite_rows() -> None:
    base = np.zeros(8)
    base[0] = 1.0
    near = base.copy()
    near[1] = 1e-7
    a, b = Identity(base, embedding_model=MODEL), Identity(near, embedding_model=MODEL)
    mixed = mix_identities([a, b], method="slerp", t=0.5).embeddings[0]
    assert np.all(np.isfinite(mixed))
    np.testing.assert_allclose(mixed, base, atol=1e-6)

    opposite = Identity(-base, embedding_model=MODEL)
    halfway = mix_identities([a, opposite], method="slerp", t=0.5).embeddings[0].astype(np.float64)
    assert np.linalg.norm(halfway) == pytest.approx(1.0, abs=1e-6)
    assert float(halfway @ base) == pytest.approx(0.0, abs=1e-6)  # a quarter turn from each end
    quarter = mix_identities([a, opposite], method="slerp", t=0.25).embeddings[0].astype(np.float64)
    assert float(quarter @ base) == pytest.approx(math.cos(math.pi / 4), abs=1e-6)

    person = random_identity(12, rows=3)  # float32 rounding puts exact negatives a little off pi
    negated = Identity(-person.embeddings, embedding_model=MODEL)
    middle = mix_identities([person, negated], method="slerp", t=0.5).embeddings.astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(middle, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.sum(middle * person.embeddings, axis=1), 0.0, atol=1e-6)


def test_mixing_different_block_counts_keeps_what_every_generator_sees() -> None:
    a, b = random_identity(20, rows=2), random_identity(21, rows=3)
    mixed = mix_identities([a, b], method="mean")
    assert mixed.num_blocks == 6  # lcm(2, 3)
    for blocks in range(1, 13):
        expected = unit(a.for_blocks(blocks).astype(np.float64) + b.for_blocks(blocks))
        np.testing.assert_allclose(mixed.for_blocks(blocks), expected, atol=1e-6, err_msg=f"{blocks} blocks")


def test_for_blocks_gives_each_generator_block_its_row() -> None:
    """Block ``i`` of an ``n``-block generator takes row ``i * K // n``: a coarse-to-fine split keeps its order."""
    rows = np.eye(6, 8)  # row r points along axis r, so each block's row can be read back
    for k, n, expected in (
        (2, 6, [0, 0, 0, 1, 1, 1]),
        (3, 6, [0, 0, 1, 1, 2, 2]),
        (6, 3, [0, 2, 4]),
        (2, 5, [0, 0, 0, 1, 1]),
        (1, 4, [0, 0, 0, 0]),
    ):
        identity = Identity(rows[:k], embedding_model=MODEL)
        assert np.argmax(identity.for_blocks(n), axis=1).tolist() == expected, (k, n)
    with pytest.raises(BadInputError, match="at least one block"):
        Identity(rows[:2], embedding_model=MODEL).for_blocks(0)


def test_coarse_fine_keeps_block_order() -> None:
    a, b = random_identity(30, name="A"), random_identity(31, name="B")
    mixed = mix_coarse_fine(a, b)
    blocks = mixed.for_blocks(6)
    np.testing.assert_array_equal(blocks[:3], np.repeat(a.embeddings, 3, axis=0))
    np.testing.assert_array_equal(blocks[3:], np.repeat(b.embeddings, 3, axis=0))
    assert mixed.sources == ("A", "B") and mixed.mode == "coarse_fine" and mixed.weights == (0.5, 0.5)
    assert mixed.extra["coarse_blocks"] == "3"

    five = mix_coarse_fine(a, b, num_blocks=5)  # half of 5 rounded up: 3 coarse blocks
    np.testing.assert_array_equal(five.embeddings[:3], np.repeat(a.embeddings, 3, axis=0))
    np.testing.assert_array_equal(five.embeddings[3:], np.repeat(b.embeddings, 2, axis=0))
    two = mix_coarse_fine(a, b, coarse_blocks=2)
    np.testing.assert_array_equal(two.embeddings[:2], np.repeat(a.embeddings, 2, axis=0))
    np.testing.assert_array_equal(two.embeddings[2:], np.repeat(b.embeddings, 4, axis=0))
    # a per-block coarse input gives its own rows
    per_block = random_identity(32, rows=6)
    np.testing.assert_array_equal(mix_coarse_fine(per_block, b).embeddings[:3], per_block.embeddings[:3])
    with pytest.raises(BadInputError, match="coarse_blocks"):
        mix_coarse_fine(a, b, coarse_blocks=7)


def test_mix_per_block_weights_each_row() -> None:
    a, b = random_identity(40, name="A"), random_identity(41, name="B")
    table = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 1.0], [0.0, 5.0], [2.0, 0.0]])
    mixed = mix_per_block([a, b], table)
    assert mixed.num_blocks == 6 and mixed.mode == "per_block"
    shares = table / table.sum(axis=1, keepdims=True)
    for row in range(6):
        expected = unit(shares[row, 0] * a.embeddings[0].astype(np.float64) + shares[row, 1] * b.embeddings[0])
        np.testing.assert_allclose(mixed.embeddings[row], expected, atol=1e-6, err_msg=f"row {row}")
    assert mixed.weights == pytest.approx(tuple(shares.mean(axis=0)))
    assert sum(mixed.weights) == pytest.approx(1.0)
    np.testing.assert_allclose(json.loads(mixed.extra["block_weights"]), shares)
    zero_row = table.copy()
    zero_row[4] = 0.0
    with pytest.raises(BadInputError, match="block 4"):
        mix_per_block([a, b], zero_row)
    with pytest.raises(BadInputError, match="shape"):
        mix_per_block([a, b], np.ones((6, 3)))


def test_mixing_refuses_other_models_and_sizes() -> None:
    a, other = random_identity(1), random_identity(2, model="glintr100")
    with pytest.raises(IncompatibleIdentityError, match=f"{MODEL}, glintr100"):
        mix_identities([a, other], method="mean")
    with pytest.raises(IncompatibleIdentityError):
        mix_coarse_fine(a, other)
    with pytest.raises(IncompatibleIdentityError):
        mix_per_block([a, other], np.ones((6, 2)))
    with pytest.raises(IncompatibleIdentityError, match="sizes"):
        mix_identities([a, random_identity(3, dim=256)], method="mean")
    with pytest.raises(BadInputError, match="cancel out"):
        mix_identities([a, Identity(-a.embeddings, embedding_model=MODEL)], method="mean")
    with pytest.raises(BadInputError, match="needs weights"):
        mix_identities([a, a], method="weighted")


# ------------------------------------------------------------------------------------------------ files


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    mixed = mix_identities(
        [random_identity(50, rows=6, name="A"), random_identity(51, rows=2, name="B")],
        method="weighted",
        weights=[2.0, 1.0],
    )
    for number, identity in enumerate([random_identity(52), mixed]):
        path = tmp_path / f"person{number}.safetensors"
        save_identity(identity, path)
        loaded = load_identity(path, embedding_model=MODEL)
        np.testing.assert_array_equal(loaded.embeddings, identity.embeddings)
        assert loaded.embeddings.dtype == np.float32
        assert (loaded.embedding_model, loaded.sources, loaded.weights, loaded.mode, loaded.extra) == (
            identity.embedding_model,
            identity.sources,
            identity.weights,
            identity.mode,
            identity.extra,
        )
    with safe_open(str(tmp_path / "person1.safetensors"), framework="numpy") as reader:
        metadata = reader.metadata()
    assert metadata["format_version"] == str(IDENTITY_FORMAT_VERSION)
    assert metadata["created_by"].startswith("facemagic ")
    assert json.loads(metadata["weights"]) == [2 / 3, 1 / 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["person0.safetensors", "person1.safetensors"]


def test_load_refuses_another_embedding_model(tmp_path: Path) -> None:
    path = tmp_path / "p.safetensors"
    save_identity(random_identity(1, model="glintr100"), path)
    with pytest.raises(IncompatibleIdentityError) as caught:
        load_identity(path, embedding_model=MODEL)
    message = str(caught.value)
    assert "glintr100" in message and MODEL in message and "re-extract" in message and str(path) in message


def _write_raw(path: Path, embeddings: np.ndarray, **metadata: str) -> None:
    base = {"format_version": "1", "embedding_model": MODEL, "sources": "[]", "weights": "[]", "mode": "single"}
    save_file({"embeddings": embeddings}, str(path), metadata={**base, **metadata})


def test_load_refuses_newer_format_and_nan(tmp_path: Path) -> None:
    newer = tmp_path / "newer.safetensors"
    _write_raw(newer, np.ones((1, 8), np.float32), format_version=str(IDENTITY_FORMAT_VERSION + 1))
    with pytest.raises(IncompatibleIdentityError, match="upgrade FaceMagic"):
        load_identity(newer)
    nan = tmp_path / "nan.safetensors"
    embeddings = np.ones((1, 8), np.float32)
    embeddings[0, 3] = np.nan
    _write_raw(nan, embeddings)
    with pytest.raises(BadInputError, match="NaN") as caught:
        load_identity(nan)
    assert str(nan) in str(caught.value)


def test_load_refuses_damaged_files(tmp_path: Path) -> None:
    good = tmp_path / "good.safetensors"
    save_identity(random_identity(1), good)
    data = good.read_bytes()
    cases = {
        "random.safetensors": np.random.default_rng(0).bytes(3000),
        "truncated.safetensors": data[: len(data) - 100],
        "header_only.safetensors": data[:6],
        "empty.safetensors": b"",
    }
    for name, content in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(FaceMagicError) as caught:
            load_identity(path)
        assert str(path) in str(caught.value), name
        assert caught.value.fix, name
    weights = tmp_path / "weights.safetensors"
    save_file({"conv.weight": np.ones((2, 2), np.float32)}, str(weights))
    with pytest.raises(BadInputError, match="not a FaceMagic identity"):
        load_identity(weights)
    with pytest.raises(BadInputError, match="not found"):
        load_identity(tmp_path / "missing.safetensors")
    with pytest.raises(BadInputError, match=r"\.safetensors"):
        save_identity(random_identity(1), tmp_path / "person.pt")


def test_load_refuses_foreign_files_and_names_the_file_on_bad_rows(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.safetensors"  # what another tool might write: our keys, not our format
    _write_raw(foreign, np.ones((1, 8), np.float32), format="pt")
    with pytest.raises(BadInputError, match="not a FaceMagic identity") as caught:
        load_identity(foreign)
    assert "'pt'" in str(caught.value)
    zeros = tmp_path / "zeros.safetensors"
    _write_raw(zeros, np.zeros((2, 8), np.float32))
    with pytest.raises(BadInputError, match="all zeros") as caught:
        load_identity(zeros)
    assert str(zeros) in str(caught.value)


def test_save_to_an_unwritable_place_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file where a folder should be")
    target = blocker / "person.safetensors"
    with pytest.raises(BadInputError, match="cannot write the identity file") as caught:
        save_identity(random_identity(1), target)
    assert str(target) in str(caught.value) and caught.value.fix


def test_identity_inputs_are_checked_and_never_modified() -> None:
    for bad in ("abc", np.array(["a", "b"]), object()):
        with pytest.raises(BadInputError, match="needs numbers"):
            Identity(bad, embedding_model=MODEL)  # type: ignore[arg-type]
    raw = torch.tensor([[3.0, 4.0]], dtype=torch.float16)
    identity = Identity(raw, embedding_model=MODEL)  # type: ignore[arg-type]
    np.testing.assert_allclose(identity.embeddings, [[0.6, 0.8]], atol=1e-3)
    assert identity.embeddings.dtype == np.float32 and raw.tolist() == [[3.0, 4.0]]
    array = np.array([3.0, 4.0], dtype=np.float32)
    Identity(array, embedding_model=MODEL)
    assert array.tolist() == [3.0, 4.0]
    a, b = random_identity(1), random_identity(2)
    with pytest.raises(BadInputError, match="t as a number"):
        mix_identities([a, b], method="slerp", t="0.5")  # type: ignore[arg-type]


def test_bad_source_image_is_named_by_its_file() -> None:
    analyzer = FakeAnalyzer([[make_face(40, np.ones(512, dtype=np.float32))]] * 3)
    images = [torch.rand(1, 3, 64, 64), torch.rand(1, 3, 16, 16)]
    with pytest.raises(BadInputError, match="16x16") as caught:
        extract_identity(analyzer, images, sources=["me.jpg", "tiny.png"])
    assert "(tiny.png)" in str(caught.value)
    assert analyzer.calls == []  # every image is checked before any is analysed
    with pytest.raises(BadInputError, match=r"RGBA.*a\.png, b\.png"):
        extract_identity(analyzer, torch.rand(2, 4, 64, 64), sources=["a.png", "b.png"])
    with pytest.raises(BadInputError, match=r"single image.*\(c\.png\).*batch dimension"):
        extract_identity(analyzer, [torch.rand(3, 64, 64)], sources=["c.png"])


def test_choose_source_faces_with_the_real_yunet_detector(
    tmp_path: Path, faces_dir: Path, yunet_path: Path, t1_path: Path
) -> None:
    from tiny_models import write_arcface

    from facemagic_core.analysis import FaceAnalyzer
    from facemagic_core.identity import identity_from_chosen_faces
    from facemagic_core.images import load_image

    analyzer = FaceAnalyzer(
        backend="yunet", detector=yunet_path, recognizer=write_arcface(tmp_path / "arcface.onnx"), providers=["cpu"]
    )
    images = [load_image(faces_dir / "anni.jpg"), load_image(faces_dir / "arnold.jpg"), load_image(t1_path)]
    names = ["anni.jpg", "arnold.jpg", "t1.jpg"]
    chosen = choose_source_faces(analyzer, images, order="left_to_right", index=[0, 0, 5], sources=names)
    assert [item.faces_found for item in chosen] == [1, 1, 6]
    group = analyzer.detect_faces(images[2])[0]
    assert chosen[2].face.center[0] == pytest.approx(max(face.center[0] for face in group))
    assert [item.face.image_index for item in chosen] == [0, 1, 2]

    identity = identity_from_chosen_faces(chosen, embedding_model=analyzer.embedding_model, order="left_to_right")
    embeddings = np.stack([item.face.embedding for item in chosen]).astype(np.float64)
    np.testing.assert_allclose(identity.embeddings[0], unit(unit(embeddings).mean(axis=0)), atol=1e-6)
    assert identity.sources == tuple(names) and json.loads(identity.extra["face_index"]) == [0, 0, 5]

    blank = torch.full((1, 3, 200, 200), 0.5)
    with pytest.raises(NoFaceError, match=r"image 2 of 2: blank\.png"):
        extract_identity(analyzer, [images[0], blank], sources=["anni.jpg", "blank.png"])


@pytest.mark.parametrize("model", ["", "   ", None])
def test_an_identity_must_name_its_recogniser(model: object) -> None:
    with pytest.raises(BadInputError, match="must name the recogniser"):
        Identity(np.ones(512, np.float32), model)  # type: ignore[arg-type]
