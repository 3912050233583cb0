"""Print the node reference (Markdown) generated from the node schemas, for the README.

cd tests && python -m comfy_stub.node_reference > /tmp/nodes.md
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from .harness import installed_pack, node_classes


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _default(item: Any) -> str:
    default = getattr(item, "default", None)
    if default is None or default == "":
        options = getattr(item, "options", None)
        if options and len(options) <= 8:
            return " / ".join(map(str, options))
        return ""
    options = getattr(item, "options", None)
    if options and len(options) <= 8:
        return f"{default} ({' / '.join(map(str, options))})"
    return str(default)


def node_reference(classes: dict[str, Any]) -> str:
    lines = ["## Node reference", ""]
    for node_id, cls in classes.items():
        schema = cls.GET_SCHEMA()
        lines += [f"### {schema.display_name} (`{node_id}`)", "", schema.description, ""]
        for title, items in (
            ("Inputs", [item for item in schema.inputs if not item.optional]),
            ("Optional inputs", [item for item in schema.inputs if item.optional]),
        ):
            if not items:
                continue
            lines += [f"**{title}**", "", "| name | type | default | what it does |", "|---|---|---|---|"]
            for item in items:
                kind = str(item.get_io_type())
                lines.append(f"| `{item.id}` | {kind} | {_cell(_default(item))} | {_cell(item.tooltip)} |")
            lines.append("")
        lines += ["**Outputs**", "", "| name | type | what it is |", "|---|---|---|"]
        for output in schema.outputs:
            lines.append(f"| {output.display_name} | {output.io_type} | {_cell(output.tooltip)} |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    with tempfile.TemporaryDirectory() as models, installed_pack(Path(models)) as pack:
        print(node_reference(node_classes(pack)))


if __name__ == "__main__":
    main()
