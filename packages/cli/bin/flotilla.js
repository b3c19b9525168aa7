#!/usr/bin/env node
// The `flotilla` program. Runs the bundle that `npm install` builds (scripts/build.mjs) when it
// is newer than every source file; otherwise the TypeScript sources through tsx, so an edited
// checkout never runs stale code.
import { existsSync, readdirSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { setFlagsFromString } from "node:v8";

// The agent keeps V8's optimising compiler off (AGENT_V8_FLAGS in @flotilla/protocol, which
// src/entry.ts sets in full). Off from here, before bundleIsFresh's walk over the sources: that
// loop, hot for a moment, was enough for TurboFan to compile it and page some 3.4 MiB of the node
// executable's compiler code into every agent for good (bench/agent.ts).
if (process.argv.slice(2).find((a) => !a.startsWith("-")) === "agent") setFlagsFromString("--no-opt");

const cli = join(dirname(fileURLToPath(import.meta.url)), "..");
const bundle = join(cli, "dist", "flotilla.mjs");

function newestSource(dir) {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) newest = Math.max(newest, newestSource(path));
    else if (entry.name.endsWith(".ts")) newest = Math.max(newest, statSync(path).mtimeMs);
  }
  return newest;
}

function bundleIsFresh() {
  try {
    const built = statSync(bundle).mtimeMs;
    const packages = join(cli, "..");
    // A package without TypeScript sources (packages/web keeps its app in app/, built by vite)
    // has nothing for the bundle to be stale against.
    return readdirSync(packages)
      .filter((p) => existsSync(join(packages, p, "src")))
      .every((p) => newestSource(join(packages, p, "src")) <= built);
  } catch {
    return false;
  }
}

if (bundleIsFresh()) {
  await import(bundle);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import("../src/entry.ts");
}
