import { createHash, randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { afterEach, describe, expect, it } from "vitest";
import { ArtifactRefused, downloadTarget, targetUrlPath, WRITE_BYTES, type DownloadTarget } from "./download.ts";

const tmp = useTempDir("flotilla-download-");
const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/** What the artifact server saw of one request. */
interface Seen {
  path: string;
  range: string | undefined;
  authorization: string | undefined;
  /** Bytes of the body it sent. */
  sent: number;
}

/**
 * A real HTTP server on loopback serving `body` at the target's URL, with single byte ranges
 * unless `ignoreRange`; `chunk` is the size of its writes.
 */
async function serve(body: Buffer, opts: { ignoreRange?: boolean; chunk?: number } = {}): Promise<{ url: string; seen: Seen[]; server: Server }> {
  const seen: Seen[] = [];
  const server = createServer((req, res) => {
    const range = req.headers.range;
    const m = range && !opts.ignoreRange ? /^bytes=(\d+)-$/.exec(range) : null;
    const start = m ? Number(m[1]) : 0;
    const part = body.subarray(start);
    seen.push({ path: req.url ?? "", range, authorization: req.headers.authorization, sent: part.length });
    res.writeHead(m ? 206 : 200, { "content-length": String(part.length) });
    const step = opts.chunk ?? 16 * 1024;
    for (let i = 0; i < part.length; i += step) res.write(part.subarray(i, i + step));
    res.end();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  servers.push(server);
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen, server };
}

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

function download(url: string, target: DownloadTarget) {
  const verifying: number[] = [];
  const result = downloadTarget({
    http: { url, pin: "", token: "device-session" },
    target,
    staging: join(tmp.path, "staging"),
    bytesPerSecond: 0,
    signal: new AbortController().signal,
    progress: () => {},
    verifying: () => verifying.push(1),
  });
  return { result, verifying };
}

const targetOf = (data: Buffer): DownloadTarget => ({ path: "app/1/app.tar.gz", sha256: sha256(data), length: data.length });

describe("downloadTarget", () => {
  it("downloads in one pass with the device's session: the file is the signed bytes, checked, renamed", async () => {
    const data = randomBytes(3 * WRITE_BYTES + 12_345);
    const target = targetOf(data);
    const { url, seen } = await serve(data);
    const { result, verifying } = download(url, target);
    const file = await result;
    expect(file).toBe(join(tmp.path, "staging", target.sha256));
    expect((await readFile(file)).equals(data)).toBe(true);
    expect(await readdir(join(tmp.path, "staging"))).toEqual([target.sha256]);
    expect(seen).toEqual([{ path: targetUrlPath(target), range: undefined, authorization: "Bearer device-session", sent: data.length }]);
    expect(verifying).toHaveLength(1);
  });

  it("writes every byte in order when chunks straddle the reused write buffers and the buffers go round many times", async () => {
    const data = randomBytes(7 * WRITE_BYTES + 54_321);
    const target = targetOf(data);
    const { url } = await serve(data, { chunk: 100_003 });
    const file = await download(url, target).result;
    expect((await readFile(file)).equals(data)).toBe(true);
  });

  it("resumes from the bytes already on disk: asks only for the rest, and the whole file (prefix included) hashes to the signed sha256", async () => {
    const data = randomBytes(2 * WRITE_BYTES + 777);
    const target = targetOf(data);
    const prefix = WRITE_BYTES + 5;
    await mkdir(join(tmp.path, "staging"), { recursive: true });
    await writeFile(join(tmp.path, "staging", `${target.sha256}.part`), data.subarray(0, prefix));
    const { url, seen } = await serve(data);
    const file = await download(url, target).result;
    expect((await readFile(file)).equals(data)).toBe(true);
    expect(seen.map((s) => [s.range, s.sent])).toEqual([[`bytes=${prefix}-`, data.length - prefix]]);
  });

  it("refuses a resumed download whose bytes on disk were altered, though the rest is right, and deletes them", async () => {
    const data = randomBytes(WRITE_BYTES + 4096);
    const target = targetOf(data);
    const altered = Buffer.from(data.subarray(0, 1000));
    altered[10] = altered[10]! ^ 0xff;
    await mkdir(join(tmp.path, "staging"), { recursive: true });
    await writeFile(join(tmp.path, "staging", `${target.sha256}.part`), altered);
    const { url } = await serve(data);
    await expect(download(url, target).result).rejects.toThrow(ArtifactRefused);
    await expect(download(url, target).result).resolves.toBe(join(tmp.path, "staging", target.sha256));
  });

  it("checks a part complete from an earlier attempt without fetching anything", async () => {
    const data = randomBytes(100_000);
    const target = targetOf(data);
    await mkdir(join(tmp.path, "staging"), { recursive: true });
    await writeFile(join(tmp.path, "staging", `${target.sha256}.part`), data);
    const { url, seen } = await serve(data);
    expect((await readFile(await download(url, target).result)).equals(data)).toBe(true);
    expect(seen).toEqual([]);
  });

  it("starts over when the server ignores the range", async () => {
    const data = randomBytes(WRITE_BYTES + 99);
    const target = targetOf(data);
    await mkdir(join(tmp.path, "staging"), { recursive: true });
    await writeFile(join(tmp.path, "staging", `${target.sha256}.part`), randomBytes(5000)); // not even the right prefix
    const { url, seen } = await serve(data, { ignoreRange: true });
    expect((await readFile(await download(url, target).result)).equals(data)).toBe(true);
    expect(seen.map((s) => s.sent)).toEqual([data.length]);
  });

  it("refuses bytes that do not hash to the signed sha256, and keeps nothing", async () => {
    const data = randomBytes(2 * WRITE_BYTES);
    const other = Buffer.from(data);
    other[WRITE_BYTES + 1] = other[WRITE_BYTES + 1]! ^ 1;
    const target = targetOf(data);
    const { url } = await serve(other, { chunk: 1000 });
    await expect(download(url, target).result).rejects.toThrow(`does not match its signed sha256: expected ${target.sha256}, got ${sha256(other)}`);
    expect(await readdir(join(tmp.path, "staging"))).toEqual([]);
  });

  it("keeps what arrived before the connection broke off, and the next attempt resumes from there to the signed bytes", async () => {
    const data = randomBytes(3 * WRITE_BYTES);
    const target = targetOf(data);
    const cut = WRITE_BYTES + 65_536;
    const broken = createServer((_req, res) => {
      res.writeHead(200, { "content-length": String(data.length) });
      res.write(data.subarray(0, cut), () => setTimeout(() => res.socket?.destroy(), 50));
    });
    await new Promise<void>((r) => broken.listen(0, "127.0.0.1", r));
    servers.push(broken);
    await expect(download(`http://127.0.0.1:${(broken.address() as AddressInfo).port}`, target).result).rejects.toThrow(/broke off|cannot reach|aborted|socket hang up/);
    const kept = (await stat(join(tmp.path, "staging", `${target.sha256}.part`))).size;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThanOrEqual(cut);
    const { url, seen } = await serve(data);
    expect((await readFile(await download(url, target).result)).equals(data)).toBe(true);
    expect(seen.map((x) => x.range)).toEqual([`bytes=${kept}-`]);
  });

  it("refuses more bytes than the signed length", async () => {
    const data = randomBytes(50_000);
    const target = { ...targetOf(data), length: 40_000 };
    const { url } = await serve(data);
    await expect(download(url, target).result).rejects.toThrow("is longer than its signed length of 40000 bytes");
  });
});
