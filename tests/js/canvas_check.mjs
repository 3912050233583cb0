// FaceMagic's frontend extension on a real ComfyUI canvas, in headless Chromium (not a `node --test` file:
// tests/test_comfyui_server.py runs it against the server it started, and skips when Chromium or
// playwright-core is missing).
//
//   node tests/js/canvas_check.mjs --url http://127.0.0.1:8188 --chromium /usr/bin/chromium \
//     --playwright /path/to/node_modules/playwright-core --workflow workflows/x.json --out /tmp/canvas
//
// Loads the workflow as a user would (app.loadGraphData), queues it twice through the frontend
// (app.queuePrompt builds the prompt with graphToPrompt), exercises the mix node's growing identity
// inputs, takes screenshots, and prints one JSON object: the console warnings and errors with the call
// stacks they came from, the prompts the server received, what each run executed and what came from
// the cache, and the state of the FaceMagic widgets.
import { createRequire } from "node:module";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

const args = Object.fromEntries(
  process.argv
    .slice(2)
    .reduce((pairs, item, index, all) => (item.startsWith("--") ? [...pairs, [item.slice(2), all[index + 1]]] : pairs), []),
);
for (const name of ["url", "chromium", "playwright", "workflow", "out"]) {
  if (!args[name]) throw new Error(`--${name} is required`);
}
const { chromium } = createRequire(join(args.playwright, "package.json"))(args.playwright);
const workflow = JSON.parse(readFileSync(args.workflow, "utf8"));
const mixWorkflow = args.mix ? JSON.parse(readFileSync(args.mix, "utf8")) : null;
const savePrompt = args["save-prompt"] ? JSON.parse(readFileSync(args["save-prompt"], "utf8")) : null;
mkdirSync(args.out, { recursive: true });
const timeout = Number(args.timeout || 240) * 1000;
// more frontend settings for the run, e.g. --settings '{"Comfy.VueNodes.Enabled": true}' (the Vue node renderer)
const extraSettings = args.settings ? JSON.parse(args.settings) : {};

// Every console.warn/console.error with the stack it was called from (the deprecation warnings come
// from the frontend's own code, called by whichever extension touched the deprecated API).
const RECORD_CONSOLE = () => {
  window.__consoleRecords = [];
  for (const level of ["warn", "error"]) {
    const original = console[level].bind(console);
    console[level] = (...parts) => {
      const text = parts.map((part) => (part instanceof Error ? `${part.message}\n${part.stack}` : String(part))).join(" ");
      window.__consoleRecords.push({ level, text, stack: new Error().stack || "" });
      original(...parts);
    };
  }
};

