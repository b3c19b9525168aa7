/**
 * Browser sessions: the session token travels in an HttpOnly, SameSite=Strict cookie that script
 * cannot read; every cookie-authenticated call must also carry a CSRF token in a header. The CSRF
 * token is derived from the session token, so the server keeps no extra state, and it is handed
 * to the page once, in the login response, which another origin cannot read.
 */
import { createHash, timingSafeEqual } from "node:crypto";

export const SESSION_COOKIE = "flotilla_session";
export const CSRF_HEADER = "x-flotilla-csrf";

/** The CSRF token that goes with a session token. */
export function csrfTokenFor(sessionToken: string): string {
  return createHash("sha256").update("flotilla/csrf/v1\0").update(sessionToken).digest("base64url");
}

/** Whether `csrf` (the header's value) is the token for this session, compared in constant time. */
export function checkCsrf(sessionToken: string, csrf: string | null): boolean {
  if (!csrf) return false;
  const want = Buffer.from(csrfTokenFor(sessionToken));
  const got = Buffer.from(csrf);
  return got.length === want.length && timingSafeEqual(got, want);
}

/** A cookie's value from a Cookie header, or undefined. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  for (const part of (header ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    if (part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim() || undefined;
  }
  return undefined;
}

/** The Set-Cookie value that opens a browser session. */
export function sessionCookie(token: string, opts: { maxAgeSeconds: number; secure: boolean }): string {
  const attrs = [`${SESSION_COOKIE}=${token}`, "Path=/", "HttpOnly", "SameSite=Strict", `Max-Age=${opts.maxAgeSeconds}`];
  if (opts.secure) attrs.push("Secure");
  return attrs.join("; ");
}

/** The Set-Cookie value that ends a browser session. */
export function clearSessionCookie(secure: boolean): string {
  return sessionCookie("", { maxAgeSeconds: 0, secure });
}
