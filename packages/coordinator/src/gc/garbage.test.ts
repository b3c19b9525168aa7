/**
 * Garbage collection against a real coordinator, with artifacts and NARs uploaded over HTTP as
 * admins upload them: `CollectGarbage` with dry_run reports and deletes nothing; without, it
 * deletes exactly what no release needs, gives the organization's storage quota back exactly
 * those bytes, and keeps files another organization still needs. A NAR a NixOS release's
 * closure names (directly or through a reference) survives.
 */
import { createHash } from "node:crypto";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { waitFor } from "@flotilla/protocol/testing";
import { adminv1, ARTIFACTS_PATH, newId, UPLOAD_COMPLETE_HEADER, UPLOAD_LENGTH_HEADER, UPLOAD_OFFSET_HEADER } from "@flotilla/protocol";
import { startTestCoordinator, type TestCoordinator } from "../testing.ts";
import { formatSha256, toNixBase32 } from "../nixcache/nix-format.ts";
import { generateNixKey, KeySealer } from "../nixcache/nix-keys.ts";
import { sealContext } from "../nixcache/nix-service.ts";
import type { ReleaseRow } from "../store/index.ts";

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

let t: TestCoordinator;
beforeEach(async () => {
  // No grace: everything uploaded before a collection is old enough. The schedule stays out of the way.
  t = await startTestCoordinator({ gcGraceMs: 1, gcIntervalMs: 3_600_000 });
});
afterEach(async () => {
  await t.close();
});

async function org(name: string): Promise<{ id: string; token: string; admin: { headers: Record<string, string> } }> {
  const id = `org_${newId()}`;
  await t.coord.store.access.createOrg({ id, name, createdAt: Date.now() });
  const key = generateNixKey("k");
  const sealer = new KeySealer(t.coord.onlineIdentity);
  await t.coord.store.nix.addKey({ orgId: id, name: "k", publicKey: Buffer.from(key.publicKey).toString("base64"), sealedSecret: sealer.seal(key.seed!, sealContext(id, "k")), createdAt: Date.now() });
  const admin = await t.as(id, "admin");
  return { id, token: admin.headers.authorization!.slice("Bearer ".length), admin: { headers: admin.headers } };
}

async function uploadArtifact(token: string, data: Buffer): Promise<string> {
  const res = await fetch(`${t.coord.url}${ARTIFACTS_PATH}${sha256(data)}`, {
    method: "PATCH",
    headers: { authorization: `Bearer ${token}`, [UPLOAD_LENGTH_HEADER]: String(data.length), [UPLOAD_OFFSET_HEADER]: "0", [UPLOAD_COMPLETE_HEADER]: "?1" },
    body: data,
  });
  expect(res.status, await res.clone().text()).toBe(201);
  return sha256(data);
}

const basic = (token: string) => ({ authorization: `Basic ${Buffer.from(`flotilla:${token}`).toString("base64")}` });

async function uploadNar(orgName: string, token: string, nar: Buffer): Promise<string> {
  const hex = sha256(nar);
  const res = await fetch(`${t.coord.url}/nix/${orgName}/nar/${toNixBase32(Buffer.from(hex, "hex"))}.nar`, { method: "PUT", headers: basic(token), body: nar });
  expect(res.status).toBe(200);
  return hex;
}

/** Uploads a NAR and a narinfo naming it for /nix/store/<hashPart>-<name>. */
async function uploadPath(orgName: string, token: string, hashPart: string, name: string, refs: string[]): Promise<{ storePath: string; hex: string; size: number }> {
  const nar = Buffer.from(`the NAR of ${hashPart}-${name}`);
  const hex = await uploadNar(orgName, token, nar);
  const info = [
    `StorePath: /nix/store/${hashPart}-${name}`,
    `URL: nar/${toNixBase32(Buffer.from(hex, "hex"))}.nar`,
    "Compression: none",
    `NarHash: ${formatSha256(hex)}`,
    `NarSize: ${nar.length}`,
    `References: ${refs.join(" ")}`,
  ].join("\n");
  const res = await fetch(`${t.coord.url}/nix/${orgName}/${hashPart}.narinfo`, { method: "PUT", headers: basic(token), body: info });
  expect(res.status, await res.clone().text()).toBe(200);
  return { storePath: `/nix/store/${hashPart}-${name}`, hex, size: nar.length };
}

