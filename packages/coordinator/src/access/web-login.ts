/**
 * Password login for the web UI, at POST /auth/login (JSON {organization, name, password}).
 * Success sets an HttpOnly, SameSite=Strict session cookie and returns the CSRF token that every
 * cookie-authenticated call must send in the x-flotilla-csrf header, logout included. Attempts are
 * rate limited per member and per source address, counted before the password is hashed, and at
 * most a few hashes run at once.
 */
import { hashSecret, Semaphore } from "@flotilla/protocol";
import type { ServiceContext } from "../context.ts";
import type { Feature } from "../feature.ts";
import { answerFailure, checkMethod, headerOf, HttpError, pathOf, readBody, sendJson, type HttpRequest, type HttpResponse } from "../server/http.ts";
import { checkCsrf, clearSessionCookie, CSRF_HEADER, csrfTokenFor, readCookie, SESSION_COOKIE, sessionCookie } from "./cookies.ts";
import { loginLinkHandler } from "./login-link.ts";
import { hashPassword, verifyPassword } from "./password.ts";
import { LoginRateLimiter } from "./rate-limit.ts";
import { openSession } from "./sessions.ts";

const MAX_BODY = 4096;
/** Password hashes verified at once; more logins wait (each scrypt takes tens of MB and ms). */
const MAX_CONCURRENT_HASHES = 4;

/** Handles /auth/login and /auth/logout; returns false for any other path. */
export function webLoginHandler(ctx: ServiceContext, opts: { secureCookies: boolean; limiter?: LoginRateLimiter }) {
  const limiter = opts.limiter ?? new LoginRateLimiter();
  // Verifying against a real hash when the member does not exist keeps timing from telling
  // which names exist.
  const decoy = hashPassword("flotilla-decoy-password");
  // scrypt is memory- and CPU-hard on purpose: a flood of logins must not take the whole machine.
  const hashing = new Semaphore(MAX_CONCURRENT_HASHES);

  async function login(req: HttpRequest, res: HttpResponse): Promise<void> {
    // An oversized body gets the same answer as a malformed one.
    const text = await readBody(req, MAX_BODY).catch((err: unknown) => {
      if (err instanceof HttpError) return undefined;
      throw err;
    });
    let body: { organization?: unknown; name?: unknown; password?: unknown };
    try {
      body = text === undefined ? {} : (JSON.parse(text) as typeof body);
    } catch {
      body = {};
    }
    const { organization, name, password } = body;
    if (typeof organization !== "string" || typeof name !== "string" || typeof password !== "string" || !organization || !name || !password) {
      return sendJson(res, 400, { error: "send JSON {organization, name, password}" });
    }
    const source = req.socket.remoteAddress ?? "";
    // The organization's name and its id are one bucket: resolve it before counting.
    const org = (await ctx.store.access.getOrgByName(organization)) ?? (await ctx.store.access.getOrg(organization));
    const keys = [`member:${org?.id ?? organization}/${name}`, `ip:${source}`];
    // Checked and counted in one step, before any hashing: concurrent guesses cannot all pass the
    // check while the first ones are still being hashed. A success clears the count again.
    for (const key of keys) {
      const verdict = limiter.check(key);
      if (!verdict.allowed) {
        const seconds = Math.ceil(verdict.retryAfterMs / 1000);
        return sendJson(res, 429, { error: "too many failed logins; try again later", retryAfterSeconds: seconds }, { "retry-after": String(seconds) });
      }
    }
    for (const key of keys) limiter.recordFailure(key);
    const member = org ? await ctx.store.access.getMemberByName(org.id, name) : undefined;
    const ok = await hashing.run(async () =>
      member?.passwordHash ? await verifyPassword(password, member.passwordHash) : (await verifyPassword(password, await decoy), false),
    );
    if (!ok || !member) return sendJson(res, 401, { error: "wrong organization, name or password" });
    for (const key of keys) limiter.recordSuccess(key);
    const session = await openSession(ctx.store, { kind: "member", id: member.id, orgId: member.orgId }, ctx.sessionTtlMs);
    await ctx.auditor.record({ orgId: member.orgId, actor: `member:${member.name}`, action: "PasswordLogin", target: member.id, source, outcome: "ok", detail: "" });
    sendJson(
      res,
      200,
      { csrfToken: csrfTokenFor(session.token), organization: org?.name, role: member.role, expiresAt: new Date(session.expiresAt).toISOString() },
      { "set-cookie": sessionCookie(session.token, { maxAgeSeconds: Math.floor(ctx.sessionTtlMs / 1000), secure: opts.secureCookies }) },
    );
  }

  async function logout(req: HttpRequest, res: HttpResponse): Promise<void> {
    const token = readCookie(req.headers.cookie, SESSION_COOKIE);
    // Like every call made with the cookie, only with the CSRF header script on our origin knows:
    // otherwise any site could end its visitors' sessions.
    if (token && !checkCsrf(token, headerOf(req, CSRF_HEADER))) throw new HttpError(403, "logging out needs the x-flotilla-csrf header");
    if (token) {
      const session = await ctx.store.sessions.getSession(hashSecret(token), Date.now());
      if (session) await ctx.store.sessions.deleteSessionsOf(session.principalKind, session.principalId);
    }
    sendJson(res, 200, {}, { "set-cookie": clearSessionCookie(opts.secureCookies) });
  }

  return (req: HttpRequest, res: HttpResponse): boolean => {
    const path = pathOf(req);
    if (path !== "/auth/login" && path !== "/auth/logout") return false;
    (async () => {
      checkMethod(req, ["POST"]);
      await (path === "/auth/login" ? login(req, res) : logout(req, res));
    })().catch((err: unknown) => answerFailure(res, err, "json", () => ctx.log.error("web login failed", { err: String(err) })));
    return true;
  };
}

/** Password and login-link login for the web UI as a coordinator feature: plain-HTTP routes only. */
export function webLoginFeature(ctx: ServiceContext, opts: { secureCookies: boolean }): Feature {
  const password = webLoginHandler(ctx, opts);
  const link = loginLinkHandler(ctx, opts);
  return { name: "web login", http: (req, res) => password(req, res) || link(req, res), serviceNames: [], close() {} };
}
