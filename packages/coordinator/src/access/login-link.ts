/**
 * One-time login links for the web console, for admins who log in with a key and so have no
 * password: `flotilla login-link` calls POST /auth/login-link with its session, and opens
 * `<coordinator>/login-link#<token>` in a browser. The page sends the token (from the URL's
 * fragment, which never reaches a server log or a Referer) to POST /auth/login-link/redeem,
 * which answers as POST /auth/login does: a session cookie for the same key and its CSRF token.
 * A link works once, for ten minutes, and only while its key is not revoked. Links live in this
 * process's memory: a coordinator restart forgets them (ask for another).
 *
 * POST /auth/switch-organization (JSON {organization}, with the console's cookie and CSRF header)
 * moves such a key's console session to another organization the same key is registered in:
 * a new session cookie there, the role the key has there. Password members have one login per
 * organization and log in to the other one instead.
 */
import { hashSecret, newSecret } from "@flotilla/protocol";
import type { ServiceContext } from "../context.ts";
import { answerFailure, checkMethod, headerOf, HttpError, pathOf, readBody, sendJson, type HttpRequest, type HttpResponse } from "../server/http.ts";
import { CSRF_HEADER, csrfTokenFor, sessionCookie } from "./cookies.ts";
import { resolvePrincipal } from "./interceptor.ts";
import { openSession } from "./sessions.ts";

export const LOGIN_LINK_TTL_MS = 10 * 60_000;
/** Outstanding links at most; the oldest go first (each is one admin's recent request). */
const MAX_LINKS = 1000;
const PREFIX = "fll_";

interface Link {
  orgId: string;
  keyId: string;
  expiresAt: number;
}

/** Handles /auth/login-link and /auth/login-link/redeem; returns false for any other path. */
export function loginLinkHandler(ctx: Pick<ServiceContext, "store" | "auditor" | "log" | "sessionTtlMs">, opts: { secureCookies: boolean; ttlMs?: number }) {
  const ttlMs = opts.ttlMs ?? LOGIN_LINK_TTL_MS;
  // By the token's hash: a heap dump does not hand out working links.
  const links = new Map<string, Link>();

  function prune(now: number): void {
    for (const [hash, link] of links) if (link.expiresAt <= now) links.delete(hash);
    while (links.size >= MAX_LINKS) links.delete(links.keys().next().value!);
  }

  async function create(req: HttpRequest, res: HttpResponse): Promise<void> {
    const principal = await resolvePrincipal(ctx.store, headerOf(req, "authorization"), "", null);
    if (!principal) throw new HttpError(401, "not logged in, or the session expired");
    if (principal.kind !== "admin" || !principal.keyId) throw new HttpError(403, "login links are for admins who log in with a key");
    const now = Date.now();
    prune(now);
    const token = `${PREFIX}${newSecret()}`;
    links.set(hashSecret(token), { orgId: principal.orgId, keyId: principal.keyId, expiresAt: now + ttlMs });
    await ctx.auditor.record({ orgId: principal.orgId, actor: principal.actor, action: "CreateLoginLink", target: principal.keyId, source: req.socket.remoteAddress ?? "", outcome: "ok", detail: "" });
    sendJson(res, 200, { token, path: "/login-link", expiresAt: new Date(now + ttlMs).toISOString() });
  }

  async function redeem(req: HttpRequest, res: HttpResponse): Promise<void> {
    const text = await readBody(req, 1024).catch(() => "");
    let token: unknown;
    try {
      token = (JSON.parse(text) as { token?: unknown }).token;
    } catch {
      token = undefined;
    }
    if (typeof token !== "string" || !token.startsWith(PREFIX)) return sendJson(res, 400, { error: "send JSON {token}" });
    const hash = hashSecret(token);
    const link = links.get(hash);
    // One use: gone before anything else is looked at, so two racing requests cannot both pass.
    links.delete(hash);
    const now = Date.now();
    const key = link && link.expiresAt > now ? await ctx.store.access.getAdminKey(link.orgId, link.keyId) : undefined;
    if (!link || !key || key.revokedAt !== null) return sendJson(res, 401, { error: "this login link was used already, has expired, or is unknown; run `flotilla login-link` again" });
    const org = await ctx.store.access.getOrg(key.orgId);
    const session = await openSession(ctx.store, { kind: "admin", id: key.id, orgId: key.orgId }, ctx.sessionTtlMs);
    await ctx.auditor.record({ orgId: key.orgId, actor: `key:${key.name}`, action: "LinkLogin", target: key.id, source: req.socket.remoteAddress ?? "", outcome: "ok", detail: "" });
    sendJson(
      res,
      200,
      { csrfToken: csrfTokenFor(session.token), organization: org?.name, name: key.name, role: key.role, expiresAt: new Date(session.expiresAt).toISOString() },
      { "set-cookie": sessionCookie(session.token, { maxAgeSeconds: Math.floor(ctx.sessionTtlMs / 1000), secure: opts.secureCookies }) },
    );
  }

  async function switchOrganization(req: HttpRequest, res: HttpResponse): Promise<void> {
    const principal = await resolvePrincipal(ctx.store, headerOf(req, "authorization"), req.headers.cookie ?? "", headerOf(req, CSRF_HEADER));
    if (!principal) throw new HttpError(401, "not logged in, or the session expired");
    if (principal.kind !== "admin" || !principal.keyId) throw new HttpError(403, "switching organizations is for admins who log in with a key; log in to the other organization with its password");
    const text = await readBody(req, 1024).catch(() => "");
    let name: unknown;
    try {
      name = (JSON.parse(text) as { organization?: unknown }).organization;
    } catch {
      name = undefined;
    }
    if (typeof name !== "string" || !name || name.length > 200) return sendJson(res, 400, { error: "send JSON {organization}" });
    const current = await ctx.store.access.getAdminKey(principal.orgId, principal.keyId);
    const org = (await ctx.store.access.getOrgByName(name)) ?? (await ctx.store.access.getOrg(name));
    const key = current && org ? (await ctx.store.access.findAdminKeysByPublicKey(current.publicKey)).find((k) => k.orgId === org.id) : undefined;
    if (!org || !key) throw new HttpError(403, `your key is not a member of organization ${JSON.stringify(name)}`);
    const session = await openSession(ctx.store, { kind: "admin", id: key.id, orgId: key.orgId }, ctx.sessionTtlMs);
    await ctx.auditor.record({ orgId: key.orgId, actor: `key:${key.name}`, action: "SwitchOrganization", target: key.id, source: req.socket.remoteAddress ?? "", outcome: "ok", detail: "" });
    sendJson(
      res,
      200,
      { csrfToken: csrfTokenFor(session.token), organization: org.name, name: key.name, role: key.role, expiresAt: new Date(session.expiresAt).toISOString() },
      { "set-cookie": sessionCookie(session.token, { maxAgeSeconds: Math.floor(ctx.sessionTtlMs / 1000), secure: opts.secureCookies }) },
    );
  }

  return (req: HttpRequest, res: HttpResponse): boolean => {
    const path = pathOf(req);
    if (path !== "/auth/login-link" && path !== "/auth/login-link/redeem" && path !== "/auth/switch-organization") return false;
    (async () => {
      checkMethod(req, ["POST"]);
      await (path === "/auth/login-link" ? create(req, res) : path === "/auth/switch-organization" ? switchOrganization(req, res) : redeem(req, res));
    })().catch((err: unknown) => answerFailure(res, err, "json", () => ctx.log.error("login link failed", { err: String(err) })));
    return true;
  };
}
