"""Inswapper-layout ONNX files -> native modules (checked against onnxruntime), and load_generator."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from test_gen_onnx import write_swapper_graph
from torch import nn
from torch.testing import assert_close

from facemagic_core.errors import BadInputError, ModelIntegrityError, ModelNotFoundError
from facemagic_core.generators import (
    ConversionError,
    GeneratorConfig,
    InswapperGenerator,
    OnnxSwapper,
    SwapGenerator,
    TorchSwapper,
    convert_inswapper_onnx,
    export_inswapper_onnx,
    load_generator,
    read_emap,
)
from facemagic_core.generators.convert import compare_with_onnxruntime, onnx_weight_precision

CFG = GeneratorConfig.inswapper_layout(channels=4, image_size=32, num_blocks=6)


def tiny_inswapper(seed: int = 0, cfg: GeneratorConfig = CFG) -> InswapperGenerator:
    torch.manual_seed(seed)
    module = InswapperGenerator(cfg).eval()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)  # biases and styles away from their init
        module.emap.copy_(torch.randn(512, 512) / 512**0.5)
    return module


def ort_session(path: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def run_onnx(path: Path, image: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(ort_session(path).run(None, {"target": image.numpy(), "source": latent.numpy()})[0])


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[InswapperGenerator, Path]:
    module = tiny_inswapper()
    path = export_inswapper_onnx(module, tmp_path_factory.mktemp("onnx") / "inswapper_tiny.onnx")
    return module, path


def test_export_stores_the_emap_as_the_last_unused_initializer(exported: tuple[InswapperGenerator, Path]) -> None:
    module, path = exported
    model = onnx.load(str(path))
    assert model.graph.initializer[-1].name == "emap"
    assert all("emap" not in node.input for node in model.graph.node)
    assert_close(torch.from_numpy(read_emap(model)), module.emap, rtol=0, atol=0)
    session = ort_session(path)
    assert [(i.name, i.shape) for i in session.get_inputs()] == [("target", [1, 3, 32, 32]), ("source", [1, 512])]


def test_conversion_round_trip_matches_onnxruntime(exported: tuple[InswapperGenerator, Path]) -> None:
    module, path = exported
    converted = convert_inswapper_onnx(onnx.load(str(path)))
    assert converted.cfg == CFG
    for name, tensor in module.state_dict().items():
        assert_close(converted.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    generator = torch.Generator().manual_seed(4)
    image = torch.rand(1, 3, 32, 32, generator=generator)
    latent = F.normalize(torch.randn(1, 512, generator=generator), dim=-1)
    with torch.no_grad():
        native = converted.forward_latent(image, latent)
    assert_close(native, run_onnx(path, image, latent), rtol=0, atol=1e-4)
    worst, mean = compare_with_onnxruntime(converted, ort_session(path))
    assert worst < 1e-4 and mean < 1e-5


def test_loaded_onnx_file_becomes_a_native_module_with_the_same_swaps(
    exported: tuple[InswapperGenerator, Path], tmp_path: Path
) -> None:
    _, path = exported
    native = load_generator(path, model_dir=tmp_path, device="cpu", runtime="torch")
    through_onnx = load_generator(path, model_dir=tmp_path, device="cpu", prefer_native=False)
    assert isinstance(native, TorchSwapper) and isinstance(through_onnx, OnnxSwapper)
    assert native.num_blocks == 6 and through_onnx.num_blocks == 1
    assert native.name == "inswapper_tiny" and native.input_size == 32
    generator = torch.Generator().manual_seed(5)
    crops = torch.rand(3, 3, 32, 32, generator=generator)
    source = F.normalize(torch.randn(3, 1, 512, generator=generator), dim=-1)
    target = F.normalize(torch.randn(3, 512, generator=generator), dim=-1)
    strength = torch.tensor([[0.0], [0.5], [1.0]])
    expected = through_onnx.swap(crops, source, target, strength).images
    assert_close(native.swap(crops, source, target, strength).images, expected, rtol=0, atol=1e-4)
    # the native module now takes one identity per block: fine blocks only
    mixed = source.expand(-1, 6, -1).clone()
    mixed[:, 3:] = target[:, None]
    assert (native.swap(crops, mixed, target, torch.ones(3, 6)).images - expected).abs().max() > 1e-3


def _gemm_to_matmul_and_move_first(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewrite every Gemm as MatMul + Add and run the style linears as early as possible, in reverse order."""
    weights = {item.name: item for item in model.graph.initializer}
    nodes = list(model.graph.node)
    image_dependent = {"target"}
    after_linear: set[str] = set()
    early, linears, rest = [], [], []
    for node in nodes:
        if node.op_type == "Gemm":
            weight = numpy_helper.to_array(weights[node.input[1]])
            name = node.output[0] + "_weight_t"
            model.graph.initializer.insert(0, numpy_helper.from_array(np.ascontiguousarray(weight.T), name))
            product = node.output[0] + "_product"
            linears.append(
                [
                    helper.make_node("MatMul", [node.input[0], name], [product]),
                    helper.make_node("Add", [product, node.input[2]], [node.output[0]]),
                ]
            )
            after_linear.update(node.output)
            continue
        if any(name in image_dependent for name in node.input):
            image_dependent.update(node.output)
        if any(name in after_linear for name in node.input):
            after_linear.update(node.output)
        if not any(name in image_dependent or name in after_linear for name in node.output):
            early.append(node)  # latent preprocessing and constants: needed before the linears
        else:
            rest.append(node)
    del model.graph.node[:]
    model.graph.node.extend(early)
    for pair in reversed(linears):
        model.graph.node.extend(pair)
    model.graph.node.extend(rest)
    return model


