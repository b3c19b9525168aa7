/**
 * A device move between organizations of one coordinator, endorsed by the old organization's
 * TUF root keys. The agent trusts releases only through its organization's root; a move hands
 * it another organization's root, so the move must be signed by keys the agent already trusts
 * for that: the root role's keys of the organization it leaves, up to the root's threshold.
 * Neither the coordinator alone nor an admin of the destination organization can produce one.
 */
import { canonicalJson } from "./tuf-key.ts";
import { tufKeyId } from "./tuf-key.ts";
import { verifySignature } from "./identity/index.ts";

/** What a move says: this device leaves `fromOrg` for `toOrg`, whose root is `toRoot` (when it has one). */
export interface DeviceMoveStatement {
  deviceId: string;
  fromOrg: string;
  toOrg: string;
  /** The destination organization's root (version, tufRootDigest sha256), or null when it has none yet. */
  toRoot: { version: number; sha256: string } | null;
}

/** A statement with signatures by root keys of the organization the device leaves. */
export interface DeviceMoveEndorsement extends DeviceMoveStatement {
  signatures: { keyid: string; sig: string }[];
}

/** A move that does not verify against the root the device trusts. */
export class DeviceMoveRefused extends Error {
  override name = "DeviceMoveRefused";
}

/** The bytes the old organization's root keys sign. */
export function deviceMoveMessage(s: DeviceMoveStatement): Uint8Array {
  const body = canonicalJson({ _type: "flotilla-device-move", device: s.deviceId, from: s.fromOrg, to: s.toOrg, to_root: s.toRoot });
  return new TextEncoder().encode(`flotilla/device-move/v1\n${body}`);
}

/** Parses an endorsement's JSON; throws DeviceMoveRefused for anything malformed. */
export function parseDeviceMove(text: string): DeviceMoveEndorsement {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new DeviceMoveRefused("the move endorsement is not JSON");
  }
  const e = v as Partial<DeviceMoveEndorsement> | null;
  const root = e?.toRoot;
  const rootOk = root === null || (typeof root === "object" && typeof root?.version === "number" && typeof root.sha256 === "string");
  if (
    !e ||
    typeof e.deviceId !== "string" ||
    typeof e.fromOrg !== "string" ||
    typeof e.toOrg !== "string" ||
    !rootOk ||
    !Array.isArray(e.signatures) ||
    !e.signatures.every((s) => typeof s?.keyid === "string" && typeof s.sig === "string")
  ) {
    throw new DeviceMoveRefused("the move endorsement is malformed");
  }
  return { deviceId: e.deviceId, fromOrg: e.fromOrg, toOrg: e.toOrg, toRoot: root ?? null, signatures: e.signatures };
}

interface RootJson {
  signed?: { _type?: string; keys?: Record<string, { keytype?: string; keyval?: { public?: string } }>; roles?: { root?: { keyids?: string[]; threshold?: number } } };
}

/**
 * Checks that `e` is signed by at least the threshold of distinct root-role keys of `rootMetadata`
 * (TUF root metadata JSON, {signed, signatures}). Throws DeviceMoveRefused otherwise.
 */
export function verifyDeviceMove(e: DeviceMoveEndorsement, rootMetadata: unknown): void {
  const signed = (rootMetadata as RootJson | null)?.signed;
  const role = signed?.roles?.root;
  if (signed?._type !== "root" || !role?.keyids || typeof role.threshold !== "number" || role.threshold < 1) {
    throw new DeviceMoveRefused("the trusted root metadata names no root role");
  }
  const message = deviceMoveMessage(e);
  const good = new Set<string>();
  for (const s of e.signatures) {
    if (!role.keyids.includes(s.keyid) || good.has(s.keyid)) continue;
    const key = signed.keys?.[s.keyid];
    if (key?.keytype !== "ed25519" || typeof key.keyval?.public !== "string") continue;
    const pub = Buffer.from(key.keyval.public, "hex");
    // The key id must be the key's own: a root cannot list a key under another key's id.
    if (tufKeyId(pub) !== s.keyid) continue;
    if (verifySignature(pub, message, Buffer.from(s.sig, "hex"))) good.add(s.keyid);
  }
  if (good.size < role.threshold) {
    throw new DeviceMoveRefused(
      `the move is signed by ${good.size} of the ${role.threshold} root keys the old organization's root requires (root keys: ${role.keyids.join(", ")})`,
    );
  }
}
