import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { agentv1, generateIdentity, internalv1 } from "@flotilla/protocol";
import { waitFor } from "@flotilla/protocol/testing";
import { startTestCoordinator, type TestCoordinator } from "../testing.ts";
import { listeningDevice } from "./listening-device.ts";
import { REPLICA_AUTH_HEADER, REPLICA_TOKEN_TTL_MS, replicaToken, verifyReplicaToken } from "./replica-auth.ts";

let t: TestCoordinator;
let closeTransport: () => void = () => {};

beforeEach(async () => {
  t = await startTestCoordinator();
});

afterEach(async () => {
  closeTransport();
  await t.close();
});

/** An enrolled device whose agent side holds Listen open, and a client of the replica service. */
async function sides() {
  const sides = await listeningDevice(t);
  closeTransport = sides.close;
  return { ...sides, replicaSide: createClient(internalv1.ReplicaTunnelService, sides.transport) };
}

/** A Forward call's first response, or its error. */
async function forwardOnce(
  client: ReturnType<typeof createClient<typeof internalv1.ReplicaTunnelService>>,
  target: { orgId: string; deviceId: string; port: number },
  headers: Record<string, string>,
  signal: AbortSignal,
): Promise<internalv1.ForwardResponse | ConnectError> {
  async function* input() {
    yield create(internalv1.ForwardRequestSchema, { frame: { case: "target", value: target } });
    await new Promise((r) => signal.addEventListener("abort", r));
  }
  try {
    const r = await client.forward(input(), { headers, signal })[Symbol.asyncIterator]().next();
    return r.value as internalv1.ForwardResponse;
  } catch (err) {
    return ConnectError.from(err);
  }
}

describe("replica-to-replica tunnel forwarding", () => {
  it("refuses a forward call without a token, with a token of another key, for another replica or expired, and offers no tunnel to the device", async () => {
    const { owner, device, replicaSide, ac, requests } = await sides();
    const heard = requests.next().catch(() => undefined);
    const target = { orgId: device.orgId, deviceId: device.id, port: 22 };
    const self = t.coord.replicaId;
    const tries: [string, Record<string, string>][] = [
      ["no token", {}],
      ["garbage", { [REPLICA_AUTH_HEADER]: "not.a-token" }],
      ["another key", { [REPLICA_AUTH_HEADER]: replicaToken(generateIdentity(), self) }],
      ["another replica", { [REPLICA_AUTH_HEADER]: replicaToken(t.coord.identity, "rep_someoneelse") }],
      ["expired", { [REPLICA_AUTH_HEADER]: replicaToken(t.coord.identity, self, Date.now() - REPLICA_TOKEN_TTL_MS - 1) }],
      ["the owner's session", owner.headers],
    ];
    for (const [what, headers] of tries) {
      const r = await forwardOnce(replicaSide, target, headers, ac.signal);
      expect(r, what).toBeInstanceOf(ConnectError);
      expect((r as ConnectError).code, what).toBe(Code.Unauthenticated);
      expect((r as ConnectError).rawMessage, what).toBe("only another coordinator replica of this database may call this");
    }
    // None of them reached the device.
    expect(t.coord.tunnels.size).toBe(0);
    ac.abort();
    expect((await heard)?.value?.event.case).not.toBe("tunnel");
  });

  it("hands a forward call with a valid token to the device's agent, as a local Open would", async () => {
    const { device, agentSide, replicaSide, ac, requests } = await sides();
    const headers = { [REPLICA_AUTH_HEADER]: replicaToken(t.coord.identity, t.coord.replicaId) };
    async function* input() {
      yield create(internalv1.ForwardRequestSchema, { frame: { case: "target", value: { orgId: device.orgId, deviceId: device.id, port: 22 } } });
      yield create(internalv1.ForwardRequestSchema, { frame: { case: "data", value: new TextEncoder().encode("ping") } });
      yield create(internalv1.ForwardRequestSchema, { frame: { case: "eof", value: {} } });
    }
    const forward = replicaSide.forward(input(), { headers, signal: ac.signal })[Symbol.asyncIterator]();
    const opened = forward.next();
    const req = await requests.next();
    if (req.value?.event.case !== "tunnel") throw new Error("expected a tunnel request");
    expect(req.value.event.value.port).toBe(22);
    const tunnelId = req.value.event.value.tunnelId;
    async function* agentInput() {
      yield create(agentv1.AttachRequestSchema, { frame: { case: "start", value: { tunnelId } } });
      yield create(agentv1.AttachRequestSchema, { frame: { case: "data", value: new TextEncoder().encode("pong") } });
      yield create(agentv1.AttachRequestSchema, { frame: { case: "eof", value: {} } });
    }
    const atDevice: string[] = [];
    const attach = (async () => {
      for await (const m of agentSide.attach(agentInput(), { headers: device.headers, signal: ac.signal })) {
        if (m.frame.case === "data") atDevice.push(new TextDecoder().decode(m.frame.value));
      }
    })();
    const first = await opened;
    expect(first.value?.frame.case).toBe("opened");
    const back: string[] = [];
    for (let r = await forward.next(); !r.done; r = await forward.next()) {
      if (r.value.frame.case === "data") back.push(new TextDecoder().decode(r.value.frame.value));
    }
    await attach;
    expect(back.join("")).toBe("pong");
    expect(atDevice.join("")).toBe("ping");
    await waitFor("the tunnel to be forgotten", () => t.coord.tunnels.size === 0);
    ac.abort();
  });
});

describe("replica tokens", () => {
  it("accepts only untampered tokens for this replica within their lifetime", () => {
    const key = generateIdentity();
    const now = Date.now();
    const token = replicaToken(key, "rep_a", now);
    expect(verifyReplicaToken(key.publicKey, "rep_a", token, now)).toBe(true);
    expect(verifyReplicaToken(key.publicKey, "rep_b", token, now)).toBe(false);
    expect(verifyReplicaToken(key.publicKey, "rep_a", token, now + REPLICA_TOKEN_TTL_MS)).toBe(false);
    const [payload, sig] = token.split(".");
    const forged = Buffer.from(JSON.stringify({ aud: "flotilla-replica/v1", to: "rep_a", exp: now + 10 ** 9 })).toString("base64url");
    expect(verifyReplicaToken(key.publicKey, "rep_a", `${forged}.${sig}`, now)).toBe(false);
    // Signed by the right key but claiming a lifetime no token is given.
    expect(verifyReplicaToken(key.publicKey, "rep_a", replicaToken(key, "rep_a", now + 10 * REPLICA_TOKEN_TTL_MS), now)).toBe(false);
    expect(verifyReplicaToken(key.publicKey, "rep_a", `${payload}`, now)).toBe(false);
    expect(verifyReplicaToken(key.publicKey, "rep_a", null, now)).toBe(false);
  });
});
