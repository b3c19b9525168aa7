import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  randomBytes,
  sign as cryptoSign,
  verify as cryptoVerify,
  type KeyObject,
} from "node:crypto";
import { chmod, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { openSshPrivateKeyToPkcs8 } from "./openssh.ts";

/** Length in bytes of an ed25519 public key. */
export const PUBLIC_KEY_LENGTH = 32;

/**
 * An ed25519 key pair: the identity of a coordinator, an agent or an admin.
 * The public key is the node id.
 */
export interface Identity {
  readonly privateKey: KeyObject;
  /** Raw 32-byte ed25519 public key. */
  readonly publicKey: Uint8Array;
  /** The node id: `publicKey` in text form, see {@link nodeId}. */
  readonly id: string;
  sign(data: Uint8Array): Uint8Array;
}

/** The text form of a public key, as `flotilla id` prints it: base64url without padding. */
export function nodeId(publicKey: Uint8Array): string {
  return Buffer.from(publicKey).toString("base64url");
}

/** Parses a node id back into a raw public key; throws on anything but 32 bytes of base64url. */
export function parseNodeId(id: string): Uint8Array {
  if (!/^[A-Za-z0-9_-]{43}$/.test(id)) {
    throw new Error("not a node id: expected 43 characters of base64url");
  }
  return new Uint8Array(Buffer.from(id, "base64url"));
}

/**
 * The pin of a public key: base64url(sha256(raw key)). Join strings carry the coordinator's pin,
 * so an agent can tell the real coordinator from an impostor without any CA.
 */
export function keyPin(publicKey: Uint8Array): string {
  return createHash("sha256").update(publicKey).digest("base64url");
}

/** A short, human-comparable fingerprint, in the style of OpenSSH: `SHA256:...`. */
export function fingerprint(publicKey: Uint8Array): string {
  return `SHA256:${createHash("sha256").update(publicKey).digest("base64").replace(/=+$/, "")}`;
}

export function identityFromPrivateKey(privateKey: KeyObject): Identity {
  if (privateKey.asymmetricKeyType !== "ed25519") {
    throw new Error(`expected an ed25519 key, got ${privateKey.asymmetricKeyType ?? "unknown"}`);
  }
  const publicKey = rawPublicKey(createPublicKey(privateKey));
  return {
    privateKey,
    publicKey,
    id: nodeId(publicKey),
    sign: (data) => new Uint8Array(cryptoSign(null, data, privateKey)),
  };
}

export function generateIdentity(): Identity {
  return identityFromPrivateKey(generateKeyPairSync("ed25519").privateKey);
}

/** Raw 32 bytes of an ed25519 public KeyObject. */
export function rawPublicKey(key: KeyObject): Uint8Array {
  const jwk = key.export({ format: "jwk" });
  if (jwk.crv !== "Ed25519" || typeof jwk.x !== "string") throw new Error("not an ed25519 public key");
  return new Uint8Array(Buffer.from(jwk.x, "base64url"));
}

/** A KeyObject for a raw 32-byte ed25519 public key. */
export function publicKeyObject(publicKey: Uint8Array): KeyObject {
  if (publicKey.length !== PUBLIC_KEY_LENGTH) throw new Error("an ed25519 public key has 32 bytes");
  return createPublicKey({
    key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(publicKey).toString("base64url") },
    format: "jwk",
  });
}

/** Verifies an ed25519 signature; false (never a throw) for malformed keys or signatures. */
export function verifySignature(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.length !== PUBLIC_KEY_LENGTH || signature.length !== 64) return false;
  try {
    return cryptoVerify(null, data, publicKeyObject(publicKey), signature);
  } catch {
    return false;
  }
}

/**
 * Loads the identity kept at `path` (PKCS#8 PEM, mode 0600), creating it on first use.
 * The file is written to a temporary name and renamed, so a crash never leaves half a key.
 */
export async function loadOrCreateIdentity(path: string): Promise<Identity> {
  try {
    return await loadIdentity(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  const identity = generateIdentity();
  await saveIdentity(path, identity);
  return identity;
}

/** Loads a private key file: PKCS#8 PEM (as Flotilla writes) or an OpenSSH ed25519 key. */
export async function loadIdentity(path: string): Promise<Identity> {
  const pem = await readFile(path, "utf8");
  if (pem.includes("BEGIN OPENSSH PRIVATE KEY")) {
    return identityFromPrivateKey(createPrivateKey({ key: openSshPrivateKeyToPkcs8(pem), format: "der", type: "pkcs8" }));
  }
  return identityFromPrivateKey(createPrivateKey(pem));
}

export async function saveIdentity(path: string, identity: Identity): Promise<void> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  const pem = identity.privateKey.export({ format: "pem", type: "pkcs8" }).toString();
  const tmp = `${path}.${randomBytes(4).toString("hex")}.tmp`;
  await writeFile(tmp, pem, { mode: 0o600 });
  await chmod(tmp, 0o600);
  await rename(tmp, path);
}
