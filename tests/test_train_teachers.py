"""Frozen teachers: ONNX recogniser and landmark models as torch modules, checked against onnxruntime."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from tiny_models import write_arcface, write_landmarks_3d68, write_landmarks_106
from torch import nn

from facemagic_core.errors import ModelIntegrityError
from facemagic_core.training import onnx_graph
from facemagic_core.training.onnx_graph import OnnxGraphModule, check_against_onnxruntime
from facemagic_core.training.teachers import load_landmark_model, load_recognizer

CPU = ["CPUExecutionProvider"]


def _uint8_pictures(count: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, size, size, 3), dtype=np.uint8)


def _to_tensor(pictures_rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(pictures_rgb).permute(0, 3, 1, 2).float() / 255.0


@pytest.mark.parametrize("normalise_in_graph", [False, True])
def test_recognizer_teacher_matches_insightface_runner(tmp_path: Path, normalise_in_graph: bool) -> None:
    from insightface.model_zoo import get_model

    path = write_arcface(tmp_path / "arcface.onnx", normalise_in_graph=normalise_in_graph)
    teacher = load_recognizer(path)
    runner = get_model(str(path), providers=CPU)
    assert (teacher.input_mean, teacher.input_std) == (runner.input_mean, runner.input_std)
    rgb = _uint8_pictures(3, 112, seed=1)
    expected = runner.get_feat([picture[:, :, ::-1].copy() for picture in rgb])  # the runner reads BGR
    actual = teacher(_to_tensor(rgb)).numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("writer", [write_landmarks_106, write_landmarks_3d68])
def test_landmark_teacher_matches_insightface_runner(tmp_path: Path, writer: object) -> None:
    from insightface.app.common import Face as InsightFace
    from insightface.model_zoo import get_model

    path = writer(tmp_path / "landmarks.onnx")  # type: ignore[operator]
    teacher = load_landmark_model(path)
    runner = get_model(str(path), providers=CPU)
    # A 192 px picture with a 128 px box centred on it: insightface's crop is then the picture itself.
    rgb = _uint8_pictures(1, 192, seed=2)
    face = InsightFace(bbox=np.array([32.0, 32.0, 160.0, 160.0], dtype=np.float32))
    expected = np.asarray(runner.get(rgb[0][:, :, ::-1].copy(), face))[:, :2]
    actual = teacher(_to_tensor(rgb))[0].numpy()
    assert actual.shape == expected.shape == (106 if writer is write_landmarks_106 else 68, 2)
    np.testing.assert_allclose(actual, expected, atol=2e-3)


def test_teachers_are_frozen_and_pass_gradients(tmp_path: Path) -> None:
    teacher = load_recognizer(write_arcface(tmp_path / "arcface.onnx"))
    teacher.train()
    assert not teacher.training and not teacher.graph.training
    assert not any(parameter.requires_grad for parameter in teacher.parameters())
    crops = torch.rand(2, 3, 64, 64, requires_grad=True)
    teacher.embed_crops(crops, template="arcface").sum().backward()
    assert crops.grad is not None and bool(torch.isfinite(crops.grad).all()) and float(crops.grad.abs().sum()) > 0


def test_recognizer_framing_of_generator_crops(tmp_path: Path) -> None:
    """An ArcFace 128 px crop holds the 112 px crop at x 8..120, y 0..112 (insightface's rule)."""
    teacher = load_recognizer(write_arcface(tmp_path / "arcface.onnx"))
    crops = torch.rand(2, 3, 128, 128, generator=torch.Generator().manual_seed(3))
    expected = F.normalize(teacher(crops[:, :, 0:112, 8:120]), dim=-1)
    torch.testing.assert_close(teacher.embed_crops(crops, template="arcface"), expected, atol=1e-5, rtol=1e-5)


class _ResNetLike(nn.Module):
    """The operators of insightface's iresnet and mxnet landmark exports, in one small network."""

    def __init__(self) -> None:
        super().__init__()
        self.bn_in = nn.BatchNorm2d(3)
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.prelu = nn.PReLU(8)
        self.conv_pad = nn.Conv2d(8, 8, 3, padding=0, groups=2)
        self.fc = nn.Linear(8 * 4 * 4 + 8, 16)
        self.features = nn.BatchNorm1d(16)
        for norm in (self.bn_in, self.bn, self.features):
            norm.running_mean.uniform_(-0.2, 0.2)
            norm.running_var.uniform_(0.5, 2.0)
            norm.weight.data.uniform_(0.5, 1.5)
            norm.bias.data.uniform_(-0.1, 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.prelu(self.bn(self.conv(self.bn_in(x))))
        y = y + F.leaky_relu(self.conv_pad(F.pad(y, (1, 1, 1, 1))), 0.1)
        y = F.max_pool2d(y, 2, 2)
        pooled = F.adaptive_avg_pool2d(y, 1).flatten(1)
        y = F.avg_pool2d(y, 2).permute(0, 2, 3, 1).reshape(x.shape[0], -1)
        y = self.fc(torch.cat([y, torch.sigmoid(pooled)], dim=1))
        return torch.tanh(self.features(y))


def test_graph_module_matches_onnxruntime_on_resnet_operators(tmp_path: Path) -> None:
    torch.manual_seed(0)
    network = _ResNetLike().eval()
    path = tmp_path / "resnet_like.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (torch.rand(2, 3, 32, 32),),
            str(path),
            input_names=["data"],
            output_names=["out"],
            dynamic_axes={"data": {0: "batch"}, "out": {0: "batch"}},
            opset_version=13,
            dynamo=False,
        )
    module = OnnxGraphModule.from_file(path)
    used = {node.op_type for node in onnx.load(str(path)).graph.node}
    assert {"Conv", "BatchNormalization", "PRelu", "MaxPool", "Gemm", "Concat", "Transpose"} <= used
    inputs = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(4)) * 4 - 2
    assert check_against_onnxruntime(module, path, [inputs]) < 1e-5
    with torch.no_grad():
        torch.testing.assert_close(module(inputs)[0], network(inputs), atol=1e-5, rtol=1e-5)


def test_unsupported_operator_is_named_when_loading(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Hardmax", ["x"], ["y"], name="hardmax_0")],
        "odd",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    path = tmp_path / "odd.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    with pytest.raises(ModelIntegrityError, match="Hardmax"):
        load_recognizer(path)


def test_load_check_rejects_a_wrong_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_arcface(tmp_path / "arcface.onnx")
    monkeypatch.setitem(onnx_graph.OPS, "Relu", lambda inputs, attributes: [torch.tanh(inputs[0])])  # type: ignore[arg-type, index]
    with pytest.raises(ModelIntegrityError, match="differs from onnxruntime"):
        load_recognizer(path)
    assert load_recognizer(path, check=False).input_size == 112  # unchecked loading still works


def test_onnxruntime_session_reference_is_the_cpu_provider(tmp_path: Path) -> None:
    path = write_landmarks_106(tmp_path / "landmarks.onnx")
    session = ort.InferenceSession(str(path), providers=CPU)
    pixels = torch.rand(1, 3, 192, 192, generator=torch.Generator().manual_seed(5)) * 255
    expected = session.run(None, {"data": pixels.numpy()})[0]
    actual = OnnxGraphModule.from_file(path)(pixels)[0].detach().numpy()
    np.testing.assert_allclose(actual, expected, atol=1e-4)
