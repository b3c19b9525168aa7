import { createHash } from "node:crypto";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { generateIdentity, newId } from "@flotilla/protocol";
import { openSession } from "../access/sessions.ts";
import { startTestCoordinator, type TestCoordinator } from "../testing.ts";
import { formatSha256, toNixBase32 } from "./nix-format.ts";
import { generateNixKey, KeySealer } from "./nix-keys.ts";
import { sealContext } from "./nix-service.ts";

let t: TestCoordinator;
beforeEach(async () => {
  t = await startTestCoordinator();
});
afterEach(async () => {
  await t.close();
});

const basic = (token: string) => ({ authorization: `Basic ${Buffer.from(`flotilla:${token}`).toString("base64")}` });

async function org(name: string): Promise<string> {
  const id = `org_${newId()}`;
  await t.coord.store.access.createOrg({ id, name, createdAt: Date.now() });
  return id;
}

async function deviceSession(orgId: string): Promise<{ deviceId: string; token: string }> {
  const now = Date.now();
  const tokenId = `jt_${newId()}`;
  await t.coord.store.devices.createJoinToken({
    id: tokenId, orgId, secretHash: "x", labels: {}, usesAllowed: 0, uses: 0, expiresAt: now + 60_000, autoApprove: false, createdAt: now, revokedAt: null,
  });
  const enrolled = await t.coord.store.devices.enrollDevice(
    tokenId,
    { id: `dev_${newId()}`, publicKey: generateIdentity().id, name: "kiosk", facts: {}, agentVersion: "0.1.0", capabilities: [] },
    now,
  );
  if (!enrolled.ok) throw new Error(enrolled.reason);
  const { token } = await openSession(t.coord.store, { kind: "device", id: enrolled.device.id, orgId }, 60_000);
  return { deviceId: enrolled.device.id, token };
}

describe("who may read an organization's Nix cache", () => {
  it("lets an approved device of the organization read, by id or name, and not a pending one", async () => {
    const orgId = await org("acme");
    const { deviceId, token } = await deviceSession(orgId);
    expect((await fetch(`${t.coord.url}/nix/acme/nix-cache-info`, { headers: basic(token) })).status).toBe(403);

    await t.coord.store.devices.updateDevice(orgId, deviceId, { lifecycle: "approved" }, Date.now());
    expect((await fetch(`${t.coord.url}/nix/acme/nix-cache-info`, { headers: basic(token) })).status).toBe(200);
    expect((await fetch(`${t.coord.url}/nix/${orgId}/nix-cache-info`, { headers: basic(token) })).status).toBe(200);
    const put = await fetch(`${t.coord.url}/nix/acme/nar/${"0".repeat(52)}.nar`, { method: "PUT", headers: basic(token), body: "x" });
    expect(put.status).toBe(403);
  });

  it("keeps one organization's devices out of another's cache", async () => {
    await org("acme");
    const otherOrg = await org("globex");
    const { deviceId, token } = await deviceSession(otherOrg);
    await t.coord.store.devices.updateDevice(otherOrg, deviceId, { lifecycle: "approved" }, Date.now());
    expect((await fetch(`${t.coord.url}/nix/acme/nix-cache-info`, { headers: basic(token) })).status).toBe(403);
    expect((await fetch(`${t.coord.url}/nix/globex/nix-cache-info`, { headers: basic(token) })).status).toBe(200);
  });

  it("answers 401 with a Basic challenge without credentials, and 404 for paths and files it does not hold", async () => {
    const orgId = await org("acme");
    const res = await fetch(`${t.coord.url}/nix/acme/nix-cache-info`);
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toMatch(/^Basic /);
    expect((await fetch(`${t.coord.url}/nix/%E0%A4%A/nix-cache-info`)).status).toBe(400);

    const viewer = basic((await t.as(orgId, "viewer")).headers.authorization!.slice("Bearer ".length));
    expect((await fetch(`${t.coord.url}/nix/acme/${"a".repeat(32)}.narinfo`, { headers: viewer })).status).toBe(404);
    expect((await fetch(`${t.coord.url}/nix/acme/nar/${"0".repeat(52)}.nar`, { headers: viewer })).status).toBe(404);
    expect((await fetch(`${t.coord.url}/nix/acme/log/whatever`, { headers: viewer })).status).toBe(404);
  });
});

