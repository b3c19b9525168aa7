import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import net from "node:net";
import http2 from "node:http2";
import { agentv1, drained, rawStreamOf, relayTunnelStream, sleep, TUNNEL_ID_HEADER, tunnelStreamError, tunnelStreamResponse, type Logger } from "@flotilla/protocol/agent";

type TunnelClient = Client<typeof agentv1.AgentTunnelService>;
type RawStreamOpener = NonNullable<ReturnType<typeof rawStreamOf>>;

/** What tunnels may reach on this device. */
export interface TunnelOptions {
  /** The allowlist (`--tunnel-ports`); a request for any other port is refused. */
  ports: readonly number[];
  /** Where the ports are: the device's loopback address. */
  host?: string;
  connectTimeoutMs?: number;
  /**
   * The device's session token: with it, a tunnel's bytes go over the coordinator's byte path
   * (a plain HTTP/2 stream on the same connection) when the request names one; else over Attach.
   */
  sessionToken?: string;
}

/** Bytes per data message sent to the coordinator (its limit is 256 KiB). */
const CHUNK_BYTES = 64 * 1024;

/**
 * Serves tunnel requests over an authenticated connection until `signal` aborts (the
 * connection is gone): holds the Listen stream open and, per request, connects to the local
 * port and carries its bytes over an Attach stream. Nothing listens on the network. Never
 * rejects; failures are logged and Listen is reopened while the connection lasts.
 */
export async function serveTunnels(transport: Transport, opts: TunnelOptions, log: Logger, signal: AbortSignal): Promise<void> {
  if (opts.ports.length === 0) return;
  const client = createClient(agentv1.AgentTunnelService, transport);
  while (!signal.aborted) {
    try {
      for await (const msg of client.listen({}, { signal })) {
        if (msg.event.case === "tunnel") void carry(client, rawStreamOf(transport), msg.event.value, opts, log, signal);
      }
    } catch (err) {
      if (signal.aborted) return;
      const ce = ConnectError.from(err);
      if (ce.code === Code.Unimplemented) {
        log.warn("the coordinator does not offer tunnels; not listening for them");
        return;
      }
      log.warn("tunnel listen stream failed; reopening", { err: ce.rawMessage });
    }
    await sleep(1000, signal);
  }
}

function start(tunnelId: string, error = agentv1.AttachError.UNSPECIFIED, message = ""): agentv1.AttachRequest {
  return create(agentv1.AttachRequestSchema, { frame: { case: "start", value: { tunnelId, error, message } } });
}

async function* once<T>(value: T): AsyncGenerator<T> {
  yield value;
}

/** Connects to the local port, resolving once connected. */
function dial(host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host, port, allowHalfOpen: true, timeout: timeoutMs });
    const fail = (err: Error) => {
      socket.destroy();
      reject(err);
    };
    socket.once("error", fail);
    socket.once("timeout", () => fail(new Error("connection timed out")));
    socket.once("connect", () => {
      socket.off("error", fail);
      socket.setTimeout(0);
      resolve(socket);
    });
  });
}

/** One tunnel: refuse it, or connect and relay until both sides have sent eof or one fails. */
async function carry(
  client: TunnelClient,
  raw: RawStreamOpener | undefined,
  req: agentv1.TunnelRequest,
  opts: TunnelOptions,
  log: Logger,
  signal: AbortSignal,
): Promise<void> {
  const { tunnelId, port } = req;
  const refuse = async (error: agentv1.AttachError, message: string) => {
    log.warn("tunnel refused", { tunnel: tunnelId, port, reason: message });
    try {
      // The coordinator answers nothing and ends the call at once.
      const it = client.attach(once(start(tunnelId, error, message)), { signal })[Symbol.asyncIterator]();
      while (!(await it.next()).done);
    } catch (err) {
      log.warn("could not refuse tunnel", { tunnel: tunnelId, err: ConnectError.from(err).rawMessage });
    }
  };
  if (!opts.ports.includes(port)) {
    return refuse(
      agentv1.AttachError.PORT_NOT_ALLOWED,
      `port ${port} is not allowed on this device (agent --tunnel-ports: ${opts.ports.join(",")})`,
    );
  }
  let socket: net.Socket;
  try {
    socket = await dial(opts.host ?? "127.0.0.1", port, opts.connectTimeoutMs ?? 10_000);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    return refuse(agentv1.AttachError.CONNECT_FAILED, `cannot connect to port ${port} on the device (${code})`);
  }
  log.info("tunnel open", { tunnel: tunnelId, port });
  if (raw && req.attachPath && opts.sessionToken) return carryRaw(raw, req, opts.sessionToken, socket, log, signal);
  const input = async function* (): AsyncGenerator<agentv1.AttachRequest> {
    yield start(tunnelId);
    for await (const chunk of socket as AsyncIterable<Buffer>) {
      for (let i = 0; i < chunk.length; i += CHUNK_BYTES) {
        yield create(agentv1.AttachRequestSchema, { frame: { case: "data", value: chunk.subarray(i, i + CHUNK_BYTES) } });
      }
    }
    yield create(agentv1.AttachRequestSchema, { frame: { case: "eof", value: {} } });
  };
  try {
    for await (const res of client.attach(input(), { signal })) {
      if (res.frame.case === "data") {
        if (!socket.write(res.frame.value)) await drained(socket);
      } else if (res.frame.case === "eof") {
        socket.end();
      }
    }
    log.info("tunnel closed", { tunnel: tunnelId, port });
  } catch (err) {
    log.info("tunnel ended", { tunnel: tunnelId, port, err: ConnectError.from(err).rawMessage });
    socket.destroy();
  }
}

/** One accepted tunnel over the coordinator's byte path: the socket's bytes are the stream's bodies. */
async function carryRaw(raw: RawStreamOpener, req: agentv1.TunnelRequest, token: string, socket: net.Socket, log: Logger, signal: AbortSignal): Promise<void> {
  const { tunnelId, port } = req;
  try {
    const stream = await raw(req.attachPath, {
      authorization: `Bearer ${token}`,
      "content-type": "application/octet-stream",
      [TUNNEL_ID_HEADER]: tunnelId,
    });
    const answer = await tunnelStreamResponse(stream);
    if (Number(answer[":status"]) !== 200) {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      throw tunnelStreamError(answer) ?? new ConnectError(`the coordinator answered ${String(answer[":status"])}`, Code.Unknown);
    }
    await relayTunnelStream(stream, socket, socket, signal);
    log.info("tunnel closed", { tunnel: tunnelId, port });
  } catch (err) {
    log.info("tunnel ended", { tunnel: tunnelId, port, err: ConnectError.from(err).rawMessage });
    socket.destroy();
  }
}
