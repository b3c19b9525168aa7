/**
 * Storage quotas against a real coordinator: an organization's deployers cannot store artifacts
 * or NARs past its quota, a refused upload leaves nothing behind, other organizations keep their
 * room, and an upload abandoned half-way is removed (its room given back) after a while.
 */
import { createHash, randomBytes } from "node:crypto";
import { request } from "node:http";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ARTIFACTS_PATH, newId, UPLOAD_COMPLETE_HEADER, UPLOAD_LENGTH_HEADER, UPLOAD_OFFSET_HEADER } from "@flotilla/protocol";
import { waitFor } from "@flotilla/protocol/testing";
import { startTestCoordinator, type TestCoordinator } from "../testing.ts";
import { toNixBase32 } from "../nixcache/nix-format.ts";

const KiB = 1024;
const MiB = 1024 * KiB;
const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

let t: TestCoordinator | undefined;
afterEach(async () => {
  await t?.close();
  t = undefined;
});

async function start(options: Parameters<typeof startTestCoordinator>[0]): Promise<TestCoordinator> {
  t = await startTestCoordinator(options);
  return t;
}

async function org(c: TestCoordinator, name: string): Promise<{ id: string; token: string }> {
  const id = `org_${newId()}`;
  await c.coord.store.access.createOrg({ id, name, createdAt: Date.now() });
  const token = (await c.as(id, "deployer")).headers.authorization!.slice("Bearer ".length);
  return { id, token };
}

const files = (c: TestCoordinator, ...sub: string[]) => readdir(join(c.dataDir, ...sub)).catch(() => [] as string[]);

async function uploadState(c: TestCoordinator, token: string, data: Buffer): Promise<{ status: number; body: { error?: string; offset?: number } }> {
  const res = await fetch(`${c.coord.url}${ARTIFACTS_PATH}${sha256(data)}`, {
    headers: { authorization: `Bearer ${token}`, [UPLOAD_LENGTH_HEADER]: String(data.length) },
  });
  return { status: res.status, body: (await res.json()) as { error?: string; offset?: number } };
}

async function patch(c: TestCoordinator, token: string, data: Buffer, part = data, complete = true): Promise<{ status: number; body: { error?: string } }> {
  const res = await fetch(`${c.coord.url}${ARTIFACTS_PATH}${sha256(data)}`, {
    method: "PATCH",
    headers: {
      authorization: `Bearer ${token}`,
      [UPLOAD_LENGTH_HEADER]: String(data.length),
      [UPLOAD_OFFSET_HEADER]: "0",
      ...(complete ? { [UPLOAD_COMPLETE_HEADER]: "?1" } : {}),
    },
    body: part,
  });
  return { status: res.status, body: (await res.json()) as { error?: string } };
}

const narName = (data: Buffer) => `${toNixBase32(createHash("sha256").update(data).digest())}.nar`;
const basic = (token: string) => `Basic ${Buffer.from(`flotilla:${token}`).toString("base64")}`;

/** PUTs a NAR; with `chunked`, without a Content-Length, in pieces, as a streaming client does. */
function putNar(c: TestCoordinator, orgName: string, token: string, data: Buffer, chunked = false): Promise<{ status: number; text: string } | "broken"> {
  return new Promise((resolve) => {
    const req = request(`${c.coord.url}/nix/${orgName}/nar/${narName(data)}`, {
      method: "PUT",
      agent: false,
      headers: { authorization: basic(token), ...(chunked ? {} : { "content-length": String(data.length) }) },
    });
    req.on("response", (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => (text += d));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
      res.on("error", () => resolve("broken"));
    });
    req.on("error", () => resolve("broken"));
    if (!chunked) return void req.end(data);
    let at = 0;
    const next = () => {
      if (at >= data.length) return void req.end();
      const piece = data.subarray(at, at + 64 * KiB);
      at += piece.length;
      if (req.write(piece)) setImmediate(next);
      else req.once("drain", next);
    };
    next();
  });
}

