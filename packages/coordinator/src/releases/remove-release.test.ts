/**
 * Removing a release goes through RemoveRelease alone, with signed targets that drop exactly that
 * release: PublishTargets refuses targets that drop one (they would skip the check of who needs
 * it), and RemoveRelease refuses targets that drop or change anything else. Real coordinator,
 * real TUF metadata signed by an admin's key.
 */
import { createHash } from "node:crypto";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { Metadata, MetadataKind, Root, Signature, Targets } from "@tufjs/models";
import { afterEach, beforeEach, expect, it } from "vitest";
import { adminv1, ARTIFACTS_PATH, newId, tufKeyId, UPLOAD_COMPLETE_HEADER, UPLOAD_LENGTH_HEADER, UPLOAD_OFFSET_HEADER, type Identity } from "@flotilla/protocol";
import { startTestCoordinator, type TestCoordinator } from "../testing.ts";
import { tufDate } from "../tuf/repository.ts";

const DAY = 86_400_000;
let t: TestCoordinator;
beforeEach(async () => {
  t = await startTestCoordinator();
});
afterEach(async () => {
  await t.close();
});

function sign<T extends Root | Targets>(md: Metadata<T>, by: Identity): string {
  md.sign((data) => new Signature({ keyID: tufKeyId(by.publicKey), sig: Buffer.from(by.sign(data)).toString("hex") }), true);
  return JSON.stringify(md.toJSON());
}

function targets(version: number, entries: Record<string, { data: Buffer; counter: number; version: string }>): Metadata<Targets> {
  const t = Object.fromEntries(
    Object.entries(entries).map(([path, e]) => [
      path,
      { length: e.data.length, hashes: { sha256: createHash("sha256").update(e.data).digest("hex") }, custom: { flotilla: { name: "app", version: e.version, counter: e.counter, kind: "bundle", run: "bin/app" } } },
    ]),
  );
  return Metadata.fromJSON(MetadataKind.Targets, { signatures: [], signed: { _type: "targets", spec_version: "1.0.31", version, expires: tufDate(Date.now() + DAY), targets: t } } as never) as Metadata<Targets>;
}

const refusal = (p: Promise<unknown>) => p.then(() => undefined, (e: unknown) => ConnectError.from(e));

it("takes a removal only from RemoveRelease, with targets that drop exactly that release", async () => {
  const orgId = `org_${newId()}`;
  await t.coord.store.access.createOrg({ id: orgId, name: "acme", createdAt: Date.now() });
  const admin = await t.as(orgId, "admin");
  const client = createClient(adminv1.ReleaseService, t.transport);
  const { onlineKey } = await client.getRepository({}, admin);
  const adminId = tufKeyId(admin.identity.publicKey);
  const onlineId = tufKeyId(Buffer.from(onlineKey, "hex"));
  const key = (hex: string) => ({ keytype: "ed25519", scheme: "ed25519", keyval: { public: hex } });
  const root = new Metadata(
    Root.fromJSON({
      _type: "root", spec_version: "1.0.31", version: 1, expires: tufDate(Date.now() + DAY), consistent_snapshot: true,
      keys: { [adminId]: key(Buffer.from(admin.identity.publicKey).toString("hex")), [onlineId]: key(onlineKey) },
      roles: { root: { keyids: [adminId], threshold: 1 }, targets: { keyids: [adminId], threshold: 1 }, snapshot: { keyids: [onlineId], threshold: 1 }, timestamp: { keyids: [onlineId], threshold: 1 } },
    } as never),
  );
  await client.updateRoot({ rootJson: sign(root, admin.identity), targetsJson: sign(targets(1, {}), admin.identity) }, admin);

  const one = { data: Buffer.from("release one"), counter: 1, version: "1.0" };
  const two = { data: Buffer.from("release two"), counter: 2, version: "2.0" };
  for (const e of [one, two]) {
    const res = await fetch(`${t.coord.url}${ARTIFACTS_PATH}${createHash("sha256").update(e.data).digest("hex")}`, {
      method: "PATCH",
      headers: { ...admin.headers, [UPLOAD_LENGTH_HEADER]: String(e.data.length), [UPLOAD_OFFSET_HEADER]: "0", [UPLOAD_COMPLETE_HEADER]: "?1" },
      body: e.data,
    });
    expect(res.status).toBe(201);
  }
  const both = { "app/1/app": one, "app/2/app": two };
  expect((await client.publishTargets({ targetsJson: sign(targets(2, both), admin.identity) }, admin)).version).toBe(2n);

  // PublishTargets: a dropped release is refused, nothing written.
  const dropped = await refusal(client.publishTargets({ targetsJson: sign(targets(3, { "app/2/app": two }), admin.identity) }, admin));
  expect(dropped?.code).toBe(Code.InvalidArgument);
  expect(dropped?.rawMessage).toMatch(/targets app\/1\/app are missing: a release is removed with `flotilla release rm`/);
  expect((await client.listReleases({}, admin)).releases.map((r) => r.version)).toEqual(["1.0", "2.0"]);

  // RemoveRelease: the targets must drop that release and nothing else.
  const wrong = await refusal(client.removeRelease({ name: "app", version: "1.0", targetsJson: sign(targets(3, { "app/1/app": one }), admin.identity) }, admin));
  expect(wrong?.code).toBe(Code.InvalidArgument);
  expect(wrong?.rawMessage).toMatch(/must list every current target but app\/1\/app, and nothing else/);
  const unsigned = await refusal(client.removeRelease({ name: "app", version: "1.0", targetsJson: JSON.stringify(targets(3, { "app/2/app": two }).toJSON()) }, admin));
  expect(unsigned?.code).toBe(Code.PermissionDenied);
  expect((await client.listReleases({}, admin)).releases.map((r) => r.version)).toEqual(["1.0", "2.0"]);

  // Only the check: nothing changes.
  const checked = await client.removeRelease({ name: "app", version: "1.0" }, admin);
  expect(checked).toMatchObject({ targetsVersion: 0n, running: [], told: [] });
  expect(checked.release?.targetPath).toBe("app/1/app");

  const removed = await client.removeRelease({ name: "app", version: "1.0", targetsJson: sign(targets(3, { "app/2/app": two }), admin.identity) }, admin);
  expect(removed.targetsVersion).toBe(3n);
  const listed = await client.listReleases({}, admin);
  expect(listed.releases.map((r) => r.version)).toEqual(["2.0"]);
  expect(listed.removed.map((r) => [r.version, r.counter])).toEqual([["1.0", 1n]]);
  // Its artifact is no longer served.
  const sha = createHash("sha256").update(one.data).digest("hex");
  expect((await fetch(`${t.coord.url}/tuf/v1/targets/app/1/${sha}.app`, { headers: admin.headers })).status).toBe(404);

  // A deployer may remove releases too, but not collect garbage (covered in gc/garbage.test.ts); a viewer may not remove.
  const viewer = await t.as(orgId, "viewer");
  expect((await refusal(client.removeRelease({ name: "app", version: "2.0" }, viewer)))?.code).toBe(Code.PermissionDenied);
});
