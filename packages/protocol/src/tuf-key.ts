/**
 * How Flotilla names ed25519 keys in TUF metadata, the same on the admin's machine, the
 * coordinator and the agent.
 */
import { createHash } from "node:crypto";

/** The TUF key object of an ed25519 public key (32 bytes), as it appears in root metadata. */
export function tufKeyJson(publicKey: Uint8Array): { keytype: "ed25519"; scheme: "ed25519"; keyval: { public: string } } {
  return { keytype: "ed25519", scheme: "ed25519", keyval: { public: Buffer.from(publicKey).toString("hex") } };
}

/**
 * The TUF key id: sha256 (hex) of the key object's canonical JSON, as the TUF specification
 * defines it. With sorted keys and no spaces, this key object's canonical form is plain JSON.
 */
export function tufKeyId(publicKey: Uint8Array): string {
  const hex = Buffer.from(publicKey).toString("hex");
  const canonical = `{"keytype":"ed25519","keyval":{"public":"${hex}"},"scheme":"ed25519"}`;
  return createHash("sha256").update(canonical).digest("hex");
}

/**
 * Canonical JSON as TUF signs it (OLPC form): object keys sorted, no whitespace, only `"` and
 * `\\` escaped in strings, integers only. Throws TypeError on anything else.
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === "boolean") return JSON.stringify(value);
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new TypeError("canonical JSON allows only integers");
    return JSON.stringify(value);
  }
  if (typeof value === "string") return `"${value.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (typeof value === "object") {
    const o = value as Record<string, unknown>;
    return `{${Object.keys(o)
      .sort()
      .filter((k) => o[k] !== undefined)
      .map((k) => `${canonicalJson(k)}:${canonicalJson(o[k])}`)
      .join(",")}}`;
  }
  throw new TypeError(`canonical JSON cannot encode a ${typeof value}`);
}

/**
 * What a join string carries to name an organization's root: its version and the sha256 (hex)
 * of the canonical form of its `signed` part, the bytes its signatures cover. `metadata` is the
 * root metadata's JSON ({signed, signatures}); signatures do not change the digest.
 */
export function tufRootDigest(metadata: unknown): { version: number; sha256: string } {
  const signed = (metadata as { signed?: { _type?: unknown; version?: unknown } } | null)?.signed;
  if (!signed || signed._type !== "root" || typeof signed.version !== "number") throw new TypeError("not root metadata");
  return { version: signed.version, sha256: createHash("sha256").update(canonicalJson(signed)).digest("hex") };
}

/** Paths of the coordinator's HTTP endpoints for artifacts and TUF metadata. */
export const ARTIFACTS_PATH = "/artifacts/v1/";
export const TUF_METADATA_PATH = "/tuf/v1/metadata/";
export const TUF_TARGETS_PATH = "/tuf/v1/targets/";

/** Upload headers (see docs/releases.md): where this request's bytes start, and the total. */
export const UPLOAD_OFFSET_HEADER = "upload-offset";
export const UPLOAD_LENGTH_HEADER = "upload-length";
/** "?1" when this request carries the artifact's last bytes; the upload is then checked. */
export const UPLOAD_COMPLETE_HEADER = "upload-complete";
