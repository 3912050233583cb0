"""FaceMagic for ComfyUI: face swapping by style-delta identity injection, every stage a node.

ComfyUI imports this file from custom_nodes/<this folder>. It finds the nodes through
``comfy_entrypoint`` (V3 node API) and the frontend extension through ``WEB_DIRECTORY``;
the example workflows in ``workflows/`` appear in ComfyUI's template browser.
"""

from __future__ import annotations

import importlib.util
import logging
import sys
from pathlib import Path

_PACK_DIR = Path(__file__).resolve().parent

# facemagic_core is a normal package of this folder. Installed with `pip install -e .` (or as a
# wheel) it is importable already; copied into custom_nodes and set up with
# `pip install -r requirements.txt` only, it is not: then this folder goes on the import path, once.
if importlib.util.find_spec("facemagic_core") is None:
    sys.path.append(str(_PACK_DIR))

WEB_DIRECTORY = "./js"

if importlib.util.find_spec("comfy_api") is not None:
    from .nodes import IMPORT_FAILURES, comfy_entrypoint

    logging.getLogger(__name__).debug("FaceMagic loaded from %s", _PACK_DIR)
else:
    # Imported outside ComfyUI (pytest collects this folder as a package, packaging tools read it):
    # there is no node API to register with, and facemagic_core works on its own.
    IMPORT_FAILURES: dict[str, str] = {}
    logging.getLogger(__name__).debug("FaceMagic imported outside ComfyUI: nodes not registered")

__all__ = ["IMPORT_FAILURES", "WEB_DIRECTORY", "comfy_entrypoint"]
