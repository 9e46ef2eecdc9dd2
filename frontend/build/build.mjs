// Builds the explorer's vendored browser files into ../static/vendor/ (checked in, so users need no npm):
//   regl-scatterplot.js  regl-scatterplot + regl + pub-sub-es as ONE minified ES module
//   htmx.min.js          htmx's own minified build, copied as published
// Run from this folder: `npm ci && npm run build`. A changed package or version needs its licence text in
// ../static/vendor/LICENSES.md (tests/test_vendor_licences.py checks every vendored file is listed there).
import { readFileSync } from "node:fs";
import { copyFile, mkdir, readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";

import { build } from "esbuild";

const here = path.dirname(fileURLToPath(import.meta.url));
const vendor = path.resolve(here, "../static/vendor");

function installedVersion(name) {
  return JSON.parse(readFileSync(path.join(here, "node_modules", name, "package.json"), "utf8")).version;
}

await mkdir(vendor, { recursive: true });

const scatter = await build({
  entryPoints: [path.join(here, "src/regl-scatterplot.entry.js")],
  bundle: true,
  format: "esm",
  minify: true,
  target: ["es2020"],
  legalComments: "inline",
  write: false,
  banner: { js: `/* regl-scatterplot ${installedVersion("regl-scatterplot")} (MIT), regl ${installedVersion("regl")} (MIT), `
    + `pub-sub-es ${installedVersion("pub-sub-es")} (MIT); bundled by frontend/build/build.mjs */` },
});
await writeFile(path.join(vendor, "regl-scatterplot.js"), scatter.outputFiles[0].contents);

const htmx = path.join(here, "node_modules/htmx.org/dist/htmx.min.js");
await copyFile(htmx, path.join(vendor, "htmx.min.js"));

for (const name of ["regl-scatterplot.js", "htmx.min.js"]) {
  const size = (await readFile(path.join(vendor, name))).length;
  console.log(`${name}: ${(size / 1024).toFixed(1)} KiB`);
}
