import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, type Client, type Transport } from "@connectrpc/connect";
import http2 from "node:http2";
import type { Readable, Writable } from "node:stream";
import {
  adminv1,
  drained,
  onAbort,
  rawStreamOf,
  relayTunnelStream,
  TUNNEL_DEVICE_HEADER,
  TUNNEL_DEVICE_ID_HEADER,
  TUNNEL_DEVICE_NAME_HEADER,
  TUNNEL_ID_HEADER,
  TUNNEL_OPEN_PATH,
  TUNNEL_PORT_HEADER,
  tunnelStreamError,
  tunnelStreamResponse,
  type RawStreamOpener,
} from "@flotilla/protocol";

/**
 * How the CLI opens tunnels: the byte path (a plain HTTP/2 stream on the same connection, with
 * the same bearer token) when the transport offers it, else, or when the coordinator does not
 * serve that path, TunnelService/Open.
 */
export interface TunnelClient {
  rpc: Client<typeof adminv1.TunnelService>;
  raw?: { open: RawStreamOpener; token(): string | undefined };
}

export function tunnelClient(transport: Transport, token?: () => string | undefined): TunnelClient {
  const open = rawStreamOf(transport);
  const rpc = createClient(adminv1.TunnelService, transport);
  return { rpc, raw: open && token && process.env.FLOTILLA_TUNNEL_RPC !== "1" ? { open, token } : undefined };
}

/** Bytes per data message (the coordinator accepts up to 256 KiB). */
const CHUNK_BYTES = 64 * 1024;

/** Where a tunnel goes and what it carries. */
export interface TunnelEnds {
  device: string;
  port: number;
  /** Bytes for the device; its end is sent as the tunnel's eof. */
  input: Readable;
  /** Bytes from the device; ended at the device's eof. */
  output: Writable;
  /** Called once the agent has connected to the port, before any byte arrives. */
  onOpen?: (opened: adminv1.TunnelOpened) => void;
  signal?: AbortSignal;
}

/**
 * Carries one tunnel between `input`/`output` and a port of a device, through the coordinator.
 * Reads `input` only as fast as the tunnel takes it and waits for `output` to drain before
 * reading on, so memory stays bounded whatever the speeds. Resolves when both directions have
 * ended; rejects with the coordinator's ConnectError (device offline, port not allowed, no
 * role) or a transport error.
 */
export async function runTunnel(client: TunnelClient, ends: TunnelEnds): Promise<void> {
  if (client.raw && (await runRawTunnel(client.raw, ends))) return;
  return runRpcTunnel(client.rpc, ends);
}

function header(h: http2.IncomingHttpHeaders, name: string): string {
  const v = h[name];
  return typeof v === "string" ? v : "";
}

/**
 * The tunnel over the byte path; false (nothing read from `input`) when the coordinator does
 * not serve it, so the caller uses the RPC.
 */
async function runRawTunnel(raw: NonNullable<TunnelClient["raw"]>, ends: TunnelEnds): Promise<boolean> {
  const { device, port, input, output, signal } = ends;
  signal?.throwIfAborted();
  const headers: Record<string, string> = {
    "content-type": "application/octet-stream",
    [TUNNEL_DEVICE_HEADER]: device,
    [TUNNEL_PORT_HEADER]: String(port),
  };
  const token = raw.token();
  if (token) headers.authorization = `Bearer ${token}`;
  let stream: http2.ClientHttp2Stream;
  try {
    stream = await raw.open(TUNNEL_OPEN_PATH, headers);
  } catch (err) {
    throw ConnectError.from(err, Code.Unavailable);
  }
  const unlisten = signal ? onAbort(signal, () => stream.close(http2.constants.NGHTTP2_CANCEL)) : () => undefined;
  let answer: http2.IncomingHttpHeaders;
  try {
    answer = await tunnelStreamResponse(stream);
  } finally {
    unlisten();
  }
  if (Number(answer[":status"]) !== 200) {
    stream.close(http2.constants.NGHTTP2_CANCEL);
    const err = tunnelStreamError(answer);
    if (err) throw err;
    return false; // a coordinator without the byte path (404): use the RPC
  }
  let deviceName = header(answer, TUNNEL_DEVICE_NAME_HEADER);
  try {
    deviceName = decodeURIComponent(deviceName);
  } catch {
    // as it is
  }
  ends.onOpen?.(
    create(adminv1.TunnelOpenedSchema, {
      tunnelId: header(answer, TUNNEL_ID_HEADER),
      deviceId: header(answer, TUNNEL_DEVICE_ID_HEADER),
      deviceName,
    }),
  );
  await relayTunnelStream(stream, input, output, signal);
  return true;
}

async function runRpcTunnel(client: TunnelClient["rpc"], ends: TunnelEnds): Promise<void> {
  const { device, port, input, output } = ends;
  async function* requests(): AsyncGenerator<adminv1.OpenRequest> {
    yield create(adminv1.OpenRequestSchema, { frame: { case: "target", value: { device, port } } });
    for await (const chunk of input as AsyncIterable<Buffer>) {
      for (let i = 0; i < chunk.length; i += CHUNK_BYTES) {
        yield create(adminv1.OpenRequestSchema, { frame: { case: "data", value: chunk.subarray(i, i + CHUNK_BYTES) } });
      }
    }
    yield create(adminv1.OpenRequestSchema, { frame: { case: "eof", value: {} } });
  }
  for await (const res of client.open(requests(), { signal: ends.signal })) {
    switch (res.frame.case) {
      case "opened":
        ends.onOpen?.(res.frame.value);
        break;
      case "data":
        if (!output.write(res.frame.value)) await drained(output);
        break;
      case "eof":
        output.end();
        break;
    }
  }
}
