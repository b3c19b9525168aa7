/**
 * Access control against a real coordinator: the RPC × role matrix, tenant isolation over every
 * list and get, immediate revocation, the audit chain, password login and CSRF.
 */
import { create, type DescMethod, type DescService } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { adminv1, commonv1, enrollMessage, generateIdentity, parseJoinString } from "@flotilla/protocol";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { rolePermissions, ruleFor } from "./policy.ts";
import type { Role } from "../store/index.ts";
import { SETUP_CODE, startTestCoordinator, type TestCoordinator } from "../testing.ts";

let t: TestCoordinator;
let orgA: string;
let ownerA: { headers: Record<string, string> };

beforeEach(async () => {
  t = await startTestCoordinator();
  ownerA = await t.login(generateIdentity(), { setupCode: SETUP_CODE });
  orgA = (await t.coord.store.access.listOrgs())[0]!.id;
});
afterEach(async () => {
  await t.close();
});

async function failure(p: Promise<unknown>): Promise<ConnectError | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return ConnectError.from(err);
  }
}

const isService = (v: unknown): v is DescService => (v as { kind?: unknown } | undefined)?.kind === "service";
/** Every admin-facing service in the schema: a new service or method is walked at once. */
const adminServices = (Object.values(adminv1) as unknown[]).filter(isService);
const everyMethod = adminServices.flatMap((service) => service.methods.map((method) => ({ service, method })));

type AnyFn = (input: unknown, opts: object) => unknown;

/**
 * Calls any admin method with an empty request (an empty input stream for client and bidi
 * streams) and returns its first answer or throws its error. A stream the table allowed is
 * left after a moment: being allowed, not what it would send, is what the callers check.
 */
async function callAny(service: DescService, method: DescMethod, opts: { headers: Record<string, string> }): Promise<unknown> {
  const fn = (createClient(service, t.transport) as unknown as Record<string, AnyFn>)[method.localName]!;
  if (method.methodKind === "unary") return fn({}, opts);
  if (method.methodKind === "client_streaming") return fn((async function* () {})(), opts);
  const input = method.methodKind === "server_streaming" ? {} : (async function* () {})();
  const done = new AbortController();
  const timer = setTimeout(() => done.abort(), 1500);
  try {
    for await (const first of fn(input, { ...opts, signal: done.signal }) as AsyncIterable<unknown>) return first;
    return undefined;
  } catch (err) {
    if (done.signal.aborted) return undefined;
    throw err;
  } finally {
    clearTimeout(timer);
    done.abort();
  }
}

async function enrollDevice(headers: Record<string, string>, hostname: string): Promise<string> {
  const { joinString } = await t.admin.createJoinToken({ usesAllowed: 1 }, { headers });
  const secret = parseJoinString(joinString).secret;
  const id = generateIdentity();
  const ch = await t.challenge();
  const res = await t.agent.enroll({
    joinSecret: secret,
    publicKey: id.publicKey,
    challenge: ch,
    signature: id.sign(enrollMessage(ch, secret)),
    facts: create(commonv1.FactsSchema, { hostname }),
  });
  return res.deviceId;
}

describe("the RPC × role matrix", () => {
  const roles: Role[] = ["viewer", "deployer", "admin", "owner"];
  for (const role of roles) {
    it(`lets a ${role} call exactly what the access table grants`, async () => {
      const session = await t.as(orgA, role);
      for (const { service, method } of everyMethod) {
        const rule = ruleFor(service.typeName, method.name)!;
        if (rule === "public") continue;
        const err = await failure(callAny(service, method, session));
        expect(err?.code, `${service.name}/${method.name} is served`).not.toBe(Code.Unimplemented);
        const deniedByTable = err?.code === Code.PermissionDenied && /may not/.test(err.rawMessage);
        expect(deniedByTable, `${role} → ${service.name}/${method.name} (${rule})`).toBe(!rolePermissions[role].has(rule));
      }
    });
  }

  it("refuses every non-public admin call without a session", async () => {
    for (const { service, method } of everyMethod) {
      if (ruleFor(service.typeName, method.name) === "public") continue;
      expect((await failure(callAny(service, method, { headers: {} })))?.code, method.name).toBe(Code.Unauthenticated);
    }
  });
});

