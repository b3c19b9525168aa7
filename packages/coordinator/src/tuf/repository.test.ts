import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Metadata, MetadataKind, Root, Signature, Targets } from "@tufjs/models";
import { beforeEach, describe, expect, it } from "vitest";
import { generateIdentity, tufKeyId, type Identity } from "@flotilla/protocol";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { MetadataError, TufRepository, tufDate } from "./repository.ts";

const dir = useTempDir("flotilla-tuf-");
let online: Identity;
beforeEach(async () => {
  online = generateIdentity();
});

const DAY = 86_400_000;

function key(id: Identity) {
  return { keytype: "ed25519", scheme: "ed25519", keyval: { public: Buffer.from(id.publicKey).toString("hex") } };
}

function root(version: number, admins: Identity[], threshold: number, onlineKey: Identity = online): Metadata<Root> {
  const ids = admins.map((a) => tufKeyId(a.publicKey));
  const oid = tufKeyId(onlineKey.publicKey);
  const keys: Record<string, unknown> = { [oid]: key(onlineKey) };
  for (const a of admins) keys[tufKeyId(a.publicKey)] = key(a);
  return new Metadata(
    Root.fromJSON({
      _type: "root",
      spec_version: "1.0.31",
      version,
      expires: tufDate(Date.now() + DAY),
      consistent_snapshot: true,
      keys,
      roles: {
        root: { keyids: ids, threshold },
        targets: { keyids: ids, threshold },
        snapshot: { keyids: [oid], threshold: 1 },
        timestamp: { keyids: [oid], threshold: 1 },
      },
    } as never),
  );
}

function sign<T extends Root | Targets>(md: Metadata<T>, ...by: Identity[]): Metadata<T> {
  for (const id of by) {
    md.sign((data) => new Signature({ keyID: tufKeyId(id.publicKey), sig: Buffer.from(id.sign(data)).toString("hex") }), true);
  }
  return md;
}

function emptyTargets(version = 1): Metadata<Targets> {
  return new Metadata(new Targets({ version, specVersion: "1.0.31", expires: tufDate(Date.now() + DAY) }));
}

const json = (md: Metadata<Root | Targets>) => md.toJSON();
const timings = { timestampTtlMs: DAY, snapshotTtlMs: 7 * DAY, refreshMs: 3_600_000 };

