"""The package's metadata: requirements.txt and pyproject.toml say the same, the CLI is installed,
and the core library never imports ComfyUI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")


def _requirements() -> list[str]:
    lines = (REPO / "requirements.txt").read_text().splitlines()
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def _normalise(requirement: str) -> str:
    return requirement.replace(" ", "").replace('"', "'").lower()


def test_requirements_match_pyproject_dependencies() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert sorted(map(_normalise, project["dependencies"])) == sorted(map(_normalise, _requirements()))
    # torch stays unpinned: ComfyUI brings its own build.
    assert "torch" in map(_normalise, project["dependencies"])


def test_an_install_brings_one_onnxruntime_build() -> None:
    """insightface requires the CPU build 'onnxruntime'; asking for onnxruntime-gpu too puts two builds into one
    folder (the last one written wins) and 'models doctor' fails on a fresh install. No GPU path needs it."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = [_normalise(requirement).split(";")[0] for requirement in project["dependencies"]]
    onnxruntimes = [name for name in names if name.startswith("onnxruntime")]
    assert onnxruntimes == ["onnxruntime"]
    for extra, requirements in project["optional-dependencies"].items():
        assert not any(_normalise(r).startswith("onnxruntime-") for r in requirements), extra


def test_pyproject_has_what_the_registry_and_pip_need() -> None:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = data["project"]
    assert project["name"] == "facemagic"
    assert project["scripts"]["facemagic"] == "facemagic_core.cli:main"
    assert "test" in project["optional-dependencies"]
    assert isinstance(project["license"], str) and project["license"]  # an SPDX expression
    assert data["tool"]["comfy"]["PublisherId"]
    assert data["tool"]["comfy"]["DisplayName"] == "FaceMagic"


def test_core_imports_with_comfyui_blocked() -> None:
    """facemagic_core (every module) imports in a fresh interpreter where ComfyUI's modules cannot be imported."""
    code = """
import importlib, pkgutil, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {'comfy', 'comfy_api', 'comfy_extras', 'folder_paths', 'server', 'nodes'}:
            raise ImportError(f'blocked: {name}')
        return None
sys.meta_path.insert(0, Block())
import facemagic_core
modules = pkgutil.walk_packages(facemagic_core.__path__, 'facemagic_core.')
names = [m.name for m in modules if not m.name.endswith('__main__')]
for name in names:
    importlib.import_module(name)
loaded = sorted(m for m in sys.modules if m.split('.')[0] in {'comfy', 'comfy_api', 'folder_paths', 'server'})
print(len(names), loaded)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stderr
    count, loaded = result.stdout.strip().split(" ", 1)
    assert int(count) >= 10
    assert loaded == "[]"


def test_cli_help_lists_the_commands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "facemagic_core", "--help"], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert result.returncode == 0, result.stderr
    for command in ("identity", "similarity", "models"):
        assert command in result.stdout


README_TEST_COMMAND = 'pip install -e ".[test]" && python -m pytest'


def test_readme_test_command_is_what_ci_runs() -> None:
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert README_TEST_COMMAND in readme
    # CI runs the same two steps (with torch pinned first, as the README says).
    assert 'pip install -q -e ".[test]"' in ci or 'pip install -e ".[test]"' in ci
    assert "python -m pytest" in ci
    assert ci.index("torch==2.13.0") < ci.index('-e ".[test]"') < ci.rindex("python -m pytest")


def test_readme_models_table_is_the_registry() -> None:
    from facemagic_core.cli.models import markdown_models_table

    readme = (REPO / "README.md").read_text()
    assert markdown_models_table() in readme, "regenerate the table with: facemagic models list --markdown"


def test_readme_node_reference_is_generated_from_the_schemas(tmp_path: Path) -> None:
    from comfy_stub.harness import installed_pack, node_classes
    from comfy_stub.node_reference import node_reference

    with installed_pack(tmp_path) as pack:
        generated = node_reference(node_classes(pack))
    body = generated.split("\n", 2)[2]  # without the heading line and the blank line after it
    readme = (REPO / "README.md").read_text()
    assert body.strip() in readme, "regenerate it with: cd tests && python -m comfy_stub.node_reference"