describe("tenant isolation", () => {
  it("shows one organization nothing of another's through any list or get", async () => {
    const deviceA = await enrollDevice(ownerA.headers, "secret-box");
    await t.admin.addMember({ name: "alice@a", role: "viewer" }, ownerA);
    const apiA = await t.admin.createApiToken({ name: "ci-a", role: "viewer" }, ownerA);
    const tokensA = await t.admin.listJoinTokens({}, ownerA);
    const keysA = await t.admin.listAdminKeys({}, ownerA);
    const secretsOfA = [deviceA, "secret-box", "alice@a", "ci-a", apiA.token!.id, ...tokensA.tokens.map((x) => x.id), ...keysA.keys.map((k) => k.id)];

    await t.coord.store.access.createOrg({ id: "org_b", name: "globex", createdAt: Date.now() });
    const ownerB = await t.as("org_b", "owner");

    // Every list, get and read-only stream of every admin service, with an empty request.
    const reads = everyMethod.filter(({ method }) => /^(List|Get|WhoAmI|VerifyAuditLog|Query|Follow|Watch|Plan)/.test(method.name));
    expect(reads.length).toBeGreaterThanOrEqual(adminv1.AdminService.methods.filter((m) => /^(List|Get)/.test(m.name)).length + 2);
    for (const { service, method } of reads) {
      const res = await callAny(service, method, ownerB).catch((err: unknown) => ConnectError.from(err));
      const text = JSON.stringify(res, (_k, v: unknown) => (typeof v === "bigint" ? String(v) : v));
      for (const s of secretsOfA) expect(text.includes(s), `${method.name} leaks ${s}`).toBe(false);
    }

    for (const ref of [deviceA, "secret-box"]) {
      expect((await failure(t.admin.getDevice({ device: ref }, ownerB)))?.code).toBe(Code.NotFound);
      expect((await failure(t.admin.approveDevice({ device: ref }, ownerB)))?.code).toBe(Code.NotFound);
      expect((await failure(t.admin.updateDeviceLabels({ device: ref, set: { x: "y" } }, ownerB)))?.code).toBe(Code.NotFound);
      expect((await failure(t.admin.decommissionDevice({ device: ref }, ownerB)))?.code).toBe(Code.NotFound);
    }
    expect((await failure(t.admin.removeMember({ member: "alice@a" }, ownerB)))?.code).toBe(Code.NotFound);
    expect((await failure(t.admin.revokeApiToken({ token: apiA.token!.id }, ownerB)))?.code).toBe(Code.NotFound);
    expect((await failure(t.admin.revokeJoinToken({ id: tokensA.tokens[0]!.id }, ownerB)))?.code).toBe(Code.NotFound);
    expect((await failure(t.admin.revokeAdminKey({ key: keysA.keys[0]!.id }, ownerB)))?.code).toBe(Code.NotFound);
    // A's API token cannot reach B, nor log in there.
    const asA = { headers: { authorization: `Bearer ${apiA.secret}` } };
    expect((await t.admin.listDevices({}, asA)).devices.map((d) => d.id)).toEqual([deviceA]);
    expect((await t.admin.whoAmI({}, ownerB)).organization?.name).toBe("globex");
  });
});

describe("revocation", () => {
  it("ends a revoked key's session at once", async () => {
    const alice = await t.as(orgA, "admin", "alice");
    expect((await t.admin.listDevices({}, alice)).devices).toEqual([]);
    await t.admin.revokeAdminKey({ key: alice.keyId }, ownerA);
    expect((await failure(t.admin.listDevices({}, alice)))?.code).toBe(Code.Unauthenticated);
    expect((await failure(t.login(alice.identity)))?.code).toBe(Code.Unauthenticated);
  });

  it("ends a removed member's sessions at once", async () => {
    const bob = await t.as(orgA, "deployer", "bob");
    await t.admin.removeMember({ member: "bob" }, ownerA);
    expect((await failure(t.admin.listDevices({}, bob)))?.code).toBe(Code.Unauthenticated);
  });

  it("stops a revoked API token at once", async () => {
    const res = await t.admin.createApiToken({ name: "ci", role: "deployer" }, ownerA);
    const ci = { headers: { authorization: `Bearer ${res.secret}` } };
    expect((await t.admin.whoAmI({}, ci)).role).toBe("deployer");
    await t.admin.revokeApiToken({ token: "ci" }, ownerA);
    expect((await failure(t.admin.whoAmI({}, ci)))?.code).toBe(Code.Unauthenticated);
  });

  it("refuses a forged API token secret", async () => {
    const res = await t.admin.createApiToken({ name: "ci", role: "deployer" }, ownerA);
    const forged = `${res.secret.slice(0, res.secret.indexOf(".") + 1)}${"x".repeat(43)}`;
    expect((await failure(t.admin.whoAmI({}, { headers: { authorization: `Bearer ${forged}` } })))?.code).toBe(Code.Unauthenticated);
  });

  it("lets no one grant a role above their own, nor remove the last owner", async () => {
    const admin = await t.as(orgA, "admin");
    expect((await failure(t.admin.addMember({ name: "mallory", role: "owner" }, admin)))?.code).toBe(Code.PermissionDenied);
    expect((await failure(t.admin.createApiToken({ name: "up", role: "owner" }, admin)))?.code).toBe(Code.PermissionDenied);
    const owners = (await t.admin.listMembers({}, ownerA)).members.filter((m) => m.role === "owner");
    expect(owners).toHaveLength(1);
    expect((await failure(t.admin.removeMember({ member: owners[0]!.name }, ownerA)))?.code).toBe(Code.FailedPrecondition);
  });
});

