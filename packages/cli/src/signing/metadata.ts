/**
 * Building and signing TUF metadata on the admin's machine (docs/architecture.md, decision 3): the coordinator
 * never holds the keys of root and targets.
 */
import { Key, Metadata, Root, Signature, type MetadataKind, type Targets } from "@tufjs/models";
import { tufKeyId } from "@flotilla/protocol";
import type { Signer } from "./signers.ts";

/** TUF's date form: seconds precision, Z. */
export function tufDate(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, "Z");
}

export const SPEC_VERSION = "1.0.31";

/** Adds every signer's signature over the metadata's canonical form. */
export async function signMetadata(md: Metadata<Root | Targets>, signers: Signer[]): Promise<void> {
  // @tufjs/models computes the canonical bytes only inside its synchronous sign(); capture them.
  let bytes: Buffer | undefined;
  md.sign((data) => {
    bytes = data;
    return new Signature({ keyID: "capture", sig: "" });
  }, true);
  delete md.signatures.capture;
  if (!bytes) throw new Error("could not compute the metadata's canonical form");
  for (const s of signers) {
    md.signatures[s.keyId] = new Signature({ keyID: s.keyId, sig: Buffer.from(await s.sign(bytes)).toString("hex") });
  }
}

function ed25519Key(publicKeyHex: string): Key {
  return new Key({
    keyID: tufKeyId(Buffer.from(publicKeyHex, "hex")),
    keyType: "ed25519",
    scheme: "ed25519",
    keyVal: { public: publicKeyHex },
  });
}

/**
 * The next root: the previous one's admin keys plus `add`, minus `remove`, with `threshold`
 * (default: the previous one, or 1) for both root and targets; snapshot and timestamp the
 * coordinator's online key.
 */
export function nextRoot(opts: {
  previous: Root | undefined;
  add: Uint8Array[];
  remove: string[];
  threshold?: number;
  onlineKeyHex: string;
  expiresMs: number;
}): Root {
  const admin = new Map<string, Key>();
  for (const id of opts.previous?.roles.root?.keyIDs ?? []) {
    const k = opts.previous?.keys[id];
    if (k) admin.set(id, k);
  }
  for (const pk of opts.add) {
    const k = ed25519Key(Buffer.from(pk).toString("hex"));
    admin.set(k.keyID, k);
  }
  for (const id of opts.remove) {
    if (!admin.delete(id)) throw new Error(`key ${id} is not a signing key of this organization`);
  }
  const threshold = opts.threshold ?? opts.previous?.roles.root?.threshold ?? 1;
  if (threshold < 1 || threshold > admin.size) {
    throw new Error(`threshold ${threshold} needs at least that many signing keys (there would be ${admin.size})`);
  }
  const online = ed25519Key(opts.onlineKeyHex);
  const keys: Record<string, unknown> = { [online.keyID]: online.toJSON() };
  for (const [id, k] of admin) keys[id] = k.toJSON();
  const ids = [...admin.keys()].sort();
  // Role is not exported by @tufjs/models; build the root from its JSON form instead.
  return Root.fromJSON({
    _type: "root",
    spec_version: SPEC_VERSION,
    version: (opts.previous?.version ?? 0) + 1,
    expires: tufDate(opts.expiresMs),
    consistent_snapshot: true,
    keys,
    roles: {
      root: { keyids: ids, threshold },
      targets: { keyids: ids, threshold },
      snapshot: { keyids: [online.keyID], threshold: 1 },
      timestamp: { keyids: [online.keyID], threshold: 1 },
    },
  } as never);
}

/** Parses metadata JSON the coordinator returned (unverified: only the admin's own keys sign). */
export function parseMetadata<T extends Root | Targets>(kind: MetadataKind, json: string): Metadata<T> {
  return Metadata.fromJSON(kind as MetadataKind.Root, JSON.parse(json)) as unknown as Metadata<T>;
}
