import { existsSync } from "node:fs";
import { mkdir, readFile, readdir, readlink, realpath, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadOrCreateIdentity, parseReleaseMeta, selfSignedCertificate, type ReleaseMeta } from "@flotilla/protocol";
import { NixosActivator, RecordedEvents, type ActivationRequest } from "@flotilla/agent/testing";
import type { Proc } from "@flotilla/protocol/testing";
import { spawn } from "node:child_process";
import { Fleet } from "./support/fleet.ts";
import { repoRoot } from "./support/sandbox.ts";
import { apiToken, buildSystem, closure, copyTo, deleteFromStore, nix, nixEnv, nixOrg, nixosArtifact, writeNetrc } from "./support/nix.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

/** reachedCoordinator over a real connection: the coordinator's cache answers after `since`. */
function reachVia(url: string, token: string) {
  return async (_since: number, signal: AbortSignal) => {
    const res = await fetch(`${url}/nix-cache-info`, { signal, headers: { authorization: `Bearer ${token}` } });
    if (!res.ok) throw new Error(`coordinator answered ${res.status}`);
  };
}

/** A reachedCoordinator that never resolves: the machine lost its way to the coordinator. */
const unreachable = (_since: number, signal: AbortSignal) =>
  new Promise<void>((_resolve, reject) => signal.addEventListener("abort", () => reject(new Error("aborted")), { once: true }));

let counter = 0;
function meta(storePath: string, extra: Partial<ReleaseMeta> = {}): ReleaseMeta {
  counter += 1;
  return parseReleaseMeta({ name: "kiosk", version: `2026.11.${counter}`, counter, kind: "nixos", storePath, ...extra });
}

interface Setup {
  fleet: Fleet;
  cacheUrl: string;
  publicKey: string;
  readToken: string;
  log: string;
  profile: string;
  /** Builds a system, uploads its closure and removes it from the local store. */
  publish(exitCode?: number): Promise<string>;
  /** What the release pipeline hands the activator: the metadata and the verified artifact. */
  request(m: ReleaseMeta): ActivationRequest;
  activator(opts?: { trustedPublicKeys?: string[]; confirmWindowMs?: number }): NixosActivator;
  /** Starts an activation in another process whose confirm window never ends by itself. */
  activateInChild(m: ReleaseMeta): Proc;
}

async function setup(): Promise<Setup> {
  const fleet = await new Fleet(sb).start();
  const { publicKey, token, cacheUrl } = await nixOrg(fleet);
  const readToken = await apiToken(fleet, "viewer");
  const netrc = await writeNetrc(sb, fleet.url, token);
  const work = await sb.dir("flotilla-nixos-");
  const log = join(work, "switch.log");
  const profile = join(work, "profiles", "system");
  await mkdir(join(work, "profiles"));
  const artifacts = new Map<string, string>();
  return {
    fleet,
    cacheUrl,
    publicKey,
    readToken,
    log,
    profile,
    async publish(exitCode = 0) {
      const system = await buildSystem(sb, log, exitCode);
      const paths = await closure(system);
      const up = await copyTo(cacheUrl, netrc, system);
      if (up.code !== 0) throw new Error(`upload failed: ${up.stderr}`);
      artifacts.set(system, await nixosArtifact(sb, system));
      await deleteFromStore(paths);
      return system;
    },
    request(m) {
      return { meta: m, sha256: "", artifactPath: artifacts.get(m.storePath ?? "") };
    },
    activateInChild(m) {
      const cfg = { stateDir: join(work, "agent"), cacheUrl, profile, publicKey, token: readToken, meta: m, artifactPath: artifacts.get(m.storePath ?? "") };
      const child = spawn(process.execPath, ["--import", "tsx", join(repoRoot, "test/e2e/nix-activate-child.ts"), JSON.stringify(cfg)], {
        cwd: repoRoot,
        env: nixEnv,
        stdio: ["ignore", "pipe", "pipe"],
      });
      return sb.adopt(child, "activation");
    },
    activator(opts = {}) {
      return new NixosActivator({
        stateDir: join(work, "agent"),
        cacheUrl,
        trustedPublicKeys: () => opts.trustedPublicKeys ?? [publicKey],
        token: () => readToken,
        profile,
        confirmWindowMs: opts.confirmWindowMs ?? 30_000,
        env: nixEnv,
      });
    },
  };
}

