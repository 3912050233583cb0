"""One entry point for every swap model: :func:`load_generator`.

``name_or_path`` may be

- a registry name (``inswapper_128``, ``hyperswap_1a_256``...; downloaded and verified by
  ``facemagic_core.hub.ensure_model``);
- a native model folder (``config.json`` + ``model.safetensors``), or such a folder inside ``model_dir``;
- a Hugging Face Hub repository id of a native model (``owner/name``);
- a local ``.onnx`` file (absolute, or relative to ``model_dir``).

ONNX files with the inswapper layout are converted into the native module when the
conversion matches onnxruntime on a random input (``prefer_native``); otherwise, and for
every other ONNX swapper, they run through onnxruntime, with a warning saying why when a
conversion was refused. A verified conversion is cached beside the ONNX file, keyed by its
sha256 (``cache_conversion``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..errors import BadInputError, ModelNotFoundError
from ..hub import MODELS, ensure_model
from ..runtime import ProviderSpec, onnx_providers, resolve_device, resolve_dtype
from .base import SwapModel, TorchSwapper
from .choice import RuntimeChoiceSwapper, choose_swapper_runtime
from .convert import convert_checked, load_conversion, save_conversion
from .inswapper import InswapperGenerator
from .network import CONFIG_NAME, SwapGenerator, is_repo_id
from .onnx_swapper import (
    OnnxSwapper,
    OnnxSwapperSpec,
    check_weights_finite,
    load_onnx_model,
    read_emap,
    spec_from_registry,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)


def load_generator(
    name_or_path: str | os.PathLike[str],
    *,
    model_dir: str | os.PathLike[str],
    device: str | torch.device | None = "auto",
    dtype: str | torch.dtype | None = "auto",
    providers: Sequence[str] | None = None,
    prefer_native: bool = True,
    offline: bool | None = None,
    cache_conversion: bool = True,
    runtime: str = "auto",
) -> SwapModel:
    """Load a swap model by registry name, folder, Hub repository id or ONNX file (see the module docstring).

    ``runtime`` decides where an inswapper-layout ONNX file runs (:func:`.choice.choose_swapper_runtime`):
    ``auto`` (native torch module on a GPU; on the CPU onnxruntime for uniform swaps and torch for
    per-block mixing), ``torch`` or ``onnxruntime``. Other files run where they can.

    ``cache_conversion``: keep a verified conversion of an inswapper-layout file beside it
    (``<file>.native.safetensors``) so that later loads skip the conversion and its check.
    """
    folder = Path(model_dir)
    text = os.fspath(name_or_path)
    choose_swapper_runtime(torch.device("cpu"), runtime)  # an unknown runtime is refused before anything loads
    torch_device = resolve_device(device)
    torch_dtype = dtype if isinstance(dtype, torch.dtype) else resolve_dtype(dtype, torch_device)
    session_providers = onnx_providers(None if device is None else str(device), providers)

    for candidate in (Path(text), folder / text):
        if candidate.is_dir() and (candidate / CONFIG_NAME).is_file():
            return load_native(candidate, device=torch_device, dtype=torch_dtype)
        if candidate.is_file() and candidate.suffix.lower() == ".onnx":
            return load_onnx_generator(
                candidate,
                spec=None,
                device=torch_device,
                dtype=torch_dtype,
                providers=session_providers,
                prefer_native=prefer_native,
                cache_conversion=cache_conversion,
                runtime=runtime,
            )
        if candidate.is_file() and candidate.name in (CONFIG_NAME, "model.safetensors"):
            return load_native(candidate.parent, device=torch_device, dtype=torch_dtype)

    registry = MODELS.get(text)
    if registry is not None:
        if registry.kind != "swapper":
            raise BadInputError(
                f"{text!r} is a {registry.kind}, not a face swapper",
                where="generator name",
                fix=f"use one of {', '.join(_known_names())}",
            )
        path = ensure_model(registry, folder, offline=offline)
        return load_onnx_generator(
            path,
            spec=spec_from_registry(registry),
            device=torch_device,
            dtype=torch_dtype,
            providers=session_providers,
            prefer_native=prefer_native,
            cache_conversion=cache_conversion,
            runtime=runtime,
        )
    if is_repo_id(text) and not Path(text).exists():
        local = folder / "facemagic" / text.replace("/", "--")
        module = SwapGenerator.from_pretrained(text, local_dir=local)
        return TorchSwapper(module, name=text, device=torch_device, dtype=torch_dtype)
    raise ModelNotFoundError(
        f"no swap model called {text!r}",
        where=f"registry, {folder}",
        fix=(
            f"use a registry name ({', '.join(_known_names())}), a native model folder, a Hub repository id "
            "(owner/name) or the path of an .onnx file"
        ),
    )


def _known_names() -> list[str]:
    return sorted(name for name, entry in MODELS.items() if entry.kind == "swapper")


def load_native(folder: Path, *, device: torch.device, dtype: torch.dtype) -> TorchSwapper:
    """A native model folder (config.json + model.safetensors) as a SwapModel."""
    module = SwapGenerator.from_pretrained(folder)
    return TorchSwapper(module, name=folder.name, device=device, dtype=dtype)


def load_onnx_generator(
    path: Path,
    *,
    spec: OnnxSwapperSpec | None,
    device: torch.device,
    dtype: torch.dtype,
    providers: list[ProviderSpec],
    prefer_native: bool = True,
    cache_conversion: bool = True,
    runtime: str = "auto",
) -> SwapModel:
    """An ONNX swapper: the converted native module when possible, else onnxruntime; on the CPU with
    ``runtime="auto"`` both (:class:`.choice.RuntimeChoiceSwapper`).

    With ``cache_conversion``, a verified conversion is read from (or written to) the cache
    beside the file (:func:`.convert.load_conversion`), keyed by the file's sha256: a later
    load skips parsing the graph and the check.
    """
    from ..hub import sha256_file
    from ..runtime import create_session

    label = spec.name if spec is not None else path.stem
    where = choose_swapper_runtime(device, runtime)
    native = prefer_native and where != "onnxruntime" and (spec is None or spec.embedding in (None, "emap"))
    digest = sha256_file(path) if native and cache_conversion else None
    module = None
    if digest is not None:
        module = load_conversion(path, digest)
        if module is not None and where == "torch":
            return _native_swapper(module, spec, label, device, dtype)
    model = load_onnx_model(path)
    check_weights_finite(model, path)
    session = create_session(path, providers=providers, what=label)
    if module is None and native and read_emap(model) is not None:
        renormalize = spec.latent_renormalize if spec is not None else True
        module, reason = convert_checked(
            model,
            session,
            latent_renormalize=renormalize,
            where=str(path),
            device=device if device.type == "cuda" else None,
        )
        if module is None:
            logger.warning("%s runs through onnxruntime, not as a native module: %s", label, reason)
        elif digest is not None:
            save_conversion(module, path, digest)
    if module is None:
        return OnnxSwapper(path, spec=spec, session=session, model=model)
    swapper = _native_swapper(module, spec, label, device, dtype)
    if where == "both":
        logger.info("%s: onnxruntime runs uniform swaps on the CPU, the native module per-block mixing", label)
        return RuntimeChoiceSwapper(swapper, OnnxSwapper(path, spec=spec, session=session, model=model))
    return swapper


def _native_swapper(
    module: InswapperGenerator, spec: OnnxSwapperSpec | None, label: str, device: torch.device, dtype: torch.dtype
) -> TorchSwapper:
    """A converted module as a SwapModel, with the crop template, recogniser and latent rule of ``spec``."""
    if spec is not None:
        module.cfg = dataclasses.replace(
            module.cfg,
            template=spec.template,
            embedding_model=spec.embedding_model,
            latent_renormalize=spec.latent_renormalize,
        )
    return TorchSwapper(module, name=label, device=device, dtype=dtype)
