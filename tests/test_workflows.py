"""The example workflows: only core and FaceMagic nodes, links between matching sockets, widget values
that fit the node definitions, thumbnails, and files in step with the schemas. No ComfyUI needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from comfy_stub import build_workflows
from comfy_stub.harness import REPO
from comfy_stub.workflow_tools import (
    CORE_NODES,
    FRONTEND_ONLY_NODES,
    check_workflow,
    load_workflow,
    ui_to_api,
    widget_layout,
)
from PIL import Image

WORKFLOW_FILES = sorted((REPO / "workflows").glob("*.json"))
EXPECTED = set(build_workflows.WORKFLOWS)


@pytest.fixture(scope="module")
def object_info() -> dict[str, dict[str, Any]]:
    return build_workflows.pack_object_info()


@pytest.fixture(scope="module")
def pack_node_ids(object_info: dict[str, dict[str, Any]]) -> set[str]:
    return {name for name in object_info if name.startswith("FaceMagic")}


def test_the_five_example_workflows_are_there_with_thumbnails() -> None:
    assert {path.stem for path in WORKFLOW_FILES} == EXPECTED
    for path in WORKFLOW_FILES:
        thumbnail = path.with_suffix(".jpg")  # ComfyUI's template browser shows <name>.jpg beside <name>.json
        assert thumbnail.is_file(), f"{thumbnail.name} is missing"
        with Image.open(thumbnail) as picture:
            assert picture.format == "JPEG" and min(picture.size) >= 200
        assert thumbnail.stat().st_size < 300_000


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda path: path.stem)
def test_workflow_uses_only_core_and_facemagic_nodes_with_matching_links(
    path: Path, object_info: dict[str, dict[str, Any]], pack_node_ids: set[str]
) -> None:
    workflow = load_workflow(path)
    types = {node["type"] for node in workflow["nodes"]}
    assert types <= pack_node_ids | set(CORE_NODES) | FRONTEND_ONLY_NODES
    assert check_workflow(workflow, object_info) == []


def test_a_broken_link_is_found(object_info: dict[str, dict[str, Any]]) -> None:
    workflow = load_workflow(REPO / "workflows" / "facemagic_single_photo_swap.json")
    link = workflow["links"][0]
    link[5] = "MASK"  # recorded type differs from the output
    assert any(f"link {link[0]}" in problem for problem in check_workflow(workflow, object_info))
    workflow = load_workflow(REPO / "workflows" / "facemagic_single_photo_swap.json")
    swap = next(node for node in workflow["nodes"] if node["type"] == "FaceMagicSwap")
    analyzer_link = next(entry["link"] for entry in swap["inputs"] if entry["name"] == "analyzer")
    identity_slot = next(i for i, entry in enumerate(swap["inputs"]) if entry["name"] == "identity")
    for link in workflow["links"]:
        if link[0] == analyzer_link:
            link[4] = identity_slot  # an analyzer into the identity socket
    assert any("FACEMAGIC_ANALYZER" in problem for problem in check_workflow(workflow, object_info))


def test_every_facemagic_node_appears_in_an_example(pack_node_ids: set[str]) -> None:
    used = {node["type"] for path in WORKFLOW_FILES for node in load_workflow(path)["nodes"]}
    assert pack_node_ids <= used


def test_workflow_files_are_in_step_with_the_schemas(object_info: dict[str, dict[str, Any]]) -> None:
    built = build_workflows.build_all(object_info)
    for path in WORKFLOW_FILES:
        assert json.loads(path.read_text()) == built[path.stem], (
            f"{path.name} differs from the node schemas: run 'cd tests && python -m comfy_stub.build_workflows'"
        )


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda path: path.stem)
def test_api_conversion_gives_every_required_input(path: Path, object_info: dict[str, dict[str, Any]]) -> None:
    workflow = load_workflow(path)
    every = [node["id"] for node in workflow["nodes"]]
    prompt = ui_to_api(workflow, object_info, unmute=every)
    assert len(prompt) == sum(node["type"] not in FRONTEND_ONLY_NODES for node in workflow["nodes"])
    for node_id, entry in prompt.items():
        info = object_info[entry["class_type"]]
        missing = set(info["input"]["required"]) - set(entry["inputs"])
        assert not missing, f"node {node_id} ({entry['class_type']}) lacks {missing}"
        for name, value in entry["inputs"].items():
            if isinstance(value, list):  # a link: [origin node id, output slot]
                assert value[0] in prompt, f"node {node_id}.{name} links to a node left out of the prompt"
            options = (info["input"]["required"].get(name) or info["input"]["optional"].get(name) or [None, {}])[1]
            if options.get("options") and entry["class_type"] != "FaceMagicLoadIdentity":
                if entry["class_type"] == "FaceMagicGeneratorLoader":
                    continue  # registry names are always offered; local files depend on the folder
                assert value in options["options"], f"node {node_id}.{name}={value!r}"


def test_muted_nodes_stay_out_of_the_prompt(object_info: dict[str, dict[str, Any]]) -> None:
    workflow = load_workflow(REPO / "workflows" / "facemagic_save_and_reuse_identity.json")
    first_run = ui_to_api(workflow, object_info)
    assert {entry["class_type"] for entry in first_run.values()} == {
        "FaceMagicAnalyzerLoader",
        "LoadImage",
        "FaceMagicExtractIdentity",
        "FaceMagicSaveIdentity",
    }
    muted = [node for node in workflow["nodes"] if node.get("mode") == 2]
    assert {node["type"] for node in muted} >= {"FaceMagicLoadIdentity", "FaceMagicSwapFaces", "SaveImage"}


def test_widget_layout_counts_upload_and_seed_values() -> None:
    assert widget_layout(CORE_NODES["LoadImage"]) == [("image", 2)]  # the file and the upload button
    seeded = {
        "input": {"required": {"seed": ["INT", {"control_after_generate": True}], "x": ["IMAGE", {}]}},
        "input_order": {"required": ["seed", "x"]},
    }
    assert widget_layout(seeded) == [("seed", 2)]