async function switchLog(log: string): Promise<string[]> {
  return existsSync(log) ? (await readFile(log, "utf8")).trim().split("\n") : [];
}

describe("the NixOS activator", () => {
  it("fetches a system from the coordinator's cache, makes it a profile generation and runs switch-to-configuration switch", async () => {
    const s = await setup();
    const system = await s.publish();
    const activator = s.activator();
    expect(await activator.available()).toBe(true);
    const events = new RecordedEvents(reachVia(s.cacheUrl, s.readToken));

    const out = await activator.activate(s.request(meta(system)), events, new AbortController().signal);

    expect(out.outcome, JSON.stringify(out)).toBe("healthy");
    expect(await realpath(s.profile)).toBe(system);
    expect(await readlink(s.profile)).toBe("system-1-link");
    expect(await switchLog(s.log)).toEqual([`${system} switch`]);
    expect(events.steps.map((x) => x.step)).toEqual(["activating", "health-checking", "healthy"]);
    expect((await activator.installed()).map((r) => r.name)).toEqual(["kiosk"]);
  });

  it("rolls back to the previous store path, running its switch script again, when switch-to-configuration fails", async () => {
    const s = await setup();
    const good = await s.publish();
    const bad = await s.publish(1);
    const activator = s.activator();
    const events = new RecordedEvents(reachVia(s.cacheUrl, s.readToken));
    const first = await activator.activate(s.request(meta(good)), events, new AbortController().signal);
    expect(first.outcome).toBe("healthy");

    const out = await activator.activate(s.request(meta(bad)), events, new AbortController().signal);

    expect(out.outcome).toBe("rolled-back");
    expect(out.outcome === "rolled-back" && out.error).toMatch(/switch-to-configuration switch exited with 1/);
    expect(out.current?.version).toBe(first.current?.version);
    expect(await realpath(s.profile)).toBe(good);
    expect(await switchLog(s.log)).toEqual([`${good} switch`, `${bad} switch`, `${good} switch`]);
  });

  it("rolls back when the agent does not reach the coordinator within the confirm window", async () => {
    const s = await setup();
    const good = await s.publish();
    const next = await s.publish();
    const activator = s.activator({ confirmWindowMs: 2000 });
    const first = await activator.activate(s.request(meta(good)), new RecordedEvents(reachVia(s.cacheUrl, s.readToken)), new AbortController().signal);
    expect(first.outcome).toBe("healthy");

    const events = new RecordedEvents(unreachable);
    const out = await activator.activate(s.request(meta(next, { nixosMode: "test" })), events, new AbortController().signal);

    expect(out.outcome).toBe("rolled-back");
    expect(out.outcome === "rolled-back" && out.error).toMatch(/did not reach the coordinator within 2 s/);
    expect(await realpath(s.profile)).toBe(good);
    expect(await switchLog(s.log)).toEqual([`${good} switch`, `${next} test`, `${good} test`]);
    expect(events.steps.at(-1)?.step).toBe("rolled-back");
  });

  it("refuses a closure signed by a key it does not trust: nothing is fetched or activated", async () => {
    const s = await setup();
    const system = await s.publish();
    const keys = await sb.dir("flotilla-otherkey-");
    expect((await nix("nix-store", ["--generate-binary-cache-key", "other", join(keys, "sec"), join(keys, "pub")])).code).toBe(0);
    const activator = s.activator({ trustedPublicKeys: [(await readFile(join(keys, "pub"), "utf8")).trim()] });

    const out = await activator.activate(s.request(meta(system)), new RecordedEvents(reachVia(s.cacheUrl, s.readToken)), new AbortController().signal);

    expect(out.outcome).toBe("failed");
    expect(out.outcome === "failed" && out.error).toMatch(/signature/i);
    expect((await nix("nix-store", ["--check-validity", system])).code).not.toBe(0);
    expect(existsSync(s.profile)).toBe(false);
    expect(await switchLog(s.log)).toEqual([]);
  });

  it("refuses a NAR altered in the coordinator's store: the profile stays on the running system", async () => {
    const s = await setup();
    const good = await s.publish();
    const next = await s.publish();
    const activator = s.activator();
    const reach = new RecordedEvents(reachVia(s.cacheUrl, s.readToken));
    expect((await activator.activate(s.request(meta(good)), reach, new AbortController().signal)).outcome).toBe("healthy");

    // Flip one byte in the middle of every stored NAR of `next`'s closure (same size, other hash).
    const narDir = join(s.fleet.dataDir, "nix", "sha256");
    for (const name of await readdir(narDir)) {
      const file = join(narDir, name);
      const bytes = await readFile(file);
      if (!bytes.includes(Buffer.from(next.slice("/nix/store/".length)))) continue;
      const i = bytes.length >> 1;
      bytes[i] = bytes[i]! ^ 0xff;
      await writeFile(file, bytes);
    }

    const out = await activator.activate(s.request(meta(next)), reach, new AbortController().signal);

    expect(out.outcome).toBe("rolled-back");
    expect(out.outcome === "rolled-back" && out.error).toMatch(/fetching .* failed: .*hash mismatch/);
    // nix may leave the unpacked files behind, but never registers an unverified path as valid.
    expect((await nix("nix-store", ["--check-validity", next])).code).not.toBe(0);
    expect(await realpath(s.profile)).toBe(good);
    expect(await readlink(s.profile)).toBe("system-1-link");
    expect(await switchLog(s.log)).toEqual([`${good} switch`]);
  });

  it("refuses a fetched closure whose paths differ from the release's manifest, and a release without a manifest: nothing is switched", async () => {
    const s = await setup();
    const system = await s.publish();
    const activator = s.activator();
    const reach = new RecordedEvents(reachVia(s.cacheUrl, s.readToken));
    const request = s.request(meta(system));
    const artifact = JSON.parse(await readFile(request.artifactPath!, "utf8")) as { storePath: string; closure: { path: string; narHash: string; narSize: number }[] };
    const dep = artifact.closure.find((p) => p.path !== system)!;
    const dir = await sb.dir("flotilla-artifacts-");
    const write = async (file: string, value: unknown) => {
      await writeFile(join(dir, file), JSON.stringify(value));
      return { ...s.request(meta(system)), artifactPath: join(dir, file) };
    };

    // The dependency pinned with other bytes than the cache serves (and its signature vouches for).
    const otherHash = { ...artifact, closure: artifact.closure.map((p) => (p === dep ? { ...p, narHash: `sha256-${Buffer.alloc(32, 7).toString("base64")}` } : p)) };
    const wrong = await activator.activate(await write("other-hash.json", otherHash), reach, new AbortController().signal);
    expect(wrong.outcome).toBe("failed");
    expect(wrong.outcome === "failed" && wrong.error).toContain(`not the one the release pins, nothing was switched: ${dep.path} has NarHash ${dep.narHash} here, but the release pins sha256-BwcH`);

    // A path nix fetched that the release does not name.
    const fewer = await activator.activate(await write("fewer.json", { ...artifact, closure: artifact.closure.filter((p) => p !== dep) }), reach, new AbortController().signal);
    expect(fewer.outcome === "failed" && fewer.error).toMatch(new RegExp(`${dep.path} is in the closure nix fetched but not in the release's closure manifest`));

    // An artifact from a CLI that wrote no manifest.
    const old = await activator.activate(await write("old.json", { storePath: system }), reach, new AbortController().signal);
    expect(old.outcome === "failed" && old.error).toMatch(/has no closure manifest/);

    expect(existsSync(s.profile)).toBe(false);
    expect(await switchLog(s.log)).toEqual([]);
    expect(reach.steps.map((x) => x.step)).toEqual(["activating", "failed", "activating", "failed", "activating", "failed"]);
  });

  it("after a crash in the confirm window, confirms the new system once the coordinator is reached again", async () => {
    const s = await setup();
    const good = await s.publish();
    const next = await s.publish();
    expect((await s.activator().activate(s.request(meta(good)), new RecordedEvents(reachVia(s.cacheUrl, s.readToken)), new AbortController().signal)).outcome).toBe("healthy");
    const m = meta(next);
    const child = s.activateInChild(m);
    await child.waitForOutput(/step health-checking/, 60_000);
    await child.stop("SIGKILL");

    const after = await s.activator().recover(new RecordedEvents(reachVia(s.cacheUrl, s.readToken)));

    expect(after.get("kiosk")?.outcome).toBe("healthy");
    expect(after.get("kiosk")?.current?.version).toBe(m.version);
    expect(await realpath(s.profile)).toBe(next);
    expect(await switchLog(s.log)).toEqual([`${good} switch`, `${next} switch`]);
  });

  it("after a crash in the confirm window, rolls back when the coordinator stays out of reach", async () => {
    const s = await setup();
    const good = await s.publish();
    const next = await s.publish();
    const first = await s.activator().activate(s.request(meta(good)), new RecordedEvents(reachVia(s.cacheUrl, s.readToken)), new AbortController().signal);
    expect(first.outcome).toBe("healthy");
    const child = s.activateInChild(meta(next));
    await child.waitForOutput(/step health-checking/, 60_000);
    await child.stop("SIGKILL");

    const after = await s.activator({ confirmWindowMs: 1500 }).recover(new RecordedEvents(unreachable));

    expect(after.get("kiosk")?.outcome).toBe("rolled-back");
    expect(after.get("kiosk")?.current?.version).toBe(first.current?.version);
    expect(await realpath(s.profile)).toBe(good);
    expect(await switchLog(s.log)).toEqual([`${good} switch`, `${next} switch`, `${good} switch`]);
  });

  it("fetches over the coordinator's self-signed TLS, trusting exactly its certificate, after `flotilla nix-cache push`", async () => {
    // A coordinator whose certificate is made from its own key, as on any non-loopback address.
    const tls = await sb.dir("flotilla-tls-");
    const fleet = new Fleet(sb, ["--tls-cert", join(tls, "cert.pem"), "--tls-key", join(tls, "key.pem")]);
    await fleet.prepare();
    const pair = await selfSignedCertificate(await loadOrCreateIdentity(join(fleet.dataDir, "coordinator.key")), { hosts: ["127.0.0.1"] });
    await writeFile(join(tls, "cert.pem"), pair.certPem);
    await writeFile(join(tls, "key.pem"), pair.keyPem, { mode: 0o600 });
    await fleet.startCoordinator();
    expect(fleet.url).toMatch(/^https:/);
    await fleet.loginAsOwner();
    const { publicKey } = await nixOrg(fleet);
    const readToken = await apiToken(fleet, "viewer");
    const work = await sb.dir("flotilla-nixos-");
    const log = join(work, "switch.log");
    const system = await buildSystem(sb, log);
    const paths = await closure(system);

    const push = await fleet.admin(["nix-cache", "push", system], { NIX_CONFIG: nixEnv.NIX_CONFIG ?? "" });
    expect(push.code, push.stderr).toBe(0);
    const artifactPath = await nixosArtifact(sb, system);
    await deleteFromStore(paths);

    const cacheUrl = (await fleet.admin(["nix-cache", "url"])).stdout.trim();
    const activator = (caCertFile?: string) =>
      new NixosActivator({ stateDir: join(work, "agent"), cacheUrl, caCertFile, trustedPublicKeys: () => [publicKey], token: () => readToken, profile: join(work, "system"), env: nixEnv });
    const reach = new RecordedEvents();
    const untrusted = await activator().activate({ meta: meta(system), sha256: "", artifactPath }, reach, new AbortController().signal);
    expect(untrusted.outcome).toBe("failed");
    expect(untrusted.outcome === "failed" && untrusted.error).toMatch(/SSL|certificate/i);

    const out = await activator(join(tls, "cert.pem")).activate({ meta: meta(system), sha256: "", artifactPath }, reach, new AbortController().signal);
    expect(out.outcome, JSON.stringify(out)).toBe("healthy");
    expect(await realpath(join(work, "system"))).toBe(system);
    expect(await switchLog(log)).toEqual([`${system} switch`]);
  });

  it("reports the nixos capability only where the profile's directory is writable", async () => {
    const s = await setup();
    expect(await s.activator().available()).toBe(true);
    const elsewhere = new NixosActivator({ stateDir: await sb.dir(), cacheUrl: s.cacheUrl, trustedPublicKeys: () => [], token: () => "", profile: "/nonexistent/profiles/system" });
    expect(await elsewhere.available()).toBe(false);
  });
});
