import { createClient, type Client, type Transport } from "@connectrpc/connect";
import {
  agentv1,
  authenticateMessage,
  bearerInterceptor,
  coordinatorTransport,
  newNonce,
  verifyCoordinatorProof,
  uncompressedTunnels,
  type Identity,
} from "@flotilla/protocol/agent";

export type AgentClient = Client<typeof agentv1.AgentService>;

/**
 * A client for the coordinator at `url`, whose key must hash to `pin` (or, after a rotation,
 * be endorsed by that key: `greet` checks it before anything else is sent), and its closer.
 */
export async function agentClient(
  url: string,
  pin: string,
  token?: () => string | undefined,
): Promise<{ client: AgentClient; transport: Transport; close(): void; presentedPin?: string }> {
  const { transport, close, presentedPin } = await coordinatorTransport({
    url,
    pin,
    interceptors: token ? [bearerInterceptor(token), uncompressedTunnels] : [uncompressedTunnels],
    allowRotation: true,
  });
  return { client: createClient(agentv1.AgentService, transport), transport, close, presentedPin };
}

/**
 * Hello: checks the coordinator holds the pinned key, or a key the pinned one endorsed (then
 * `onRotated` receives its pin), and returns a challenge to sign.
 */
export async function greet(
  client: AgentClient,
  pin: string,
  signal?: AbortSignal,
  rotation: { presentedPin?: string; onRotated?: (newPin: string) => void } = {},
): Promise<Uint8Array> {
  const nonce = newNonce();
  const res = await client.hello({ clientNonce: nonce }, { signal, timeoutMs: 15_000 });
  return verifyCoordinatorProof(res.proof, nonce, pin, {
    tlsKeyPin: rotation.presentedPin,
    onRotated: rotation.onRotated ?? (() => {}),
  });
}

/** An authenticated connection: a client whose calls carry a fresh session token. */
export interface Connection {
  client: AgentClient;
  session: agentv1.AuthenticateResponse;
  /** Set when the coordinator's key was rotated since `pin`: the new key's pin, to re-pin. */
  rotatedPin?: string;
  /** The same authenticated HTTP/2 connection, for the agent's other services. */
  transport: Transport;
  /** Closes the HTTP/2 connection. */
  close(): void;
}

/** Hello, then Authenticate: proves both keys and opens a session. */
export async function connect(
  url: string,
  pin: string,
  identity: Identity,
  signal?: AbortSignal,
): Promise<Connection> {
  let token: string | undefined;
  let rotatedPin: string | undefined;
  const { client, transport, close, presentedPin } = await agentClient(url, pin, () => token);
  try {
    const challenge = await greet(client, pin, signal, { presentedPin, onRotated: (p) => (rotatedPin = p) });
    const session = await client.authenticate(
      {
        publicKey: identity.publicKey,
        challenge,
        signature: identity.sign(authenticateMessage(challenge)),
      },
      { signal, timeoutMs: 15_000 },
    );
    token = session.sessionToken;
    return { client, session, transport, close, rotatedPin };
  } catch (err) {
    close();
    throw err;
  }
}
