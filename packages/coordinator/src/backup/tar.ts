/**
 * The little of the tar format a backup needs: POSIX ustar entries for regular files and
 * directories, with a PAX header for a path longer than ustar holds or a size past 8 GiB. Written
 * and read as streams, so memory use does not grow with the size of an artifact.
 */
import type { Readable } from "node:stream";

const BLOCK = 512;
const MAX_USTAR_SIZE = 0o77777777777;

/** A damaged, truncated or foreign archive: restore refuses it with this message. */
export class ArchiveError extends Error {
  override name = "ArchiveError";
}

export interface EntryHeader {
  path: string;
  type: "file" | "dir";
  mode: number;
  size: number;
  mtimeMs: number;
}

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, "0") + "\0";
}

function ustarHeader(name: string, type: string, mode: number, size: number, mtimeMs: number): Buffer {
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, "utf8");
  h.write(octal(mode & 0o7777, 8), 100, "ascii");
  h.write(octal(0, 8), 108, "ascii");
  h.write(octal(0, 8), 116, "ascii");
  h.write(octal(size, 12), 124, "ascii");
  h.write(octal(Math.floor(mtimeMs / 1000), 12), 136, "ascii");
  h.write("        ", 148, "ascii");
  h.write(type, 156, "ascii");
  h.write("ustar\0", 257, "ascii");
  h.write("00", 263, "ascii");
  let sum = 0;
  for (const b of h) sum += b;
  h.write(octal(sum, 7) + " ", 148, "ascii");
  return h;
}

function padding(size: number): Buffer {
  return Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  let len = body.length + 1;
  while (String(len).length + Buffer.byteLength(body) !== len) len = String(len).length + Buffer.byteLength(body);
  return `${len}${body}`;
}

/** The header blocks of one entry (a PAX header first when ustar cannot hold the path or size). */
export function entryHeader(e: EntryHeader): Buffer {
  const name = e.type === "dir" && !e.path.endsWith("/") ? `${e.path}/` : e.path;
  const records: string[] = [];
  if (Buffer.byteLength(name) > 99) records.push(paxRecord("path", name));
  if (e.size > MAX_USTAR_SIZE) records.push(paxRecord("size", String(e.size)));
  const main = ustarHeader(records.length ? "flotilla-long-entry" : name, e.type === "dir" ? "5" : "0", e.mode, records.length && e.size > MAX_USTAR_SIZE ? 0 : e.size, e.mtimeMs);
  if (!records.length) return main;
  const pax = Buffer.from(records.join(""), "utf8");
  return Buffer.concat([ustarHeader("PaxHeader", "x", 0o644, pax.length, e.mtimeMs), pax, padding(pax.length), main]);
}

/** The padding after an entry's `size` bytes of content. */
export function entryPadding(size: number): Buffer {
  return padding(size);
}

/** The two empty blocks that end an archive. */
export function archiveEnd(): Buffer {
  return Buffer.alloc(2 * BLOCK);
}

/** Pulls exact byte counts out of a stream of chunks. */
class ByteReader {
  private buf: Buffer = Buffer.alloc(0);
  private readonly it: AsyncIterator<Buffer>;
  constructor(source: Readable) {
    this.it = source[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
  }

  private async fill(n: number): Promise<boolean> {
    while (this.buf.length < n) {
      const next = await this.it.next();
      if (next.done) return false;
      this.buf = this.buf.length ? Buffer.concat([this.buf, next.value]) : next.value;
    }
    return true;
  }

  async take(n: number): Promise<Buffer> {
    if (!(await this.fill(n))) throw new ArchiveError("it ends early (truncated)");
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Yields the next `n` bytes in pieces. */
  async *pieces(n: number): AsyncGenerator<Buffer> {
    let left = n;
    while (left > 0) {
      if (!this.buf.length && !(await this.fill(1))) throw new ArchiveError("it ends early (truncated)");
      const piece = this.buf.subarray(0, Math.min(left, this.buf.length));
      this.buf = this.buf.subarray(piece.length);
      left -= piece.length;
      yield piece;
    }
  }
}

function field(h: Buffer, start: number, len: number): string {
  const raw = h.subarray(start, start + len);
  const end = raw.indexOf(0);
  return raw.subarray(0, end < 0 ? len : end).toString("utf8");
}

function octalField(h: Buffer, start: number, len: number, what: string): number {
  const text = field(h, start, len).trim();
  if (!/^[0-7]*$/.test(text)) throw new ArchiveError(`an entry's ${what} is not a number (damaged)`);
  return text ? parseInt(text, 8) : 0;
}

function parsePax(data: Buffer): Record<string, string> {
  const out: Record<string, string> = {};
  let off = 0;
  while (off < data.length) {
    const space = data.indexOf(0x20, off);
    const len = space < 0 ? NaN : Number(data.subarray(off, space).toString("ascii"));
    if (!Number.isInteger(len) || len <= space - off || off + len > data.length) throw new ArchiveError("an extended header is damaged");
    const record = data.subarray(space + 1, off + len - 1).toString("utf8");
    const eq = record.indexOf("=");
    if (eq < 0) throw new ArchiveError("an extended header is damaged");
    out[record.slice(0, eq)] = record.slice(eq + 1);
    off += len;
  }
  return out;
}

/**
 * Reads an archive's entries in order. `onEntry` must consume the content (all of `content`)
 * before returning. Anything but regular files and directories, a bad header checksum or an
 * archive that ends early is an ArchiveError.
 */
export async function readArchive(source: Readable, onEntry: (e: EntryHeader, content: AsyncGenerator<Buffer>) => Promise<void>): Promise<void> {
  const r = new ByteReader(source);
  let pax: Record<string, string> = {};
  for (;;) {
    const h = await r.take(BLOCK);
    if (h.every((b) => b === 0)) {
      const second = await r.take(BLOCK);
      if (!second.every((b) => b === 0)) throw new ArchiveError("an empty block in the middle (damaged)");
      return;
    }
    const stored = octalField(h, 148, 8, "checksum");
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : h[i]!;
    if (sum !== stored) throw new ArchiveError("an entry's header checksum does not match (damaged)");
    if (field(h, 257, 6) !== "ustar") throw new ArchiveError("an entry is not in the ustar format");
    const type = field(h, 156, 1) || "0";
    let size = octalField(h, 124, 12, "size");
    if (type === "x") {
      const data = Buffer.concat(await collect(r.pieces(size)));
      await r.take(padding(size).length);
      pax = parsePax(data);
      continue;
    }
    if (type !== "0" && type !== "5") throw new ArchiveError(`an entry of type '${type}' (only files and directories belong in a backup)`);
    const prefix = field(h, 345, 155);
    const path = pax.path ?? (prefix ? `${prefix}/${field(h, 0, 100)}` : field(h, 0, 100));
    if (pax.size !== undefined) size = Number(pax.size);
    pax = {};
    const content = r.pieces(type === "5" ? 0 : size);
    await onEntry({ path: path.replace(/\/$/, ""), type: type === "5" ? "dir" : "file", mode: octalField(h, 100, 8, "mode"), size, mtimeMs: octalField(h, 136, 12, "time") * 1000 }, content);
    // Whatever the callback left unread is skipped, so the next header lines up.
    for await (const piece of content) void piece;
    await r.take(padding(type === "5" ? 0 : size).length);
  }
}

async function collect(gen: AsyncGenerator<Buffer>): Promise<Buffer[]> {
  const out: Buffer[] = [];
  for await (const b of gen) out.push(b);
  return out;
}