describe("storage quotas", () => {
  it("refuses an artifact upload that would pass the organization's quota, up front, keeping nothing, and leaves other organizations' room alone", async () => {
    const c = await start({ storageQuota: 1 * MiB });
    const acme = await org(c, "acme");
    const globex = await org(c, "globex");
    const first = randomBytes(700 * KiB);
    const second = randomBytes(700 * KiB);

    expect((await patch(c, acme.token, first)).status).toBe(201);
    // Asked where the upload starts, the coordinator already says it will not fit.
    const asked = await uploadState(c, acme.token, second);
    expect(asked.status).toBe(413);
    expect(asked.body.error).toBe(
      "this upload of 700 KiB would pass organization acme's storage quota of 1 MiB: 700 KiB is in use (0 B of it by unfinished uploads)",
    );
    // Sending the bytes anyway is refused too, and keeps none of them.
    const sent = await patch(c, acme.token, second);
    expect(sent.status).toBe(413);
    expect(sent.body.error).toBe(asked.body.error);
    expect(await files(c, "artifacts", "uploads")).toEqual([]);
    expect(await files(c, "artifacts", "sha256")).toEqual([sha256(first)]);

    // Another organization's quota is its own.
    expect((await patch(c, globex.token, second)).status).toBe(201);
    expect((await files(c, "artifacts", "sha256")).sort()).toEqual([sha256(first), sha256(second)].sort());
  });

  it("applies per-organization quotas by name or id, and the default to every other organization, whatever its name", async () => {
    const c = await start({ storageQuota: 1 * MiB, storageQuotaOrgs: { acme: 2 * MiB } });
    const acme = await org(c, "acme");
    const named = await org(c, "constructor");
    const data = randomBytes(1500 * KiB);
    expect((await patch(c, acme.token, data)).status).toBe(201);
    const refused = await patch(c, named.token, data);
    expect(refused.status).toBe(413);
    expect(refused.body.error).toContain("organization constructor's storage quota of 1 MiB");
  });

  it("counts an unfinished upload at its full declared length, so concurrent uploads cannot together pass the quota", async () => {
    const c = await start({ storageQuota: 1 * MiB });
    const acme = await org(c, "acme");
    const [a, b] = [randomBytes(600 * KiB), randomBytes(600 * KiB)];

    // A began and stopped after 1 KiB: its 600 KiB stay reserved for it.
    expect((await patch(c, acme.token, a, a.subarray(0, KiB), false)).status).toBe(200);
    expect((await patch(c, acme.token, b)).status).toBe(413);
    // A resumes within its reservation.
    const rest = await fetch(`${c.coord.url}${ARTIFACTS_PATH}${sha256(a)}`, {
      method: "PATCH",
      headers: { authorization: `Bearer ${acme.token}`, [UPLOAD_LENGTH_HEADER]: String(a.length), [UPLOAD_OFFSET_HEADER]: String(KiB), [UPLOAD_COMPLETE_HEADER]: "?1" },
      body: a.subarray(KiB),
    });
    expect(rest.status).toBe(201);

    // Two uploads at once, each of which fits only alone: one is refused.
    const [x, y] = [randomBytes(300 * KiB), randomBytes(300 * KiB)];
    const both = await Promise.all([patch(c, acme.token, x), patch(c, acme.token, y)]);
    expect(both.map((r) => r.status).sort()).toEqual([201, 413]);
    expect(await files(c, "artifacts", "uploads")).toEqual([]);
    expect(await files(c, "artifacts", "sha256")).toHaveLength(2);
  });

  it("refuses a NAR past the quota, whether its size is declared or only streamed, keeping nothing of it", async () => {
    const c = await start({ storageQuota: 1 * MiB });
    const acme = await org(c, "acme");
    const globex = await org(c, "globex");
    const [first, declared, streamed] = [randomBytes(700 * KiB), randomBytes(700 * KiB), randomBytes(700 * KiB)];

    expect(await putNar(c, "acme", acme.token, first)).toEqual({ status: 200, text: "stored\n" });
    expect(await putNar(c, "acme", acme.token, declared)).toEqual({
      status: 413,
      text: "this upload of 700 KiB would pass organization acme's storage quota of 1 MiB: 700 KiB is in use (0 B of it by unfinished uploads)\n",
    });
    // Streamed without a declared size, it is refused once what arrived passes the quota.
    expect(await putNar(c, "acme", acme.token, streamed, true)).toEqual({
      status: 413,
      text: expect.stringMatching(/^this upload of [\d.]+ KiB would pass organization acme's storage quota of 1 MiB: 700 KiB is in use \(0 B of it by unfinished uploads\)\n$/),
    });
    expect(await files(c, "nix", "sha256")).toEqual([sha256(first)]);
    expect(await files(c, "nix", "tmp")).toEqual([]);

    // The same bytes count for each organization that stores them; globex has room of its own.
    expect(await putNar(c, "globex", globex.token, first, true)).toEqual({ status: 200, text: "stored\n" });
    expect(await putNar(c, "globex", globex.token, streamed, true)).toEqual({ status: 413, text: expect.stringContaining("globex's storage quota of 1 MiB") });
    expect(await files(c, "nix", "sha256")).toEqual([sha256(first)]);
  });
});

describe("abandoned uploads", () => {
  it("removes an upload left unfinished for longer than the stale-upload age, and gives its reserved room back", async () => {
    const c = await start({ storageQuota: 1 * MiB, staleUploadAfterMs: 500 });
    const acme = await org(c, "acme");
    const [abandoned, next] = [randomBytes(900 * KiB), randomBytes(900 * KiB)];

    expect((await patch(c, acme.token, abandoned, abandoned.subarray(0, 10 * KiB), false)).status).toBe(200);
    expect(await files(c, "artifacts", "uploads")).toHaveLength(1);
    expect((await uploadState(c, acme.token, next)).status).toBe(413);

    await waitFor("the abandoned upload to be removed", async () => ((await files(c, "artifacts", "uploads")).length === 0 ? true : undefined), 15_000, 50);
    expect(await uploadState(c, acme.token, abandoned)).toEqual({ status: 200, body: { complete: false, offset: 0 } });
    expect((await patch(c, acme.token, next)).status).toBe(201);
  });
});
