// FaceMagic frontend extension: identity inputs that grow on the mix node, widget labels from the
// inputs' display names, and results (similarity, pose check, saved identity, swap summary) shown on
// the node after a run.
//
// Only the public extension API is used: app.registerExtension, api.fetchApi, node.addInput/removeInput,
// node.isInputConnected (not the deprecated input.link), node.addWidget/addDOMWidget (not the internal
// scripts/widgets.js) and widget.element (not the deprecated widget.inputEl).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import {
  IDENTITY_TYPE,
  REFRESH_COMBOS,
  RESULT_NODES,
  RESULT_WIDGET,
  comboOptions,
  planIdentitySlots,
  resultText,
  widgetLabels,
} from "./facemagic_logic.js";

const REFRESH_WIDGET = "facemagic_refresh";

/** The node's inputs as {name, connected}, in slot order. */
function inputSlots(node) {
  return node.inputs.map((input, slot) => ({ name: input.name, connected: Boolean(node.isInputConnected(slot)) }));
}

function syncIdentityInputs(node, { removeFree }) {
  if (!node.inputs) return;
  const plan = planIdentitySlots(inputSlots(node));
  if (removeFree) {
    for (const slot of plan.remove) node.removeInput(slot);
  }
  for (const name of plan.add) node.addInput(name, IDENTITY_TYPE);
  node.setDirtyCanvas?.(true, true);
}

/** Give widgets and sockets their input's display name where the frontend shows the input id ("face_index",
 * frontend 1.27). */
function labelWidgets(node, labels) {
  for (const item of [...(node.widgets ?? []), ...(node.inputs ?? [])]) {
    const label = labels.get(item.name);
    if (label && (!item.label || item.label === item.name)) item.label = label;
  }
}

function resultWidget(node) {
  let widget = node.widgets?.find((w) => w.name === RESULT_WIDGET);
  if (!widget) {
    const box = document.createElement("textarea");
    box.className = "comfy-multiline-input";
    box.readOnly = true;
    box.spellcheck = false;
    box.placeholder = "result of the last run";
    // A display, not a setting: options.serialize = false keeps it out of the prompt (graphToPrompt reads
    // widget.options.serialize; were it sent, its new text would make the server run the node again), and
    // widget.serialize = false keeps it out of the saved workflow's widgets_values.
    widget = node.addDOMWidget(RESULT_WIDGET, "facemagic_result", box, {
      serialize: false,
      getValue: () => box.value,
      setValue: (value) => {
        box.value = typeof value === "string" ? value : "";
      },
    });
    widget.serialize = false;
  }
  return widget;
}

/** Read the node's file lists again from the server (its definition lists what the model folder holds now). */
async function refreshCombos(node, names) {
  const type = node.comfyClass ?? node.type;
  const response = await api.fetchApi(`/object_info/${encodeURIComponent(type)}`);
  if (!response.ok) throw new Error(`FaceMagic: the server did not list ${type} (${response.status})`);
  const nodeDef = (await response.json())[type];
  for (const name of names) {
    const widget = node.widgets?.find((w) => w.name === name);
    const options = comboOptions(nodeDef, name);
    if (widget && options) widget.options.values = options;
  }
  node.setDirtyCanvas?.(true, true);
}

function addRefreshButton(node, names) {
  if (node.widgets?.some((w) => w.name === REFRESH_WIDGET)) return;
  const button = node.addWidget("button", REFRESH_WIDGET, null, () => refreshCombos(node, names), { serialize: false });
  button.label = "refresh list";
  button.serialize = false; // a button, not a setting: neither saved nor sent
}

app.registerExtension({
  name: "FaceMagic.Nodes",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("FaceMagic")) return;

    const labels = widgetLabels(nodeData);
    if (labels.size) {
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const result = onNodeCreated?.apply(this, arguments);
        labelWidgets(this, labels);
        return result;
      };
      const onConfigure = nodeType.prototype.onConfigure;
      nodeType.prototype.onConfigure = function () {
        const result = onConfigure?.apply(this, arguments);
        labelWidgets(this, labels); // a loaded workflow brings its own socket list
        return result;
      };
    }

    if (nodeData.name === "FaceMagicMixIdentities") {
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const result = onNodeCreated?.apply(this, arguments);
        syncIdentityInputs(this, { removeFree: true });
        return result;
      };
      const onConfigure = nodeType.prototype.onConfigure;
      nodeType.prototype.onConfigure = function () {
        const result = onConfigure?.apply(this, arguments);
        syncIdentityInputs(this, { removeFree: false }); // links are being restored: only add
        return result;
      };
      const onConnectionsChange = nodeType.prototype.onConnectionsChange;
      nodeType.prototype.onConnectionsChange = function (type) {
        const result = onConnectionsChange?.apply(this, arguments);
        if (type === 1 /* LiteGraph.INPUT */) {
          // after the frontend finished this connection change
          setTimeout(() => syncIdentityInputs(this, { removeFree: true }), 0);
        }
        return result;
      };
    }

    const refreshed = REFRESH_COMBOS.get(nodeData.name);
    if (refreshed) {
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const result = onNodeCreated?.apply(this, arguments);
        addRefreshButton(this, refreshed);
        return result;
      };
    }

    if (RESULT_NODES.has(nodeData.name)) {
      const onNodeCreated = nodeType.prototype.onNodeCreated;
      nodeType.prototype.onNodeCreated = function () {
        const result = onNodeCreated?.apply(this, arguments);
        resultWidget(this).value = "";
        return result;
      };
      const onExecuted = nodeType.prototype.onExecuted;
      nodeType.prototype.onExecuted = function (message) {
        onExecuted?.apply(this, arguments);
        const text = resultText(message);
        if (text) resultWidget(this).value = text;
      };
    }
  },
});
