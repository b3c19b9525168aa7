import { createHash, randomBytes } from "node:crypto";

/** The header that carries a session or API token. */
export const AUTHORIZATION_HEADER = "authorization";

/** A new random secret in base64url: 32 bytes, enough that a plain sha256 is a safe hash at rest. */
export function newSecret(bytes = 32): string {
  return randomBytes(bytes).toString("base64url");
}

/** A short random id: lowercase letters and digits. */
export function newId(length = 12): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789";
  const bytes = randomBytes(length);
  let out = "";
  for (const b of bytes) out += alphabet[b % alphabet.length];
  return out;
}

/** sha256 hex of a high-entropy secret, as stored at rest. */
export function hashSecret(secret: string): string {
  return createHash("sha256").update(secret).digest("hex");
}

/** Reads `Bearer <token>` from an authorization header value. */
export function bearerToken(header: string | null): string | undefined {
  const m = /^Bearer ([A-Za-z0-9_.-]{16,200})$/.exec(header ?? "");
  return m?.[1];
}
