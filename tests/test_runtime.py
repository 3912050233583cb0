"""runtime.py: provider lists, the CPU-fallback warning, the onnxruntime install trap, corrupt models, torch helpers."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import TensorProto, helper

from facemagic_core import runtime
from facemagic_core.errors import BadInputError, ModelIntegrityError, ModelNotFoundError, ProviderError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


def build_tiny_model(path: Path) -> Path:
    """y = x @ W + b with W = [[1, 2], [3, 4], [5, 6]], b = [0.5, -0.5]; x is (N, 3)."""
    weight = helper.make_tensor("W", TensorProto.FLOAT, [3, 2], [1, 2, 3, 4, 5, 6])
    bias = helper.make_tensor("b", TensorProto.FLOAT, [2], [0.5, -0.5])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    return build_tiny_model(tmp_path / "tiny.onnx")


def fake_distributions(monkeypatch: pytest.MonkeyPatch, installed: dict[str, str]) -> None:
    """Make importlib.metadata report exactly these onnxruntime distributions."""
    real_version: Callable[[str], str] = metadata.version

    def version(name: str) -> str:
        if name.startswith("onnxruntime"):
            if name in installed:
                return installed[name]
            raise metadata.PackageNotFoundError(name)
        return real_version(name)

    monkeypatch.setattr(runtime.metadata, "version", version)


def fake_available(monkeypatch: pytest.MonkeyPatch, providers: list[str]) -> None:
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: list(providers))


def fake_cuda_machine(monkeypatch: pytest.MonkeyPatch, *, gpu: bool = True, torch_cuda: str | None = "12.8",
                      torch_sees: bool = True) -> None:  # fmt: skip
    """Pretend the machine has an NVIDIA GPU (``gpu``), torch is a CUDA build (``torch_cuda``) that sees it."""
    monkeypatch.setattr(runtime, "nvidia_gpu_present", lambda: gpu)
    monkeypatch.setattr(torch.version, "cuda", torch_cuda)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: torch_sees)


# --- provider lists ---------------------------------------------------------------------------


def test_short_names_map_to_onnxruntime_names() -> None:
    assert runtime.provider_name("cuda") == CUDA
    assert runtime.provider_name("TensorRT") == "TensorrtExecutionProvider"
    assert runtime.provider_name("rocm") == "ROCMExecutionProvider"
    assert runtime.provider_name("coreml") == "CoreMLExecutionProvider"
    assert runtime.provider_name("directml") == "DmlExecutionProvider"
    assert runtime.provider_name("cpu") == CPU
    assert runtime.provider_name(CUDA) == CUDA
    assert runtime.provider_name("OpenVINOExecutionProvider") == "OpenVINOExecutionProvider"
    with pytest.raises(ProviderError, match="unknown onnxruntime provider 'vulkan'"):
        runtime.provider_name("vulkan")


def test_onnx_providers_from_device() -> None:
    assert runtime.onnx_providers("cpu") == [CPU]
    assert runtime.onnx_providers("cuda") == [CUDA, CPU]
    assert runtime.onnx_providers("cuda:1") == [(CUDA, {"device_id": 1}), CPU]
    assert runtime.onnx_providers(torch.device("cuda", 2)) == [(CUDA, {"device_id": 2}), CPU]
    assert runtime.onnx_providers("tensorrt:0") == [
        ("TensorrtExecutionProvider", {"device_id": 0}),
        (CUDA, {"device_id": 0}),
        CPU,
    ]
    assert runtime.onnx_providers("dml:1") == [("DmlExecutionProvider", {"device_id": 1}), CPU]
    assert runtime.onnx_providers("mps") == ["CoreMLExecutionProvider", CPU]
    with pytest.raises(BadInputError, match="unknown device 'vulkan'"):
        runtime.onnx_providers("vulkan")
    with pytest.raises(BadInputError, match="cannot read the device"):
        runtime.onnx_providers("cuda:x")


def test_onnx_providers_explicit_list_wins_and_cpu_stays_last() -> None:
    assert runtime.onnx_providers("cuda:3", ["cpu", "tensorrt", "cuda", "cuda"]) == [
        ("TensorrtExecutionProvider", {"device_id": 3}),
        (CUDA, {"device_id": 3}),
        CPU,
    ]
    assert runtime.onnx_providers(None, ["coreml"]) == ["CoreMLExecutionProvider", CPU]


def test_auto_picks_the_best_available_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_available(monkeypatch, ["TensorrtExecutionProvider", CUDA, CPU])
    assert runtime.onnx_providers("auto") == [CUDA, CPU]  # TensorRT only when asked for
    fake_available(monkeypatch, ["DmlExecutionProvider", CPU])
    assert runtime.onnx_providers(None) == ["DmlExecutionProvider", CPU]
    fake_available(monkeypatch, [CPU])
    assert runtime.onnx_providers() == [CPU]


def test_requested_and_usable_providers(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_available(monkeypatch, ["TensorrtExecutionProvider", CUDA, CPU])
    options = {"device_id": 1}
    requested = runtime.requested_providers([("cuda", options), "rocm"])
    assert requested == [(CUDA, {"device_id": 1}), "ROCMExecutionProvider", CPU]
    assert requested[0][1] is not options  # the caller's options are copied, never shared or changed
    assert runtime.usable_providers(requested) == [(CUDA, {"device_id": 1}), CPU]  # no ROCm in this build
    assert runtime.requested_providers(None) == runtime.requested_providers([]) == [CUDA, CPU]
    assert runtime.usable_providers(["cpu", "tensorrt"]) == [CPU, "TensorrtExecutionProvider"]  # the caller's order
    fake_available(monkeypatch, [CPU])
    assert runtime.usable_providers(["cuda"]) == [CPU]


# --- sessions ---------------------------------------------------------------------------------


def test_tiny_model_runs_on_cpu_and_logs_its_providers(tiny_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="facemagic_core.runtime"):
        session = runtime.create_session(tiny_model, providers=["cpu"], what="tiny test model")
    assert session.get_providers() == [CPU]
    x = np.array([[1, 0, 0], [1, 1, 1]], dtype=np.float32)
    (y,) = session.run(None, {"x": x})
    np.testing.assert_allclose(y, [[1.5, 1.5], [9.5, 11.5]])
    assert "tiny test model runs on onnxruntime providers: CPUExecutionProvider" in caplog.text
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]


def test_gpu_provider_missing_from_build_warns_with_the_build(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_available(monkeypatch, [CPU])
    fake_distributions(monkeypatch, {"onnxruntime": "1.31.1"})
    fake_cuda_machine(monkeypatch)
    with caplog.at_level(logging.INFO, logger="facemagic_core.runtime"):
        session = runtime.create_session(tiny_model, providers=["cuda", "cpu"], what="swapper")
    assert session.get_providers() == [CPU]
    warnings = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "swapper: CUDAExecutionProvider was asked for but the session runs on the CPU" in warnings[0]
    assert "installed onnxruntime build (onnxruntime 1.31.1) does not offer CUDAExecutionProvider" in warnings[0]
    assert "FaceMagic does not need it (on a GPU its models run in torch)" in warnings[0]
    assert "-m pip uninstall -y onnxruntime && " in warnings[0] and "-m pip install onnxruntime-gpu" in warnings[0]


def test_gpu_provider_available_but_not_taken_blames_cuda_libraries(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    class CpuOnlySession:
        def get_providers(self) -> list[str]:
            return [CPU]

    fake_available(monkeypatch, [CUDA, CPU])
    fake_distributions(monkeypatch, {"onnxruntime-gpu": "1.31.1"})
    with caplog.at_level(logging.WARNING, logger="facemagic_core.runtime"):
        used = runtime.report_session_providers(
            CpuOnlySession(),  # type: ignore[arg-type]
            [(CUDA, {"device_id": 0}), CPU],
            "detector",
        )
    assert used == [CPU]
    (message,) = [record.getMessage() for record in caplog.records]
    assert "detector: CUDAExecutionProvider was asked for but the session runs on the CPU" in message
    assert "CUDA or cuDNN libraries" in message
    assert '-m pip install "onnxruntime-gpu[cuda,cudnn]"' in message  # quoted: zsh would expand the brackets


def test_no_warning_when_the_gpu_is_taken(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    class CudaSession:
        def get_providers(self) -> list[str]:
            return [CUDA, CPU]

    with caplog.at_level(logging.INFO, logger="facemagic_core.runtime"):
        runtime.report_session_providers(CudaSession(), ["cuda", "cpu"], "x")  # type: ignore[arg-type]
    assert [record.levelno for record in caplog.records] == [logging.INFO]


# --- the install trap -------------------------------------------------------------------------


def test_trap_both_distributions_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_distributions(monkeypatch, {"onnxruntime": "1.31.1", "onnxruntime-gpu": "1.30.0"})
    fake_available(monkeypatch, [CPU])
    fix = runtime.check_onnxruntime_install()
    assert fix is not None
    assert "-m pip uninstall -y onnxruntime onnxruntime-gpu && " in fix
    assert f"Run: {sys.executable} -m pip uninstall" in fix  # the pip of this very interpreter (ComfyUI portable)
    assert "-m pip install onnxruntime-gpu==1.30.0" in fix  # the GPU version that was there, not the newest
    assert "--no-deps" in fix


def test_fix_commands_quote_what_a_shell_would_split_or_expand(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.sys, "executable", r"C:\ComfyUI portable\python_embeded\python.exe")
    fake_distributions(monkeypatch, {"onnxruntime": "1.31.1", "onnxruntime-gpu": "1.31.1"})
    fix = runtime.check_onnxruntime_install()
    assert fix is not None
    assert r'Run: "C:\ComfyUI portable\python_embeded\python.exe" -m pip uninstall -y onnxruntime' in fix


def test_trap_gpu_distribution_without_cuda_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_distributions(monkeypatch, {"onnxruntime-gpu": "1.31.1"})
    fake_available(monkeypatch, ["AzureExecutionProvider", CPU])
    fix = runtime.check_onnxruntime_install()
    assert fix is not None
    assert "offers no CUDAExecutionProvider" in fix
    assert "uninstall -y onnxruntime onnxruntime-gpu && " in fix


def test_trap_directml_beside_cpu_build(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_distributions(monkeypatch, {"onnxruntime": "1.20.0", "onnxruntime-directml": "1.20.1"})
    fix = runtime.check_onnxruntime_install()
    assert fix is not None
    assert "uninstall -y onnxruntime onnxruntime-directml && " in fix
    assert "install onnxruntime-directml==1.20.1" in fix


@pytest.mark.parametrize(
    ("installed", "available"),
    [({"onnxruntime-gpu": "1.31.1"}, [CUDA, CPU]), ({"onnxruntime": "1.31.1"}, [CPU]), ({}, [])],
)
def test_healthy_installs_are_not_flagged(
    monkeypatch: pytest.MonkeyPatch, installed: dict[str, str], available: list[str]
) -> None:
    fake_distributions(monkeypatch, installed)
    fake_available(monkeypatch, available)
    assert runtime.check_onnxruntime_install() is None


def test_fallback_reason_prefers_the_install_trap(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    fake_distributions(monkeypatch, {"onnxruntime": "1.31.1", "onnxruntime-gpu": "1.31.1"})
    fake_available(monkeypatch, [CPU])
    fake_cuda_machine(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="facemagic_core.runtime"):
        runtime.create_session(tiny_model, providers=["cuda"])
    assert "uninstall -y onnxruntime onnxruntime-gpu" in caplog.text


def test_gpu_build_that_cannot_start_cuda_blames_the_libraries_not_the_install_trap(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Both distributions installed but the GPU build in place (it offers CUDA): the CUDA libraries are the cause."""

    class CpuOnlySession:
        def get_providers(self) -> list[str]:
            return [CPU]

    fake_distributions(monkeypatch, {"onnxruntime": "1.31.1", "onnxruntime-gpu": "1.31.1"})
    fake_available(monkeypatch, [CUDA, CPU])
    with caplog.at_level(logging.WARNING, logger="facemagic_core.runtime"):
        runtime.report_session_providers(CpuOnlySession(), ["cuda"], "recogniser")  # type: ignore[arg-type]
    (message,) = [record.getMessage() for record in caplog.records]
    assert "Reason: onnxruntime offers CUDAExecutionProvider but could not start it" in message
    assert "CUDA or cuDNN libraries" in message
    assert "uninstall" not in message


