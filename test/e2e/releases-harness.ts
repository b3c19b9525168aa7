/**
 * Helpers for the signed-release tests: a fleet with a signing key, an agent that declares the
 * bundle kind, artifacts, and raw access to the coordinator's upload endpoint and data directory.
 */
import { createHash, randomBytes } from "node:crypto";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { request } from "node:http";
import { join } from "node:path";
import { Fleet, waitFor, type Proc, type Sandbox } from "./harness.ts";

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
export async function bundleAgent(fleet: Fleet, sb: Sandbox, extra: string[] = []): Promise<{ agent: Proc; stateDir: string; name: string }> {
  const join = await fleet.joinToken(["--auto-approve"]);
  const stateDir = await sb.dir("flotilla-agent-");
  const agent = fleet.startAgent(stateDir, join, extra);
  const name = await waitFor(
    "the agent online, declaring release:bundle",
    async () => {
      const d = (await fleet.adminJson<{ name: string; status: string; capabilities: string[] }[]>(["device", "ls"]))[0];
      return d?.status === "online" && d.capabilities.includes("release:bundle") ? d.name : undefined;
    },
    40_000,
    250,
  );
  return { agent, stateDir, name };
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
  const r = await fleet.admin(["release", "create", file, "--name", name, "--version", version, "--run", "bin/app", ...extra]);
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
