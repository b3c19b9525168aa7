/**
 * Helpers for the signed-release tests: a fleet with a signing key, an agent that declares the
 * bundle kind, artifacts, and raw access to the coordinator's upload endpoint and data directory.
 */
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { join } from "node:path";
import { waitFor, type Proc } from "@flotilla/protocol/testing";
import { Fleet } from "./fleet.ts";
import { killProcessesUnder, type Sandbox } from "./sandbox.ts";

export interface StepJson {
  time: string;
  name: string;
  targetPath: string;
  step: string;
  bytesDone: number;
  bytesTotal: number;
  error: string;
}

export interface DeviceReleasesJson {
  name: string;
  releases: { name: string; current: { version: string; counter: number } | null; desired: { version: string; counter: number } }[];
  steps: StepJson[];
}

export function sha256(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

/** A fleet whose organization has a signing key (the owner's admin key). */
export async function signedFleet(sb: Sandbox, extraArgs: string[] = []): Promise<Fleet> {
  const fleet = await new Fleet(sb, extraArgs).start();
  const r = await fleet.admin(["signing-key", "add"]);
  if (r.code !== 0) throw new Error(`signing-key add failed: ${r.stderr}`);
  return fleet;
}

/** An auto-approved agent, online and declaring `release:bundle`; returns it and its device name. */
export async function bundleAgent(
  fleet: Fleet,
  sb: Sandbox,
  extra: string[] = [],
  stateDirGiven?: string,
): Promise<{ agent: Proc; stateDir: string; name: string }> {
  const join = await fleet.joinToken(["--auto-approve"]);
  const stateDir = stateDirGiven ?? (await sb.dir("flotilla-agent-"));
  const agent = fleet.startAgent(stateDir, join, extra);
  sb.onCleanup(() => killProcessesUnder(stateDir));
  return { agent, stateDir, name: await bundleDeviceOnline(fleet) };
}

/** Waits until the fleet's first device is online, declaring `release:bundle`; returns its name. */
export function bundleDeviceOnline(fleet: Fleet): Promise<string> {
  return waitFor(
    "the agent online, declaring release:bundle",
    async () => {
      const d = (await fleet.adminJson<{ name: string; status: string; capabilities: string[] }[]>(["device", "ls"]))[0];
      return d?.status === "online" && d.capabilities.includes("release:bundle") ? d.name : undefined;
    },
    40_000,
    250,
  );
}

/** The version of the organization root the agent in `stateDir` pinned; throws while it has pinned none. */
export async function pinnedRootVersion(stateDir: string): Promise<number> {
  return (JSON.parse(await readFile(join(stateDir, "releases", "tuf", "root.json"), "utf8")) as { signed: { version: number } }).signed.version;
}

/** The names in `dir`, or none when it does not exist. */
export async function files(dir: string): Promise<string[]> {
  try {
    return await readdir(dir);
  } catch {
    return [];
  }
}

/** Writes `bytes` random bytes to a file in `dir`. */
export async function artifact(dir: string, file: string, bytes: number): Promise<{ path: string; data: Buffer }> {
  const data = randomBytes(bytes);
  const path = join(dir, file);
  await writeFile(path, data);
  return { path, data };
}

/** `release create` with the owner's key; throws on failure. */
export async function createRelease(fleet: Fleet, file: string, name: string, version: string, extra: string[] = []): Promise<void> {
  const run = extra.includes("--run") ? [] : ["--run", "bin/app"];
  const r = await fleet.admin(["release", "create", file, "--name", name, "--version", version, ...run, ...extra]);
  if (r.code !== 0) throw new Error(`release create failed (${r.code}): ${r.stderr}`);
}

export function deviceReleases(fleet: Fleet, device: string): Promise<DeviceReleasesJson> {
  return fleet.adminJson<DeviceReleasesJson>(["device", "show", device]);
}

/** Waits for a step of `targetPath` that ends it (healthy, failed, rolled-back); returns all steps then. */
export function waitForEnd(fleet: Fleet, device: string, targetPath: string, timeoutMs = 60_000): Promise<StepJson[]> {
  return waitFor(
    `the release ${targetPath} to end on ${device}`,
    async () => {
      const steps = (await deviceReleases(fleet, device)).steps.filter((s) => s.targetPath === targetPath);
      return steps.some((s) => ["healthy", "failed", "rolled-back"].includes(s.step)) ? steps : undefined;
    },
    timeoutMs,
    250,
  );
}

/** The directory of the (only) organization's TUF repository in the coordinator's data directory. */
export async function tufDir(fleet: Fleet): Promise<string> {
  const orgs = await readdir(join(fleet.dataDir, "tuf"));
  return join(fleet.dataDir, "tuf", orgs[0]!);
}

/** The owner's session token, from the admin home, for raw HTTP calls. */
export async function ownerToken(fleet: Fleet): Promise<string> {
  const ctx = JSON.parse(await readFile(join(fleet.adminHome, "context.json"), "utf8")) as {
    coordinators: Record<string, { session?: { token: string } }>;
  };
  const token = ctx.coordinators[fleet.url]?.session?.token;
  if (!token) throw new Error("no owner session recorded");
  return token;
}

/**
 * A raw PATCH to the upload endpoint. With `breakAfter`, sends that many bytes of `body` and
 * then destroys the connection, as a client that dies mid-upload does.
 */
export function patchUpload(
  fleet: Fleet,
  token: string,
  opts: { sha256: string; length: number; offset: number; body: Buffer; complete: boolean; breakAfter?: number },
): Promise<{ status: number; body: string } | "broken"> {
  return new Promise((resolve, reject) => {
    const req = request(
      `${fleet.url}/artifacts/v1/${opts.sha256}`,
      {
        method: "PATCH",
        headers: {
          authorization: `Bearer ${token}`,
          "content-length": String(opts.body.length),
          "upload-length": String(opts.length),
          "upload-offset": String(opts.offset),
          "upload-complete": opts.complete ? "?1" : "?0",
        },
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8").on("data", (d: string) => (text += d));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    if (opts.breakAfter !== undefined) {
      // Sends part of the body, waits until the coordinator has stored it, then breaks off.
      const cut = opts.breakAfter;
      req.on("error", () => resolve("broken"));
      req.write(opts.body.subarray(0, cut));
      waitFor("the coordinator to store the first bytes", async () => (await uploadState(fleet, token, opts.sha256, opts.length)).offset >= cut)
        .then(() => req.destroy())
        .catch(reject);
      return;
    }
    req.on("error", reject);
    req.end(opts.body);
  });
}

/** The upload's state as the coordinator reports it. */
export async function uploadState(fleet: Fleet, token: string, sha: string, length: number): Promise<{ complete: boolean; offset: number }> {
  const res = await fetch(`${fleet.url}/artifacts/v1/${sha}`, { headers: { authorization: `Bearer ${token}`, "upload-length": String(length) } });
  return (await res.json()) as { complete: boolean; offset: number };
}

/** A small HTTP service: `/healthz` answers `health` (default 200), `/` answers the version. */
const SERVER = `
import { readFileSync } from "node:fs";
import { createServer } from "node:http";
const cfg = JSON.parse(readFileSync("config.json", "utf8"));
createServer((req, res) => {
  if (req.url === "/healthz") { res.statusCode = cfg.health; res.end("health"); return; }
  res.end(process.env.FLOTILLA_VERSION ?? "");
}).listen(cfg.port, "127.0.0.1", () => console.log(\`serving \${process.env.FLOTILLA_VERSION} on \${cfg.port}\`));
`;

/**
 * A real bundle: a tar.gz with server.mjs (run it with `node server.mjs`) listening on `port`,
 * plus `padding` random bytes, to make downloads take a while.
 */
export async function bundleTarball(dir: string, file: string, opts: { port: number; health?: number; padding?: number }): Promise<{ path: string; data: Buffer }> {
  const src = join(dir, `${file}.src`);
  await mkdir(src, { recursive: true });
  await writeFile(join(src, "server.mjs"), SERVER);
  await writeFile(join(src, "config.json"), JSON.stringify({ port: opts.port, health: opts.health ?? 200 }));
  if (opts.padding) await writeFile(join(src, "padding.bin"), randomBytes(opts.padding));
  const path = join(dir, file);
  execFileSync("tar", ["-czf", path, "-C", src, "."]);
  return { path, data: await readFile(path) };
}

/** `--run` and `--health-http` for a bundleTarball on `port`. */
export function serverFlags(port: number, extra: string[] = []): string[] {
  return ["--run", "node server.mjs", "--health-http", `http://127.0.0.1:${port}/healthz`, "--health-window-seconds", "20", ...extra];
}

/** What the release's service on `port` answers at `/`, or undefined when nothing answers. */
export async function served(port: number): Promise<string | undefined> {
  try {
    return await (await fetch(`http://127.0.0.1:${port}/`)).text();
  } catch {
    return undefined;
  }
}

/** The files in an agent's staging directory (none when it does not exist). */
export async function stagedFiles(stateDir: string): Promise<string[]> {
  try {
    return await readdir(join(stateDir, "releases", "staging"));
  } catch {
    return [];
  }
}

/** The step names of a device's release steps, in order. */
export const stepNames = (steps: StepJson[]): string[] => steps.map((s) => s.step);
