"""Draw a workflow's thumbnail (``workflows/<name>.jpg``) from its JSON when no browser is at hand.

    cd tests && python -m comfy_stub.draw_thumbnail facemagic_video_two_people

A plain drawing of the graph (nodes as boxes with their titles and sockets, links as lines), not
a screenshot: :mod:`comfy_stub.screenshots` makes those from a running ComfyUI.
"""

from __future__ import annotations

import json
import sys

from PIL import Image, ImageDraw, ImageFont

from .harness import REPO

WIDTH = 768
COLOURS = {"IMAGE": "#64b5f6", "FACEMAGIC_IDENTITY": "#f06292", "FACEMAGIC_ANALYZER": "#81c784"}


def draw(name: str) -> None:
    workflow = json.loads((REPO / "workflows" / f"{name}.json").read_text())
    nodes = workflow["nodes"]
    x0 = min(n["pos"][0] for n in nodes) - 20
    y0 = min(n["pos"][1] for n in nodes) - 50
    x1 = max(n["pos"][0] + n["size"][0] for n in nodes) + 20
    y1 = max(n["pos"][1] + n["size"][1] for n in nodes) + 20
    scale = 2 * WIDTH / (x1 - x0)
    picture = Image.new("RGB", (2 * WIDTH, round((y1 - y0) * scale)), "#202020")
    pen = ImageDraw.Draw(picture)
    font = ImageFont.load_default(size=22)

    def at(x: float, y: float) -> tuple[float, float]:
        return (x - x0) * scale, (y - y0) * scale

    by_id = {n["id"]: n for n in nodes}
    for link in workflow["links"]:
        _, source, slot, target, target_slot, kind = link[:6]
        a, b = by_id[source], by_id[target]
        start = at(a["pos"][0] + a["size"][0], a["pos"][1] + 14 + 20 * slot)
        end = at(b["pos"][0], b["pos"][1] + 14 + 20 * target_slot)
        pen.line([start, end], fill=COLOURS.get(str(kind), "#aaaaaa"), width=4)
    for n in nodes:
        left, top = at(n["pos"][0], n["pos"][1] - 30)
        right, bottom = at(n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
        note = n["type"] in ("Note", "MarkdownNote")
        pen.rounded_rectangle([left, top, right, bottom], 10, fill="#3b3b2a" if note else "#353535", outline="#777")
        pen.rounded_rectangle([left, top, right, top + 30 * scale], 10, fill="#4a4a4a")
        title = n.get("title") or n["type"].replace("FaceMagic", "FaceMagic ")
        pen.text((left + 10, top + 6), title, fill="#eeeeee", font=font)
        if note:
            words, line, y = str(n["widgets_values"][0]).split(), "", top + 40 * scale
            for word in words:
                if pen.textlength(line + " " + word, font=font) > right - left - 20:
                    pen.text((left + 10, y), line, fill="#cccccc", font=font)
                    line, y = word, y + 26
                else:
                    line = f"{line} {word}".strip()
            pen.text((left + 10, y), line, fill="#cccccc", font=font)
    thumbnail = picture.resize((WIDTH, round(picture.height / 2)), Image.Resampling.LANCZOS)
    thumbnail.save(REPO / "workflows" / f"{name}.jpg", "JPEG", quality=82, optimize=True, progressive=True)


if __name__ == "__main__":
    for argument in sys.argv[1:]:
        draw(argument)
