"""Where models run: onnxruntime sessions with the providers asked for, and torch devices and dtypes.

onnxruntime quietly runs a session on the CPU when the GPU provider asked for cannot be
used, which turns a 20 ms swap into a 2 s one without a word. Every session made here
(and every session made elsewhere and passed to :func:`report_session_providers`) logs
the providers it really uses at INFO, and a WARNING with the reason when a GPU was asked
for but not taken.

The most common reason is a broken install: ``insightface`` depends on the CPU
distribution ``onnxruntime``; installing it after ``onnxruntime-gpu`` installs the CPU
build into the same ``onnxruntime/`` folder, overwriting the GPU build's files while pip
believes both are installed. :func:`check_onnxruntime_install` detects this and returns
the exact commands that repair it.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import sys
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args

import torch

from .errors import BadInputError, ModelIntegrityError, ModelNotFoundError, OutOfMemoryError, ProviderError
from .files import describe_file_kind

if TYPE_CHECKING:
    import onnxruntime

logger = logging.getLogger(__name__)

#: Execution providers by their short names (as typed on the command line or chosen in a node).
OnnxProvider = Literal["cuda", "tensorrt", "rocm", "coreml", "directml", "cpu"]
ONNX_PROVIDERS: tuple[str, ...] = get_args(OnnxProvider)

#: A provider as onnxruntime takes it: its name, or its name and its options.
ProviderSpec = str | tuple[str, dict[str, Any]]

#: Short name -> onnxruntime's provider name.
PROVIDER_NAMES: dict[str, str] = {
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "directml": "DmlExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
CPU_PROVIDER = PROVIDER_NAMES["cpu"]
#: Providers that run on an accelerator; falling back from one of them to the CPU is worth a warning.
GPU_PROVIDERS = frozenset(name for short, name in PROVIDER_NAMES.items() if short != "cpu")
#: Providers that accept a ``device_id`` option.
_DEVICE_ID_PROVIDERS = frozenset(
    {"CUDAExecutionProvider", "TensorrtExecutionProvider", "ROCMExecutionProvider", "DmlExecutionProvider"}
)
#: What "auto" prefers, best first. TensorRT is never chosen by itself: it builds an engine per
#: model on first use (minutes) and needs its own libraries; ask for it explicitly.
_AUTO_ORDER = ("CUDAExecutionProvider", "ROCMExecutionProvider", "DmlExecutionProvider", "CoreMLExecutionProvider")
#: Device words accepted by :func:`onnx_providers` besides the short provider names.
_DEVICE_ALIASES = {"gpu": "cuda", "dml": "directml", "trt": "tensorrt", "mps": "coreml", "hip": "rocm"}

#: The pip distributions that install the ``onnxruntime`` Python package, CPU build first.
_CPU_DISTRIBUTION = "onnxruntime"
_ACCELERATED_DISTRIBUTIONS = (
    "onnxruntime-gpu",
    "onnxruntime-directml",
    "onnxruntime-rocm",
    "onnxruntime-openvino",
    "onnxruntime-qnn",
)
#: Which distribution brings which GPU provider (what to install when it is missing).
_PROVIDER_DISTRIBUTION = {
    "CUDAExecutionProvider": "onnxruntime-gpu",
    "TensorrtExecutionProvider": "onnxruntime-gpu",
    "ROCMExecutionProvider": "onnxruntime-rocm",
    "DmlExecutionProvider": "onnxruntime-directml",
    "CoreMLExecutionProvider": "onnxruntime (the macOS build)",
}


# ---------------------------------------------------------------------------------------------
# Provider lists


def provider_name(provider: str) -> str:
    """onnxruntime's name of a provider given by short name (``"cuda"``) or full name."""
    if provider in PROVIDER_NAMES.values():
        return provider
    short = provider.strip().lower()
    short = _DEVICE_ALIASES.get(short, short)
    if short in PROVIDER_NAMES:
        return PROVIDER_NAMES[short]
    if provider.endswith("ExecutionProvider"):
        return provider  # a provider this package does not know by name (OpenVINO, QNN...): pass it through
    raise ProviderError(
        f"unknown onnxruntime provider {provider!r}",
        where="provider list",
        fix=f"use one of {', '.join(ONNX_PROVIDERS)} (or a full onnxruntime name such as CUDAExecutionProvider)",
    )


