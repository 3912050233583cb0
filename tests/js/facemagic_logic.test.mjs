// node --test tests/js/
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  MAX_IDENTITIES,
  comboOptions,
  identityNumber,
  planIdentitySlots,
  poseSummary,
  resultText,
  similarityVerdict,
  widgetLabels,
} from "../../js/facemagic_logic.js";

const slot = (name, connected = false) => ({ name, connected });

test("identity numbers come only from identity_N inputs within the maximum", () => {
  assert.equal(identityNumber("identity_1"), 1);
  assert.equal(identityNumber("identity_8"), 8);
  assert.equal(identityNumber("identity_9"), null);
  assert.equal(identityNumber("identity_0"), null);
  assert.equal(identityNumber("identity_01"), null);
  assert.equal(identityNumber("method"), null);
  assert.equal(identityNumber(undefined), null);
});

test("a new mix node shows one identity input", () => {
  const inputs = Array.from({ length: MAX_IDENTITIES }, (_, i) => slot(`identity_${i + 1}`));
  inputs.push(slot("method"));
  const plan = planIdentitySlots(inputs);
  assert.deepEqual(plan.add, []);
  assert.deepEqual(plan.remove, [7, 6, 5, 4, 3, 2, 1]); // highest slot first, so indices stay valid
});

test("connecting the last input adds the next one", () => {
  assert.deepEqual(planIdentitySlots([slot("identity_1", true)]), { add: ["identity_2"], remove: [] });
  assert.deepEqual(planIdentitySlots([slot("identity_1", true), slot("identity_2", true)]), {
    add: ["identity_3"],
    remove: [],
  });
});

test("a gap keeps the inputs up to the last connected one, and free ones after it go", () => {
  const inputs = [slot("identity_1"), slot("method"), slot("identity_2", true), slot("identity_3"), slot("identity_4")];
  assert.deepEqual(planIdentitySlots(inputs), { add: [], remove: [4] });
});

test("disconnecting the last one removes the free inputs after the new last", () => {
  const inputs = [slot("identity_1", true), slot("identity_2"), slot("identity_3")];
  assert.deepEqual(planIdentitySlots(inputs), { add: [], remove: [2] });
});

test("no input is added beyond the maximum", () => {
  const inputs = Array.from({ length: MAX_IDENTITIES }, (_, i) => slot(`identity_${i + 1}`, true));
  assert.deepEqual(planIdentitySlots(inputs), { add: [], remove: [] });
});

test("missing earlier inputs are put back", () => {
  assert.deepEqual(planIdentitySlots([slot("identity_3", true)]), { add: ["identity_1", "identity_2", "identity_4"], remove: [] });
  assert.deepEqual(planIdentitySlots([]), { add: ["identity_1"], remove: [] });
});

test("similarity verdicts follow the ArcFace rule of thumb", () => {
  assert.equal(similarityVerdict(0.62).level, "same");
  assert.equal(similarityVerdict(0.4).level, "same");
  assert.equal(similarityVerdict(0.3).level, "unsure");
  assert.equal(similarityVerdict(0.05).level, "different");
  assert.equal(similarityVerdict(Number.NaN).level, "none");
  assert.equal(similarityVerdict(undefined).level, "none");
});

test("pose summaries", () => {
  assert.equal(poseSummary({ faces: 4, failed: 1 }), "3 of 4 faces passed (see report)");
  assert.equal(poseSummary({ faces: 1, failed: 0 }), "1 of 1 face passed");
  assert.equal(poseSummary({ faces: 0, failed: 0 }), "no face was swapped");
  assert.equal(poseSummary(undefined), "");
});

test("result text from an executed message", () => {
  const similarity = resultText({ facemagic_similarity: [0.5123], text: ["mean similarity 0.512"] });
  assert.equal(similarity, "similarity 0.512: likely the same person\n\nmean similarity 0.512");
  const pose = resultText({ facemagic_pose: [{ faces: 2, failed: 0 }], text: ["table"] });
  assert.equal(pose, "2 of 2 faces passed\n\ntable");
  assert.equal(resultText({ text: ["saved x"] }), "saved x");
  assert.equal(resultText({ images: [] }), "");
  assert.equal(resultText(null), "");
});

test("no face measured: no similarity line, only the report", () => {
  const report = "no face measured in any image\nimage 1: no face";
  assert.equal(resultText({ facemagic_similarity: [], text: [report] }), report);
  assert.equal(resultText({ facemagic_similarity: [null], text: [report] }), report);
  assert.doesNotMatch(resultText({ facemagic_similarity: [], text: [report] }), /different people/);
});

test("widget labels come from the display names of the node definition", () => {
  const nodeData = {
    input: {
      required: {
        face_index: ["INT", { display_name: "face index", default: 0 }],
        strength: ["FLOAT", { display_name: "strength" }],
        images: ["IMAGE", {}],
      },
      optional: { face_order: [["largest", "left_to_right"], { display_name: "face order" }] },
    },
  };
  assert.deepEqual([...widgetLabels(nodeData)], [
    ["face_index", "face index"],
    ["face_order", "face order"],
  ]);
  assert.equal(widgetLabels({}).size, 0);
  assert.equal(widgetLabels(null).size, 0);
});

test("combo options from V1 lists and V3 combos", () => {
  const v1 = { input: { required: { name: [["anna", "ben"], { tooltip: "x" }] } } };
  const v3 = { input: { optional: { name: ["COMBO", { options: ["anna", "cleo"] }] } } };
  assert.deepEqual(comboOptions(v1, "name"), ["anna", "ben"]);
  assert.deepEqual(comboOptions(v3, "name"), ["anna", "cleo"]);
  assert.equal(comboOptions(v1, "model"), null);
  assert.equal(comboOptions({ input: { required: { name: ["STRING", {}] } } }, "name"), null);
  assert.equal(comboOptions(undefined, "name"), null);
  const list = comboOptions(v1, "name");
  list.push("dan");
  assert.deepEqual(v1.input.required.name[0], ["anna", "ben"]); // a copy: the definition is not changed
});