describe("TufRepository", () => {
  it("accepts a first root with its first targets, then signs snapshot and timestamp with the online key", async () => {
    const repo = new TufRepository(dir.path, online, timings);
    const alice = generateIdentity();
    expect(await repo.updateRoot("org1", json(sign(root(1, [alice], 1), alice)), json(sign(emptyTargets(), alice)))).toBe(1);
    const ts = JSON.parse(await readFile(join(dir.path, "org1", "timestamp.json"), "utf8")) as { signatures: { keyid: string }[] };
    expect(ts.signatures.map((s) => s.keyid)).toEqual([repo.onlineKeyId]);
    expect(await repo.read("org1", "1.snapshot.json")).toBeDefined();
    expect(await repo.read("org1", "../org2/1.root.json")).toBeUndefined();
  });

  it("refuses a root that is unsigned, gives snapshot to an admin key, or skips a version", async () => {
    const repo = new TufRepository(dir.path, online, timings);
    const alice = generateIdentity();
    const mallory = generateIdentity();
    await expect(repo.updateRoot("org1", json(sign(root(1, [alice], 1), mallory)), json(sign(emptyTargets(), alice)))).rejects.toThrow(MetadataError);
    await expect(repo.updateRoot("org1", json(sign(root(1, [alice], 1, alice), alice)), json(sign(emptyTargets(), alice)))).rejects.toThrow(/online key/);
    await expect(repo.updateRoot("org1", json(sign(root(2, [alice], 1), alice)), undefined)).rejects.toThrow(/root version must be 1/);
    expect(await repo.root("org1")).toBeUndefined();
  });

  it("rotates root only when both the old and the new threshold signed it, with the current targets re-signed under the new root", async () => {
    const repo = new TufRepository(dir.path, online, timings);
    const alice = generateIdentity();
    const bob = generateIdentity();
    await repo.updateRoot("org1", json(sign(root(1, [alice], 1), alice)), json(sign(emptyTargets(), alice)));
    const resigned = json(sign(emptyTargets(2), alice, bob));
    await expect(repo.updateRoot("org1", json(sign(root(2, [bob], 1), bob)), resigned)).rejects.toThrow(/current root's threshold/);
    await expect(repo.updateRoot("org1", json(sign(root(2, [alice, bob], 2), alice)), resigned)).rejects.toThrow(/new root's own threshold/);
    expect(await repo.updateRoot("org1", json(sign(root(2, [alice, bob], 2), alice, bob)), resigned)).toBe(2);
    expect((await repo.targets("org1"))?.signed.version).toBe(2);
    const snapshot = JSON.parse((await repo.read("org1", "2.snapshot.json"))!.toString("utf8")) as { signed: { meta: Record<string, { version: number }> } };
    expect(snapshot.signed.meta["targets.json"]?.version).toBe(2);
    await expect(repo.publishTargets("org1", json(sign(emptyTargets(3), alice)), async () => {})).rejects.toThrow(/threshold/);
    expect(await repo.publishTargets("org1", json(sign(emptyTargets(3), alice, bob)), async () => {})).toBe(3);
  });

  it("refuses a new root without the current targets, or with targets that are changed, the wrong version or not signed under it, writing nothing", async () => {
    const repo = new TufRepository(dir.path, online, timings);
    const alice = generateIdentity();
    const bob = generateIdentity();
    await repo.updateRoot("org1", json(sign(root(1, [alice, bob], 1), alice)), json(sign(emptyTargets(), alice)));
    const next = json(sign(root(2, [bob], 1), alice, bob));
    const changed = new Metadata(
      Targets.fromJSON({ _type: "targets", spec_version: "1.0.31", version: 2, expires: tufDate(Date.now() + DAY), targets: { "evil/1/x": { length: 1, hashes: { sha256: "00".repeat(32) } } } } as never),
    );
    await expect(repo.updateRoot("org1", next, undefined)).rejects.toThrow(/re-signed under it/);
    await expect(repo.updateRoot("org1", next, json(sign(changed, bob)))).rejects.toThrow(/exactly the current targets/);
    await expect(repo.updateRoot("org1", next, json(sign(emptyTargets(3), bob)))).rejects.toThrow(/must be version 2/);
    // Signed only by the key the new root removes.
    await expect(repo.updateRoot("org1", next, json(sign(emptyTargets(2), alice)))).rejects.toThrow(/new root's targets threshold/);
    expect((await repo.root("org1"))?.signed.version).toBe(1);
    expect((await repo.targets("org1"))?.signed.version).toBe(1);
    expect(await repo.updateRoot("org1", next, json(sign(emptyTargets(2), bob)))).toBe(2);
  });

  it("finishes a root change that a crash cut short after the root was written, before anything is read again", async () => {
    const alice = generateIdentity();
    const bob = generateIdentity();
    await new TufRepository(dir.path, online, timings).updateRoot("org1", json(sign(root(1, [alice], 1), alice)), json(sign(emptyTargets(), alice)));
    // What updateRoot had written when the process died: its record, and the new root alone.
    const root2 = json(sign(root(2, [bob], 1), alice, bob));
    await writeFile(join(dir.path, "org1", "pending-root.json"), JSON.stringify({ root: root2, targets: json(sign(emptyTargets(2), bob)) }));
    await writeFile(join(dir.path, "org1", "2.root.json"), JSON.stringify(root2));

    const restarted = new TufRepository(dir.path, online, timings);
    await restarted.refreshAll();
    expect((await restarted.root("org1"))?.signed.version).toBe(2);
    const targets = await restarted.targets("org1");
    expect(targets?.signed.version).toBe(2);
    expect(() => Metadata.fromJSON(MetadataKind.Root, root2 as never).verifyDelegate("targets", targets!)).not.toThrow();
    const snapshot = JSON.parse((await restarted.read("org1", "2.snapshot.json"))!.toString("utf8")) as { signed: { meta: Record<string, { version: number }> } };
    expect(snapshot.signed.meta["targets.json"]?.version).toBe(2);
    await expect(readFile(join(dir.path, "org1", "pending-root.json"))).rejects.toThrow(/ENOENT/);
  });

  it("re-signs a timestamp that would expire within two refresh periods", async () => {
    const repo = new TufRepository(dir.path, online, { ...timings, timestampTtlMs: 1000, refreshMs: 60_000 });
    const alice = generateIdentity();
    await repo.updateRoot("org1", json(sign(root(1, [alice], 1), alice)), json(sign(emptyTargets(), alice)));
    const before = JSON.parse(await readFile(join(dir.path, "org1", "timestamp.json"), "utf8")) as { signed: { version: number } };
    await repo.refreshAll();
    const after = JSON.parse(await readFile(join(dir.path, "org1", "timestamp.json"), "utf8")) as { signed: { version: number; snapshot_meta?: unknown; meta: Record<string, { version: number }> } };
    expect(after.signed.version).toBe(before.signed.version + 1);
    expect(after.signed.meta["snapshot.json"]?.version).toBe(1);
    expect(Metadata.fromJSON(MetadataKind.Timestamp, after as never).signed.version).toBe(after.signed.version);
  });
});