def _spec_name(spec: ProviderSpec) -> str:
    return spec[0] if isinstance(spec, tuple) else spec


def _parse_device(device: str | torch.device | None) -> tuple[str, int | None]:
    """``"cuda:1"`` -> ("cuda", 1); ``None`` -> ("auto", None)."""
    if device is None:
        return "auto", None
    text = str(device).strip().lower()
    match = re.fullmatch(r"([a-z]+)(?::(\d+))?", text)
    if match is None:
        raise BadInputError(
            f"cannot read the device {str(device)!r}",
            where="device",
            fix="use auto, cpu, cuda, cuda:1, tensorrt, rocm, directml, coreml or mps",
        )
    kind = _DEVICE_ALIASES.get(match.group(1), match.group(1))
    index = int(match.group(2)) if match.group(2) is not None else None
    if kind != "auto" and kind not in PROVIDER_NAMES:
        raise BadInputError(
            f"unknown device {str(device)!r}",
            where="device",
            fix="use auto, cpu, cuda, cuda:1, tensorrt, rocm, directml, coreml or mps",
        )
    return kind, index


def available_providers() -> list[str]:
    """The providers the installed onnxruntime build offers (empty when onnxruntime cannot be imported)."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


def onnx_providers(
    device: str | torch.device | None = None, providers: Sequence[str] | None = None
) -> list[ProviderSpec]:
    """The provider list for a session, CPU always last as the fallback.

    ``providers`` (short or full names, in order of preference) wins over ``device``; the
    device index of ``device`` (``"cuda:1"``) is passed as ``device_id`` to the providers
    that take one. ``device`` ``None``/``"auto"`` picks the best GPU provider that the
    installed onnxruntime offers; ``"cpu"`` gives the CPU only; ``"cuda"``, ``"cuda:1"``,
    ``"tensorrt"``, ``"rocm"``, ``"directml"``, ``"coreml"`` (or ``"mps"``) ask for that
    provider even when it is not available, so that :func:`create_session` can say why it
    was not taken.
    """
    kind, index = _parse_device(device)
    if providers is not None:
        names = [provider_name(provider) for provider in providers]
    elif kind == "auto":
        available = set(available_providers())
        names = [name for name in _AUTO_ORDER if name in available][:1]
    elif kind == "tensorrt":
        names = [PROVIDER_NAMES["tensorrt"], PROVIDER_NAMES["cuda"]]  # TensorRT falls back to CUDA for what it lacks
    else:
        names = [PROVIDER_NAMES[kind]]
    result: list[ProviderSpec] = []
    for name in dict.fromkeys(names):  # keep order, drop repeats
        if name == CPU_PROVIDER:
            continue
        if index is not None and name in _DEVICE_ID_PROVIDERS:
            result.append((name, {"device_id": index}))
        else:
            result.append(name)
    result.append(CPU_PROVIDER)
    return result


def requested_providers(providers: Sequence[ProviderSpec] | None) -> list[ProviderSpec]:
    """The caller's providers in the caller's order, with onnxruntime's names (options copied);
    CPU is added at the end when missing. ``None`` or an empty list gives :func:`onnx_providers`.
    """
    if not providers:
        return onnx_providers()
    specs: list[ProviderSpec] = [
        (provider_name(spec[0]), dict(spec[1])) if isinstance(spec, tuple) else provider_name(spec)
        for spec in providers
    ]
    if CPU_PROVIDER not in map(_spec_name, specs):
        specs.append(CPU_PROVIDER)
    return specs


def usable_providers(requested: Sequence[ProviderSpec]) -> list[ProviderSpec]:
    """The providers of ``requested`` that the installed onnxruntime offers, in order; CPU is always among them.

    What a session is created with: onnxruntime refuses a provider it does not have, so the
    others are left out here and reported by :func:`report_session_providers`.
    """
    available = set(available_providers())
    usable = [spec for spec in requested_providers(requested) if _spec_name(spec) in available]
    if CPU_PROVIDER not in map(_spec_name, usable):
        usable.append(CPU_PROVIDER)
    return usable


# ---------------------------------------------------------------------------------------------
# The install trap


def _installed_version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def installed_onnxruntime_distributions() -> dict[str, str]:
    """The pip distributions that provide the ``onnxruntime`` package, with their versions (CPU build first)."""
    return {
        name: version
        for name in (_CPU_DISTRIBUTION, *_ACCELERATED_DISTRIBUTIONS)
        if (version := _installed_version(name)) is not None
    }


#: Characters that make a word of a command line need quotes in some shell (zsh expands [...]).
_NEEDS_QUOTES = frozenset(" []&()")


def _command(*words: str) -> str:
    """A command line to paste into a shell; words that need it are put in double quotes, which bash,
    zsh, cmd.exe and PowerShell all read the same way (a Windows interpreter path keeps its backslashes)."""
    return " ".join(f'"{word}"' if _NEEDS_QUOTES.intersection(word) else word for word in words)


def _pip(*arguments: str) -> str:
    return _command(sys.executable, "-m", "pip", *arguments)


def check_onnxruntime_install() -> str | None:
    """Detect a broken onnxruntime install; return the fix (what is wrong and the exact commands) or None.

    Caught cases:

    - the CPU distribution ``onnxruntime`` installed beside an accelerated one
      (``onnxruntime-gpu``, ``-directml``, ``-rocm``...). Both write the same
      ``onnxruntime/`` folder, so whichever was installed last wins, and uninstalling one
      deletes files the other needs. Uninstalling only ``onnxruntime`` is therefore not a
      fix: both are uninstalled and the accelerated one is installed again, at the version
      that was there (it matches the CUDA/cuDNN libraries on the machine).
    - ``onnxruntime-gpu`` installed but onnxruntime offers no CUDAExecutionProvider: its
      files were overwritten earlier (or the wheel is damaged); same fix.
    """
    cpu_version = _installed_version(_CPU_DISTRIBUTION)
    accelerated = {name: version for name in _ACCELERATED_DISTRIBUTIONS if (version := _installed_version(name))}
    if not accelerated:
        return None
    keep, keep_version = next(iter(accelerated.items()))
    prevent = (
        "insightface depends on the CPU 'onnxruntime' package: install or upgrade it with --no-deps "
        f"(or repeat these commands afterwards) so that it does not replace {keep}"
    )
    reinstall = _pip("install", f"{keep}=={keep_version}")
    if cpu_version is not None:
        uninstall = _pip("uninstall", "-y", _CPU_DISTRIBUTION, *accelerated)
        return (
            f"both the CPU build 'onnxruntime' {cpu_version} and "
            f"{', '.join(f'{name!r} {version}' for name, version in accelerated.items())} are installed; "
            "they share one folder, so the CPU build can silently replace the GPU one "
            f"({prevent}). Run: {uninstall} && {reinstall}"
        )
    if "onnxruntime-gpu" in accelerated and "CUDAExecutionProvider" not in available_providers():
        uninstall = _pip("uninstall", "-y", _CPU_DISTRIBUTION, *accelerated)
        return (
            f"'onnxruntime-gpu' {accelerated['onnxruntime-gpu']} is installed but onnxruntime offers no "
            f"CUDAExecutionProvider: its files were overwritten by a CPU build ({prevent}). "
            f"Run: {uninstall} && {reinstall}"
        )
    return None


# ---------------------------------------------------------------------------------------------
# Why a GPU cannot be used


def nvidia_gpu_present() -> bool | None:
    """Whether this machine has an NVIDIA GPU with its driver loaded; None where that cannot be told cheaply.

    Linux: the driver's ``/proc/driver/nvidia/gpus`` entries or a ``/dev/nvidia0`` device (both also inside
    containers started with GPU access). Windows: ``nvidia-smi`` on the PATH. macOS has no CUDA GPUs.
    """
    if sys.platform.startswith("linux"):
        gpus = Path("/proc/driver/nvidia/gpus")
        try:
            listed = gpus.is_dir() and any(gpus.iterdir())
        except OSError:
            listed = False
        return listed or Path("/dev/nvidia0").exists()
    if sys.platform == "darwin":
        return False
    if sys.platform == "win32":
        return True if shutil.which("nvidia-smi") else None
    return None


def cuda_unavailable(*, onnxruntime_provider: bool = False) -> tuple[str, str] | None:
    """Why CUDA work cannot run here and the fix, as ``(cause, fix)``: the first cause found in this order:
    no CUDA device on the machine, a CPU-only torch build, a torch that sees no GPU, then (with
    ``onnxruntime_provider``, for an onnxruntime session) the CUDA provider missing from the installed
    onnxruntime build, and last the install trap (:func:`check_onnxruntime_install`). None when CUDA can be used.
    """
    if nvidia_gpu_present() is False:
        return "this machine has no CUDA GPU (no NVIDIA GPU or driver found)", "use the device cpu (or auto)"
    if torch.version.cuda is None:
        return (
            f"this torch build ({torch.__version__}) is CPU-only",
            "install the CUDA build of torch for your driver (https://pytorch.org/get-started/locally/), "
            "or use the device cpu",
        )
    if not torch.cuda.is_available():
        return (
            f"torch {torch.__version__} (built for CUDA {torch.version.cuda}) sees no GPU",
            "check that nvidia-smi lists it, that the driver supports that CUDA version, and CUDA_VISIBLE_DEVICES",
        )
    if not onnxruntime_provider or PROVIDER_NAMES["cuda"] in available_providers():
        return None
    installed = installed_onnxruntime_distributions()
    if not any(name in installed for name in _ACCELERATED_DISTRIBUTIONS):
        build = ", ".join(f"{name} {version}" for name, version in installed.items()) or "none"
        return (
            f"the installed onnxruntime build ({build}) does not offer {PROVIDER_NAMES['cuda']}",
            "FaceMagic does not need it (on a GPU its models run in torch); for onnxruntime on the GPU anyway, "
            f"replace the build: {_pip('uninstall', '-y', _CPU_DISTRIBUTION)} && {_pip('install', 'onnxruntime-gpu')}",
        )
    trap = check_onnxruntime_install()
    return ("the onnxruntime install is broken", trap) if trap is not None else None


def cuda_unavailable_reason(*, onnxruntime_provider: bool = False) -> str | None:
    """:func:`cuda_unavailable` as one sentence (cause: fix), or None."""
    found = cuda_unavailable(onnxruntime_provider=onnxruntime_provider)
    return None if found is None else f"{found[0]}: {found[1]}"


# ---------------------------------------------------------------------------------------------
# Sessions


def _fallback_reason(name: str, available: Sequence[str]) -> str:
    """Why the provider ``name`` was not taken by a session, and what to do.

    A provider the installed build does not offer points at the build (first of all the
    install trap); a provider it offers but could not start points at the libraries it needs,
    whatever else is installed beside it.
    """
    if name not in available:
        if name in (PROVIDER_NAMES["cuda"], PROVIDER_NAMES["tensorrt"]):
            cause = cuda_unavailable_reason(onnxruntime_provider=True)
            if cause is not None:
                return cause
        broken = check_onnxruntime_install()
        if broken is not None:
            return broken
        installed = [f"{package} {version}" for package, version in installed_onnxruntime_distributions().items()]
        build = ", ".join(installed) or "no onnxruntime distribution known to pip"
        wanted = _PROVIDER_DISTRIBUTION.get(name, "an onnxruntime build that has it")
        return (
            f"the installed onnxruntime build ({build}) does not offer {name} "
            f"(it offers {', '.join(available) or 'nothing'}); install {wanted} instead"
        )
    if name == "CUDAExecutionProvider":
        return (
            "onnxruntime offers CUDAExecutionProvider but could not start it: the CUDA or cuDNN libraries it was "
            "built for are missing or do not match (onnxruntime's own log lines say which). Install them, e.g. "
            f"{_pip('install', 'onnxruntime-gpu[cuda,cudnn]')}, check that nvidia-smi sees the GPU, and that "
            "LD_LIBRARY_PATH (Linux) or PATH (Windows) lists the CUDA and cuDNN folders"
        )
    if name == "TensorrtExecutionProvider":
        return (
            "onnxruntime offers TensorrtExecutionProvider but could not start it: the TensorRT libraries (libnvinfer) "
            "are missing or of another version; install TensorRT (e.g. pip install tensorrt) or ask for cuda instead"
        )
    return f"onnxruntime offers {name} but could not start it: its runtime libraries or the device are missing"


def report_session_providers(
    session: onnxruntime.InferenceSession, requested: Sequence[ProviderSpec], what: str = ""
) -> list[str]:
    """Log the providers ``session`` really uses; warn when a GPU provider asked for was not taken.

    Use it for sessions created elsewhere (insightface's model_zoo runners). Returns the
    providers in use.
    """
    used = list(session.get_providers())
    label = what or "onnx model"
    logger.info("%s runs on onnxruntime providers: %s", label, ", ".join(used))
    requested_names = [provider_name(_spec_name(spec)) for spec in requested]
    missing = [name for name in dict.fromkeys(requested_names) if name in GPU_PROVIDERS and name not in used]
    if not missing:
        return used
    available = available_providers()
    running_on = [name for name in used if name in GPU_PROVIDERS]
    where = ", ".join(running_on) if running_on else "the CPU (much slower)"
    for name in missing:
        logger.warning(
            "%s: %s was asked for but the session runs on %s. Reason: %s",
            label,
            name,
            where,
            _fallback_reason(name, available),
        )
    return used


def _is_unreadable_model(error: Exception) -> bool:
    text = str(error).lower()
    return any(word in text for word in ("protobuf", "no graph", "parse", "truncat", "invalid_protobuf"))


def create_session(
    path: Path,
    *,
    providers: Sequence[ProviderSpec] | None = None,
    what: str = "",
    options: onnxruntime.SessionOptions | None = None,
) -> onnxruntime.InferenceSession:
    """An onnxruntime session for the model at ``path``, on ``providers`` (default: :func:`onnx_providers`).

    Providers the installed build does not offer are left out (and reported), CPU is always
    the fallback. An unreadable, truncated or corrupt file raises ModelIntegrityError naming
    the file; nothing half-loaded is returned.
    """
    import onnxruntime

    path = Path(path)
    label = what or path.name
    if not path.is_file():
        kind = describe_file_kind(path)
        raise ModelNotFoundError(
            f"the model file of {label} " + ("does not exist" if kind == "missing" else f"is {kind}, not a file"),
            where=str(path),
            fix="download it with 'facemagic models download NAME' or put the file at that path",
        )
    if path.stat().st_size == 0:
        raise ModelIntegrityError(
            f"the model file of {label} is empty",
            where=str(path),
            fix="delete it; it will be downloaded again on next use",
        )
    requested = requested_providers(providers)
    usable = usable_providers(requested)
    if options is None:
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: onnxruntime's own warnings (unused initializers...) are noise
        if any(_spec_name(spec) == "DmlExecutionProvider" for spec in usable):
            # DirectML supports neither memory patterns nor parallel execution (onnxruntime's DirectML notes)
            options.enable_mem_pattern = False
            options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    try:
        session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=usable)
    except Exception as error:  # onnxruntime's pybind exceptions derive from Exception directly
        version = getattr(onnxruntime, "__version__", "?")
        if type(error).__name__ == "EPFail":
            raise ProviderError(
                f"onnxruntime could not start the providers {[_spec_name(s) for s in usable]} for {label}: {error}",
                where=str(path),
                fix="ask for the cpu provider, or repair the GPU runtime (see 'facemagic models doctor')",
            ) from error
        if _is_unreadable_model(error):
            raise ModelIntegrityError(
                f"the model file of {label} is truncated or corrupt and cannot be read ({error})",
                where=str(path),
                fix="delete it; it will be downloaded again on next use",
            ) from error
        raise ModelIntegrityError(
            f"onnxruntime {version} cannot load the model of {label} ({error})",
            where=str(path),
            fix=(
                "the file may be damaged: delete it and it will be downloaded again; "
                "if that does not help, the model needs a newer onnxruntime"
            ),
        ) from error
    report_session_providers(session, requested, label)
    return session


#: Words of onnxruntime's (and CUDA's) messages for an allocation that failed.
_OUT_OF_MEMORY_WORDS = ("failed to allocate memory", "out of memory", "bad_alloc", "alloc_failed", "cudaerrormemory")


def onnxruntime_error_types() -> tuple[type[BaseException], ...]:
    """The exception classes onnxruntime raises while running (they derive from Exception directly)."""
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as state
    except ImportError:
        return ()
    found = [getattr(state, name) for name in dir(state)]
    return tuple(kind for kind in found if isinstance(kind, type) and issubclass(kind, Exception))


@contextlib.contextmanager
def onnxruntime_errors(what: str, where: str) -> Iterator[None]:
    """Turn an onnxruntime error raised while running ``what`` into a FaceMagicError.

    Out of memory becomes :class:`~facemagic_core.errors.OutOfMemoryError`, which chunked
    callers answer by halving the chunk; anything else (a wrong input shape, a kernel that
    fails) becomes ModelIntegrityError with onnxruntime's first line.
    """
    kinds = onnxruntime_error_types()
    try:
        yield
    except kinds as error:
        text = (str(error).strip().splitlines() or [type(error).__name__])[0][:400]
        if any(word in str(error).lower() for word in _OUT_OF_MEMORY_WORDS):
            raise OutOfMemoryError(
                f"out of memory while onnxruntime ran {what} ({text})",
                where=where,
                fix="process fewer frames at once (--chunk), free memory held by other programs, or use the CPU",
            ) from error
        raise ModelIntegrityError(
            f"onnxruntime failed while running {what}: {type(error).__name__}: {text}",
            where=where,
            fix="the model file may be damaged or not the model it is used as; download it again",
        ) from error


# ---------------------------------------------------------------------------------------------
# torch


def resolve_device(device: str | torch.device | None) -> torch.device:
    """A torch device from ``"auto"``/None (CUDA if present, then MPS, else CPU), ``"cpu"``, ``"cuda:1"``, ``"mps"``."""
    text = str(device) if isinstance(device, torch.device) else (device or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if text == "gpu":
        text = "cuda"
    try:
        resolved = torch.device(text)
    except RuntimeError as error:
        raise BadInputError(
            f"cannot read the device {text!r}", where="device", fix="use auto, cpu, cuda, cuda:1 or mps"
        ) from error
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            cause, fix = cuda_unavailable() or (
                f"this torch build ({torch.__version__}) sees no CUDA GPU",
                "install a CUDA build of torch, or use the device cpu",
            )
            raise BadInputError(f"the device {text!r} was asked for but {cause}", where="device", fix=fix)
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise BadInputError(
                f"the device {text!r} was asked for but there {'is' if count == 1 else 'are'} only {count} CUDA GPU(s)",
                where="device",
                fix=f"use cuda:0 to cuda:{count - 1}",
            )
    elif resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise BadInputError(
                "the device 'mps' was asked for but this machine has no Metal GPU", where="device", fix="use cpu"
            )
    elif resolved.type != "cpu":
        raise BadInputError(f"unsupported device {text!r}", where="device", fix="use auto, cpu, cuda, cuda:1 or mps")
    return resolved


_DTYPE_NAMES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The compute dtype: ``"auto"``/None is fp16 on CUDA and fp32 elsewhere.

    Half precision asked for on the CPU (or MPS for bf16) falls back to fp32 with a warning:
    CPU half-precision kernels are slow or missing. bf16 on a CUDA GPU without bf16 support
    falls back to fp16.
    """
    if isinstance(dtype, torch.dtype):
        wanted = dtype
    else:
        text = (dtype or "auto").strip().lower().removeprefix("torch.")
        if text == "auto":
            return torch.float16 if device.type == "cuda" else torch.float32
        if text not in _DTYPE_NAMES:
            raise BadInputError(f"unknown dtype {dtype!r}", where="dtype", fix="use auto, fp32, fp16 or bf16")
        wanted = _DTYPE_NAMES[text]
    if wanted not in (torch.float32, torch.float16, torch.bfloat16):
        raise BadInputError(f"unsupported dtype {wanted}", where="dtype", fix="use auto, fp32, fp16 or bf16")
    if wanted == torch.float32:
        return wanted
    if device.type == "cpu" or (device.type == "mps" and wanted == torch.bfloat16):
        logger.warning(
            "%s was asked for on %s; using float32 instead (half precision is slow or missing there)", wanted, device
        )
        return torch.float32
    if device.type == "cuda" and wanted == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        logger.warning("bfloat16 was asked for but %s does not support it; using float16", device)
        return torch.float16
    return wanted
