// Pure functions of the FaceMagic frontend extension (no DOM, no ComfyUI imports), tested with
// `node --test tests/js/`. facemagic.js applies them to the canvas.

/** Prefix of the mix node's identity inputs: identity_1, identity_2, ... */
export const IDENTITY_PREFIX = "identity_";
/** How many identity inputs the mix node declares (nodes/identity_nodes.py MAX_MIX_INPUTS). */
export const MAX_IDENTITIES = 8;
/** Socket type of identities. */
export const IDENTITY_TYPE = "FACEMAGIC_IDENTITY";
/** ArcFace w600k_r50 rules of thumb (facemagic_core.cli.similarity). */
export const SAME_PERSON = 0.4;
export const DIFFERENT_PEOPLE = 0.2;
/** Name of the read-only text box that shows a node's result (never saved, never sent to the server). */
export const RESULT_WIDGET = "facemagic_result";

/** The number of an identity input ("identity_3" -> 3), or null for other inputs. */
export function identityNumber(name) {
  if (typeof name !== "string" || !name.startsWith(IDENTITY_PREFIX)) return null;
  const text = name.slice(IDENTITY_PREFIX.length);
  if (!/^[1-9][0-9]*$/.test(text)) return null;
  const number = Number(text);
  return number <= MAX_IDENTITIES ? number : null;
}

/**
 * Which identity inputs the mix node should show: every one up to the last connected, plus one
 * free input after it (none after the last possible one). At least identity_1.
 * `inputs` are the node's inputs in slot order, each {name, connected}.
 * Returns {add: [names to add, in order], remove: [slot indices to remove, highest first]}.
 */
export function planIdentitySlots(inputs) {
  let lastConnected = 0;
  const present = new Map();
  inputs.forEach((input, slot) => {
    const number = identityNumber(input?.name);
    if (number === null) return;
    present.set(number, slot);
    if (input.connected) lastConnected = Math.max(lastConnected, number);
  });
  const wanted = Math.min(Math.max(lastConnected + 1, 1), MAX_IDENTITIES);
  const add = [];
  for (let number = 1; number <= wanted; number++) {
    if (!present.has(number)) add.push(IDENTITY_PREFIX + number);
  }
  const remove = [];
  for (const [number, slot] of present) {
    if (number > wanted && !inputs[slot].connected) remove.push(slot);
  }
  remove.sort((a, b) => b - a);
  return { add, remove };
}

/**
 * Widget labels from a node definition (/object_info entry): input name -> display name, for the
 * inputs whose display name differs from their name. Frontends that label widgets by input id
 * ("face_index") then show "face index" as the node's schema says.
 */
export function widgetLabels(nodeData) {
  const labels = new Map();
  for (const group of ["required", "optional"]) {
    const inputs = nodeData?.input?.[group];
    if (!inputs || typeof inputs !== "object") continue;
    for (const [name, spec] of Object.entries(inputs)) {
      const label = Array.isArray(spec) ? spec[1]?.display_name : undefined;
      if (typeof label === "string" && label && label !== name) labels.set(name, label);
    }
  }
  return labels;
}

/** A plain-words verdict for a similarity value (same rule of thumb as the Python side). */
export function similarityVerdict(value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return { level: "none", words: "no face measured" };
  if (value >= SAME_PERSON) return { level: "same", words: "likely the same person" };
  if (value >= DIFFERENT_PEOPLE) return { level: "unsure", words: "hard to tell" };
  return { level: "different", words: "likely different people" };
}

/** "3 of 4 faces passed" from the pose check's {faces, failed}. */
export function poseSummary(pose) {
  if (!pose || typeof pose.faces !== "number") return "";
  if (pose.faces === 0) return "no face was swapped";
  const passed = pose.faces - (pose.failed || 0);
  return `${passed} of ${pose.faces} face${pose.faces === 1 ? "" : "s"} passed` + (pose.failed ? " (see report)" : "");
}

/**
 * The text to show on a FaceMagic node after it ran, from ComfyUI's "executed" message, or "" when
 * the message has nothing of ours. The message holds the report as `text` (what V3's
 * ui.PreviewText sends), and the measurements as `facemagic_similarity: [mean]` (absent or empty
 * when no face was measured) and `facemagic_pose: [{faces, failed}]`.
 */
export function resultText(message) {
  if (!message || typeof message !== "object") return "";
  const lines = [];
  const similarity = Array.isArray(message.facemagic_similarity) ? message.facemagic_similarity[0] : undefined;
  if (typeof similarity === "number" && Number.isFinite(similarity)) {
    lines.push(`similarity ${similarity.toFixed(3)}: ${similarityVerdict(similarity).words}`);
  }
  const pose = Array.isArray(message.facemagic_pose) ? message.facemagic_pose[0] : undefined;
  const summary = poseSummary(pose);
  if (summary) lines.push(summary);
  const texts = Array.isArray(message.text) ? message.text.filter((t) => typeof t === "string") : [];
  if (texts.length) {
    if (lines.length) lines.push("");
    lines.push(...texts);
  }
  return lines.join("\n");
}

/**
 * The lists a "refresh" button on the node reads again from the server (files appear in the model
 * folder while ComfyUI runs: an identity saved from another workflow or the command line, a model
 * copied in): node type -> names of its combo inputs.
 */
export const REFRESH_COMBOS = new Map([
  ["FaceMagicLoadIdentity", ["name"]],
  ["FaceMagicGeneratorLoader", ["model"]],
]);

/**
 * The options of the combo input `name` in a node definition (/object_info entry): V1 lists
 * (`[["a", "b"], {...}]`) and V3 combos (`["COMBO", {options: ["a", "b"]}]`); null when absent.
 */
export function comboOptions(nodeDef, name) {
  for (const group of ["required", "optional"]) {
    const spec = nodeDef?.input?.[group]?.[name];
    if (!Array.isArray(spec)) continue;
    if (Array.isArray(spec[0])) return spec[0].slice();
    if (spec[0] === "COMBO" && Array.isArray(spec[1]?.options)) return spec[1].options.slice();
  }
  return null;
}

/** Node types that show a result on the canvas after a run. */
export const RESULT_NODES = new Set([
  "FaceMagicFaceSimilarity",
  "FaceMagicPoseCheck",
  "FaceMagicSaveIdentity",
  "FaceMagicSwapFaces",
  "FaceMagicSwapQuality",
  "FaceMagicSwapSeveralPeople",
]);
