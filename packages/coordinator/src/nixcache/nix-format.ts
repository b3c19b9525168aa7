/**
 * Nix's binary-cache formats: nix-base32, narinfo files, and signatures over a store path's
 * fingerprint. Follows Nix's libutil/hash.cc (base32), libstore/nar-info.cc (narinfo) and
 * libstore/path-info.cc (`fingerprint`: `1;storePath;narHash;narSize;refs`).
 */

import { fromNixBase32, toNixBase32 } from "@flotilla/protocol";

/** Nix's base32 is shared with the release closure manifests' NarHash parsing, in @flotilla/protocol. */
export { fromNixBase32, toNixBase32 };

/**
 * A sha256 as narinfo files write it. Accepts `sha256:<base32>`, `sha256:<hex>` and SRI
 * `sha256-<base64>`; returns the digest as hex, or throws.
 */
export function parseSha256(text: string): string {
  const sri = /^sha256-([A-Za-z0-9+/]{43}=)$/.exec(text);
  if (sri) return Buffer.from(sri[1]!, "base64").toString("hex");
  const m = /^sha256:([0-9a-z]+)$/.exec(text);
  if (m && m[1]!.length === 64 && /^[0-9a-f]+$/.test(m[1]!)) return m[1]!;
  if (m && m[1]!.length === 52) return Buffer.from(fromNixBase32(m[1]!, 32)).toString("hex");
  throw new Error(`not a sha256 hash: ${JSON.stringify(text.slice(0, 80))}`);
}

/** `sha256:<base32>`, the form Nix signs and prints. */
export function formatSha256(hex: string): string {
  return `sha256:${toNixBase32(Buffer.from(hex, "hex"))}`;
}

export const STORE_DIR = "/nix/store";
/** A store path's base name: 32 base32 characters, a dash, a name Nix accepts. */
export const STORE_PATH_NAME = /^[0123456789abcdfghijklmnpqrsvwxyz]{32}-[A-Za-z0-9+\-._?=]{1,211}$/;
/** The hash part of a store path, as in `<hash>.narinfo`. */
export const HASH_PART = /^[0123456789abcdfghijklmnpqrsvwxyz]{32}$/;

/** What a narinfo says about one store path, parsed and checked. */
export interface NarInfo {
  /** Full path, /nix/store/<hash>-<name>. */
  storePath: string;
  url: string;
  compression: string;
  /** sha256 of the file as stored (the NAR, when uncompressed), hex. */
  fileHash: string;
  fileSize: number;
  /** sha256 of the NAR, hex. */
  narHash: string;
  narSize: number;
  /** Base names of the referenced store paths, sorted. */
  references: string[];
  /** Base name of the deriver, or "". */
  deriver: string;
  /** `name:base64` signatures. */
  sigs: string[];
  /** Content address, or "". */
  ca: string;
}

const MAX_NARINFO = 256 * 1024;
const MAX_REFERENCES = 10_000;
/** Above what Nix or a sane closure produces; refuses sizes that would not fit a double. */
export const MAX_NAR_SIZE = 64 * 1024 ** 3;

function storePathName(path: string, what: string): string {
  if (!path.startsWith(`${STORE_DIR}/`)) throw new Error(`${what} is not under ${STORE_DIR}`);
  const name = path.slice(STORE_DIR.length + 1);
  if (!STORE_PATH_NAME.test(name)) throw new Error(`${what} is not a valid store path`);
  return name;
}

function size(text: string | undefined, what: string): number {
  if (!text || !/^\d{1,15}$/.test(text)) throw new Error(`${what} is missing or not a number`);
  const n = Number(text);
  if (n > MAX_NAR_SIZE) throw new Error(`${what} is too large`);
  return n;
}

/** Parses a narinfo from the network; throws an Error naming the first problem. */
export function parseNarInfo(text: string): NarInfo {
  if (text.length > MAX_NARINFO) throw new Error("narinfo too large");
  const fields = new Map<string, string>();
  const sigs: string[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    const i = line.indexOf(": ");
    if (i <= 0) throw new Error(`malformed narinfo line ${JSON.stringify(line.slice(0, 80))}`);
    const key = line.slice(0, i);
    const value = line.slice(i + 2);
    if (key === "Sig") sigs.push(value);
    else if (fields.has(key)) throw new Error(`duplicate narinfo field ${key}`);
    else fields.set(key, value);
  }
  const storePath = fields.get("StorePath") ?? "";
  storePathName(storePath, "StorePath");
  const refs = (fields.get("References") ?? "").split(" ").filter(Boolean);
  if (refs.length > MAX_REFERENCES) throw new Error("too many references");
  for (const r of refs) if (!STORE_PATH_NAME.test(r)) throw new Error(`invalid reference ${JSON.stringify(r.slice(0, 80))}`);
  const deriver = fields.get("Deriver") ?? "";
  if (deriver && (!STORE_PATH_NAME.test(deriver) || !deriver.endsWith(".drv"))) throw new Error("invalid Deriver");
  for (const s of sigs) if (!/^[^:\s]{1,128}:[A-Za-z0-9+/]{86}==$/.test(s)) throw new Error("malformed Sig");
  const url = fields.get("URL") ?? "";
  if (!/^nar\/[0-9a-z]{1,128}\.nar(\.[a-z0-9]{1,8})?$/.test(url)) throw new Error("URL must be nar/<hash>.nar[.ext]");
  const narHash = parseSha256(fields.get("NarHash") ?? "");
  const compression = fields.get("Compression") ?? "bzip2";
  const fileHashText = fields.get("FileHash");
  return {
    storePath,
    url,
    compression,
    fileHash: fileHashText ? parseSha256(fileHashText) : narHash,
    fileSize: fields.has("FileSize") ? size(fields.get("FileSize"), "FileSize") : size(fields.get("NarSize"), "NarSize"),
    narHash,
    narSize: size(fields.get("NarSize"), "NarSize"),
    references: [...new Set(refs)].sort(),
    deriver,
    sigs,
    ca: (fields.get("CA") ?? "").slice(0, 1024),
  };
}

/** Writes a narinfo as Nix's HTTP binary cache serves it. */
export function formatNarInfo(info: NarInfo): string {
  const lines = [
    `StorePath: ${info.storePath}`,
    `URL: ${info.url}`,
    `Compression: ${info.compression}`,
    `FileHash: ${formatSha256(info.fileHash)}`,
    `FileSize: ${info.fileSize}`,
    `NarHash: ${formatSha256(info.narHash)}`,
    `NarSize: ${info.narSize}`,
    `References: ${info.references.join(" ")}`,
  ];
  if (info.deriver) lines.push(`Deriver: ${info.deriver}`);
  for (const s of info.sigs) lines.push(`Sig: ${s}`);
  if (info.ca) lines.push(`CA: ${info.ca}`);
  return `${lines.join("\n")}\n`;
}

/** The text a narinfo signature signs: `1;storePath;narHash;narSize;refs` with full paths. */
export function fingerprint(info: Pick<NarInfo, "storePath" | "narHash" | "narSize" | "references">): string {
  const refs = info.references.map((r) => `${STORE_DIR}/${r}`).join(",");
  return `1;${info.storePath};${formatSha256(info.narHash)};${info.narSize};${refs}`;
}