# --- corrupt files ----------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_corrupt_model_raises_integrity_error(tiny_model: Path, damage: str) -> None:
    data = tiny_model.read_bytes()
    broken = {"truncated": data[: len(data) // 2], "garbage": b"\xff\x00not an onnx file" * 20, "empty": b""}[damage]
    tiny_model.write_bytes(broken)
    with pytest.raises(ModelIntegrityError) as caught:
        runtime.create_session(tiny_model, providers=["cpu"], what="the swapper")
    message = str(caught.value)
    assert str(tiny_model) in message
    assert "the swapper" in message
    assert "delete it; it will be downloaded again" in message


def test_missing_model_file(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        runtime.create_session(tmp_path / "absent.onnx")


# --- torch ------------------------------------------------------------------------------------


def test_resolve_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert runtime.resolve_device(None) == torch.device("cpu")
    assert runtime.resolve_device("auto") == torch.device("cpu")
    assert runtime.resolve_device(torch.device("cpu")) == torch.device("cpu")
    fake_cuda_machine(monkeypatch, torch_sees=False)
    with pytest.raises(BadInputError, match=r"built for CUDA 12\.8\) sees no GPU"):
        runtime.resolve_device("cuda:1")
    with pytest.raises(BadInputError, match="no Metal GPU"):
        runtime.resolve_device("mps")
    with pytest.raises(BadInputError, match="cannot read the device"):
        runtime.resolve_device("quantum")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert runtime.resolve_device("auto") == torch.device("cuda")
    assert runtime.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(BadInputError, match="only 2 CUDA GPU"):
        runtime.resolve_device("cuda:2")


def test_resolve_dtype(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert runtime.resolve_dtype("auto", cpu) == torch.float32
    assert runtime.resolve_dtype(None, cuda) == torch.float16
    assert runtime.resolve_dtype("fp32", cuda) == torch.float32
    with caplog.at_level(logging.WARNING, logger="facemagic_core.runtime"):
        assert runtime.resolve_dtype("fp16", cpu) == torch.float32
        assert runtime.resolve_dtype("bf16", cpu) == torch.float32
    assert caplog.text.count("using float32 instead") == 2
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert runtime.resolve_dtype(torch.bfloat16, cuda) == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    assert runtime.resolve_dtype("bfloat16", cuda) == torch.float16
    with pytest.raises(BadInputError, match="unknown dtype"):
        runtime.resolve_dtype("int8", cpu)


def test_directml_sessions_get_the_options_directml_needs(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, object] = {}

    class RecordingSession:
        def __init__(self, path: str, sess_options: onnxruntime.SessionOptions, providers: list[object]) -> None:
            seen.update(options=sess_options, providers=providers)

        def get_providers(self) -> list[str]:
            return ["DmlExecutionProvider", CPU]

    fake_available(monkeypatch, ["DmlExecutionProvider", CPU])
    monkeypatch.setattr(onnxruntime, "InferenceSession", RecordingSession)
    runtime.create_session(tiny_model, providers=runtime.onnx_providers("directml:1"))
    options = seen["options"]
    assert isinstance(options, onnxruntime.SessionOptions)
    assert options.enable_mem_pattern is False
    assert options.execution_mode == onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    assert seen["providers"] == [("DmlExecutionProvider", {"device_id": 1}), CPU]


def test_a_gpu_request_names_the_first_real_cause_in_order(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No CUDA device, then a CPU-only torch, then a torch that sees no GPU, then the provider, then the trap."""
    fake_distributions(monkeypatch, {"onnxruntime": "1.31.1", "onnxruntime-gpu": "1.31.1"})  # the trap is there too
    fake_available(monkeypatch, [CPU])

    def reason_for(**machine: object) -> str:
        fake_cuda_machine(monkeypatch, **machine)  # type: ignore[arg-type]
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="facemagic_core.runtime"):
            runtime.create_session(tiny_model, providers=["cuda"], what="detector")
        (warning,) = [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]
        with pytest.raises(BadInputError) as raised:
            runtime.resolve_device("cuda")
        assert str(raised.value).split(" (device)")[0].removeprefix("the device 'cuda' was asked for but ") in warning
        return warning

    assert "this machine has no CUDA GPU" in reason_for(gpu=False, torch_cuda=None, torch_sees=False)
    assert "is CPU-only" in reason_for(gpu=True, torch_cuda=None, torch_sees=False)
    assert "sees no GPU" in reason_for(gpu=True, torch_cuda="12.8", torch_sees=False)
    fake_cuda_machine(monkeypatch)  # torch is fine: now onnxruntime's own state is the cause
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="facemagic_core.runtime"):
        runtime.create_session(tiny_model, providers=["cuda"], what="detector")
    assert "uninstall -y onnxruntime onnxruntime-gpu" in caplog.text  # the trap
    fake_distributions(monkeypatch, {"onnxruntime": "1.31.1"})
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="facemagic_core.runtime"):
        runtime.create_session(tiny_model, providers=["cuda"], what="detector")
    assert "does not offer CUDAExecutionProvider" in caplog.text  # the provider is missing from this build
