/**
 * Password login for the web UI, at POST /auth/login (JSON {organization, name, password}).
 * Success sets an HttpOnly, SameSite=Strict session cookie and returns the CSRF token that every
 * cookie-authenticated call must send in the x-flotilla-csrf header. Failed attempts are rate
 * limited per member and per source address.
 */
import type http from "node:http";
import type http2 from "node:http2";
import { hashSecret } from "@flotilla/protocol";
import type { ServiceContext } from "../context.ts";
import { clearSessionCookie, csrfTokenFor, readCookie, SESSION_COOKIE, sessionCookie } from "./cookies.ts";
import { hashPassword, verifyPassword } from "./password.ts";
import { LoginRateLimiter } from "./rate-limit.ts";
import { openSession } from "./sessions.ts";

type Request = http.IncomingMessage | http2.Http2ServerRequest;
type Response = http.ServerResponse | http2.Http2ServerResponse;

const MAX_BODY = 4096;

function send(res: Response, status: number, body: unknown, headers: Record<string, string | string[]> = {}): void {
  res.writeHead(status, { "content-type": "application/json", "cache-control": "no-store", ...headers });
  res.end(JSON.stringify(body));
}

async function readBody(req: Request): Promise<string | undefined> {
  let size = 0;
  const chunks: Buffer[] = [];
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString("utf8");
}

/** Handles /auth/login and /auth/logout; returns false for any other path. */
export function webLoginHandler(ctx: ServiceContext, opts: { secureCookies: boolean; limiter?: LoginRateLimiter }) {
  const limiter = opts.limiter ?? new LoginRateLimiter();
  // Verifying against a real hash when the member does not exist keeps timing from telling
  // which names exist.
  const decoy = hashPassword("flotilla-decoy-password");

  async function login(req: Request, res: Response): Promise<void> {
    const text = await readBody(req);
    let body: { organization?: unknown; name?: unknown; password?: unknown };
    try {
      body = text === undefined ? {} : (JSON.parse(text) as typeof body);
    } catch {
      body = {};
    }
    const { organization, name, password } = body;
    if (typeof organization !== "string" || typeof name !== "string" || typeof password !== "string" || !organization || !name || !password) {
      return send(res, 400, { error: "send JSON {organization, name, password}" });
    }
    const source = req.socket.remoteAddress ?? "";
    const keys = [`member:${organization}/${name}`, `ip:${source}`];
    for (const key of keys) {
      const verdict = limiter.check(key);
      if (!verdict.allowed) {
        const seconds = Math.ceil(verdict.retryAfterMs / 1000);
        return send(res, 429, { error: "too many failed logins; try again later", retryAfterSeconds: seconds }, { "retry-after": String(seconds) });
      }
    }
    const org = (await ctx.store.access.getOrgByName(organization)) ?? (await ctx.store.access.getOrg(organization));
    const member = org ? await ctx.store.access.getMemberByName(org.id, name) : undefined;
    const ok = member?.passwordHash ? await verifyPassword(password, member.passwordHash) : (await verifyPassword(password, await decoy), false);
    if (!ok || !member) {
      for (const key of keys) limiter.recordFailure(key);
      return send(res, 401, { error: "wrong organization, name or password" });
    }
    for (const key of keys) limiter.recordSuccess(key);
    const session = await openSession(ctx.store, { kind: "member", id: member.id, orgId: member.orgId }, ctx.sessionTtlMs);
    await ctx.auditor.record({ orgId: member.orgId, actor: `member:${member.name}`, action: "PasswordLogin", target: member.id, source, outcome: "ok", detail: "" });
    send(
      res,
      200,
      { csrfToken: csrfTokenFor(session.token), organization: org?.name, role: member.role, expiresAt: new Date(session.expiresAt).toISOString() },
      { "set-cookie": sessionCookie(session.token, { maxAgeSeconds: Math.floor(ctx.sessionTtlMs / 1000), secure: opts.secureCookies }) },
    );
  }

  async function logout(req: Request, res: Response): Promise<void> {
    const token = readCookie(req.headers.cookie, SESSION_COOKIE);
    if (token) {
      const session = await ctx.store.sessions.getSession(hashSecret(token), Date.now());
      if (session) await ctx.store.sessions.deleteSessionsOf(session.principalKind, session.principalId);
    }
    send(res, 200, {}, { "set-cookie": clearSessionCookie(opts.secureCookies) });
  }

  return (req: Request, res: Response): boolean => {
    const path = (req.url ?? "").split("?")[0];
    if (path !== "/auth/login" && path !== "/auth/logout") return false;
    if (req.method !== "POST") {
      send(res, 405, { error: "use POST" }, { allow: "POST" });
      return true;
    }
    (path === "/auth/login" ? login(req, res) : logout(req, res)).catch((err: unknown) => {
      ctx.log.error("web login failed", { err: String(err) });
      if (!res.headersSent) send(res, 500, { error: "internal error" });
    });
    return true;
  };
}
