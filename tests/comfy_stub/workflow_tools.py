"""ComfyUI workflow files: the core nodes the examples use, link checks, and UI -> API conversion.

A workflow in ComfyUI's UI format (what the frontend saves and the template browser opens) lists
nodes with their socket inputs and ``widgets_values``, and links as
``[id, origin_node, origin_slot, target_node, target_slot, type]``. The API format (what
``POST /prompt`` takes) maps node ids to ``{"class_type", "inputs"}``. Converting needs each
node type's definition (``/object_info``): which inputs are widgets, in which order, and which
widgets save an extra value (an upload button, "control after generate").

:data:`CORE_NODES` records the definitions of the core ComfyUI nodes the example workflows
use, so the checks run without ComfyUI; the server test compares it with the real
``/object_info``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
#: Widget options that make the frontend save one more value after the widget's own.
EXTRA_VALUE_OPTIONS = ("control_after_generate", "image_upload", "video_upload", "audio_upload")
#: Frontend-only nodes: drawn on the canvas, never sent to the server.
FRONTEND_ONLY_NODES = frozenset({"Note", "MarkdownNote"})


def _core(
    required: list[tuple[str, Any, dict[str, Any]]],
    outputs: list[tuple[str, str]],
    optional: list[tuple[str, Any, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    optional = optional or []
    return {
        "input": {
            "required": {name: [kind, options] for name, kind, options in required},
            "optional": {name: [kind, options] for name, kind, options in optional},
        },
        "input_order": {"required": [name for name, _, _ in required], "optional": [name for name, _, _ in optional]},
        "output": [kind for _, kind in outputs],
        "output_name": [name for name, _ in outputs],
    }


#: The core ComfyUI nodes the example workflows use, as /object_info describes them (the parts used here).
#: "LIST" stands for a combo whose options are files (the real /object_info gives the list itself).
CORE_NODES: dict[str, dict[str, Any]] = {
    "LoadImage": _core([("image", "LIST", {"image_upload": True})], [("IMAGE", "IMAGE"), ("MASK", "MASK")]),
    "SaveImage": _core([("images", "IMAGE", {}), ("filename_prefix", "STRING", {"default": "ComfyUI"})], []),
    "PreviewImage": _core([("images", "IMAGE", {})], []),
    "PreviewAny": _core([("source", "*", {})], []),
    "ImageScaleBy": _core(
        [
            ("image", "IMAGE", {}),
            ("upscale_method", "LIST", {}),
            ("scale_by", "FLOAT", {"default": 1.0, "min": 0.01, "max": 8.0, "step": 0.01}),
        ],
        [("IMAGE", "IMAGE")],
    ),
    "LoadVideo": _core([("file", "COMBO", {"video_upload": True})], [("VIDEO", "VIDEO")]),
    "GetVideoComponents": _core([("video", "VIDEO", {})], [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]),
    "CreateVideo": _core(
        [("images", "IMAGE", {}), ("fps", "FLOAT", {"default": 30.0})],
        [("VIDEO", "VIDEO")],
        optional=[("audio", "AUDIO", {})],
    ),
    "SaveVideo": _core(
        [
            ("video", "VIDEO", {}),
            ("filename_prefix", "STRING", {"default": "video/ComfyUI"}),
            ("format", "COMBO", {"default": "auto"}),
            ("codec", "COMBO", {"default": "auto"}),
        ],
        [],
    ),
}


# ---------------------------------------------------------------------------------------------------------------------
# Node definitions


def object_info_from_schema(schema: Any) -> dict[str, Any]:
    """A node's /object_info entry (the parts used here) from a V3 ``io.Schema`` (finalized)."""
    required, optional = {}, {}
    for item in schema.inputs:
        options = {"tooltip": item.tooltip}
        if getattr(item, "options", None) is not None:
            options["options"] = list(item.options)
        if getattr(item, "default", None) is not None:
            options["default"] = item.default
        (optional if item.optional else required)[item.id] = [str(item.get_io_type()), options]
    return {
        "input": {"required": required, "optional": optional},
        "input_order": {"required": list(required), "optional": list(optional)},
        "output": [str(output.io_type) for output in schema.outputs],
        "output_name": [output.display_name or str(output.io_type) for output in schema.outputs],
        "display_name": schema.display_name,
        "category": schema.category,
    }


def is_widget(kind: Any, options: dict[str, Any]) -> bool:
    if options.get("forceInput"):
        return False
    return isinstance(kind, list) or kind == "LIST" or kind in WIDGET_TYPES


def widget_layout(info: dict[str, Any]) -> list[tuple[str, int]]:
    """``(input name, values saved)`` for every widget of a node type, in the frontend's order."""
    layout = []
    for category in ("required", "optional"):
        entries = info["input"].get(category, {})
        for name in info.get("input_order", {}).get(category, list(entries)):
            kind, options = entries[name][0], (entries[name][1] if len(entries[name]) > 1 else {})
            if is_widget(kind, options):
                extra = sum(1 for option in EXTRA_VALUE_OPTIONS if options.get(option))
                layout.append((name, 1 + extra))
    return layout


