/**
 * Test fixtures for the bundle activator: a small real HTTP service, real tarballs made with
 * `tar`, and a look at /proc to count the processes a test left running. Tests only.
 */
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, symlink, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import * as tar from "tar";
import { parseReleaseMeta, type ReleaseMeta } from "@flotilla/protocol/agent";
import type { ActivationEvents, ActivationStep } from "../../activator.ts";

/**
 * A service that listens on `config.json`'s port (it exits if the port is taken), answers
 * `/version` with FLOTILLA_VERSION and `/healthz` with `config.json`'s status, and logs a line
 * to stdout when listening. `exitAtOnce` makes it exit 3 right away.
 */
export const SERVER_JS = `
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
const cfg = JSON.parse(readFileSync("config.json", "utf8"));
if (cfg.exitAtOnce) { console.error("giving up"); process.exit(3); }
const server = createServer((req, res) => {
  if (req.url === "/healthz") { res.statusCode = cfg.health ?? 200; res.end("health"); return; }
  res.end(process.env.FLOTILLA_VERSION + " " + process.env.FLOTILLA_RELEASE_DIR);
});
server.on("error", (e) => { console.error("listen failed: " + e.message); process.exit(2); });
server.listen(cfg.port, "127.0.0.1", () => console.log("listening on " + cfg.port));
`;

/** The test service's `config.json`. */
export interface ServerConfig {
  port: number;
  health?: number;
  exitAtOnce?: boolean;
}

/** A staged artifact and its sha256, as the release pipeline hands them over. */
export interface Artifact {
  path: string;
  sha256: string;
}

/** sha256 (hex) of a file. */
export async function sha256File(path: string): Promise<string> {
  return createHash("sha256").update(await readFile(path)).digest("hex");
}

/**
 * Packs `files` (path → content; a value `{ symlink: target }` makes a symlink) into
 * `<work>/<name>.tar.gz`. Paths are packed as given, `..` and absolute ones included.
 */
export async function makeBundle(work: string, name: string, files: Record<string, string | { symlink: string }>): Promise<Artifact> {
  const src = join(work, `${name}-src`, "root");
  await mkdir(src, { recursive: true });
  const entries: string[] = [];
  for (const [path, content] of Object.entries(files)) {
    const full = path.startsWith("/") ? path : join(src, path);
    await mkdir(dirname(full), { recursive: true });
    if (typeof content === "string") await writeFile(full, content);
    else await symlink(content.symlink, full);
    entries.push(path);
  }
  const path = join(work, `${name}.tar.gz`);
  await tar.c({ gzip: true, file: path, cwd: src, preservePaths: true, portable: true }, entries);
  return { path, sha256: await sha256File(path) };
}

/** A bundle of the test service with the given config. */
export function serverBundle(work: string, name: string, cfg: ServerConfig, extra: Record<string, string> = {}): Promise<Artifact> {
  return makeBundle(work, name, { "server.mjs": SERVER_JS, "config.json": JSON.stringify(cfg), ...extra });
}

/** Release metadata for the test service (validated like signed metadata). */
export function serviceMeta(name: string, version: string, counter: number, port: number, extra: Record<string, unknown> = {}): ReleaseMeta {
  return parseReleaseMeta({
    name,
    version,
    counter,
    kind: "bundle",
    run: "node server.mjs",
    health: { http: `http://127.0.0.1:${port}/healthz`, windowSeconds: 6 },
    ...extra,
  });
}

/**
 * ActivationEvents that record what they are told. reachedCoordinator resolves at once, or does
 * what `reach` does (e.g. never resolve: a machine that lost its way to the coordinator).
 */
export class RecordedEvents implements ActivationEvents {
  steps: { step: ActivationStep; detail?: string }[] = [];
  lines: { unit: string; stream: "stdout" | "stderr"; line: string }[] = [];
  constructor(private readonly reach?: ActivationEvents["reachedCoordinator"]) {}
  step(step: ActivationStep, detail?: string): void {
    this.steps.push(detail === undefined ? { step } : { step, detail });
  }
  output(unit: string, stream: "stdout" | "stderr", line: string): void {
    this.lines.push({ unit, stream, line });
  }
  reachedCoordinator(sinceMs: number, signal: AbortSignal): Promise<void> {
    return this.reach ? this.reach(sinceMs, signal) : Promise.resolve();
  }
}

/** What GET `http://127.0.0.1:<port>/` answers (the version and release dir), or undefined. */
export async function served(port: number): Promise<string | undefined> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(2_000) });
    return res.ok ? await res.text() : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Live processes whose environment has FLOTILLA_RELEASE_DIR under `root` and whose command line
 * contains `cmdPart` (shells excepted): the copies of a service a test started (or leaked).
 */
export async function processesUnder(root: string, cmdPart = "server.mjs"): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = await readFile(`/proc/${entry}/stat`, "utf8");
      if (/^Z/.test(stat.slice(stat.lastIndexOf(")") + 2))) continue;
      const cmd = await readFile(`/proc/${entry}/cmdline`, "utf8");
      // The service itself, not the `/bin/sh -c` that runs it.
      if (!cmd.includes(cmdPart) || cmd.startsWith("/bin/sh\0")) continue;
      const env = (await readFile(`/proc/${entry}/environ`, "utf8")).split("\0");
      if (env.some((e) => e.startsWith(`FLOTILLA_RELEASE_DIR=${root}/`))) pids.push(Number(entry));
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return pids;
}
