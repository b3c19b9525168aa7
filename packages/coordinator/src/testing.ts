/**
 * For tests and benchmarks, in this package and outside it (`@flotilla/coordinator/testing`): a
 * real coordinator on a loopback port with clients that log in to it, an enrolled device, and
 * the SQLite store on its own. Not part of the runtime surface.
 */
import { rm } from "node:fs/promises";
import { create } from "@bufbuild/protobuf";
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import {
  adminv1,
  agentv1,
  authenticateMessage,
  commonv1,
  coordinatorTransport,
  enrollMessage,
  generateIdentity,
  keyPin,
  loginMessage,
  newId,
  newNonce,
  parseJoinString,
  silentLogger,
  verifyCoordinatorProof,
  type Identity,
} from "@flotilla/protocol";
import { tempDir } from "@flotilla/protocol/testing";
import type { CoordinatorConfig } from "./config.ts";
import { startCoordinator, type Coordinator } from "./coordinator.ts";
import type { Role } from "./store/index.ts";

export { openSqliteStore } from "./store/index.ts";

/** The setup code of every test coordinator: logging in with it makes the first owner. */
export const SETUP_CODE = "TEST-SETU-PCOD-E123";

/** A coordinator started by startTestCoordinator, with clients and helpers to log in to it. */
export interface TestCoordinator {
  coord: Coordinator;
  /** A transport to the coordinator, for clients of any service. */
  transport: Transport;
  /** The coordinator's data directory. */
  dataDir: string;
  admin: Client<typeof adminv1.AdminService>;
  agent: Client<typeof agentv1.AgentService>;
  /** A fresh challenge from Hello (the admin service's unless `via` says), checked against the coordinator's key. */
  challenge(via?: "admin" | "agent"): Promise<Uint8Array>;
  /** Logs `identity` in (optionally to an organization); returns call options carrying the session. */
  login(identity: Identity, opts?: { setupCode?: string; organization?: string }): Promise<{ headers: Record<string, string> }>;
  /** Creates a member with `role` and a key in `orgId`, logs it in; returns its call options. */
  as(orgId: string, role: Role, name?: string): Promise<{ headers: Record<string, string>; identity: Identity; memberId: string; keyId: string }>;
  close(): Promise<void>;
}

/**
 * Starts a coordinator on 127.0.0.1 port 0 with its data in a new temporary directory (SQLite),
 * short session and offline timeouts; `options` changes any other. `close()` stops it and removes
 * the directory.
 */
export async function startTestCoordinator(options: Partial<CoordinatorConfig> = {}): Promise<TestCoordinator> {
  const dir = await tempDir("flotilla-coord-");
  const coord = await startCoordinator(
    { dataDir: dir, listen: "127.0.0.1:0", setupCode: SETUP_CODE, maxMessageBytes: 1 << 20, sessionTtlMs: 60_000, keepaliveMs: 1000, offlineAfterMs: 3000, ...options },
    silentLogger,
  );
  const t = await coordinatorTransport({ url: coord.url });
  const admin = createClient(adminv1.AdminService, t.transport);
  const agent = createClient(agentv1.AgentService, t.transport);

  async function challenge(via: "admin" | "agent" = "admin"): Promise<Uint8Array> {
    const nonce = newNonce();
    const res = await (via === "agent" ? agent : admin).hello({ clientNonce: nonce });
    return verifyCoordinatorProof(res.proof, nonce, keyPin(coord.identity.publicKey));
  }

  async function login(identity: Identity, opts: { setupCode?: string; organization?: string } = {}) {
    const ch = await challenge();
    const res = await admin.login({
      publicKey: identity.publicKey,
      challenge: ch,
      signature: identity.sign(loginMessage(ch)),
      setupCode: opts.setupCode ?? "",
      organization: opts.organization ?? "",
    });
    return { headers: { authorization: `Bearer ${res.sessionToken}` } };
  }

  async function as(orgId: string, role: Role, name = `${role}-${newId(6)}`) {
    const identity = generateIdentity();
    const now = Date.now();
    const memberId = `mem_${newId()}`;
    const keyId = `key_${newId()}`;
    await coord.store.access.addMember({ id: memberId, orgId, name, role, passwordHash: null, createdAt: now, removedAt: null });
    await coord.store.access.addAdminKey({ id: keyId, orgId, memberId, name, publicKey: identity.id, createdAt: now, revokedAt: null });
    const org = await coord.store.access.getOrg(orgId);
    return { ...(await login(identity, { organization: org?.name })), identity, memberId, keyId };
  }

  return {
    coord,
    transport: t.transport,
    admin,
    agent,
    dataDir: dir,
    challenge,
    login,
    as,
    async close() {
      t.close();
      await coord.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** A device enrolled by enrollDevice: its id, its organization and call options carrying its session. */
export interface TestDevice {
  id: string;
  orgId: string;
  headers: Record<string, string>;
}

/**
 * Enrolls an auto-approved device named `hostname` with a join token `owner` makes, as its agent
 * would (Enroll, then Authenticate with the same key), and returns its session.
 */
export async function enrollDevice(t: TestCoordinator, owner: { headers: Record<string, string> }, hostname = "box"): Promise<TestDevice> {
  const tok = await t.admin.createJoinToken({ usesAllowed: 1, autoApprove: true }, owner);
  const secret = parseJoinString(tok.joinString).secret;
  const id = generateIdentity();
  let ch = await t.challenge();
  const enrolled = await t.agent.enroll({ joinSecret: secret, publicKey: id.publicKey, challenge: ch, signature: id.sign(enrollMessage(ch, secret)), facts: create(commonv1.FactsSchema, { hostname }) });
  ch = await t.challenge();
  const session = await t.agent.authenticate({ publicKey: id.publicKey, challenge: ch, signature: id.sign(authenticateMessage(ch)) });
  return { id: enrolled.deviceId, orgId: enrolled.organizationId, headers: { authorization: `Bearer ${session.sessionToken}` } };
}

/**
 * Logs in the first owner, enrolls an auto-approved device named `hostname` and opens its
 * session. Returns call options for both, telemetry clients and a closer for their connection.
 */
export async function enrollTestDevice(t: TestCoordinator, hostname = "box") {
  const owner = await t.login(generateIdentity(), { setupCode: SETUP_CODE });
  const d = await enrollDevice(t, owner, hostname);
  const tr = await coordinatorTransport({ url: t.coord.url, maxMessageBytes: 4 << 20 });
  return {
    owner,
    device: { headers: d.headers },
    orgId: d.orgId,
    deviceId: d.id,
    ship: createClient(agentv1.TelemetryService, tr.transport),
    query: createClient(adminv1.TelemetryService, tr.transport),
    close: tr.close,
  };
}