const browser = await chromium.launch({ executablePath: args.chromium, args: ["--no-sandbox", "--disable-gpu"] });
const report = { console: [], pageErrors: [], runs: [] };
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  page.setDefaultTimeout(timeout);
  await page.addInitScript(RECORD_CONSOLE);
  page.on("console", (message) => {
    if (message.type() === "warning" || message.type() === "error") {
      report.console.push({ level: message.type(), text: message.text(), url: message.location()?.url || "" });
    }
  });
  page.on("pageerror", (error) => report.pageErrors.push(`${error.message}\n${error.stack || ""}`));
  await page.goto(args.url);
  // a first visit opens the template browser over the canvas: say the tutorial was seen, and reload
  await page.evaluate(async (settings) => {
    for (const [id, value] of Object.entries(settings)) {
      await fetch(`/settings/${id}`, { method: "POST", body: JSON.stringify(value) });
    }
  }, { "Comfy.TutorialCompleted": true, "Comfy.Minimap.Visible": false, ...extraSettings });
  await page.reload();
  await page.waitForFunction(() => window.app?.graph && window.LiteGraph && window.comfyAPI?.api?.api, null, { timeout });
  // LiteGraph prints each deprecation once per page: repeat them, so one the frontend printed first is seen again
  // when an extension uses the same API
  await page.evaluate(() => {
    window.LiteGraph.alwaysRepeatWarnings = true;
  });
  await page.waitForTimeout(2000);
  report.extensions = await page.evaluate(() =>
    (window.app.extensions || []).map((extension) => extension.name).filter((name) => name.startsWith("FaceMagic")),
  );

  await page.evaluate(async (graph) => {
    await window.app.loadGraphData(graph);
  }, workflow);
  await page.waitForTimeout(1000);
  await page.screenshot({ path: join(args.out, "loaded.png") });

  for (let run = 1; run <= 2; run++) {
    const entry = await page.evaluate(
      async ({ limit }) => {
        const get = async (route) => (await fetch(route)).json();
        const before = new Set(Object.keys(await get("/history")));
        await window.app.queuePrompt(0, 1);
        const deadline = Date.now() + limit;
        while (Date.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, 300));
          const history = await get("/history");
          const fresh = Object.keys(history).filter((id) => !before.has(id));
          const done = fresh.find((id) => history[id].status?.completed !== undefined);
          if (done && history[done].status.status_str) return { id: done, ...history[done] };
        }
        return null;
      },
      { limit: timeout },
    );
    if (!entry) throw new Error(`run ${run} did not finish in ${timeout / 1000} s`);
    const messages = entry.status.messages || [];
    const cached = messages.filter(([kind]) => kind === "execution_cached").flatMap(([, data]) => data.nodes || []);
    report.runs.push({
      status: entry.status.status_str,
      prompt: entry.prompt[2],
      cached: [...new Set(cached.map(String))],
      outputs: Object.keys(entry.outputs || {}),
      messages: messages.map(([kind]) => kind),
      errors: messages.filter(([kind]) => kind === "execution_error"),
    });
    await page.waitForTimeout(1500); // the "executed" messages reach the nodes
    await page.screenshot({ path: join(args.out, `run_${run}.png`) });
  }

  report.results = await page.evaluate(() =>
    window.app.graph.nodes
      .filter((node) => node.type.startsWith("FaceMagic"))
      .map((node) => {
        const widget = node.widgets?.find((w) => w.name === "facemagic_result");
        const saved = node.serialize();
        return {
          id: String(node.id),
          type: node.type,
          result: widget ? String(widget.value) : null,
          resultOptionsSerialize: widget ? widget.options?.serialize : null,
          saved: saved.widgets_values,
          widgets: (node.widgets || []).map((w) => ({ name: w.name, label: w.label ?? null })),
          inputs: (node.inputs || []).map((input) => ({ name: input.name, label: input.label ?? null })),
        };
      }),
  );

  // the mix node's identity inputs grow and shrink as they are connected (node.isInputConnected, not input.link)
  report.mix = await page.evaluate(async () => {
    const wait = () => new Promise((resolve) => setTimeout(resolve, 300));
    const names = (node) => node.inputs.map((input) => input.name).filter((name) => name.startsWith("identity_"));
    const mix = window.LiteGraph.createNode("FaceMagicMixIdentities");
    window.app.graph.add(mix);
    const extract = window.LiteGraph.createNode("FaceMagicExtractIdentity");
    window.app.graph.add(extract);
    const created = names(mix);
    extract.connect(0, mix, mix.inputs.findIndex((input) => input.name === "identity_1"));
    await wait();
    const afterFirst = names(mix);
    extract.connect(0, mix, mix.inputs.findIndex((input) => input.name === "identity_2"));
    await wait();
    const afterSecond = names(mix);
    mix.disconnectInput(mix.inputs.findIndex((input) => input.name === "identity_2"));
    await wait();
    const afterDisconnect = names(mix);
    window.app.graph.remove(mix);
    window.app.graph.remove(extract);
    return { created, afterFirst, afterSecond, afterDisconnect };
  });

  // Load Identity's "refresh list" button: an identity saved meanwhile (here by a prompt queued through the
  // API) appears in the list without reloading the page
  if (savePrompt) {
    report.refresh = await page.evaluate(
      async ({ prompt, limit }) => {
        const node = window.LiteGraph.createNode("FaceMagicLoadIdentity");
        window.app.graph.add(node);
        const names = () => [...node.widgets.find((w) => w.name === "name").options.values];
        const before = names();
        const queued = await (await fetch("/prompt", { method: "POST", body: JSON.stringify({ prompt }) })).json();
        const deadline = Date.now() + limit;
        let status = null;
        while (Date.now() < deadline && !status) {
          await new Promise((resolve) => setTimeout(resolve, 300));
          status = (await (await fetch(`/history/${queued.prompt_id}`)).json())[queued.prompt_id]?.status?.status_str;
        }
        const button = node.widgets.find((w) => w.name === "facemagic_refresh");
        await button.callback();
        const after = names();
        const sent = (await window.app.graphToPrompt()).output[String(node.id)]?.inputs ?? {};
        const saved = node.serialize().widgets_values;
        window.app.graph.remove(node);
        return { status, before, after, label: button.label, sent: Object.keys(sent), saved };
      },
      { prompt: savePrompt, limit: timeout },
    );
  }

  if (mixWorkflow) {
    await page.evaluate(async (graph) => {
      await window.app.loadGraphData(graph);
    }, mixWorkflow);
    await page.waitForTimeout(1500);
    report.mixLoaded = await page.evaluate(() =>
      window.app.graph.nodes
        .filter((node) => node.type === "FaceMagicMixIdentities")
        .map((node) => node.inputs.map((input) => input.name).filter((name) => name.startsWith("identity_"))),
    );
    await page.screenshot({ path: join(args.out, "mix_loaded.png") });
  }
  await page.waitForTimeout(500);
  report.consoleRecords = await page.evaluate(() => window.__consoleRecords);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report));
