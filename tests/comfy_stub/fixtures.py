"""pytest fixtures shared by the node test files (loaded with ``pytest_plugins``; not a conftest)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from facemagic_core.analysis import FaceAnalyzer
from facemagic_core.types import Identity

from .harness import installed_pack, node_classes
from .samples import comfy_image, write_tiny_models


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ComfyUI's models folder with tiny models in models/facemagic."""
    models = tmp_path_factory.mktemp("comfy_models")
    write_tiny_models(models / "facemagic")
    return models


@pytest.fixture(scope="module")
def pack(models_dir: Path) -> Iterator[ModuleType]:
    with installed_pack(models_dir) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def nodes(pack: ModuleType) -> dict[str, Any]:
    return node_classes(pack)


@pytest.fixture(scope="module")
def analyzer(nodes: dict[str, Any]) -> FaceAnalyzer:
    output = nodes["FaceMagicAnalyzerLoader"].run(model="buffalo_l", device="cpu", det_size=320, det_threshold=0.5)
    return output[0]


@pytest.fixture(scope="module")
def generator(nodes: dict[str, Any]) -> Any:
    return nodes["FaceMagicGeneratorLoader"].run(model="tiny_native", device="cpu", dtype="fp32")[0]


@pytest.fixture(scope="module")
def person_a() -> torch.Tensor:
    return comfy_image([(5, 5, 255)])


@pytest.fixture(scope="module")
def person_b() -> torch.Tensor:
    return comfy_image([(4, 6, 210)])


@pytest.fixture(scope="module")
def identity_a(nodes: dict[str, Any], analyzer: FaceAnalyzer, person_a: torch.Tensor) -> Identity:
    node = nodes["FaceMagicExtractIdentity"]
    return node.run(analyzer=analyzer, images=person_a, face_order="largest", face_index=0)[0]


@pytest.fixture(scope="module")
def identity_b(nodes: dict[str, Any], analyzer: FaceAnalyzer, person_b: torch.Tensor) -> Identity:
    node = nodes["FaceMagicExtractIdentity"]
    return node.run(analyzer=analyzer, images=person_b, face_order="largest", face_index=0)[0]