describe("NAR uploads", () => {
  it("keeps a NAR whose sha256 matches its name, and keeps nothing of one that does not or is compressed", async () => {
    const orgId = await org("acme");
    const deployer = basic((await t.as(orgId, "deployer")).headers.authorization!.slice("Bearer ".length));
    const body = Buffer.from("not really a NAR, but bytes with a hash");
    const name = toNixBase32(createHash("sha256").update(body).digest());
    const put = (file: string, data: Buffer) => fetch(`${t.coord.url}/nix/acme/nar/${file}`, { method: "PUT", headers: deployer, body: data });
    const stored = async () => readdir(join(t.dataDir, "nix", "sha256")).catch(() => []);

    expect((await put(`${name}.nar`, Buffer.concat([body, Buffer.from("!")]))).status).toBe(400);
    expect(await stored()).toEqual([]);
    expect((await put(`${name}.nar.xz`, body)).status).toBe(415);
    expect((await put(`${name}.nar`, body)).status).toBe(200);
    expect(await stored()).toEqual([createHash("sha256").update(body).digest("hex")]);
    // Stored is not served: only a narinfo of the organization naming it makes it readable.
    expect((await fetch(`${t.coord.url}/nix/acme/nar/${name}.nar`, { headers: deployer })).status).toBe(404);
  });

  it("lets a narinfo name only a NAR its own organization uploaded", async () => {
    const [a, b] = [await org("acme"), await org("globex")];
    const sealer = new KeySealer(t.coord.onlineIdentity);
    for (const orgId of [a, b]) {
      const key = generateNixKey("k");
      await t.coord.store.nix.addKey({ orgId, name: "k", publicKey: Buffer.from(key.publicKey).toString("base64"), sealedSecret: sealer.seal(key.seed!, sealContext(orgId, "k")), createdAt: Date.now() });
    }
    const deployerOf = async (orgId: string) => basic((await t.as(orgId, "deployer")).headers.authorization!.slice("Bearer ".length));
    const [da, db] = [await deployerOf(a), await deployerOf(b)];
    const nar = Buffer.from("the bytes of acme's NAR");
    const hex = createHash("sha256").update(nar).digest("hex");
    const hashPart = "0".repeat(31) + "1";
    const narinfo = [
      `StorePath: /nix/store/${hashPart}-secret-config`,
      `URL: nar/${toNixBase32(Buffer.from(hex, "hex"))}.nar`,
      "Compression: none",
      `FileHash: ${formatSha256(hex)}`,
      `FileSize: ${nar.length}`,
      `NarHash: ${formatSha256(hex)}`,
      `NarSize: ${nar.length}`,
      "References: ",
    ].join("\n");
    const put = (orgName: string, file: string, headers: Record<string, string>, body: string | Buffer) =>
      fetch(`${t.coord.url}/nix/${orgName}/${file}`, { method: "PUT", headers, body });

    expect((await put("acme", `nar/${toNixBase32(Buffer.from(hex, "hex"))}.nar`, da, nar)).status).toBe(200);
    const stolen = await put("globex", `${hashPart}.narinfo`, db, narinfo);
    expect(stolen.status).toBe(409);
    expect((await fetch(`${t.coord.url}/nix/globex/${hashPart}.narinfo`, { headers: db })).status).toBe(404);

    expect((await put("acme", `${hashPart}.narinfo`, da, narinfo)).status).toBe(200);
    const served = await fetch(`${t.coord.url}/nix/acme/${hashPart}.narinfo`, { headers: da });
    expect(await served.text()).toMatch(/^Sig: k:/m);
    expect((await fetch(`${t.coord.url}/nix/acme/nar/${toNixBase32(Buffer.from(hex, "hex"))}.nar`, { headers: da })).status).toBe(200);
    expect((await fetch(`${t.coord.url}/nix/globex/nar/${toNixBase32(Buffer.from(hex, "hex"))}.nar`, { headers: db })).status).toBe(404);
  });

  it("never replaces a stored narinfo: the same one again is fine, other content for the path is refused with 409", async () => {
    const orgId = await org("acme");
    const key = generateNixKey("k");
    const sealer = new KeySealer(t.coord.onlineIdentity);
    await t.coord.store.nix.addKey({ orgId, name: "k", publicKey: Buffer.from(key.publicKey).toString("base64"), sealedSecret: sealer.seal(key.seed!, sealContext(orgId, "k")), createdAt: Date.now() });
    const deployer = basic((await t.as(orgId, "deployer")).headers.authorization!.slice("Bearer ".length));
    const hashPart = "0".repeat(31) + "2";
    const put = (file: string, body: string | Buffer) => fetch(`${t.coord.url}/nix/acme/${file}`, { method: "PUT", headers: deployer, body });
    async function upload(nar: Buffer): Promise<{ status: number; text: string }> {
      const hex = createHash("sha256").update(nar).digest("hex");
      expect((await put(`nar/${toNixBase32(Buffer.from(hex, "hex"))}.nar`, nar)).status).toBe(200);
      const res = await put(
        `${hashPart}.narinfo`,
        [
          `StorePath: /nix/store/${hashPart}-system`,
          `URL: nar/${toNixBase32(Buffer.from(hex, "hex"))}.nar`,
          "Compression: none",
          `NarHash: ${formatSha256(hex)}`,
          `NarSize: ${nar.length}`,
          "References: ",
        ].join("\n"),
      );
      return { status: res.status, text: await res.text() };
    }
    const served = async () => (await fetch(`${t.coord.url}/nix/acme/${hashPart}.narinfo`, { headers: deployer })).text();

    const genuine = Buffer.from("the released system");
    expect((await upload(genuine)).status).toBe(200);
    const first = await served();
    expect(first).toContain(`NarHash: ${formatSha256(createHash("sha256").update(genuine).digest("hex"))}`);

    expect(await upload(genuine)).toEqual({ status: 200, text: "already stored\n" });
    const other = await upload(Buffer.from("an attacker's system"));
    expect(other.status).toBe(409);
    expect(other.text).toMatch(/already in the cache with other content .*never replaced/);
    expect(await served()).toBe(first);
    const audit = await t.coord.store.audit.listAudit(orgId, { limit: 10 });
    expect(audit.filter((e) => e.action === "NixUpload").map((e) => e.outcome)).toEqual(expect.arrayContaining(["ok", "refused"]));
  });
});
