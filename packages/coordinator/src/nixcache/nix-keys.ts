/**
 * Nix signing keys (`name:base64`, ed25519; libutil/signature): the secret form carries 64 bytes
 * (seed, then public key), the public form 32. Secret keys rest encrypted under a key derived
 * from the coordinator's online key (online.key), so a database dump alone (PostgreSQL, backups) cannot sign.
 */
import { createCipheriv, createDecipheriv, createHash, createPrivateKey, randomBytes, sign, type KeyObject } from "node:crypto";
import { generateIdentity, verifySignature, type Identity } from "@flotilla/protocol";

/** Key names: what Nix accepts before the colon, kept to a safe alphabet. */
export const NIX_KEY_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** A parsed key: the public half always, the 32-byte seed when it is a secret key. */
export interface NixKeyMaterial {
  name: string;
  publicKey: Uint8Array;
  seed?: Uint8Array;
}

/** Parses `name:base64` of a secret (64 bytes) or public (32 bytes) key; throws on anything else. */
export function parseNixKey(text: string): NixKeyMaterial {
  const i = text.trim().indexOf(":");
  const name = text.trim().slice(0, i);
  const b64 = text.trim().slice(i + 1);
  if (i <= 0 || !NIX_KEY_NAME.test(name)) throw new Error("expected a Nix key `name:base64` with a name of letters, digits, . _ -");
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) throw new Error("the key after the colon is not base64");
  const raw = Buffer.from(b64, "base64");
  if (raw.length === 32) return { name, publicKey: new Uint8Array(raw) };
  if (raw.length !== 64) throw new Error(`a Nix key is 32 (public) or 64 (secret) bytes, not ${raw.length}`);
  const seed = new Uint8Array(raw.subarray(0, 32));
  const publicKey = new Uint8Array(raw.subarray(32));
  if (!Buffer.from(publicOfSeed(seed)).equals(Buffer.from(publicKey))) throw new Error("the secret key's public half does not match its seed");
  return { name, publicKey, seed };
}

/** Generates a fresh key pair named `name`. */
export function generateNixKey(name: string): NixKeyMaterial {
  if (!NIX_KEY_NAME.test(name)) throw new Error("key names are letters, digits, . _ - (up to 128)");
  const id = generateIdentity();
  return { name, publicKey: id.publicKey, seed: seedOf(id.privateKey) };
}

/** `name:base64` of the public key, as `trusted-public-keys` wants it. */
export function formatPublicKey(key: Pick<NixKeyMaterial, "name" | "publicKey">): string {
  return `${key.name}:${Buffer.from(key.publicKey).toString("base64")}`;
}

/** `name:base64(signature)` over `data`, the form of a narinfo `Sig` line. */
export function signWith(key: NixKeyMaterial, data: string): string {
  if (!key.seed) throw new Error(`key ${key.name} has no secret half`);
  const sig = sign(null, Buffer.from(data), privateKeyOf(key.seed));
  return `${key.name}:${sig.toString("base64")}`;
}

/** Whether `sig` (`name:base64`) is a valid signature of `data` by one of `keys` with that name. */
export function verifyWith(keys: Pick<NixKeyMaterial, "name" | "publicKey">[], sig: string, data: string): boolean {
  const i = sig.indexOf(":");
  const name = sig.slice(0, i);
  const raw = Buffer.from(sig.slice(i + 1), "base64");
  if (i <= 0 || raw.length !== 64) return false;
  return keys.some((k) => k.name === name && verifySignature(k.publicKey, Buffer.from(data), raw));
}

function privateKeyOf(seed: Uint8Array): KeyObject {
  // PKCS#8 wrapping of a raw ed25519 seed (RFC 8410): a fixed 16-byte prefix, then the seed.
  const prefix = Buffer.from("302e020100300506032b657004220420", "hex");
  return createPrivateKey({ key: Buffer.concat([prefix, seed]), format: "der", type: "pkcs8" });
}

function seedOf(key: KeyObject): Uint8Array {
  const jwk = key.export({ format: "jwk" });
  return new Uint8Array(Buffer.from(jwk.d ?? "", "base64url"));
}

function publicOfSeed(seed: Uint8Array): Uint8Array {
  const jwk = privateKeyOf(seed).export({ format: "jwk" });
  return new Uint8Array(Buffer.from(jwk.x ?? "", "base64url"));
}

/**
 * Seals and opens secret keys at rest with AES-256-GCM under a key derived from the
 * coordinator's online key (ed25519 signatures are deterministic, so signing a fixed label always
 * yields the same secret). Losing `online.key` loses the ability to sign with these keys.
 */
export class KeySealer {
  private readonly key: Buffer;

  constructor(identity: Identity) {
    const secret = identity.sign(Buffer.from("flotilla nix-key sealing v1"));
    this.key = createHash("sha256").update("flotilla nix-key sealing v1\0").update(secret).digest();
  }

  seal(seed: Uint8Array, aad: string): string {
    const iv = randomBytes(12);
    const c = createCipheriv("aes-256-gcm", this.key, iv);
    c.setAAD(Buffer.from(aad));
    const body = Buffer.concat([c.update(seed), c.final()]);
    return `v1:${Buffer.concat([iv, c.getAuthTag(), body]).toString("base64")}`;
  }

  open(sealed: string, aad: string): Uint8Array {
    if (!sealed.startsWith("v1:")) throw new Error("unknown sealed key format");
    const raw = Buffer.from(sealed.slice(3), "base64");
    const d = createDecipheriv("aes-256-gcm", this.key, raw.subarray(0, 12));
    d.setAAD(Buffer.from(aad));
    d.setAuthTag(raw.subarray(12, 28));
    return new Uint8Array(Buffer.concat([d.update(raw.subarray(28)), d.final()]));
  }
}
