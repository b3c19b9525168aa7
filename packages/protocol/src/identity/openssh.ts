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
