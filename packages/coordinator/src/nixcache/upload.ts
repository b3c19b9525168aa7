import { STORE_DIR, fingerprint, toNixBase32, type NarInfo } from "./nix-format.ts";
import { signWith, verifyWith, type NixKeyMaterial } from "./nix-keys.ts";
import { HttpError } from "../server/http.ts";

/** What verifying an upload needs to know about the cache. */
export interface UploadContext {
  /** The organization's keys; those with a seed can sign. */
  keys: NixKeyMaterial[];
  /** The size of the stored NAR with this sha256 (hex), if one is stored. */
  narSize(hex: string): Promise<number | undefined>;
  /** Which of these hash parts the organization's cache already holds. */
  existing(hashParts: string[]): Promise<Set<string>>;
}

/**
 * Checks an uploaded narinfo against the stored NAR, the cache and the organization's keys;
 * returns the signatures to keep (adding the coordinator's where needed) or throws HttpError.
 */
export async function checkUpload(info: NarInfo, hashPart: string, cx: UploadContext): Promise<string[]> {
  const name = info.storePath.slice(STORE_DIR.length + 1);
  if (!name.startsWith(`${hashPart}-`)) throw new HttpError(400, "the narinfo's StorePath does not match its file name");
  if (info.compression !== "none") throw new HttpError(415, "only uncompressed NARs are accepted: copy to the cache URL with ?compression=none");
  if (info.fileHash !== info.narHash || info.fileSize !== info.narSize) throw new HttpError(400, "an uncompressed NAR's FileHash and FileSize must equal its NarHash and NarSize");
  if (info.url !== `nar/${toNixBase32(Buffer.from(info.fileHash, "hex"))}.nar`) throw new HttpError(400, "URL does not name the NAR by its FileHash");
  const stored = await cx.narSize(info.narHash);
  if (stored === undefined) throw new HttpError(409, "upload the NAR before its narinfo");
  if (stored !== info.narSize) throw new HttpError(400, `NarSize ${info.narSize} does not match the stored NAR (${stored} bytes)`);

  const others = info.references.filter((r) => r !== name).map((r) => r.slice(0, 32));
  const present = await cx.existing(others);
  const missing = info.references.filter((r) => r !== name && !present.has(r.slice(0, 32)));
  if (missing.length) throw new HttpError(409, `references not in the cache yet: ${missing.slice(0, 3).join(" ")}${missing.length > 3 ? " ..." : ""}`);

  const text = fingerprint(info);
  const orgNames = new Set(cx.keys.map((k) => k.name));
  const valid: string[] = [];
  for (const sig of info.sigs) {
    const keyName = sig.slice(0, sig.indexOf(":"));
    if (!orgNames.has(keyName)) continue; // another cache's signature: we cannot vouch for it
    if (!verifyWith(cx.keys, sig, text)) throw new HttpError(400, `the signature by ${keyName} does not verify`);
    valid.push(sig);
  }
  if (valid.length) return valid;
  const signers = cx.keys.filter((k) => k.seed);
  if (!signers.length) {
    throw new HttpError(400, "the narinfo carries no signature of the organization's Nix keys, and the coordinator holds none to sign it (flotilla nix-key create)");
  }
  return signers.map((k) => signWith(k, text));
}
