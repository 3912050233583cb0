"""Everything FaceMagic takes from ComfyUI, imported here and nowhere else.

A change of ComfyUI's API is one edit in this file. What is used, and since when it exists:

- ``comfy_api.latest``: ``io`` (V3 schema: ``ComfyNode``, ``Schema``, ``Custom`` socket types,
  ``Image``/``Mask``/``String``/``Float``/``Int``/``Boolean``/``Combo`` inputs and outputs,
  ``NodeOutput``, ``Hidden``) and ``ComfyExtension``. Present in ComfyUI 0.3.6x and in the
  current public repository; nodes only use constructor arguments both share (ids, display
  names, tooltips, defaults, min/max/step, options, ``optional``, ``multiline``).
- ``folder_paths``: ``models_dir``, ``folder_names_and_paths``, ``get_folder_paths``,
  ``get_filename_list``.
- ``comfy.model_management``: ``get_torch_device``, ``unet_offload_device``,
  ``load_models_gpu`` (with ``force_full_load``), ``throw_exception_if_processing_interrupted``,
  ``InterruptProcessingException``.
- ``comfy.model_patcher.ModelPatcher`` (``model, load_device, offload_device``).
- ``comfy.utils.ProgressBar`` (``total, node_id``; ``update_absolute(value, total)``).
- ``comfy_api.latest.ui.PreviewText`` (0.3.6x): a node's report goes to the frontend as ``{"text": [report]}``,
  the key ComfyUI's own text outputs use; built by hand where ``ui`` is missing.

Newer ComfyUI releases add, and FaceMagic uses where the running ComfyUI has them (found by
:func:`schema_supports` / :func:`input_supports`; without them the node is as before):

- ``io.Schema(search_aliases=[...])``: words the node search also matches ("face swap", "reactor"...);
- ``advanced=True`` on an input: the frontend folds expert settings away under "advanced".

They also offer ``io.Autogrow`` (inputs that multiply as they are connected) and
``io.DynamicCombo``. FaceMagic does not use them: their inputs are saved under other names than
plain inputs, so one schema could not load the same saved workflows on the release that has them
and on the one that has not. The mix node declares a fixed set of optional identity inputs instead,
and the frontend extension (``js/``) shows them one at a time.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any

import comfy.model_management as model_management
import comfy.model_patcher as model_patcher
import comfy.utils as comfy_utils
import folder_paths
import torch
from comfy_api.latest import ComfyExtension, io

try:  # comfy_api.latest.ui: ComfyUI 0.3.5x and later
    from comfy_api.latest import ui as comfy_ui
except ImportError:  # pragma: no cover - older ComfyUI
    comfy_ui = None

__all__ = [
    "ComfyExtension",
    "InterruptProcessingException",
    "folder_paths",
    "get_torch_device",
    "input_supports",
    "io",
    "load_models",
    "new_model_patcher",
    "new_progress_bar",
    "offload_device",
    "schema_supports",
    "text_ui",
    "throw_if_interrupted",
]

#: Raised by ComfyUI when the user presses Cancel; ComfyUI reports it as "interrupted", not as an error.
InterruptProcessingException: type[BaseException] = model_management.InterruptProcessingException


def get_torch_device() -> torch.device:
    """The device ComfyUI runs models on (honours ``--cpu``, ``--directml``, ``--cuda-device``...)."""
    device: torch.device = model_management.get_torch_device()
    return device


def offload_device() -> torch.device:
    """Where ComfyUI parks model weights it evicts from the accelerator."""
    device: torch.device = model_management.unet_offload_device()
    return device


def new_model_patcher(module: torch.nn.Module, *, load_device: torch.device, offload_to: torch.device) -> Any:
    """Hand ``module`` to ComfyUI's model management (it may then move its weights between devices)."""
    return model_patcher.ModelPatcher(module, load_device=load_device, offload_device=offload_to)


def load_models(patchers: list[Any]) -> None:
    """Put all the weights of ``patchers`` on their load device, evicting other models if needed.

    Always a full load: ComfyUI's partial ("lowvram") load only streams layers built with ``comfy.ops``; the
    plain torch layers of FaceMagic's generators would be left on the offload device, beside the others.
    """
    model_management.load_models_gpu(patchers, force_full_load=True)


def throw_if_interrupted() -> None:
    """Raise ``InterruptProcessingException`` if the user cancelled the run (and clear the request)."""
    model_management.throw_exception_if_processing_interrupted()


def new_progress_bar(total: int, node_id: str | None) -> Any:
    """ComfyUI's progress bar for the node ``node_id`` (the running node when None)."""
    return comfy_utils.ProgressBar(total, node_id=node_id)


def text_ui(text: str, **measurements: list[Any]) -> dict[str, Any]:
    """The ``ui`` of a node that reports ``text`` (and ``measurements``, as ``facemagic_<name>`` lists).

    ``{"text": [text]}`` is what ``ui.PreviewText`` sends; the pack's frontend extension shows it on the node.
    """
    preview = getattr(comfy_ui, "PreviewText", None)
    shown: dict[str, Any] = dict(preview(text).as_dict()) if preview is not None else {"text": (text,)}
    shown["text"] = list(shown["text"])
    return shown | {f"facemagic_{name}": list(values) for name, values in measurements.items()}


@functools.cache
def schema_supports(field: str) -> bool:
    """Whether this ComfyUI's ``io.Schema`` has the field ``field`` (``search_aliases`` came after 0.3.6x)."""
    if dataclasses.is_dataclass(io.Schema):
        return field in {item.name for item in dataclasses.fields(io.Schema)}
    return field in inspect.signature(io.Schema).parameters


@functools.cache
def input_supports(parameter: str) -> bool:
    """Whether this ComfyUI's widget inputs take ``parameter`` (``advanced`` came after 0.3.6x)."""
    return all(
        parameter in inspect.signature(kind.Input.__init__).parameters
        for kind in (io.Int, io.Float, io.Boolean, io.Combo, io.String)
    )
