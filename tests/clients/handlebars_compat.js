// Renders tests/fixtures/handlebars_cases.json with handlebars.js (npm `handlebars`) and
// writes what it printed to tests/fixtures/handlebars_js.json (or the path given), the
// expected output the gateway's renderer is compared with (tests/api/templates.rs).
// `.ci/run` runs it into a scratch file and fails if the committed expectations differ
// from what handlebars.js prints.
const fs = require("fs");
const path = require("path");
const Handlebars = require("handlebars");

const dir = path.join(__dirname, "..", "fixtures");
const cases = JSON.parse(fs.readFileSync(path.join(dir, "handlebars_cases.json"), "utf8"));
const out = {};
for (const c of cases) {
  const h = Handlebars.create();
  for (const [name, source] of Object.entries(c.partials || {})) {
    h.registerPartial(name, source);
  }
  out[c.name] = h.compile(c.template)(c.data);
}
const target = process.argv[2] || path.join(dir, "handlebars_js.json");
fs.writeFileSync(target, JSON.stringify(out, null, 2) + "\n");
console.log(`handlebars.js ${Handlebars.VERSION}: ${cases.length} cases rendered`);