describe("audit log", () => {
  it("records every change with actor, action, target, source and outcome, and verifies", async () => {
    const viewer = await t.as(orgA, "viewer", "vera");
    await t.admin.createJoinToken({ usesAllowed: 2 }, ownerA);
    await failure(t.admin.createJoinToken({}, viewer));
    await t.admin.addMember({ name: "carol", role: "deployer" }, ownerA);
    const { entries } = await t.admin.listAuditEntries({}, ownerA);
    const rows = entries.map((e) => `${e.actor} ${e.action} ${e.target} ${e.outcome}`);
    expect(rows).toContain("key:vera CreateJoinToken  denied");
    expect(rows).toContain("key:owner AddMember carol ok");
    expect(entries.every((e) => e.source.includes("127.0.0.1"))).toBe(true);
    expect(entries.map((e) => Number(e.seq))).toEqual(entries.map((_, i) => i + 1));
    expect((await t.admin.verifyAuditLog({}, ownerA)).ok).toBe(true);
  });
});

describe("password login for the web UI", () => {
  async function addPasswordMember(): Promise<void> {
    await t.admin.addMember({ name: "wendy", role: "viewer", password: "correct horse battery" }, ownerA);
  }
  const login = (password: string) =>
    fetch(`${t.coord.url}/auth/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ organization: "default", name: "wendy", password }),
    });

  it("refuses a weak password when the member is added", async () => {
    expect((await failure(t.admin.addMember({ name: "weak", role: "viewer", password: "short" }, ownerA)))?.code).toBe(Code.InvalidArgument);
  });

  it("sets an HttpOnly SameSite session cookie, which works only with the CSRF header", async () => {
    await addPasswordMember();
    const res = await login("correct horse battery");
    expect(res.status).toBe(200);
    const cookie = res.headers.get("set-cookie")!;
    expect(cookie).toMatch(/^flotilla_session=[^;]+;.*HttpOnly/);
    expect(cookie).toMatch(/SameSite=Strict/);
    const { csrfToken } = (await res.json()) as { csrfToken: string };
    const session = cookie.split(";")[0]!;
    const ask = (headers: Record<string, string>) =>
      fetch(`${t.coord.url}/flotilla.admin.v1.AdminService/ListDevices`, {
        method: "POST",
        headers: { "content-type": "application/json", cookie: session, ...headers },
        body: "{}",
      });
    expect((await ask({})).status).toBe(401);
    expect((await ask({ "x-flotilla-csrf": "not-the-token" })).status).toBe(401);
    expect((await ask({ "x-flotilla-csrf": csrfToken })).status).toBe(200);
  });

  it("evaluates at most 5 of 50 concurrent guesses, whether the organization is named or given by id", async () => {
    await addPasswordMember();
    const orgId = (await t.coord.store.access.getOrgByName("default"))!.id;
    const guess = (i: number) =>
      fetch(`${t.coord.url}/auth/login`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ organization: i % 2 ? "default" : orgId, name: "wendy", password: `guess ${i}` }),
      });
    const statuses = await Promise.all(Array.from({ length: 50 }, (_, i) => guess(i).then((r) => r.status)));
    expect(statuses.filter((s) => s === 401)).toHaveLength(5);
    expect(statuses.filter((s) => s === 429)).toHaveLength(45);
    expect((await login("correct horse battery")).status).toBe(429);
  });

  it("logs out only with the CSRF header, so another site cannot end a session", async () => {
    await addPasswordMember();
    const res = await login("correct horse battery");
    const session = res.headers.get("set-cookie")!.split(";")[0]!;
    const { csrfToken } = (await res.json()) as { csrfToken: string };
    const logout = (headers: Record<string, string>) => fetch(`${t.coord.url}/auth/logout`, { method: "POST", headers: { cookie: session, ...headers } });
    const works = async () =>
      (await fetch(`${t.coord.url}/flotilla.admin.v1.AdminService/ListDevices`, {
        method: "POST",
        headers: { "content-type": "application/json", cookie: session, "x-flotilla-csrf": csrfToken },
        body: "{}",
      })).status === 200;
    expect((await logout({})).status).toBe(403);
    expect((await logout({ "x-flotilla-csrf": "forged" })).status).toBe(403);
    expect(await works()).toBe(true);
    expect((await logout({ "x-flotilla-csrf": csrfToken })).status).toBe(200);
    expect(await works()).toBe(false);
  });

  it("locks out a member after repeated wrong passwords, even for the right one", async () => {
    await addPasswordMember();
    for (let i = 0; i < 5; i++) expect((await login("wrong password " + i)).status).toBe(401);
    const locked = await login("correct horse battery");
    expect(locked.status).toBe(429);
    expect(Number(locked.headers.get("retry-after"))).toBeGreaterThan(0);
  });
});
