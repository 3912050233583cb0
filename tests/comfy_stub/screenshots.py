"""Pictures of the canvas in headless Chromium: workflow thumbnails, the README picture, a frontend check.

Needs a running ComfyUI with FaceMagic loaded, Chromium and the ``playwright`` package (not a
FaceMagic dependency; Playwright drives the system Chromium, it downloads no browser)::

    python tests/comfy_stub/screenshots.py --url http://127.0.0.1:8188 --chromium /usr/bin/chromium

Writes ``workflows/<name>.jpg`` (what ComfyUI's template browser shows) and
``docs/facemagic_workflow.png``, and checks the frontend extension on the real canvas: a new
mix node shows one identity input, connecting it adds the next, disconnecting removes it,
and the result widget is not saved in the workflow. Put pictures named as in the workflows
(facemagic_source.png, facemagic_target.png...) into ComfyUI's input folder first, so the
Load Image nodes show them.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
VIEWPORT = {"width": 1700, "height": 1000}
THUMBNAIL_WIDTH = 768
README_PICTURE = REPO / "docs" / "facemagic_workflow.png"
README_WORKFLOW = "facemagic_single_photo_swap"

FIT_GRAPH = """() => {
  try { app.extensionManager.setting.set('Comfy.Minimap.Visible', false); } catch (error) {}
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const n of app.graph._nodes) {
    x0 = Math.min(x0, n.pos[0]); y0 = Math.min(y0, n.pos[1] - 30);
    x1 = Math.max(x1, n.pos[0] + n.size[0]); y1 = Math.max(y1, n.pos[1] + n.size[1]);
  }
  for (const g of (app.graph._groups || [])) {
    const b = g._bounding || g.bounding;
    x0 = Math.min(x0, b[0]); y0 = Math.min(y0, b[1]); x1 = Math.max(x1, b[0] + b[2]); y1 = Math.max(y1, b[1] + b[3]);
  }
  const c = app.canvas, width = c.canvas.width - 90, height = c.canvas.height - 110;
  const scale = Math.min(width / (x1 - x0), height / (y1 - y0), 1.0);
  c.ds.scale = scale; c.ds.offset = [70 / scale - x0 + 10, 80 / scale - y0 + 10]; c.setDirty(true, true);
}"""

CHECK_EXTENSION = """async () => {
  const wait = () => new Promise((resolve) => setTimeout(resolve, 200));
  const names = (node) => node.inputs.map((input) => input.name).filter((name) => name.startsWith('identity_'));
  const mix = LiteGraph.createNode('FaceMagicMixIdentities'); app.graph.add(mix);
  const extract = LiteGraph.createNode('FaceMagicExtractIdentity'); app.graph.add(extract);
  const similarity = LiteGraph.createNode('FaceMagicFaceSimilarity'); app.graph.add(similarity);
  const created = names(mix);
  extract.connect(0, mix, mix.inputs.findIndex((input) => input.name === 'identity_1')); await wait();
  const afterFirst = names(mix);
  extract.connect(0, mix, mix.inputs.findIndex((input) => input.name === 'identity_2')); await wait();
  const afterSecond = names(mix);
  mix.disconnectInput(mix.inputs.findIndex((input) => input.name === 'identity_2')); await wait();
  const afterDisconnect = names(mix);
  const saved = app.graph.serialize().nodes.find((node) => node.type === 'FaceMagicFaceSimilarity');
  return {
    extensions: (app.extensions || []).map((e) => e.name).filter((name) => name.startsWith('FaceMagic')),
    created, afterFirst, afterSecond, afterDisconnect,
    resultWidget: similarity.widgets.some((w) => w.name === 'facemagic_result'),
    savedValues: saved.widgets_values,
  };
}"""


async def capture(url: str, chromium: str) -> dict[str, Any]:
    from PIL import Image
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = await browser.new_page(viewport=VIEWPORT)
        await page.goto(url)
        await page.wait_for_function("window.app && window.app.graph && window.LiteGraph", timeout=120_000)
        await page.wait_for_timeout(3000)
        for path in sorted((REPO / "workflows").glob("*.json")):
            await page.evaluate(
                "async (workflow) => { await app.loadGraphData(workflow); }", json.loads(path.read_text())
            )
            await page.wait_for_timeout(2500)
            await page.evaluate(FIT_GRAPH)
            await page.wait_for_timeout(800)
            picture = Image.open(io.BytesIO(await page.screenshot())).convert("RGB")
            if path.stem == README_WORKFLOW:
                picture.save(README_PICTURE, optimize=True)
            canvas = picture.crop((64, 76, picture.width, picture.height))  # without the side and top bars
            height = round(THUMBNAIL_WIDTH * canvas.height / canvas.width)
            thumbnail = canvas.resize((THUMBNAIL_WIDTH, height), Image.Resampling.LANCZOS)
            thumbnail.save(path.with_suffix(".jpg"), "JPEG", quality=82, optimize=True, progressive=True)
        await page.evaluate("async () => { await app.loadGraphData({nodes: [], links: [], version: 0.4}); }")
        check: dict[str, Any] = await page.evaluate(CHECK_EXTENSION)
        await browser.close()
    return check


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8188")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    check = asyncio.run(capture(args.url, args.chromium))
    print(json.dumps(check, indent=1))
    expected = {
        "created": ["identity_1"],
        "afterFirst": ["identity_1", "identity_2"],
        "afterSecond": ["identity_1", "identity_2", "identity_3"],
        "afterDisconnect": ["identity_1", "identity_2"],
    }
    wrong = {key: check[key] for key, value in expected.items() if check[key] != value}
    if wrong or not check["resultWidget"] or len(check["savedValues"]) != 2 or not check["extensions"]:
        raise SystemExit(f"the frontend extension does not behave as expected: {wrong or check}")
    print("frontend extension: ok")


if __name__ == "__main__":
    main()
