"""FaceMagic's ComfyUI nodes (V3 schema): one ComfyExtension, node modules split by domain.

Each node module is imported on its own, and each node's schema is built once before ComfyUI sees
it: if one fails (a missing optional dependency, a core module of another version), the others
still load and the log says what failed and why.
"""

from __future__ import annotations

import importlib
import logging
from types import ModuleType

from ._comfy import ComfyExtension, io
from .model_folder import register_model_folder

logger = logging.getLogger(__name__)

#: Node modules, in menu order. Each defines NODES, a list of node classes.
NODE_MODULES = ("loader_nodes", "identity_nodes", "swap_nodes", "mapping_nodes", "quality_nodes", "finish_nodes")

#: "ExceptionType: message" for every node module that failed to import ("swap_nodes") and every node whose
#: schema could not be built ("swap_nodes.FaceMagicBlend").
IMPORT_FAILURES: dict[str, str] = {}


def _record_failure(name: str, error: Exception) -> None:
    IMPORT_FAILURES[name] = f"{type(error).__name__}: {error}"
    logger.error(
        "FaceMagic: %s could not be loaded (%s: %s); the other FaceMagic nodes are available. "
        "Fix: install FaceMagic's requirements (pip install -r requirements.txt in its folder), make sure "
        "facemagic_core comes from the same FaceMagic version, and restart ComfyUI.",
        name,
        type(error).__name__,
        error,
        exc_info=error,
    )


def _import_node_module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f".{name}", __name__)
    except Exception as error:  # one broken module must not take the other nodes down
        _record_failure(name, error)
        return None


def _has_schema(cls: type[io.ComfyNode], module: str) -> bool:
    """Whether the node's schema builds: ComfyUI builds them all in one go, and one that raises drops the rest."""
    try:
        cls.GET_SCHEMA()
    except Exception as error:
        _record_failure(f"{module}.{cls.__name__}", error)
        return False
    return True


def load_node_classes() -> list[type[io.ComfyNode]]:
    """The node classes of every node module that imports; failures are recorded in IMPORT_FAILURES."""
    IMPORT_FAILURES.clear()
    classes: list[type[io.ComfyNode]] = []
    for name in NODE_MODULES:
        module = _import_node_module(name)
        if module is not None:
            classes.extend(cls for cls in module.NODES if _has_schema(cls, name))
    return classes


class FaceMagicExtension(ComfyExtension):
    """FaceMagic's extension object, returned by comfy_entrypoint."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return load_node_classes()


async def comfy_entrypoint() -> FaceMagicExtension:
    """ComfyUI's V3 entry point: registers the model folder and returns the extension."""
    register_model_folder()
    return FaceMagicExtension()