def test_conversion_follows_the_data_flow_not_the_node_order(
    exported: tuple[InswapperGenerator, Path], tmp_path: Path
) -> None:
    module, path = exported
    model = onnx.load(str(path))
    assert sum(node.op_type == "Gemm" for node in model.graph.node) == 12
    rewritten = _gemm_to_matmul_and_move_first(model)
    onnx.checker.check_model(rewritten)
    converted = convert_inswapper_onnx(rewritten)
    for name, tensor in module.state_dict().items():
        assert_close(converted.state_dict()[name], tensor, rtol=0, atol=0, msg=name)
    other = tmp_path / "rewritten.onnx"
    onnx.save(rewritten, str(other))
    assert compare_with_onnxruntime(converted, ort_session(other))[0] < 1e-4


def test_a_graph_that_computes_something_else_falls_back_to_onnxruntime_with_a_warning(
    exported: tuple[InswapperGenerator, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _, path = exported
    model = onnx.load(str(path))
    relus = [node for node in model.graph.node if node.op_type == "LeakyRelu"]
    for attribute in relus[-1].attribute:  # same weights, other activation: the converted module would differ
        if attribute.name == "alpha":
            attribute.f = 0.6
    altered = tmp_path / "altered.onnx"
    onnx.save(model, str(altered))
    with caplog.at_level("WARNING"):
        loaded = load_generator(altered, model_dir=tmp_path, device="cpu", runtime="torch")
    assert isinstance(loaded, OnnxSwapper)
    assert "runs through onnxruntime, not as a native module" in caplog.text
    assert "differs from onnxruntime by up to" in caplog.text
    crops = torch.rand(1, 3, 32, 32)
    source = F.normalize(torch.randn(1, 1, 512), dim=-1)
    latent = F.normalize(F.normalize(source[:, 0]) @ torch.from_numpy(read_emap(model)), dim=-1)
    out = loaded.swap(crops, source, F.normalize(torch.randn(1, 512), dim=-1), torch.ones(1, 1))
    assert_close(out.images, run_onnx(altered, crops, latent).clamp(0, 1), rtol=0, atol=1e-5)


def test_a_graph_of_another_shape_falls_back_to_onnxruntime_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    module = tiny_inswapper(seed=2)
    module.up2 = nn.Conv2d(16, 12, 3, padding=1)  # another decoder width
    module.conv2 = nn.Conv2d(12, 4, 3, padding=1)
    path = export_inswapper_onnx(module, tmp_path / "other_layout.onnx")
    with pytest.raises(ConversionError, match="up2 needs"):
        convert_inswapper_onnx(onnx.load(str(path)))
    with caplog.at_level("WARNING"):
        loaded = load_generator(path, model_dir=tmp_path, device="cpu", runtime="torch")
    assert isinstance(loaded, OnnxSwapper)
    assert "does not have the inswapper layout" in caplog.text


def test_fp16_file_converts_within_half_precision_tolerance(tmp_path: Path) -> None:
    module = tiny_inswapper(seed=3).half()
    try:
        path = export_inswapper_onnx(module, tmp_path / "inswapper_fp16.onnx")
    except RuntimeError as error:  # pragma: no cover - depends on the CPU build's fp16 kernels
        pytest.skip(f"fp16 export needs fp16 CPU kernels: {error}")
    model = onnx.load(str(path))
    assert onnx_weight_precision(model) == "fp16"
    session = ort_session(path)
    assert session.get_inputs()[0].type == "tensor(float16)"
    converted = convert_inswapper_onnx(model)
    assert converted.dtype == torch.float32
    worst, mean = compare_with_onnxruntime(converted, session)
    assert worst < 5e-2 and mean < 5e-3
    loaded = load_generator(path, model_dir=tmp_path, device="cpu", runtime="torch")
    assert isinstance(loaded, TorchSwapper)


# ---------------------------------------------------------------------------------------------
# load_generator


def test_load_generator_by_registry_name_folder_and_relative_name(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    model_dir.mkdir()
    write_swapper_graph(model_dir / "hyperswap_1a_256.onnx", size=256)
    hyperswap = load_generator("hyperswap_1a_256", model_dir=model_dir, device="cpu", runtime="torch")
    assert isinstance(hyperswap, OnnxSwapper)
    assert hyperswap.name == "hyperswap_1a_256" and hyperswap.input_size == 256
    assert hyperswap.spec.value_range == "minus_one_one" and hyperswap.spec.embedding == "normalised"

    native = SwapGenerator.from_config(GeneratorConfig(image_size=32, channels=8, max_channels=16, style_hidden=8))
    native.save_pretrained(model_dir / "my_generator")
    for name in (model_dir / "my_generator", "my_generator", model_dir / "my_generator" / "config.json"):
        loaded = load_generator(name, model_dir=model_dir, device="cpu", dtype="fp32")
        assert isinstance(loaded, TorchSwapper) and loaded.num_blocks == 6 and loaded.name == "my_generator"


def test_load_generator_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="no swap model called 'nonexistent'") as error:
        load_generator("nonexistent", model_dir=tmp_path, device="cpu", runtime="torch")
    assert error.value.fix and "inswapper_128" in error.value.fix
    with pytest.raises(BadInputError, match="is a detector, not a face swapper"):
        load_generator("yunet", model_dir=tmp_path, device="cpu", runtime="torch")
    corrupt = tmp_path / "broken.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelIntegrityError) as integrity:
        load_generator(corrupt, model_dir=tmp_path, device="cpu", runtime="torch")
    assert str(corrupt) in str(integrity.value) and integrity.value.fix


# ---------------------------------------------------------------------------------------------
# The cache of verified conversions


def _swap_once(model: object, seed: int = 6) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    crops = torch.rand(2, 3, 32, 32, generator=generator)
    source = F.normalize(torch.randn(2, 1, 512, generator=generator), dim=-1)
    target = F.normalize(torch.randn(2, 512, generator=generator), dim=-1)
    return model.swap(crops, source, target, torch.tensor([0.5, 1.0])).images  # type: ignore[attr-defined]


def _refuse(*_args: object, **_kwargs: object) -> None:
    raise AssertionError("a cached conversion must not parse, run or convert the ONNX file again")


def test_a_verified_conversion_is_cached_beside_the_file_and_reused(
    exported: tuple[InswapperGenerator, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors import safe_open

    from facemagic_core.generators import loader
    from facemagic_core.generators.convert import conversion_cache_path
    from facemagic_core.hub import sha256_file

    path = tmp_path / "inswapper_tiny.onnx"
    path.write_bytes(exported[1].read_bytes())
    first = load_generator(path, model_dir=tmp_path, device="cpu", runtime="torch")
    cache = conversion_cache_path(path)
    assert cache.name == "inswapper_tiny.onnx.native.safetensors"
    with safe_open(str(cache), framework="pt") as cached:  # type: ignore[no-untyped-call]
        assert cached.metadata()["source_sha256"] == sha256_file(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([cache.name, path.name])  # no partial file left
    with monkeypatch.context() as patch:
        for name in ("convert_checked", "load_onnx_model"):
            patch.setattr(loader, name, _refuse)
        patch.setattr("facemagic_core.runtime.create_session", _refuse)
        second = load_generator(path, model_dir=tmp_path, device="cpu", runtime="torch")
    assert isinstance(second, TorchSwapper) and second.name == "inswapper_tiny" and second.num_blocks == 6
    assert_close(_swap_once(second), _swap_once(first), rtol=0, atol=0)


def test_a_cache_of_another_file_or_a_corrupt_cache_is_converted_again(
    exported: tuple[InswapperGenerator, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from facemagic_core.generators.convert import conversion_cache_path

    path = tmp_path / "swapper.onnx"
    path.write_bytes(exported[1].read_bytes())
    load_generator(path, model_dir=tmp_path, device="cpu", runtime="torch")
    other = tiny_inswapper(seed=9)
    export_inswapper_onnx(other, path)  # the same name, another file: the old cache must not be used
    with caplog.at_level("INFO"):
        loaded = load_generator(path, model_dir=tmp_path, device="cpu", runtime="torch")
    assert "made from another file" in caplog.text
    reference = load_generator(path, model_dir=tmp_path, device="cpu", prefer_native=False)
    assert_close(_swap_once(loaded), _swap_once(reference), rtol=0, atol=1e-4)
    cache = conversion_cache_path(path)
    cache.write_bytes(cache.read_bytes()[:1000])  # truncated
    caplog.clear()
    with caplog.at_level("WARNING"):
        again = load_generator(path, model_dir=tmp_path, device="cpu", runtime="torch")
    assert "converting swapper.onnx again" in caplog.text
    assert_close(_swap_once(again), _swap_once(loaded), rtol=0, atol=0)
    assert len(cache.read_bytes()) > 1000  # rewritten whole


def test_an_unwritable_folder_or_a_refused_conversion_leaves_no_cache(
    exported: tuple[InswapperGenerator, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from facemagic_core.generators import convert

    path = tmp_path / "inswapper_tiny.onnx"
    path.write_bytes(exported[1].read_bytes())

    def read_only(_path: object) -> object:
        raise PermissionError(13, "Permission denied", str(_path))

    with monkeypatch.context() as patch:
        patch.setattr(convert, "atomic_path", read_only)
        assert isinstance(load_generator(path, model_dir=tmp_path, device="cpu", runtime="torch"), TorchSwapper)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    model = onnx.load(str(path))
    next(node for node in model.graph.node if node.op_type == "LeakyRelu").attribute[0].f = 0.6
    altered = tmp_path / "altered.onnx"
    onnx.save(model, str(altered))
    assert isinstance(load_generator(altered, model_dir=tmp_path, device="cpu", runtime="torch"), OnnxSwapper)
    assert not convert.conversion_cache_path(altered).exists()  # only verified conversions are cached


def test_fp16_weights_are_cached_in_half_precision(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from facemagic_core.generators.convert import conversion_cache_path

    module = tiny_inswapper(seed=3).half()
    try:
        path = export_inswapper_onnx(module, tmp_path / "inswapper_fp16.onnx")
    except RuntimeError as error:  # pragma: no cover - depends on the CPU build's fp16 kernels
        pytest.skip(f"fp16 export needs fp16 CPU kernels: {error}")
    first = load_generator(path, model_dir=tmp_path, device="cpu", runtime="torch")
    state = load_file(str(conversion_cache_path(path)))
    assert state["stem.weight"].dtype == torch.float16 and state["emap"].dtype == torch.float16
    for name, tensor in module.state_dict().items():
        assert_close(state[name], tensor, rtol=0, atol=0, msg=name)  # exact: the file's own fp16 values
    second = load_generator(path, model_dir=tmp_path, device="cpu", runtime="torch")
    assert isinstance(second, TorchSwapper) and second.dtype == torch.float32
    assert_close(_swap_once(second), _swap_once(first), rtol=0, atol=0)


def test_the_latent_rule_of_the_spec_reaches_the_native_module(tmp_path: Path) -> None:
    """facefusion feeds ``normalize(e) @ emap`` as it is, insightface re-normalises it: both paths follow the spec."""
    from facemagic_core.generators import OnnxSwapperSpec
    from facemagic_core.generators.loader import load_onnx_generator

    module = tiny_inswapper(seed=4)
    with torch.no_grad():
        module.emap.mul_(3.0)  # latents of norm ~3: re-normalising them changes the swap
    path = export_inswapper_onnx(module, tmp_path / "inswapper_tiny.onnx")
    outputs = {}
    for renormalize in (True, False):
        spec = OnnxSwapperSpec("tiny", 32, "zero_one", embedding="emap", latent_renormalize=renormalize)
        native = load_onnx_generator(
            path,
            spec=spec,
            device=torch.device("cpu"),
            dtype=torch.float32,
            providers=["CPUExecutionProvider"],
            runtime="torch",
        )
        assert isinstance(native, TorchSwapper) and native.cfg.latent_renormalize is renormalize
        outputs[renormalize] = _swap_once(native)
        reference = OnnxSwapper(path, spec=spec, providers=["CPUExecutionProvider"])
        assert_close(outputs[renormalize], _swap_once(reference), rtol=0, atol=1e-4)
    assert (outputs[True] - outputs[False]).abs().max() > 1e-3
