"""Load the FaceMagic pack against the ComfyUI stand-in, and take everything away again afterwards.

Use :func:`installed_pack` from a fixture in the node test files (never from conftest.py)::

    with installed_pack(tmp_path / "models") as pack:
        nodes = pack.nodes.load_node_classes()
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

STUB_DIR = Path(__file__).resolve().parent
REPO = STUB_DIR.parents[1]
#: The module name the pack gets (ComfyUI uses the folder's path; any name works for a package).
PACK_NAME = "facemagic_pack"
#: Top-level names the stand-in provides; they must not be taken by a real ComfyUI in the same process.
STUB_MODULES = ("comfy_api", "comfy", "folder_paths")


def _drop_modules(prefixes: tuple[str, ...]) -> None:
    for name in list(sys.modules):
        if any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes):
            del sys.modules[name]


@contextmanager
def installed_pack(models_dir: Path) -> Iterator[ModuleType]:
    """The imported pack (``<pack>.nodes`` etc.), with ``models_dir`` as ComfyUI's models folder."""
    for name in STUB_MODULES:
        module = sys.modules.get(name)
        if module is not None and not str(getattr(module, "__file__", "")).startswith(str(STUB_DIR)):
            raise RuntimeError(f"a real {name} module is already imported; the stand-in cannot be used here")
    previous = os.environ.get("FACEMAGIC_TEST_MODELS_DIR")
    os.environ["FACEMAGIC_TEST_MODELS_DIR"] = str(models_dir)
    sys.path.insert(0, str(STUB_DIR))
    try:
        spec = importlib.util.spec_from_file_location(
            PACK_NAME, REPO / "__init__.py", submodule_search_locations=[str(REPO)]
        )
        assert spec is not None and spec.loader is not None
        pack = importlib.util.module_from_spec(spec)
        sys.modules[PACK_NAME] = pack
        spec.loader.exec_module(pack)
        asyncio.run(pack.comfy_entrypoint())  # registers the model folder, as ComfyUI does at start
        yield pack
    finally:
        _drop_modules((PACK_NAME, *STUB_MODULES))
        if str(STUB_DIR) in sys.path:
            sys.path.remove(str(STUB_DIR))
        if previous is None:
            os.environ.pop("FACEMAGIC_TEST_MODELS_DIR", None)
        else:
            os.environ["FACEMAGIC_TEST_MODELS_DIR"] = previous


def node_classes(pack: ModuleType) -> dict[str, type]:
    """node_id -> node class, for every node the pack registers."""
    extension = asyncio.run(pack.comfy_entrypoint())
    classes = asyncio.run(extension.get_node_list())
    return {cls.GET_SCHEMA().node_id: cls for cls in classes}