def input_type(info: dict[str, Any], name: str) -> str | None:
    for category in ("required", "optional"):
        entry = info["input"].get(category, {}).get(name)
        if entry is not None:
            kind = entry[0]
            return "COMBO" if isinstance(kind, list) or kind == "LIST" else str(kind)
    return None


# ---------------------------------------------------------------------------------------------------------------------
# Checks


def load_workflow(path: Path) -> dict[str, Any]:
    workflow: dict[str, Any] = json.loads(Path(path).read_text(encoding="utf-8"))
    return workflow


def types_match(output_type: str, input_kind: str) -> bool:
    """ComfyUI's socket rule: equal types, ``*`` accepts anything, comma lists accept any member."""
    if output_type == "*" or input_kind == "*":
        return True
    return bool(set(output_type.split(",")) & set(input_kind.split(",")))


def check_workflow(workflow: dict[str, Any], object_info: dict[str, dict[str, Any]]) -> list[str]:
    """Problems of a UI-format workflow: unknown node types, bad links, widget counts. Empty when fine."""
    problems: list[str] = []
    nodes = {node["id"]: node for node in workflow["nodes"]}
    for node in workflow["nodes"]:
        kind = node["type"]
        if kind in FRONTEND_ONLY_NODES:
            continue
        info = object_info.get(kind)
        if info is None:
            problems.append(f"node {node['id']}: unknown node type {kind}")
            continue
        expected = sum(count for _, count in widget_layout(info))
        if len(node.get("widgets_values", [])) != expected:
            problems.append(
                f"node {node['id']} ({kind}): {len(node.get('widgets_values', []))} widget values, expected {expected}"
            )
        for slot, output in enumerate(node.get("outputs", [])):
            if slot >= len(info["output"]) or output["type"] != info["output"][slot]:
                problems.append(f"node {node['id']} ({kind}): output {slot} is not {output['type']}")
        for entry in node.get("inputs", []):
            if input_type(info, entry["name"]) is None:
                problems.append(f"node {node['id']} ({kind}): no input called {entry['name']}")
    for link_id, origin, origin_slot, target, target_slot, kind in workflow["links"]:
        if origin not in nodes or target not in nodes:
            problems.append(f"link {link_id}: joins a node that does not exist")
            continue
        source, sink = nodes[origin], nodes[target]
        source_info, sink_info = object_info.get(source["type"]), object_info.get(sink["type"])
        if source_info is None or sink_info is None:
            continue
        produced = source_info["output"][origin_slot] if origin_slot < len(source_info["output"]) else None
        entry = sink["inputs"][target_slot] if target_slot < len(sink.get("inputs", [])) else None
        if produced is None or entry is None:
            problems.append(f"link {link_id}: slot out of range")
            continue
        wanted = input_type(sink_info, entry["name"])
        if wanted is None or not types_match(produced, wanted) or kind != produced:
            problems.append(
                f"link {link_id}: {source['type']} output {origin_slot} ({produced}) -> "
                f"{sink['type']}.{entry['name']} ({wanted}), recorded as {kind}"
            )
        if entry.get("link") != link_id or link_id not in (source["outputs"][origin_slot].get("links") or []):
            problems.append(f"link {link_id}: not recorded on both ends")
    return problems


# ---------------------------------------------------------------------------------------------------------------------
# UI -> API


def ui_to_api(
    workflow: dict[str, Any], object_info: dict[str, dict[str, Any]], *, unmute: Iterable[int] = ()
) -> dict[str, Any]:
    """The API-format prompt of a UI-format workflow, as the frontend builds it on "Queue".

    Muted (mode 2) and bypassed (mode 4) nodes are left out, except those listed in ``unmute``.
    """
    active_modes = {0}
    unmuted = set(unmute)
    prompt: dict[str, Any] = {}
    links = {link[0]: link for link in workflow["links"]}
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY_NODES:
            continue
        if node.get("mode", 0) not in active_modes and node["id"] not in unmuted:
            continue
        info = object_info[node["type"]]
        inputs: dict[str, Any] = {}
        values = list(node.get("widgets_values", []))
        position = 0
        for name, count in widget_layout(info):
            inputs[name] = values[position]
            position += count
        for entry in node.get("inputs", []):
            link = entry.get("link")
            if link is not None:
                _, origin, origin_slot, _, _, _ = links[link]
                inputs[entry["name"]] = [str(origin), origin_slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs, "_meta": {"title": node.get("title")}}
    return prompt


# ---------------------------------------------------------------------------------------------------------------------
# Building workflows


