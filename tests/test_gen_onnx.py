"""ONNX swappers through onnxruntime: value range, colour order, fp16 inputs, fixed batch, emap, signatures.

The tiny graphs built here have the public swappers' signatures (an image input (N, 3, S, S),
an identity input (N, 512), an image output, optionally a mask output and an unused emap as
the last initializer) and a known linear function, so the expected output is computed exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch.testing import assert_close

from facemagic_core import hub
from facemagic_core.errors import BadInputError, IncompatibleIdentityError, ModelIntegrityError
from facemagic_core.generators import OnnxSwapper, OnnxSwapperSpec, SwapModel, read_emap
from facemagic_core.generators.onnx_swapper import load_onnx_model, spec_from_registry

OPSET = 13


def write_swapper_graph(
    path: Path,
    *,
    size: int = 32,
    half: bool = False,
    fixed_batch: bool = False,
    emap: np.ndarray | None = None,
    names: tuple[str, str, str] = ("target", "source", "output"),
    identity_first: bool = False,
    mask: bool = False,
    id_dim: int = 512,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """``output = target * scale + reshape(source @ projection, (N, 3, 1, 1))``; ``mask = mean over channels``."""
    rng = np.random.default_rng(seed)
    dtype, onnx_type = (np.float16, TensorProto.FLOAT16) if half else (np.float32, TensorProto.FLOAT)
    scale = rng.uniform(0.5, 0.9, size=(1, 3, 1, 1)).astype(dtype)
    projection = (rng.standard_normal((id_dim, 3)) * 0.02).astype(dtype)
    batch: int | str = 1 if fixed_batch else "batch"
    image_name, identity_name, output_name = names
    image = helper.make_tensor_value_info(image_name, onnx_type, [batch, 3, size, size])
    identity = helper.make_tensor_value_info(identity_name, onnx_type, [batch, id_dim])
    outputs = [helper.make_tensor_value_info(output_name, onnx_type, [batch, 3, size, size])]
    nodes = [
        helper.make_node("Mul", [image_name, "scale"], ["scaled"]),
        helper.make_node("MatMul", [identity_name, "projection"], ["shift"]),
        helper.make_node("Reshape", ["shift", "shape"], ["shift4"]),
        helper.make_node("Add", ["scaled", "shift4"], [output_name]),
    ]
    if mask:
        nodes.append(helper.make_node("ReduceMean", [image_name], ["mask"], axes=[1], keepdims=1))
        outputs.append(helper.make_tensor_value_info("mask", onnx_type, [batch, 1, size, size]))
    initializers = [
        numpy_helper.from_array(scale, "scale"),
        numpy_helper.from_array(projection, "projection"),
        numpy_helper.from_array(np.array([-1, 3, 1, 1], dtype=np.int64), "shape"),
    ]
    if emap is not None:
        initializers.append(numpy_helper.from_array(emap.astype(dtype), "emap"))  # last, used by no node
    graph_inputs = [identity, image] if identity_first else [image, identity]
    graph = helper.make_graph(nodes, "tiny_swapper", graph_inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return {"scale": scale.astype(np.float32), "projection": projection.astype(np.float32)}


def random_emap(seed: int = 1, dim: int = 512) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((dim, dim)) / np.sqrt(dim)).astype(np.float32)


def swap_inputs(batch: int = 3, size: int = 32, seed: int = 2) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    crops = torch.rand(batch, 3, size, size, generator=generator)
    source = F.normalize(torch.randn(batch, 1, 512, generator=generator), dim=-1)
    target = F.normalize(torch.randn(batch, 512, generator=generator), dim=-1)
    strength = torch.rand(batch, 1, generator=generator)
    return crops, source, target, strength


def expected_output(
    params: dict[str, np.ndarray],
    spec: OnnxSwapperSpec,
    crops: torch.Tensor,
    source: torch.Tensor,
    target: torch.Tensor,
    strength: torch.Tensor,
    emap: np.ndarray | None,
) -> torch.Tensor:
    """What the swapper must return, computed independently in float64."""
    x = crops.double()
    if spec.value_range == "minus_one_one":
        x = x * 2 - 1
    if spec.colour_order == "bgr":
        x = x[:, [2, 1, 0]]
    identity = F.normalize((1 - strength.double()) * target.double() + strength.double() * source[:, 0].double())
    if emap is not None:
        identity = identity @ torch.from_numpy(emap).double()
        if spec.latent_renormalize:
            identity = F.normalize(identity)
    y = x * torch.from_numpy(params["scale"]).double()
    y = y + (identity @ torch.from_numpy(params["projection"]).double())[:, :, None, None]
    if spec.colour_order == "bgr":
        y = y[:, [2, 1, 0]]
    if spec.value_range == "minus_one_one":
        y = (y + 1) / 2
    return y.clamp(0, 1).float()


class CountingSession:
    """An onnxruntime session that counts its run calls and the batch sizes it was given."""

    def __init__(self, path: Path) -> None:
        import onnxruntime

        self.inner = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.batches: list[int] = []

    def run(self, names: Any, feeds: dict[str, np.ndarray]) -> Any:
        self.batches.append(next(iter(feeds.values())).shape[0])
        return self.inner.run(names, feeds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("value_range", ["zero_one", "minus_one_one"])
@pytest.mark.parametrize("colour_order", ["rgb", "bgr"])
@pytest.mark.parametrize("half", [False, True], ids=["fp32", "fp16"])
@pytest.mark.parametrize("fixed_batch", [False, True], ids=["dynamic", "fixed1"])
def test_onnx_swapper_preprocessing_matches_the_spec(
    tmp_path: Path, value_range: str, colour_order: str, half: bool, fixed_batch: bool
) -> None:
    emap = random_emap() if value_range == "zero_one" else None  # inswapper-like vs hyperswap-like
    path = tmp_path / "swapper.onnx"
    params = write_swapper_graph(path, half=half, fixed_batch=fixed_batch, emap=emap)
    spec = OnnxSwapperSpec(
        "tiny",
        32,
        value_range,  # type: ignore[arg-type]
        colour_order,  # type: ignore[arg-type]
        embedding="emap" if emap is not None else "normalised",
    )
    session = CountingSession(path)
    swapper = OnnxSwapper(path, spec=spec, session=session)  # type: ignore[arg-type]
    assert isinstance(swapper, SwapModel)
    assert swapper.num_blocks == 1 and swapper.input_size == 32
    assert swapper.dtype == (torch.float16 if half else torch.float32)
    crops, source, target, strength = swap_inputs()
    before = crops.clone()
    out = swapper.swap(crops, source, target, strength)
    assert session.batches == ([1, 1, 1] if fixed_batch else [3])
    assert out.images.dtype == torch.float32 and out.images.shape == (3, 3, 32, 32) and out.mask is None
    expected = expected_output(params, spec, crops, source, target, strength, emap)
    tolerance = 6e-3 if half else 1e-5
    assert_close(out.images, expected, rtol=0, atol=tolerance)
    assert float(((expected > 0) & (expected < 1)).float().mean()) > 0.9  # the comparison is not all clamped
    assert torch.equal(crops, before)


def test_emap_is_the_last_initializer_and_is_detected_without_a_spec(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    emap = random_emap(seed=5)
    path = tmp_path / "mystery.onnx"
    params = write_swapper_graph(path, emap=emap)
    assert_close(torch.from_numpy(read_emap(load_onnx_model(path))), torch.from_numpy(emap), rtol=0, atol=0)
    with caplog.at_level("WARNING"):
        swapper = OnnxSwapper(path, providers=["CPUExecutionProvider"])
    assert "not a known swapper" in caplog.text
    assert swapper.spec.embedding == "emap" and swapper.spec.value_range == "zero_one"
    crops, source, target, strength = swap_inputs()
    out = swapper.swap(crops, source, target, strength)
    assert_close(out.images, expected_output(params, swapper.spec, crops, source, target, strength, emap))
    # without the emap the same graph is taken for a hyperswap-like "normalised" model
    plain = tmp_path / "plain.onnx"
    write_swapper_graph(plain)
    assert read_emap(load_onnx_model(plain)) is None
    assert OnnxSwapper(plain, providers=["CPUExecutionProvider"]).spec.embedding == "normalised"


def test_a_used_last_initializer_is_not_an_emap_and_a_missing_emap_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "no_emap.onnx"
    write_swapper_graph(path)
    model = onnx.load(str(path))
    model.graph.initializer.append(numpy_helper.from_array(np.zeros((512, 3), np.float32), "rectangular"))
    onnx.save(model, str(path))
    assert read_emap(onnx.load(str(path))) is None  # last initializer is not square
    spec = OnnxSwapperSpec("inswapper_like", 32, "zero_one", embedding="emap")
    with pytest.raises(ModelIntegrityError, match="no \\(512, 512\\) emap") as error:
        OnnxSwapper(path, spec=spec, providers=["CPUExecutionProvider"])
    assert error.value.fix


def test_facefusion_style_latent_is_not_renormalised(tmp_path: Path) -> None:
    emap = random_emap(seed=6) * 3
    path = tmp_path / "swapper.onnx"
    params = write_swapper_graph(path, emap=emap)
    crops, source, target, strength = swap_inputs()
    for renormalize in (True, False):
        spec = OnnxSwapperSpec("tiny", 32, "zero_one", embedding="emap", latent_renormalize=renormalize)
        swapper = OnnxSwapper(path, spec=spec, providers=["CPUExecutionProvider"])
        latent = swapper.identity_inputs(source, target, strength)
        norms = latent.norm(dim=-1)
        assert (torch.allclose(norms, torch.ones(3), atol=1e-5)) is renormalize
        out = swapper.swap(crops, source, target, strength)
        assert_close(out.images, expected_output(params, spec, crops, source, target, strength, emap))


def test_inputs_are_found_by_rank_and_a_mask_output_is_returned(tmp_path: Path) -> None:
    path = tmp_path / "swapper.onnx"
    params = write_swapper_graph(path, names=("a", "b", "c"), identity_first=True, mask=True)
    spec = OnnxSwapperSpec("tiny", None, "minus_one_one", embedding="normalised")
    swapper = OnnxSwapper(path, spec=spec, providers=["CPUExecutionProvider"])
    assert (swapper.signature.image_input, swapper.signature.identity_input) == ("a", "b")
    assert swapper.input_size == 32  # read from the file
    crops, source, target, strength = swap_inputs()
    out = swapper.swap(crops, source, target, strength)
    assert_close(out.images, expected_output(params, spec, crops, source, target, strength, None))
    assert out.mask is not None
    assert_close(out.mask, (crops * 2 - 1).mean(dim=1, keepdim=True).clamp(0, 1))


def test_strength_zero_feeds_the_target_identity(tmp_path: Path) -> None:
    path = tmp_path / "swapper.onnx"
    write_swapper_graph(path)
    swapper = OnnxSwapper(path, spec=OnnxSwapperSpec("tiny", 32, "minus_one_one"), providers=["CPUExecutionProvider"])
    crops, source, target, _ = swap_inputs()
    zero = swapper.swap(crops, source, target, torch.zeros(3, 1)).images
    own = swapper.swap(crops, target[:, None], target, torch.ones(3)).images
    assert_close(zero, own, rtol=0, atol=1e-6)


def test_registry_entries_become_swapper_specs() -> None:
    inswapper = spec_from_registry(hub.MODELS["inswapper_128"])
    assert (inswapper.input_size, inswapper.value_range, inswapper.embedding) == (128, "zero_one", "emap")
    assert inswapper.colour_order == "rgb" and inswapper.template == "arcface"
    hyperswap = spec_from_registry(hub.MODELS["hyperswap_1b_256"])
    assert (hyperswap.input_size, hyperswap.value_range, hyperswap.embedding) == (256, "minus_one_one", "normalised")
    for name in ("inswapper_128_fp16", "reswapper_128", "reswapper_256"):
        assert spec_from_registry(hub.MODELS[name]).embedding == "emap"


def test_a_registry_entry_this_runner_cannot_honour_is_refused_not_defaulted() -> None:
    import dataclasses

    entry = hub.MODELS["hyperswap_1a_256"]
    blank = spec_from_registry(dataclasses.replace(entry, value_range=None, colour_order=None))  # type: ignore[arg-type]
    assert (blank.value_range, blank.colour_order) == ("minus_one_one", "rgb")  # what FaceMagic knows of it
    assert spec_from_registry(dataclasses.replace(entry, colour_order="BGR")).colour_order == "bgr"
    for field, value in (("template", "arcface_112_v1"), ("value_range", (0.0, 255.0)), ("colour_order", "YUV")):
        with pytest.raises(BadInputError, match=f"has a {field} this runner does not know") as error:
            spec_from_registry(dataclasses.replace(entry, **{field: value}))
        assert "hyperswap_1a_256" in str(error.value) and error.value.fix


def test_bad_files_and_identities_raise_clear_errors(tmp_path: Path) -> None:
    path = tmp_path / "swapper.onnx"
    write_swapper_graph(path)
    swapper = OnnxSwapper(path, spec=OnnxSwapperSpec("tiny", 32, "minus_one_one"), providers=["CPUExecutionProvider"])
    crops, _, target, strength = swap_inputs()
    with pytest.raises(IncompatibleIdentityError, match="128 numbers per embedding") as error:
        swapper.swap(crops, torch.randn(3, 1, 128), target, strength)
    assert error.value.fix
    with pytest.raises(IncompatibleIdentityError, match="2 block rows"):
        swapper.swap(crops, torch.randn(3, 2, 512), target, strength)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ModelIntegrityError) as integrity:
        OnnxSwapper(corrupt, providers=["CPUExecutionProvider"])
    assert str(corrupt) in str(integrity.value)
    # a recogniser-like graph (one input) is not a swapper
    recogniser = tmp_path / "recogniser.onnx"
    node = helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)
    graph = helper.make_graph(
        [node],
        "recogniser",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.save(model, str(recogniser))
    with pytest.raises(BadInputError, match="not a face swapper"):
        OnnxSwapper(recogniser, providers=["CPUExecutionProvider"])


def test_dynamic_batch_files_get_at_most_max_batch_faces_a_call(tmp_path: Path) -> None:
    path = tmp_path / "swapper.onnx"
    params = write_swapper_graph(path)
    spec = OnnxSwapperSpec("tiny", 32, "minus_one_one", embedding="normalised")
    session = CountingSession(path)
    swapper = OnnxSwapper(path, spec=spec, session=session, max_batch=2)  # type: ignore[arg-type]
    crops, source, target, strength = swap_inputs(batch=5)
    out = swapper.swap(crops, source, target, strength)
    assert session.batches == [2, 2, 1]
    assert_close(out.images, expected_output(params, spec, crops, source, target, strength, None))


class ProviderSession(CountingSession):
    """A CPU session that says it runs on ``provider`` with ``device_id`` 1."""

    def __init__(self, path: Path, provider: str) -> None:
        super().__init__(path)
        self.provider = provider

    def get_providers(self) -> list[str]:
        return [self.provider, "CPUExecutionProvider"]

    def get_provider_options(self) -> dict[str, dict[str, str]]:
        return {self.provider: {"device_id": "1"}}


def test_crops_live_on_the_sessions_gpu_only_when_torch_reaches_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "swapper.onnx"
    write_swapper_graph(path)
    spec = OnnxSwapperSpec("tiny", 32, "minus_one_one", embedding="normalised")

    def device(provider: str) -> torch.device:
        return OnnxSwapper(path, spec=spec, session=ProviderSession(path, provider)).device  # type: ignore[arg-type]

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert device("CUDAExecutionProvider") == torch.device("cuda", 1)
    assert device("ROCMExecutionProvider") == torch.device("cuda", 1)
    assert device("DmlExecutionProvider") == torch.device("cpu")  # DirectML is no torch device
    assert device("CPUExecutionProvider") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # a CPU-only torch beside onnxruntime-gpu
    assert device("CUDAExecutionProvider") == torch.device("cpu")
