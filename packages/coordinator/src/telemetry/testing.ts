/** For tests and benchmarks: an enrolled, approved device with a session on a test coordinator. */
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { adminv1, agentv1, authenticateMessage, commonv1, coordinatorTransport, enrollMessage, generateIdentity, parseJoinString } from "@flotilla/protocol";
import { SETUP_CODE, type TestCoordinator } from "../test-support.ts";

/**
 * Logs in the first owner, enrolls an auto-approved device named `hostname` and opens its
 * session. Returns call options for both, telemetry clients and a closer for their connection.
 */
export async function enrollTestDevice(t: TestCoordinator, hostname = "box") {
  const owner = await t.login(generateIdentity(), { setupCode: SETUP_CODE });
  const tok = await t.admin.createJoinToken({ usesAllowed: 1, autoApprove: true }, owner);
  const secret = parseJoinString(tok.joinString).secret;
  const id = generateIdentity();
  let ch = await t.challenge();
  const enrolled = await t.agent.enroll({ joinSecret: secret, publicKey: id.publicKey, challenge: ch, signature: id.sign(enrollMessage(ch, secret)), facts: create(commonv1.FactsSchema, { hostname }) });
  ch = await t.challenge();
  const session = await t.agent.authenticate({ publicKey: id.publicKey, challenge: ch, signature: id.sign(authenticateMessage(ch)) });
  const tr = await coordinatorTransport({ url: t.coord.url, maxMessageBytes: 4 << 20 });
  return {
    owner,
    device: { headers: { authorization: `Bearer ${session.sessionToken}` } },
    orgId: enrolled.organizationId,
    deviceId: enrolled.deviceId,
    ship: createClient(agentv1.TelemetryService, tr.transport),
    query: createClient(adminv1.TelemetryService, tr.transport),
    close: tr.close,
  };
}
