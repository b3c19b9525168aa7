/**
 * One-time login links against a real coordinator's store: a link opens a browser session for
 * its key (cookie plus CSRF token, accepted by the admin API), and is refused when used twice,
 * after it expired, after its key was revoked, or when forged.
 */
import { createServer, type Server } from "node:http";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { adminv1, generateIdentity, silentLogger } from "@flotilla/protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Auditor } from "../audit/auditor.ts";
import { SETUP_CODE, startTestCoordinator, type TestCoordinator } from "../testing.ts";
import { loginLinkHandler } from "./login-link.ts";

describe("login links", () => {
  let t: TestCoordinator;
  let owner: { headers: Record<string, string> };
  const servers: Server[] = [];

  /** The handler on a server of its own, with links that live `ttlMs`. */
  async function serve(ttlMs: number): Promise<string> {
    const handle = loginLinkHandler({ store: t.coord.store, auditor: new Auditor(t.coord.store, silentLogger), log: silentLogger, sessionTtlMs: 60_000 }, { secureCookies: false, ttlMs });
    const server = createServer((req, res) => void (handle(req, res) || res.writeHead(404).end()));
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const a = server.address();
    return `http://127.0.0.1:${typeof a === "object" && a ? a.port : 0}`;
  }
  const create = (url: string, headers: Record<string, string>) => fetch(`${url}/auth/login-link`, { method: "POST", headers });
  const redeem = (url: string, token: string) => fetch(`${url}/auth/login-link/redeem`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ token }) });

  beforeAll(async () => {
    t = await startTestCoordinator();
    owner = await t.login(generateIdentity(), { setupCode: SETUP_CODE });
  });
  afterAll(async () => {
    for (const s of servers) s.close();
    await t.close();
  });

  it("opens a session for the key, which the admin API accepts with the CSRF token; a second use is refused", async () => {
    const url = await serve(60_000);
    const { token } = (await (await create(url, owner.headers)).json()) as { token: string };
    const res = await redeem(url, token);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { csrfToken: string; role: string };
    expect(body.role).toBe("owner");
    const cookie = res.headers.get("set-cookie")!;
    expect(cookie).toMatch(/HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    const session = cookie.split(";")[0]!;
    const admin = createClient(adminv1.AdminService, createConnectTransport({ baseUrl: t.coord.url, httpVersion: "1.1" }));
    const me = await admin.whoAmI({}, { headers: { cookie: session, "x-flotilla-csrf": body.csrfToken } });
    expect(me.role).toBe("owner");
    expect((await redeem(url, token)).status).toBe(401);
  });

  it("refuses an expired link, a link whose key was revoked, a forged one, and a caller without a session", async () => {
    const expired = await serve(0);
    const { token: old } = (await (await create(expired, owner.headers)).json()) as { token: string };
    expect((await redeem(expired, old)).status).toBe(401);

    const url = await serve(60_000);
    const orgId = (await t.coord.store.access.listOrgs())[0]!.id;
    const member = await t.as(orgId, "admin");
    const { token } = (await (await create(url, member.headers)).json()) as { token: string };
    await t.coord.store.access.revokeAdminKey(orgId, member.keyId, Date.now());
    expect((await redeem(url, token)).status).toBe(401);

    expect((await redeem(url, `fll_${"A".repeat(43)}`)).status).toBe(401);
    expect((await redeem(url, "not a token")).status).toBe(400);
    expect((await create(url, {})).status).toBe(401);
  });

  it("moves a key's console session to another organization of the same key, and refuses one it is not in", async () => {
    const url = await serve(60_000);
    const admin = createClient(adminv1.AdminService, createConnectTransport({ baseUrl: t.coord.url, httpVersion: "1.1" }));
    await admin.createOrganization({ name: "second" }, owner);
    const { token } = (await (await create(url, owner.headers)).json()) as { token: string };
    const first = await redeem(url, token);
    const { csrfToken } = (await first.json()) as { csrfToken: string };
    const cookie = first.headers.get("set-cookie")!.split(";")[0]!;
    const move = (organization: string, csrf = csrfToken) =>
      fetch(`${url}/auth/switch-organization`, { method: "POST", headers: { "content-type": "application/json", cookie, "x-flotilla-csrf": csrf }, body: JSON.stringify({ organization }) });

    const res = await move("second");
    expect(res.status).toBe(200);
    const body = (await res.json()) as { csrfToken: string; organization: string; role: string };
    expect(body).toMatchObject({ organization: "second", role: "owner" });
    const there = res.headers.get("set-cookie")!.split(";")[0]!;
    const me = await admin.whoAmI({}, { headers: { cookie: there, "x-flotilla-csrf": body.csrfToken } });
    expect(me.organization?.name).toBe("second");

    // An organization the key is not in, another key's session for "second", and a request
    // without the right CSRF header are refused.
    const orgId = (await t.coord.store.access.getOrgByName("default"))!.id;
    const viewer = await t.as(orgId, "viewer");
    const other = await fetch(`${url}/auth/switch-organization`, { method: "POST", headers: { "content-type": "application/json", ...viewer.headers }, body: JSON.stringify({ organization: "second" }) });
    expect(other.status).toBe(403);
    expect(((await other.json()) as { error: string }).error).toBe('your key is not a member of organization "second"');
    expect((await move("no-such-org")).status).toBe(403);
    expect((await move("second", "wrong")).status).toBe(401);
  });
});
