/** A real coordinator on a loopback port for in-process tests, and clients that log in to it. */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import {
  adminv1,
  agentv1,
  coordinatorTransport,
  generateIdentity,
  keyPin,
  loginMessage,
  newId,
  newNonce,
  silentLogger,
  verifyCoordinatorProof,
  type Identity,
} from "@flotilla/protocol";
import { startCoordinator, type Coordinator } from "./coordinator.ts";
import type { Role } from "./store/index.ts";

export const SETUP_CODE = "TEST-SETU-PCOD-E123";

export interface TestCoordinator {
  coord: Coordinator;
  /** A transport to the coordinator, for clients of any service. */
  transport: Transport;
  /** The coordinator's data directory. */
  dataDir: string;
  admin: Client<typeof adminv1.AdminService>;
  agent: Client<typeof agentv1.AgentService>;
  /** A fresh challenge from Hello, checked against the coordinator's key. */
  challenge(): Promise<Uint8Array>;
  /** Logs `identity` in (optionally to an organization); returns call options carrying the session. */
  login(identity: Identity, opts?: { setupCode?: string; organization?: string }): Promise<{ headers: Record<string, string> }>;
  /** Creates a member with `role` and a key in `orgId`, logs it in; returns its call options. */
  as(orgId: string, role: Role, name?: string): Promise<{ headers: Record<string, string>; identity: Identity; memberId: string; keyId: string }>;
  close(): Promise<void>;
}

export async function startTestCoordinator(): Promise<TestCoordinator> {
  const dir = await mkdtemp(join(tmpdir(), "flotilla-coord-"));
  const coord = await startCoordinator(
    { dataDir: dir, listen: "127.0.0.1:0", setupCode: SETUP_CODE, maxMessageBytes: 1 << 20, sessionTtlMs: 60_000, keepaliveMs: 1000, offlineAfterMs: 3000 },
    silentLogger,
  );
  const t = await coordinatorTransport({ url: coord.url });
  const admin = createClient(adminv1.AdminService, t.transport);
  const agent = createClient(agentv1.AgentService, t.transport);

  async function challenge(): Promise<Uint8Array> {
    const nonce = newNonce();
    const res = await admin.hello({ clientNonce: nonce });
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
