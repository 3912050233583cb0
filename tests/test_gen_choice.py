"""Which runtime runs an inswapper-layout swapper: the rule per device, and the CPU's two-runtime swapper."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from test_convert import tiny_inswapper
from torch.testing import assert_close

from facemagic_core.errors import BadInputError
from facemagic_core.generators import OnnxSwapper, TorchSwapper, export_inswapper_onnx, load_generator
from facemagic_core.generators.choice import RuntimeChoiceSwapper, choose_swapper_runtime, is_uniform


@pytest.fixture(scope="module")
def inswapper_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_inswapper_onnx(tiny_inswapper(seed=3), tmp_path_factory.mktemp("choice") / "inswapper_tiny.onnx")


def _inputs(seed: int, blocks: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    crops = torch.rand(3, 3, 32, 32, generator=generator)
    source = F.normalize(torch.randn(3, 1, 512, generator=generator), dim=-1).expand(-1, blocks, -1).contiguous()
    target = F.normalize(torch.randn(3, 512, generator=generator), dim=-1)
    return crops, source, target, torch.tensor([1.0, 0.5, 0.25])


def test_the_rule_per_device() -> None:
    assert choose_swapper_runtime(torch.device("cpu")) == "both"
    assert choose_swapper_runtime(torch.device("cuda")) == "torch"
    assert choose_swapper_runtime(torch.device("mps")) == "torch"
    assert choose_swapper_runtime(torch.device("cpu"), "torch") == "torch"
    assert choose_swapper_runtime(torch.device("cuda"), "onnxruntime") == "onnxruntime"
    with pytest.raises(BadInputError, match="unknown runtime 'tensorflow'"):
        choose_swapper_runtime(torch.device("cpu"), "tensorflow")


def test_uniform_means_every_block_the_same() -> None:
    source = torch.randn(2, 1, 8).expand(-1, 4, -1)
    assert is_uniform(source, torch.ones(2, 4))
    assert not is_uniform(source, torch.tensor([[1.0, 1, 1, 0.5], [1, 1, 1, 1]]))
    mixed = source.clone()
    mixed[1, 3] += 1
    assert not is_uniform(mixed, torch.ones(2, 4))


def test_on_the_cpu_uniform_swaps_run_in_onnxruntime_and_mixing_in_torch(inswapper_file: Path, tmp_path: Path) -> None:
    chosen = load_generator(inswapper_file, model_dir=tmp_path, device="cpu")
    native = load_generator(inswapper_file, model_dir=tmp_path, device="cpu", runtime="torch")
    only_onnx = load_generator(inswapper_file, model_dir=tmp_path, device="cpu", runtime="onnxruntime")
    assert isinstance(chosen, RuntimeChoiceSwapper)
    assert isinstance(native, TorchSwapper) and isinstance(only_onnx, OnnxSwapper)
    assert chosen.num_blocks == native.num_blocks == 6  # per-block mixing stays available
    assert (chosen.input_size, chosen.template, chosen.embedding_model) == (32, native.template, "arcface_w600k_r50")

    crops, source, target, strength = _inputs(1, chosen.num_blocks)
    before = crops.clone()
    uniform = chosen.swap(crops, source, target, strength).images
    assert chosen.calls == {"onnxruntime": 1, "torch": 0}
    assert_close(uniform, only_onnx.swap(crops, source[:, :1], target, strength).images, rtol=0, atol=0)
    assert_close(uniform, native.swap(crops, source, target, strength).images, rtol=0, atol=1e-4)

    mixed = source.clone()
    mixed[:, 3:] = F.normalize(torch.randn(3, 1, 512), dim=-1)  # another person for the fine blocks
    per_block = chosen.swap(crops, mixed, target, strength).images
    assert chosen.calls == {"onnxruntime": 1, "torch": 1}
    assert_close(per_block, native.swap(crops, mixed, target, strength).images, rtol=0, atol=0)
    assert (per_block - uniform).abs().max() > 1e-3  # the mixing reached the result
    assert torch.equal(crops, before)  # inputs are never modified


def test_an_unknown_runtime_is_refused_before_any_file_is_read(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="unknown runtime"):
        load_generator(tmp_path / "missing.onnx", model_dir=tmp_path, device="cpu", runtime="tf")
