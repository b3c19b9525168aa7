/**
 * `release rm` and `coordinator gc` end to end: real coordinator, CLI and agent processes, and
 * real nix for a NixOS release. A release a device runs is refused removal with the device named,
 * and removed with --force without disturbing the device; a dry run deletes nothing; gc deletes
 * exactly what no release needs, and a NAR a NixOS release's closure needs survives.
 */
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { freePort, waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { artifact, bundleAgent, bundleTarball, createRelease, deviceReleases, ownerToken, served, serverFlags, sha256, signedFleet, waitForEnd } from "./support/releases.ts";
import { buildSystem, closure, hashPartOf, nixEnv } from "./support/nix.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

interface GcJson {
  dryRun: boolean;
  artifacts: number;
  nars: number;
  storePaths: number;
  bytesFreed: number;
  filesDeleted: number;
  bytesDeleted: number;
}

const stored = async (dataDir: string, ...sub: string[]) => (await readdir(join(dataDir, ...sub)).catch(() => [] as string[])).sort();

/** A fleet with a bundle agent running app 1.0.0 (counter 1), healthy. */
async function deviceRunningApp1(coordinatorArgs: string[] = []) {
  const fleet = await signedFleet(sb, coordinatorArgs);
  const { name } = await bundleAgent(fleet, sb);
  const dir = await sb.dir();
  const port = await freePort();
  const v1 = await bundleTarball(dir, "app.tar.gz", { port });
  await createRelease(fleet, v1.path, "app", "1.0.0", serverFlags(port));
  expect((await fleet.admin(["device", "deploy", name, "app@1.0.0"])).code).toBe(0);
  expect((await waitForEnd(fleet, name, "app/1/app.tar.gz")).at(-1)).toMatchObject({ step: "healthy" });
  return { fleet, name, dir, port, v1 };
}

describe("release rm and coordinator gc", () => {
  it("refuses to remove a release a device runs, naming it; removes it with --force, the device unaffected; gc frees exactly the unreferenced artifacts", async () => {
    // No grace period: what was uploaded before a collection is old enough for it.
    const { fleet, name, dir, port, v1 } = await deviceRunningApp1(["--gc-grace-ms", "1"]);
    const v2 = await artifact(dir, "app2.tar.gz", 50_000);
    await createRelease(fleet, v2.path, "app", "2.0.0");
    const usageBefore = (await stored(fleet.dataDir, "artifacts", "sha256")).length;
    expect(usageBefore).toBe(2);

    // In use: refused, one line naming the device, nothing changed.
    const refused = await fleet.admin(["release", "rm", "app@1.0.0"]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toBe(`error: release app@1.0.0 (#1) is in use (devices running it: ${name}); --force removes it anyway\n`);
    const listed = async () => (await fleet.adminJson<{ version: string }[]>(["release", "ls"])).map((r) => r.version);
    expect(await listed()).toEqual(["1.0.0", "2.0.0"]);

    // Not in use: removed, and gone from the signed targets.
    const rm2 = await fleet.admin(["release", "rm", "app@2.0.0"]);
    expect(rm2.code, rm2.stderr).toBe(0);
    expect(rm2.stdout).toContain("removed app 2.0.0 (#2), app/2/app2.tar.gz; targets version 4");
    expect(await listed()).toEqual(["1.0.0"]);
    const targets = JSON.parse(await (await fetch(`${fleet.url}/tuf/v1/metadata/4.targets.json`, { headers: { authorization: `Bearer ${await ownerToken(fleet)}` } })).text()) as {
      signed: { targets: Record<string, unknown> };
    };
    expect(Object.keys(targets.signed.targets)).toEqual(["app/1/app.tar.gz"]);

    // A dry run reports the removed release's artifact and deletes nothing.
    const dry = await fleet.adminJson<GcJson>(["coordinator", "gc", "--dry-run"]);
    expect(dry).toMatchObject({ dryRun: true, artifacts: 1, bytesFreed: v2.data.length, filesDeleted: 1, bytesDeleted: v2.data.length });
    expect(await stored(fleet.dataDir, "artifacts", "sha256")).toEqual([sha256(v1.data), sha256(v2.data)].sort());

    const gc = await fleet.admin(["coordinator", "gc"]);
    expect(gc.code, gc.stderr).toBe(0);
    expect(gc.stdout).toContain(`freed ${v2.data.length} bytes of the organization's storage: 1 artifacts, 0 NARs, 0 store paths`);
    expect(await stored(fleet.dataDir, "artifacts", "sha256")).toEqual([sha256(v1.data)]);

    // Forced: removed although the device runs it; the device keeps running it.
    const forced = await fleet.admin(["release", "rm", "app@1.0.0", "--force"]);
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stdout).toContain(`still running it: ${name}`);
    expect(await listed()).toEqual([]);
    expect((await fleet.adminJson<GcJson>(["coordinator", "gc"])).filesDeleted).toBe(1);
    expect(await stored(fleet.dataDir, "artifacts", "sha256")).toEqual([]);
    expect(await served(port)).toBe("1.0.0");
    expect((await deviceReleases(fleet, name)).releases[0]?.current).toEqual({ version: "1.0.0", counter: 1 });

    // The next release gets a counter above the removed ones (never one of theirs), and the
    // agent takes it under the targets without them.
    const port3 = await freePort();
    const v3 = await bundleTarball(dir, "app3.tar.gz", { port: port3 });
    await createRelease(fleet, v3.path, "app", "3.0.0", serverFlags(port3));
    expect((await fleet.adminJson<{ counter: number }[]>(["release", "ls"])).map((r) => r.counter)).toEqual([3]);
    expect((await fleet.admin(["device", "deploy", name, "app@3.0.0"])).code).toBe(0);
    expect((await waitForEnd(fleet, name, "app/3/app3.tar.gz")).at(-1)).toMatchObject({ step: "healthy" });
    await waitFor("the new release serving", async () => (await served(port3)) === "3.0.0");
  }, 150_000);

  it("tells a device told to run a removed release (but not running it) to run what it runs", async () => {
    const { fleet, name, dir, port } = await deviceRunningApp1();
    // 2.0.0 fails its health check for ever: the device stays told to run it, running 1.0.0.
    const v2 = await bundleTarball(dir, "bad.tar.gz", { port: await freePort(), health: 500 });
    await createRelease(fleet, v2.path, "app", "2.0.0", ["--run", "node server.mjs", "--health-command", "false", "--health-window-seconds", "1"]);
    expect((await fleet.admin(["device", "deploy", name, "app@2.0.0"])).code).toBe(0);
    await waitForEnd(fleet, name, "app/2/bad.tar.gz");

    const refused = await fleet.admin(["release", "rm", "app@2.0.0"]);
    expect(refused.stderr).toBe(`error: release app@2.0.0 (#2) is in use (devices told to run it: ${name}); --force removes it anyway\n`);
    const forced = await fleet.admin(["release", "rm", "app@2.0.0", "--force"]);
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stdout).toContain(`told to run what they run instead: ${name}`);
    const releases = (await deviceReleases(fleet, name)).releases;
    expect(releases).toEqual([expect.objectContaining({ current: { version: "1.0.0", counter: 1 }, desired: expect.objectContaining({ version: "1.0.0", counter: 1 }) })]);
    expect(await served(port)).toBe("1.0.0");
  });

  it("gc deletes the NARs of a removed NixOS release and keeps every path of the closure a NixOS release still needs", async () => {
    const fleet = await signedFleet(sb, ["--gc-grace-ms", "1"]);
    expect((await fleet.admin(["nix-key", "create", "kiosk-cache"], { NIX_CONFIG: nixEnv.NIX_CONFIG! })).code).toBe(0);
    const log = join(await sb.dir(), "switch.log");
    const old = await buildSystem(sb, log);
    const kept = await buildSystem(sb, log);
    for (const [system, version] of [[old, "1"], [kept, "2"]] as const) {
      const r = await fleet.admin(["release", "create", "--nixos", system, "--name", "kiosk", "--version", version], { NIX_CONFIG: nixEnv.NIX_CONFIG! });
      expect(r.code, r.stderr).toBe(0);
    }
    const oldPaths = await closure(old);
    const keptPaths = await closure(kept);
    expect(oldPaths.filter((p) => keptPaths.includes(p))).toEqual([]);
    const token = await ownerToken(fleet);
    const narinfo = async (p: string) =>
      (await fetch(`${fleet.url}/nix/default/${hashPartOf(p)}.narinfo`, { headers: { authorization: `Basic ${Buffer.from(`flotilla:${token}`).toString("base64")}` } })).status;
    const nars = await stored(fleet.dataDir, "nix", "sha256");
    expect(nars).toHaveLength(oldPaths.length + keptPaths.length);

    // Both released: nothing to collect.
    expect(await fleet.adminJson<GcJson>(["coordinator", "gc", "--dry-run"])).toMatchObject({ nars: 0, storePaths: 0, filesDeleted: 0 });
    expect((await fleet.admin(["release", "rm", "kiosk@1"])).code).toBe(0);
    const dry = await fleet.adminJson<GcJson>(["coordinator", "gc", "--dry-run"]);
    expect(dry).toMatchObject({ artifacts: 1, nars: oldPaths.length, storePaths: oldPaths.length, filesDeleted: oldPaths.length + 1 });
    expect(await stored(fleet.dataDir, "nix", "sha256")).toEqual(nars);

    const gc = await fleet.adminJson<GcJson>(["coordinator", "gc"]);
    expect(gc).toMatchObject({ dryRun: false, artifacts: 1, nars: oldPaths.length, storePaths: oldPaths.length, bytesFreed: dry.bytesFreed, filesDeleted: oldPaths.length + 1 });
    expect(await stored(fleet.dataDir, "nix", "sha256")).toHaveLength(keptPaths.length);
    for (const p of oldPaths) expect(await narinfo(p)).toBe(404);
    for (const p of keptPaths) expect(await narinfo(p)).toBe(200);
  });
});
