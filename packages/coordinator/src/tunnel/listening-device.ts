/** Test setup shared by the tunnel service tests: a device whose agent side holds Listen open. */
import { createClient, type Transport } from "@connectrpc/connect";
import { agentv1, coordinatorTransport, generateIdentity, uncompressedTunnels } from "@flotilla/protocol";
import { waitFor } from "@flotilla/protocol/testing";
import { enrollDevice, SETUP_CODE, type TestCoordinator } from "../testing.ts";

/**
 * An owner's session, an approved device, a transport to the coordinator (`close` ends it) and
 * the device's Listen stream, open once the coordinator counts it.
 */
export async function listeningDevice(t: TestCoordinator) {
  const owner = await t.login(generateIdentity(), { setupCode: SETUP_CODE });
  const device = await enrollDevice(t, owner);
  const { transport, close }: { transport: Transport; close: () => void } = await coordinatorTransport({ url: t.coord.url, interceptors: [uncompressedTunnels] });
  const agentSide = createClient(agentv1.AgentTunnelService, transport);
  const ac = new AbortController();
  const requests = agentSide.listen({}, { headers: device.headers, signal: ac.signal })[Symbol.asyncIterator]();
  await waitFor("the agent's Listen stream", () => t.coord.tunnels.isListening(device.id));
  return { owner, device, transport, close, agentSide, ac, requests };
}
