import { create } from "@bufbuild/protobuf";
import { createClient, type Client, type Transport } from "@connectrpc/connect";
import type { Readable, Writable } from "node:stream";
import { adminv1 } from "@flotilla/protocol";

export type TunnelClient = Client<typeof adminv1.TunnelService>;

export function tunnelClient(transport: Transport): TunnelClient {
  return createClient(adminv1.TunnelService, transport);
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

/** Waits until `w` can take more, or is gone. */
function drained(w: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      w.off("drain", done);
      w.off("close", done);
      w.off("error", done);
      resolve();
    };
    w.on("drain", done);
    w.on("close", done);
    w.on("error", done);
  });
}

/**
 * Carries one tunnel between `input`/`output` and a port of a device, through the coordinator.
 * Reads `input` only as fast as the tunnel takes it and waits for `output` to drain before
 * reading on, so memory stays bounded whatever the speeds. Resolves when both directions have
 * ended; rejects with the coordinator's ConnectError (device offline, port not allowed, no
 * role) or a transport error.
 */
export async function runTunnel(client: TunnelClient, ends: TunnelEnds): Promise<void> {
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
