/**
 * The handshake against a real coordinator on a loopback port: replays, forged signatures and
 * bad secrets are refused, and nothing is written when they are.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { commonv1, enrollMessage, generateIdentity, loginMessage, parseJoinString } from "@flotilla/protocol";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { SETUP_CODE, startTestCoordinator, type TestCoordinator } from "../testing.ts";

let t: TestCoordinator;

async function codeOf(p: Promise<unknown>): Promise<Code | undefined> {
  try {
    await p;
    return undefined;
  } catch (err) {
    return ConnectError.from(err).code;
  }
}

beforeEach(async () => {
  t = await startTestCoordinator();
});

afterEach(async () => {
  await t.close();
});

/** Logs in as the first owner and creates a join token; returns its secret. */
async function ownerAndToken(): Promise<string> {
  const { admin } = t;
  const owner = generateIdentity();
  const ch = await t.challenge();
  const login = await admin.login({ publicKey: owner.publicKey, challenge: ch, signature: owner.sign(loginMessage(ch)), setupCode: SETUP_CODE });
  const res = await admin.createJoinToken({ usesAllowed: 5 }, { headers: { authorization: `Bearer ${login.sessionToken}` } });
  return parseJoinString(res.joinString).secret;
}

describe("handshake", () => {
  it("refuses a replayed enrollment, and the replay enrolls nothing", async () => {
    const secret = await ownerAndToken();
    const { agent } = t;
    const id = generateIdentity();
    const ch = await t.challenge("agent");
    const req = {
      joinSecret: secret,
      publicKey: id.publicKey,
      challenge: ch,
      signature: id.sign(enrollMessage(ch, secret)),
      facts: create(commonv1.FactsSchema, { hostname: "box" }),
    };
    expect((await agent.enroll(req)).name).toBe("box");
    const replay = await codeOf(agent.enroll(req));
    expect(replay).toBe(Code.Unauthenticated);
    expect((await t.coord.store.access.listOrgs()).length).toBe(1);
    const org = (await t.coord.store.access.listOrgs())[0]!;
    expect((await t.coord.store.devices.listDevices(org.id)).length).toBe(1);
  });

  it("refuses an enrollment signed by another key than the one it enrolls", async () => {
    const secret = await ownerAndToken();
    const { agent } = t;
    const id = generateIdentity();
    const other = generateIdentity();
    const ch = await t.challenge("agent");
    const code = await codeOf(
      agent.enroll({ joinSecret: secret, publicKey: id.publicKey, challenge: ch, signature: other.sign(enrollMessage(ch, secret)), facts: create(commonv1.FactsSchema, {}) }),
    );
    expect(code).toBe(Code.Unauthenticated);
  });

  it("refuses a wrong join secret for a real token id", async () => {
    const secret = await ownerAndToken();
    const forged = `${secret.split(".")[0]}.${"A".repeat(32)}`;
    const { agent } = t;
    const id = generateIdentity();
    const ch = await t.challenge("agent");
    const code = await codeOf(
      agent.enroll({ joinSecret: forged, publicKey: id.publicKey, challenge: ch, signature: id.sign(enrollMessage(ch, forged)), facts: create(commonv1.FactsSchema, {}) }),
    );
    expect(code).toBe(Code.PermissionDenied);
  });

  it("refuses a challenge the coordinator did not issue", async () => {
    const { admin } = t;
    const owner = generateIdentity();
    const fake = new Uint8Array((await t.challenge()).length).fill(1);
    fake[0] = 1;
    const code = await codeOf(admin.login({ publicKey: owner.publicKey, challenge: fake, signature: owner.sign(loginMessage(fake)), setupCode: SETUP_CODE }));
    expect(code).toBe(Code.Unauthenticated);
    expect(await t.coord.store.access.listOrgs()).toEqual([]);
  });

  it("uses the setup code once", async () => {
    await ownerAndToken();
    const { admin } = t;
    const intruder = generateIdentity();
    const ch = await t.challenge();
    const code = await codeOf(admin.login({ publicKey: intruder.publicKey, challenge: ch, signature: intruder.sign(loginMessage(ch)), setupCode: SETUP_CODE }));
    expect(code).toBe(Code.PermissionDenied);
  });

  it("refuses admin calls with no session, and agent calls with an admin session", async () => {
    await ownerAndToken();
    const { admin, agent } = t;
    expect(await codeOf(admin.listDevices({}))).toBe(Code.Unauthenticated);
    expect(await codeOf(admin.listDevices({}, { headers: { authorization: "Bearer fls_not-a-real-session-token" } }))).toBe(Code.Unauthenticated);
    const owner = generateIdentity();
    const orgId = (await t.coord.store.access.listOrgs())[0]!.id;
    await t.coord.store.access.addMember({ id: "m2", orgId, name: "viewer", role: "viewer", passwordHash: null, createdAt: Date.now(), removedAt: null });
    await t.coord.store.access.addAdminKey({ id: "k2", orgId, memberId: "m2", name: "x", publicKey: owner.id, createdAt: Date.now(), revokedAt: null });
    const ch = await t.challenge();
    const s = await admin.login({ publicKey: owner.publicKey, challenge: ch, signature: owner.sign(loginMessage(ch)) });
    const headers = { authorization: `Bearer ${s.sessionToken}` };
    expect(await codeOf(agent.report({ entries: [] }, { headers }))).toBe(Code.PermissionDenied);
    // A viewer reads but cannot change.
    expect((await admin.listDevices({}, { headers })).devices).toEqual([]);
    expect(await codeOf(admin.createJoinToken({}, { headers }))).toBe(Code.PermissionDenied);
  });
});