class WorkflowBuilder:
    """Writes UI-format workflows from a few calls, with links recorded on both ends.

    ``node(type, pos, widgets={...}, title=...)`` adds a node whose widget values come from the
    definitions (defaults) overridden by ``widgets``; ``link(a, "output", b, "input")`` joins
    them by names (output display names, input ids).
    """

    def __init__(self, object_info: dict[str, dict[str, Any]]) -> None:
        self.object_info = object_info
        self.nodes: list[dict[str, Any]] = []
        self.links: list[list[Any]] = []
        self.groups: list[dict[str, Any]] = []

    def node(
        self,
        kind: str,
        pos: tuple[float, float],
        *,
        widgets: dict[str, Any] | None = None,
        size: tuple[float, float] = (320, 160),
        title: str | None = None,
        mode: int = 0,
    ) -> int:
        node_id = len(self.nodes) + 1
        info = self.object_info[kind]
        widgets = dict(widgets or {})
        values: list[Any] = []
        for name, count in widget_layout(info):
            entry = info["input"]["required"].get(name) or info["input"]["optional"][name]
            options = entry[1] if len(entry) > 1 else {}
            default = options.get("default")
            if default is None and options.get("options"):
                default = options["options"][0]
            value = widgets.pop(name, default)
            values.append(value)
            if count > 1:
                values.append("image" if any(options.get(k) for k in EXTRA_VALUE_OPTIONS[1:]) else "fixed")
        if widgets:
            raise KeyError(f"{kind} has no widgets {sorted(widgets)}")
        inputs = []
        for category in ("required", "optional"):
            for name in info["input_order"].get(category, []):
                kind_of_input, options = info["input"][category][name][0], info["input"][category][name][1]
                if not is_widget(kind_of_input, options):
                    inputs.append({"name": name, "type": str(kind_of_input), "link": None})
        outputs = [
            {"name": name, "type": kind_of_output, "links": []}
            for name, kind_of_output in zip(info["output_name"], info["output"], strict=True)
        ]
        node: dict[str, Any] = {
            "id": node_id,
            "type": kind,
            "pos": list(pos),
            "size": list(size),
            "flags": {},
            "order": node_id - 1,
            "mode": mode,
            "inputs": inputs,
            "outputs": outputs,
            "properties": {"Node name for S&R": kind},
            "widgets_values": values,
        }
        if title:
            node["title"] = title
        self.nodes.append(node)
        return node_id

    def keep_inputs(self, node_id: int, count: int) -> None:
        """Keep only the first ``count`` socket inputs of a node (e.g. the identity inputs shown on the mix node)."""
        node = self.nodes[node_id - 1]
        if any(entry["link"] is not None for entry in node["inputs"][count:]):
            raise ValueError(f"node {node_id}: a linked input would be dropped")
        node["inputs"] = node["inputs"][:count]

    def note(self, text: str, pos: tuple[float, float], size: tuple[float, float] = (360, 140)) -> int:
        node_id = len(self.nodes) + 1
        self.nodes.append(
            {
                "id": node_id,
                "type": "Note",
                "pos": list(pos),
                "size": list(size),
                "flags": {},
                "order": node_id - 1,
                "mode": 0,
                "inputs": [],
                "outputs": [],
                "properties": {},
                "widgets_values": [text],
                "color": "#432",
                "bgcolor": "#653",
            }
        )
        return node_id

    def link(self, origin: int, output: str, target: int, input_name: str) -> int:
        source, sink = self.nodes[origin - 1], self.nodes[target - 1]
        slot = next(i for i, entry in enumerate(source["outputs"]) if entry["name"] == output)
        kind = source["outputs"][slot]["type"]
        entries = sink["inputs"]
        target_slot = next((i for i, entry in enumerate(entries) if entry["name"] == input_name), None)
        if target_slot is None:  # a widget turned into a socket
            entries.append({"name": input_name, "type": kind, "widget": {"name": input_name}, "link": None})
            target_slot = len(entries) - 1
        link_id = len(self.links) + 1
        entries[target_slot]["link"] = link_id
        source["outputs"][slot]["links"].append(link_id)
        self.links.append([link_id, origin, slot, target, target_slot, kind])
        return link_id

    def group(self, title: str, bounding: tuple[float, float, float, float], color: str = "#3f789e") -> None:
        self.groups.append(
            {
                "id": len(self.groups) + 1,
                "title": title,
                "bounding": list(bounding),
                "color": color,
                "font_size": 24,
                "flags": {},
            }
        )

    def workflow(self) -> dict[str, Any]:
        for node in self.nodes:
            for output in node["outputs"]:
                if not output["links"]:
                    output["links"] = None
        return {
            "last_node_id": len(self.nodes),
            "last_link_id": len(self.links),
            "nodes": self.nodes,
            "links": self.links,
            "groups": self.groups,
            "config": {},
            "extra": {"ds": {"scale": 0.8, "offset": [40, 40]}},
            "version": 0.4,
        }
