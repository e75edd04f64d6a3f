// Validates KEDA objects (ScaledObject, TriggerAuthentication, ...) against the schemas of
// @kubernetes-models/keda, generated from KEDA's own API types.
//
// Usage: node validate.mjs OBJECTS.json [LABEL]
//   OBJECTS.json: a JSON array of Kubernetes objects (k8s/check_manifests.py split writes it).
// Exit status: 0 every object valid, 1 an object invalid, 2 bad input.
//
// `.validate()` checks types, enums and required fields, but the generated schemas do not
// forbid additional properties, so a misspelled optional field (`minReplicaCont: 2`) would
// pass and be silently ignored, as the API server's structural pruning would do. The unknown
// field check below asks the same schemas instead: for each field of the object, it
// substitutes values of every JSON type in turn; a field the schema knows rejects at least
// one of them at its own path, a field it does not know accepts them all. Maps
// (`triggers[].metadata`, `labels`) constrain their values, so their keys count as known.
import { readFileSync } from "node:fs";
import * as keda from "@kubernetes-models/keda/keda.sh/v1alpha1";

const PROBES = [12345.5, "probe", true, [], { probe: 1 }];

function errorsOf(Model, data) {
  try {
    new Model(data).validate();
    return [];
  } catch (e) {
    // @kubernetes-models/validate throws a ValidationError carrying ajv's errors.
    if (Array.isArray(e?.errors)) return e.errors;
    return [{ instancePath: "", message: String(e?.message ?? e) }];
  }
}

function set(root, path, value) {
  const copy = structuredClone(root);
  let node = copy;
  for (const key of path.slice(0, -1)) node = node[key];
  node[path[path.length - 1]] = value;
  return copy;
}

const pointer = (path) => path.map((p) => "/" + String(p).replace(/~/g, "~0").replace(/\//g, "~1")).join("");

// Paths (arrays of keys) of the fields the schema places no constraint on.
function unknownFields(Model, root) {
  const unknown = [];
  const visit = (node, path) => {
    if (node === null || typeof node !== "object") return;
    const keys = Array.isArray(node) ? node.map((_, i) => i) : Object.keys(node);
    for (const key of keys) {
      const here = [...path, key];
      const at = pointer(here);
      // apiVersion and kind are checked by the model's type guard, not the schema.
      if (here.length === 1 && (key === "apiVersion" || key === "kind")) continue;
      if (!Array.isArray(node)) {
        const known = PROBES.some((probe) =>
          errorsOf(Model, set(root, here, probe)).some(
            (err) => err.instancePath === at || err.instancePath.startsWith(at + "/"),
          ),
        );
        if (!known) {
          unknown.push(at);
          continue; // nothing under an unknown field can be known
        }
      }
      visit(node[key], here);
    }
  };
  visit(root, []);
  return unknown;
}

const [file, label = file] = process.argv.slice(2);
if (!file) {
  console.error("usage: node validate.mjs OBJECTS.json [LABEL]");
  process.exit(2);
}
let objects;
try {
  objects = JSON.parse(readFileSync(file, "utf8"));
} catch (e) {
  console.error(`${file}: ${e.message}`);
  process.exit(2);
}

let failed = 0;
for (const obj of objects) {
  const id = `${obj.kind}/${obj.metadata?.name}`;
  const Model = obj.apiVersion === "keda.sh/v1alpha1" ? keda[obj.kind] : undefined;
  if (typeof Model !== "function" || typeof Model.prototype?.validate !== "function") {
    console.log(`FAIL ${label} ${id}: no schema for ${obj.apiVersion} ${obj.kind}`);
    failed++;
    continue;
  }
  const problems = errorsOf(Model, obj).map((e) => `${e.instancePath || "/"} ${e.message}`);
  if (problems.length === 0) {
    for (const at of unknownFields(Model, obj)) problems.push(`${at}: unknown field`);
  }
  if (problems.length) {
    failed++;
    for (const p of problems) console.log(`FAIL ${label} ${id}: ${p}`);
  } else {
    console.log(`ok   ${label} ${id}`);
  }
}
console.log(`${label}: ${objects.length - failed} valid, ${failed} invalid KEDA objects`);
process.exit(failed ? 1 : 0);