function releaseRow(orgId: string, name: string, counter: number, kind: string, data: Buffer): ReleaseRow {
  return { orgId, name, counter, version: `1.${counter}`, kind, targetPath: `${name}/${counter}/${name}`, sha256: sha256(data), length: data.length, meta: "{}", createdAt: Date.now() };
}

const files = async (...sub: string[]) => (await readdir(join(t.dataDir, ...sub)).catch(() => [] as string[])).sort();
const hp = (c: string) => c.repeat(32);

describe("garbage collection", () => {
  it("with --dry-run reports and deletes nothing; then frees exactly the unreferenced blobs, and a NAR a NixOS release needs survives", async () => {
    const acme = await org("acme");
    const globex = await org("globex");
    const releases = createClient(adminv1.ReleaseService, t.transport);

    // Artifacts: one released, one shared with globex (which keeps it), one acme's alone.
    const released = Buffer.from("released bundle");
    const shared = Buffer.from("an artifact both organizations uploaded");
    const alone = Buffer.from("an artifact only acme uploaded and never released");
    await uploadArtifact(acme.token, released);
    await uploadArtifact(acme.token, shared);
    await uploadArtifact(globex.token, shared);
    await uploadArtifact(acme.token, alone);

    // The Nix cache: system -> lib (the closure), and an unrelated path, and a NAR no narinfo names.
    const lib = await uploadPath("acme", acme.token, hp("1"), "lib", []);
    const system = await uploadPath("acme", acme.token, hp("2"), "system", [`${hp("1")}-lib`]);
    const unrelated = await uploadPath("acme", acme.token, hp("3"), "unrelated", []);
    const stray = Buffer.from("a NAR uploaded but never named");
    const strayHex = await uploadNar("acme", acme.token, stray);
    // A path the closure manifest lists though no reference leads to it.
    const extra = await uploadPath("acme", acme.token, hp("4"), "extra", []);
    // The release's closure manifest lists the system and extra: lib is needed through the system's reference.
    const sri = (p: { hex: string }) => `sha256-${Buffer.from(p.hex, "hex").toString("base64")}`;
    const nixos = Buffer.from(
      JSON.stringify({
        storePath: system.storePath,
        closure: [system, extra].map((p) => ({ path: p.storePath, narHash: sri(p), narSize: p.size })),
      }),
    );
    await uploadArtifact(acme.token, nixos);
    await t.coord.store.releases.addReleases([releaseRow(acme.id, "webapp", 1, "bundle", released), releaseRow(acme.id, "os", 1, "nixos", nixos)]);

    const usageBefore = await t.coord.store.storage.usage(acme.id);
    const artifactsBefore = await files("artifacts", "sha256");
    const narsBefore = await files("nix", "sha256");
    const expectedBytes = shared.length + alone.length + unrelated.size + stray.length;

    const dry = await releases.collectGarbage({ dryRun: true }, acme.admin);
    expect(dry.dryRun).toBe(true);
    expect(dry.organization).toMatchObject({ artifacts: 2n, nars: 2n, storePaths: 1n, bytes: BigInt(expectedBytes) });
    expect(dry.filesDeleted).toBe(3n);
    expect(dry.bytesDeleted).toBe(BigInt(alone.length + unrelated.size + stray.length));
    expect(await files("artifacts", "sha256")).toEqual(artifactsBefore);
    expect(await files("nix", "sha256")).toEqual(narsBefore);
    expect(await t.coord.store.storage.usage(acme.id)).toEqual(usageBefore);
    expect((await fetch(`${t.coord.url}/nix/acme/${hp("3")}.narinfo`, { headers: basic(acme.token) })).status).toBe(200);

    // A deployer may not collect.
    const deployer = await t.as(acme.id, "deployer");
    const refused = await releases.collectGarbage({ dryRun: true }, deployer).catch((e: unknown) => ConnectError.from(e));
    expect(refused).toBeInstanceOf(ConnectError);
    expect((refused as ConnectError).code).toBe(Code.PermissionDenied);

    const real = await releases.collectGarbage({}, acme.admin);
    expect(real.dryRun).toBe(false);
    expect(real.organization).toMatchObject({ artifacts: 2n, nars: 2n, storePaths: 1n, bytes: BigInt(expectedBytes) });
    expect(real.filesDeleted).toBe(3n);
    expect(real.bytesDeleted).toBe(BigInt(alone.length + unrelated.size + stray.length));
    expect(await files("artifacts", "sha256")).toEqual([sha256(released), sha256(shared), sha256(nixos)].sort());
    expect(await files("nix", "sha256")).toEqual([lib.hex, system.hex, extra.hex].sort());
    expect(await t.coord.store.storage.usage(acme.id)).toEqual({ usedBytes: usageBefore.usedBytes - expectedBytes, reservedBytes: 0 });
    expect(await t.coord.store.releases.ownsArtifact(acme.id, sha256(shared), shared.length)).toBe(false);
    expect(await t.coord.store.releases.ownsArtifact(globex.id, sha256(shared), shared.length)).toBe(true);
    expect(strayHex).not.toBe(lib.hex);

    // What a release needs is still served; the collected path is gone, and may be uploaded again.
    for (const h of [hp("1"), hp("2"), hp("4")]) expect((await fetch(`${t.coord.url}/nix/acme/${h}.narinfo`, { headers: basic(acme.token) })).status).toBe(200);
    expect((await fetch(`${t.coord.url}/nix/acme/${hp("3")}.narinfo`, { headers: basic(acme.token) })).status).toBe(404);
    await uploadPath("acme", acme.token, hp("3"), "unrelated", []);
    expect((await fetch(`${t.coord.url}/nix/acme/${hp("3")}.narinfo`, { headers: basic(acme.token) })).status).toBe(200);

    // Nothing left: a second collection frees nothing.
    await t.coord.store.nix.deletePaths(acme.id, [hp("3")]);
    const again = await releases.collectGarbage({}, globex.admin);
    expect(again.organization).toMatchObject({ artifacts: 1n, bytes: BigInt(shared.length) });
    expect(again.filesDeleted).toBe(1n);
    expect(await files("artifacts", "sha256")).toEqual([sha256(released), sha256(nixos)].sort());
  });

  it("keeps what was uploaded within the grace period: it may be on its way into a release", async () => {
    await t.close();
    t = await startTestCoordinator({ gcGraceMs: 3_600_000, gcIntervalMs: 3_600_000 });
    const acme = await org("acme");
    await uploadArtifact(acme.token, Buffer.from("just uploaded"));
    await uploadNar("acme", acme.token, Buffer.from("a NAR just uploaded"));
    const r = await createClient(adminv1.ReleaseService, t.transport).collectGarbage({}, acme.admin);
    expect(r.organization).toMatchObject({ artifacts: 0n, nars: 0n, bytes: 0n });
    expect(r.filesDeleted).toBe(0n);
    expect(await files("artifacts", "sha256")).toHaveLength(1);
    expect(await files("nix", "sha256")).toHaveLength(1);
  });

  it("runs by itself every --gc-interval-ms, for every organization, and gives the room back", async () => {
    await t.close();
    // A grace of 2 s keeps the uploads until their usage is checked (with 1 ms, a loaded
    // machine's scheduled collection could come first); the collection runs every 200 ms.
    t = await startTestCoordinator({ gcGraceMs: 2000, gcIntervalMs: 200 });
    const acme = await org("acme");
    const globex = await org("globex");
    const data = Buffer.from("uploaded, never released");
    await uploadArtifact(acme.token, data);
    await uploadArtifact(globex.token, Buffer.from("globex's, never released"));
    expect((await t.coord.store.storage.usage(acme.id)).usedBytes).toBe(data.length);
    await waitFor("the scheduled collection to delete both", async () => (await files("artifacts", "sha256")).length === 0, 20_000, 50);
    expect(await t.coord.store.storage.usage(acme.id)).toEqual({ usedBytes: 0, reservedBytes: 0 });
    expect((await t.coord.store.storage.usage(globex.id)).usedBytes).toBe(0);
  });
});
