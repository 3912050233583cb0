// FaceMagic frontend extension: identity inputs that grow on the mix node, and results
// (similarity, pose check, saved identity, swap summary) shown on the node after a run.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";
import { IDENTITY_TYPE, RESULT_NODES, planIdentitySlots, resultText } from "./facemagic_logic.js";

const RESULT_WIDGET = "facemagic_result";

function syncIdentityInputs(node, { removeFree }) {
  if (!node.inputs) return;
  const plan = planIdentitySlots(node.inputs.map((input) => ({ name: input.name, link: input.link })));
  if (removeFree) {
    for (const slot of plan.remove) node.removeInput(slot);
  }
  for (const name of plan.add) node.addInput(name, IDENTITY_TYPE);
  node.setDirtyCanvas?.(true, true);
}

function resultWidget(node) {
  let widget = node.widgets?.find((w) => w.name === RESULT_WIDGET);
  if (!widget) {
    widget = ComfyWidgets.STRING(node, RESULT_WIDGET, ["STRING", { multiline: true }], app).widget;
    if (widget.inputEl) widget.inputEl.readOnly = true;
    if (widget.element) widget.element.readOnly = true;
    widget.serialize = false; // a display, not a setting: never saved in the workflow or sent to the server
  }
  return widget;
}

app.registerExtension({
  name: "FaceMagic.Nodes",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("FaceMagic")) return;

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
      nodeType.prototype.onConnectionsChange = function (type, slot, connected, link, ioSlot) {
        const result = onConnectionsChange?.apply(this, arguments);
        if (type === 1 /* LiteGraph.INPUT */ && !this.configuring) {
          // after the frontend finished this connection change
          setTimeout(() => syncIdentityInputs(this, { removeFree: true }), 0);
        }
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
