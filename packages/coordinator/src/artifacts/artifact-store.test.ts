/**
 * The artifact store on a temporary directory: each organization's upload is its own, an
 * artifact on disk is complete only for an organization that owns it, and the bytes are stored
 * once however many organizations upload them.
 */
import { createHash, randomBytes } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { beforeEach, describe, expect, it } from "vitest";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { ArtifactStore } from "./artifact-store.ts";

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const body = (b: Buffer) => Readable.from([b]);

const dir = useTempDir("flotilla-artifacts-");
let store: ArtifactStore;
beforeEach(async () => {
  store = new ArtifactStore(dir.path);
});

const files = (sub: string) => readdir(join(dir.path, sub)).catch(() => [] as string[]);

describe("ArtifactStore", () => {
  const data = randomBytes(10_000);
  const sha = sha256(data);
  const a = { owner: "org_a", owns: false };
  const b = { owner: "org_b", owns: false };

  it("keeps each organization's upload apart, and shows another's artifact as complete to no one who does not own it", async () => {
    expect(await store.append(a, sha, data.length, 0, body(data.subarray(0, 4000)), false)).toEqual({ complete: false, offset: 4000 });
    // Another organization's upload starts from nothing, and may not write at A's offset.
    expect(await store.state(b, sha, data.length)).toEqual({ complete: false, offset: 0 });
    await expect(store.append(b, sha, data.length, 4000, body(data.subarray(4000)), true)).rejects.toMatchObject({ status: 409 });

    expect(await store.append(a, sha, data.length, 4000, body(data.subarray(4000)), true)).toEqual({ complete: true, length: data.length });
    expect(await files("uploads")).toEqual([]);
    expect(await files("sha256")).toEqual([sha]);
    expect(await store.state({ ...a, owns: true }, sha, data.length)).toEqual({ complete: true, length: data.length });
    // On disk, but B has not uploaded it: not complete for B, whichever way it asks.
    expect(await store.state(b, sha, data.length)).toEqual({ complete: false, offset: 0 });
    expect(await store.append(b, sha, data.length, 0, body(Buffer.alloc(0)), false)).toEqual({ complete: false, offset: 0 });
    expect(await store.uploaded("org_b", sha, data.length)).toBe(0);
    // Nor does its length leak to B: a wrong length is just another upload.
    expect(await store.state(b, sha, data.length + 1)).toEqual({ complete: false, offset: 0 });
  });

  it("checks the bytes of an organization uploading an artifact already on disk, then keeps one copy", async () => {
    await store.append(a, sha, data.length, 0, body(data), true);

    const forged = Buffer.from(data);
    forged[0] = forged[0]! ^ 1;
    await expect(store.append(b, sha, data.length, 0, body(forged), true)).rejects.toMatchObject({ status: 422 });
    expect(await store.state(b, sha, data.length)).toEqual({ complete: false, offset: 0 });
    await expect(store.append(b, sha, data.length, 0, body(data.subarray(0, 100)), true)).rejects.toMatchObject({ status: 400 });
    await expect(store.append(b, sha, data.length, 0, body(Buffer.concat([data, data.subarray(0, 1)])), false)).rejects.toMatchObject({ status: 413 });
    expect(await files("uploads")).toEqual([]);

    expect(await store.append(b, sha, data.length, 0, body(data.subarray(0, 5000)), false)).toEqual({ complete: false, offset: 5000 });
    expect(await store.uploaded("org_b", sha, data.length)).toBe(5000);
    expect(await store.append(b, sha, data.length, 5000, body(data.subarray(5000)), true)).toEqual({ complete: true, length: data.length });
    expect(await files("uploads")).toEqual([]);
    expect(await files("sha256")).toEqual([sha]);
    expect(sha256(await readFile(store.path(sha)))).toBe(sha);
  });

  it("does not read the body for an organization that owns the artifact already", async () => {
    await store.append(a, sha, data.length, 0, body(data), true);
    const garbage = Readable.from([Buffer.from("not the artifact")]);
    expect(await store.append({ ...a, owns: true }, sha, data.length, 0, garbage, true)).toEqual({ complete: true, length: data.length });
    expect(sha256(await readFile(store.path(sha)))).toBe(sha);
  });
});
