"""A workflow thumbnail drawn from its JSON, for when no ComfyUI and browser are at hand (see screenshots.py).

    cd tests && python -m comfy_stub.diagram facemagic_swap_edit_blend [...]

Draws the nodes (title, inputs, outputs) and links the way the canvas lays them out, in the
canvas' colours, and writes ``workflows/<name>.jpg``. The real canvas screenshot
(screenshots.py) replaces it when a ComfyUI server and Chromium are available.
"""

from __future__ import annotations

import sys
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from .harness import REPO
from .workflow_tools import load_workflow

WIDTH = 1200
TITLE_HEIGHT = 30
SLOT_HEIGHT = 20
LINK_COLOURS = {
    "IMAGE": (100, 181, 246),
    "MASK": (129, 199, 132),
    "FACEMAGIC_SWAP": (240, 160, 60),
    "FACEMAGIC_ANALYZER": (180, 130, 220),
    "FACEMAGIC_GENERATOR": (220, 110, 140),
    "FACEMAGIC_IDENTITY": (230, 210, 90),
}


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    for name in ("DejaVuSans.ttf", "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default()


def draw_workflow(workflow: dict[str, Any], width: int = WIDTH) -> Image.Image:
    nodes = workflow["nodes"]
    x0 = min(node["pos"][0] for node in nodes) - 40
    y0 = min(node["pos"][1] for node in nodes) - 60
    x1 = max(node["pos"][0] + node["size"][0] for node in nodes) + 40
    y1 = max(node["pos"][1] + node["size"][1] for node in nodes) + 40
    scale = width / (x1 - x0)
    picture = Image.new("RGB", (width, int((y1 - y0) * scale)), (32, 32, 32))
    draw = ImageDraw.Draw(picture)
    title_font, slot_font = _font(max(10, int(15 * scale * 1.6))), _font(max(9, int(12 * scale * 1.6)))

    def at(x: float, y: float) -> tuple[float, float]:
        return ((x - x0) * scale, (y - y0) * scale)

    slots: dict[tuple[int, str, int], tuple[float, float]] = {}
    for node in nodes:
        x, y = node["pos"]
        w, h = node["size"]
        for number in range(len(node.get("outputs", []))):
            slots[(node["id"], "out", number)] = at(x + w, y + TITLE_HEIGHT + SLOT_HEIGHT * (number + 0.5))
        for number in range(len(node.get("inputs", []))):
            slots[(node["id"], "in", number)] = at(x, y + TITLE_HEIGHT + SLOT_HEIGHT * (number + 0.5))
    for link in workflow.get("links", []):
        _, origin, origin_slot, target, target_slot, kind = link[:6]
        start, end = slots.get((origin, "out", origin_slot)), slots.get((target, "in", target_slot))
        if start is None or end is None:
            continue
        colour = LINK_COLOURS.get(kind, (200, 200, 200))
        bend = max(30.0 * scale, abs(end[0] - start[0]) / 2)
        points = []
        for step in range(33):  # a cubic Bezier, as the canvas draws links
            t = step / 32
            c1, c2 = (start[0] + bend, start[1]), (end[0] - bend, end[1])
            points.append(
                (
                    (1 - t) ** 3 * start[0] + 3 * (1 - t) ** 2 * t * c1[0] + 3 * (1 - t) * t**2 * c2[0] + t**3 * end[0],
                    (1 - t) ** 3 * start[1] + 3 * (1 - t) ** 2 * t * c1[1] + 3 * (1 - t) * t**2 * c2[1] + t**3 * end[1],
                )
            )
        draw.line(points, fill=colour, width=max(2, int(3 * scale)))
    for node in nodes:
        x, y = node["pos"]
        w, h = node["size"]
        left, top = at(x, y - TITLE_HEIGHT * 0.2)
        right, bottom = at(x + w, y + h)
        note = node["type"] in ("Note", "MarkdownNote")
        body = (70, 64, 40) if note else (53, 53, 53)
        muted = node.get("mode") == 2
        draw.rounded_rectangle((left, top, right, bottom), radius=int(8 * scale), fill=body, outline=(80, 80, 80))
        draw.rounded_rectangle(
            (left, top, right, top + TITLE_HEIGHT * scale),
            radius=int(8 * scale),
            fill=(80, 72, 40) if note else (34, 34, 34),
        )
        title = node.get("title") or node["type"].replace("FaceMagic", "FaceMagic ")
        draw.text((left + 8 * scale, top + 6 * scale), title[:60], fill=(220, 220, 220), font=title_font)
        if note:
            text = (node.get("widgets_values") or [""])[0]
            words, lines, line = text.split(), [], ""
            limit = max(10, int((right - left) / max(1.0, slot_font.getlength("n"))) - 2)
            for word in words:
                if len(line) + len(word) + 1 > limit:
                    lines.append(line)
                    line = word
                else:
                    line = f"{line} {word}".strip()
            lines.append(line)
            for number, line in enumerate(lines[: max(1, int((bottom - top) / (16 * scale * 1.6)) - 1)]):
                draw.text(
                    (left + 8 * scale, top + (TITLE_HEIGHT + 4) * scale + 16 * scale * 1.6 * number),
                    line,
                    fill=(230, 220, 180),
                    font=slot_font,
                )
            continue
        for number, entry in enumerate(node.get("inputs", [])):
            sx, sy = slots[(node["id"], "in", number)]
            colour = LINK_COLOURS.get(entry.get("type", ""), (200, 200, 200))
            draw.ellipse((sx - 4 * scale, sy - 4 * scale, sx + 4 * scale, sy + 4 * scale), fill=colour)
            draw.text((sx + 8 * scale, sy - 7 * scale), entry["name"], fill=(170, 170, 170), font=slot_font)
        for number, entry in enumerate(node.get("outputs", [])):
            sx, sy = slots[(node["id"], "out", number)]
            colour = LINK_COLOURS.get(entry.get("type", ""), (200, 200, 200))
            draw.ellipse((sx - 4 * scale, sy - 4 * scale, sx + 4 * scale, sy + 4 * scale), fill=colour)
            label = entry["name"]
            draw.text(
                (sx - 8 * scale - slot_font.getlength(label), sy - 7 * scale),
                label,
                fill=(170, 170, 170),
                font=slot_font,
            )
        if muted:
            overlay = Image.new("RGBA", picture.size, (0, 0, 0, 0))
            ImageDraw.Draw(overlay).rectangle((left, top, right, bottom), fill=(20, 20, 20, 140))
            picture = Image.alpha_composite(picture.convert("RGBA"), overlay).convert("RGB")
            draw = ImageDraw.Draw(picture)
    return picture


def main(names: list[str]) -> None:
    for name in names:
        path = REPO / "workflows" / f"{name}.json"
        picture = draw_workflow(load_workflow(path))
        picture.save(path.with_suffix(".jpg"), quality=88)
        print(f"wrote {path.with_suffix('.jpg').relative_to(REPO)} ({picture.size[0]}x{picture.size[1]})")


if __name__ == "__main__":
    main(sys.argv[1:])
