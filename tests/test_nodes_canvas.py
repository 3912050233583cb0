"""How the nodes present themselves on the canvas: search aliases, expert inputs folded away, the strength
slider, the lists the frontend refreshes, the report as ui.PreviewText. Through the stand-in (which, like
the newest ComfyUI, has ``search_aliases`` and ``advanced``), and as on ComfyUI 0.3.64, which has neither.
"""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any

import pytest
from comfy_stub.harness import REPO

pytest_plugins = ["comfy_stub.fixtures"]

#: The inputs a newcomer need not touch: folded away under "advanced" where ComfyUI offers it.
EXPERT_INPUTS = {
    ("FaceMagicAnalyzerLoader", "device"),
    ("FaceMagicAnalyzerLoader", "det_size"),
    ("FaceMagicGeneratorLoader", "device"),
    ("FaceMagicGeneratorLoader", "dtype"),
    ("FaceMagicSwap", "weave"),
    ("FaceMagicSwap", "smoothing"),
    ("FaceMagicBlend", "erosion"),
    ("FaceMagicBlend", "feather"),
    ("FaceMagicBlend", "generator_mask"),
    ("FaceMagicBlend", "poisson"),
    ("FaceMagicSwapFaces", "erosion"),
    ("FaceMagicSwapFaces", "feather"),
    ("FaceMagicSwapFaces", "smoothing"),
    ("FaceMagicSwapSeveralPeople", "reference_threshold"),
    ("FaceMagicSwapSeveralPeople", "track_gap"),
}


def _schemas(nodes: dict[str, Any]) -> dict[str, Any]:
    return {node_id: cls.GET_SCHEMA() for node_id, cls in nodes.items()}


def test_the_stand_in_offers_what_the_newest_comfyui_does(pack: ModuleType) -> None:
    comfy = pack.nodes._comfy
    assert comfy.schema_supports("search_aliases") and comfy.input_supports("advanced")
    assert not comfy.schema_supports("no_such_field") and not comfy.input_supports("no_such_parameter")


def test_every_node_has_search_aliases_and_the_swap_nodes_answer_to_other_tools_names(nodes: dict[str, Any]) -> None:
    schemas = _schemas(nodes)
    for node_id, schema in schemas.items():
        assert schema.search_aliases, f"{node_id} has no search aliases"
        assert all(alias == alias.strip() and alias for alias in schema.search_aliases), node_id
        assert len(set(schema.search_aliases)) == len(schema.search_aliases), node_id
    for node_id in ("FaceMagicSwap", "FaceMagicSwapFaces", "FaceMagicSwapSeveralPeople"):
        assert {"face swap", "reactor", "inswapper", "roop"} <= set(schemas[node_id].search_aliases)


def test_expert_inputs_are_marked_advanced(nodes: dict[str, Any]) -> None:
    marked = {
        (node_id, item.id)
        for node_id, schema in _schemas(nodes).items()
        for item in schema.inputs
        if getattr(item, "advanced", None)
    }
    assert marked >= EXPERT_INPUTS  # other lanes' nodes may mark their own expert inputs
    essential = {"images", "identity", "generator", "analyzer", "model", "name", "strength", "face_index"}
    assert not {name for _, name in marked} & essential
    erosion = next(item for item in nodes["FaceMagicBlend"].GET_SCHEMA().inputs if item.id == "erosion")
    assert erosion.as_dict()["advanced"] is True  # what /object_info sends, and the frontend reads


def test_strength_is_a_slider_from_0_to_1(nodes: dict[str, Any], pack: ModuleType) -> None:
    for node_id in ("FaceMagicSwap", "FaceMagicSwapFaces", "FaceMagicSwapSeveralPeople"):
        strength = next(item for item in nodes[node_id].GET_SCHEMA().inputs if item.id == "strength")
        assert strength.display_mode == "slider"
        assert (strength.min, strength.max, strength.default) == (0.0, 1.0, 1.0)


def test_on_a_comfyui_without_them_the_schemas_build_as_before(
    nodes: dict[str, Any], pack: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ComfyUI 0.3.64: io.Schema has no search_aliases and inputs take no advanced (a TypeError if passed)."""
    schema_fields: set[str] = set()
    input_parameters: set[str] = set()
    monkeypatch.setattr(pack.nodes.common, "schema_supports", lambda field: field in schema_fields)
    monkeypatch.setattr(pack.nodes.common, "input_supports", lambda parameter: parameter in input_parameters)
    before = _schemas(nodes)
    assert all(schema.search_aliases == [] for schema in before.values())
    assert not any(getattr(item, "advanced", None) for schema in before.values() for item in schema.inputs)
    schema_fields.add("search_aliases")
    input_parameters.add("advanced")
    after = _schemas(nodes)
    for node_id, schema in before.items():  # the same inputs in the same order: saved workflows load on both
        assert [item.id for item in schema.inputs] == [item.id for item in after[node_id].inputs], node_id


def test_the_lists_the_frontend_refreshes_are_combo_inputs(nodes: dict[str, Any]) -> None:
    script = (REPO / "js" / "facemagic_logic.js").read_text()
    table = re.search(r"export const REFRESH_COMBOS = new Map\(\[(.*?)\]\);", script, flags=re.DOTALL)
    assert table is not None
    entries = re.findall(r'\["(\w+)", \[([^\]]*)\]\]', table.group(1))
    assert {node_id for node_id, _ in entries} == {"FaceMagicLoadIdentity", "FaceMagicGeneratorLoader"}
    for node_id, names in entries:
        inputs = {item.id: item for item in nodes[node_id].GET_SCHEMA().inputs}
        for name in re.findall(r'"(\w+)"', names):
            assert inputs[name].get_io_type() == "COMBO", f"{node_id}.{name}"


def test_the_identity_list_is_read_again_with_the_schema(nodes: dict[str, Any], pack: ModuleType) -> None:
    """The refresh button asks /object_info again, which builds the schema again: a new identity is listed."""
    from comfy_stub.samples import random_identity

    def listed() -> list[str]:
        [name] = [item for item in nodes["FaceMagicLoadIdentity"].GET_SCHEMA().inputs if item.id == "name"]
        return list(name.options)

    assert "canvas/refreshed" not in listed()
    nodes["FaceMagicSaveIdentity"].run(identity=random_identity(3), name="canvas/refreshed", overwrite=True)
    assert "canvas/refreshed" in listed()


def test_reports_go_to_the_canvas_as_preview_text(pack: ModuleType) -> None:
    text_ui = pack.nodes._comfy.text_ui
    assert text_ui("two faces") == {"text": ["two faces"]}
    assert text_ui("r", similarity=[], pose=[{"faces": 1}]) == {
        "text": ["r"],
        "facemagic_similarity": [],
        "facemagic_pose": [{"faces": 1}],
    }


def test_every_report_goes_through_text_ui(nodes: dict[str, Any]) -> None:
    """The extension reads the report from {"text": [...]}: a node that sends its own key is shown nothing."""
    import inspect

    for node_id, cls in nodes.items():
        source = inspect.getsource(cls.execute)
        assert '"facemagic_text"' not in source, f"{node_id}: use text_ui(report) from nodes._comfy"
        if "ui=" in source:
            assert "text_ui(" in source, f"{node_id} sends a ui the extension does not read"
