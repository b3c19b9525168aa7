/**
 * OpenSSH key formats, so admins can use the ed25519 keys they already have.
 * Public key line: "ssh-ed25519 <base64 wire blob> [comment]" (RFC 8709, RFC 4253 §6.6).
 */
import { PUBLIC_KEY_LENGTH, parseNodeId } from "./identity.ts";

function readString(buf: Buffer, offset: number): { value: Buffer; next: number } {
  if (offset + 4 > buf.length) throw new Error("truncated key");
  const len = buf.readUInt32BE(offset);
  const start = offset + 4;
  if (start + len > buf.length) throw new Error("truncated key");
  return { value: buf.subarray(start, start + len), next: start + len };
}

/** Parses an OpenSSH ed25519 public key line into the raw 32-byte key. */
export function parseOpenSshPublicKey(line: string): { publicKey: Uint8Array; comment: string } {
  const parts = line.trim().split(/\s+/);
  if (parts[0] !== "ssh-ed25519" || !parts[1]) {
    throw new Error("only ssh-ed25519 public keys are supported (expected 'ssh-ed25519 AAAA...')");
  }
  const blob = Buffer.from(parts[1], "base64");
  const type = readString(blob, 0);
  if (type.value.toString() !== "ssh-ed25519") throw new Error("the key blob is not ssh-ed25519");
  const key = readString(blob, type.next);
  if (key.value.length !== PUBLIC_KEY_LENGTH || key.next !== blob.length) throw new Error("malformed ssh-ed25519 key");
  return { publicKey: new Uint8Array(key.value), comment: parts.slice(2).join(" ") };
}

/** Formats a raw key as an OpenSSH public key line. */
export function formatOpenSshPublicKey(publicKey: Uint8Array, comment = ""): string {
  const type = Buffer.from("ssh-ed25519");
  const blob = Buffer.alloc(4 + type.length + 4 + publicKey.length);
  blob.writeUInt32BE(type.length, 0);
  type.copy(blob, 4);
  blob.writeUInt32BE(publicKey.length, 4 + type.length);
  Buffer.from(publicKey).copy(blob, 8 + type.length);
  return `ssh-ed25519 ${blob.toString("base64")}${comment ? ` ${comment}` : ""}`;
}

/** Accepts either an OpenSSH public key line or a Flotilla node id. */
export function parseAnyPublicKey(text: string): Uint8Array {
  const t = text.trim();
  if (t.startsWith("ssh-")) return parseOpenSshPublicKey(t).publicKey;
  try {
    return parseNodeId(t);
  } catch {
    throw new Error("not a public key: expected 'ssh-ed25519 AAAA...' or a Flotilla node id");
  }
}

const PKCS8_ED25519_PREFIX = Buffer.from("302e020100300506032b657004220420", "hex");

/**
 * Reads an unencrypted OpenSSH ed25519 private key ("-----BEGIN OPENSSH PRIVATE KEY-----",
 * the openssh-key-v1 format of OpenSSH's PROTOCOL.key) and returns it as PKCS#8 DER, which
 * node:crypto loads. Encrypted keys are refused: use them through ssh-agent instead.
 */
export function openSshPrivateKeyToPkcs8(pem: string): Buffer {
  const body = pem
    .replace(/-----(BEGIN|END) OPENSSH PRIVATE KEY-----/g, "")
    .replace(/\s+/g, "");
  const buf = Buffer.from(body, "base64");
  const magic = Buffer.from("openssh-key-v1\0");
  if (!buf.subarray(0, magic.length).equals(magic)) throw new Error("not an OpenSSH private key");
  let off = magic.length;
  const next = () => {
    const r = readString(buf, off);
    off = r.next;
    return r.value;
  };
  const cipher = next().toString();
  const kdf = next().toString();
  next(); // kdf options
  if (cipher !== "none" || kdf !== "none") {
    throw new Error("the OpenSSH key is encrypted with a passphrase; load it into ssh-agent, or use an unencrypted key");
  }
  if (off + 4 > buf.length || buf.readUInt32BE(off) !== 1) throw new Error("expected exactly one key in the file");
  off += 4;
  next(); // public key blob
  const priv = next();
  if (priv.length < 8 || priv.readUInt32BE(0) !== priv.readUInt32BE(4)) throw new Error("damaged OpenSSH private key");
  let p = 8;
  const field = () => {
    const r = readString(priv, p);
    p = r.next;
    return r.value;
  };
  if (field().toString() !== "ssh-ed25519") throw new Error("only ssh-ed25519 keys are supported");
  field(); // public key
  const secret = field();
  if (secret.length !== 64) throw new Error("damaged ssh-ed25519 private key");
  return Buffer.concat([PKCS8_ED25519_PREFIX, secret.subarray(0, 32)]);
}
