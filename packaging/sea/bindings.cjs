// Stands in for the `bindings` package inside the single executable (scripts/package.mjs), where
// better-sqlite3 asks it for its addon: the addon is an asset of the executable, written to a
// fresh private directory (mode 0700, under $TMPDIR), loaded, and removed again at once.
"use strict";
const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");

module.exports = function bindings(name) {
  const sea = require("node:sea");
  let bytes;
  try {
    bytes = sea.getRawAsset(name);
  } catch {
    throw new Error(
      `this flotilla executable carries no SQLite module for ${process.arch}: start the coordinator with --database-url postgres://... (docs/install.md)`,
    );
  }
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "flotilla-sqlite-"));
  const file = path.join(dir, name);
  try {
    fs.writeFileSync(file, new Uint8Array(bytes), { mode: 0o500 });
    const mod = { exports: {} };
    process.dlopen(mod, file);
    return mod.exports;
  } catch (err) {
    throw new Error(`cannot load the SQLite module from ${dir} (is $TMPDIR mounted noexec? point TMPDIR elsewhere): ${err.message}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
};
