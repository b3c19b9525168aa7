import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { randomBytes } from "node:crypto";
import { PassThrough, Readable, Writable } from "node:stream";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import {
  agentv1,
  coordinatorTransport,
  rawStreamOf,
  relayTunnelStream,
  TUNNEL_ATTACH_PATH,
  TUNNEL_DEVICE_HEADER,
  TUNNEL_ID_HEADER,
  TUNNEL_OPEN_PATH,
  TUNNEL_PORT_HEADER,
  tunnelStreamError,
  tunnelStreamResponse,
} from "@flotilla/protocol";
import { waitFor } from "@flotilla/protocol/testing";
import { enrollDevice, startTestCoordinator, type TestCoordinator } from "../testing.ts";
import { listeningDevice } from "./listening-device.ts";
import { QUEUE_LIMIT_BYTES } from "./registry.ts";

let t: TestCoordinator;
let closeTransport: () => void = () => {};
let stopListening: () => void = () => {};
beforeEach(async () => {
  t = await startTestCoordinator();
});
afterEach(async () => {
  stopListening();
  closeTransport();
  await t.close();
});

const MiB = 1024 * 1024;

async function sides() {
  const s = await listeningDevice(t);
  closeTransport = s.close;
  stopListening = () => {
    // A read in flight observes the abort (an unread Listen stream would reject unobserved).
    s.requests.next().catch(() => {});
    s.ac.abort();
  };
  const raw = rawStreamOf(s.transport)!;
  /** Opens a byte-path stream; resolves with it and the answer's status and error. */
  async function post(path: string, headers: Record<string, string>) {
    const stream = await raw(path, { "content-type": "application/octet-stream", ...headers });
    const answer = await tunnelStreamResponse(stream);
    return { stream, status: Number(answer[":status"]), error: tunnelStreamError(answer) };
  }
  const open = (headers: Record<string, string>, device = s.device.id, port = 22) =>
    post(TUNNEL_OPEN_PATH, { ...headers, [TUNNEL_DEVICE_HEADER]: device, [TUNNEL_PORT_HEADER]: String(port) });
  const attach = (headers: Record<string, string>, tunnelId: string) => post(TUNNEL_ATTACH_PATH, { ...headers, [TUNNEL_ID_HEADER]: tunnelId });
  /** The next tunnel request the agent side hears of. */
  async function nextRequest(): Promise<agentv1.TunnelRequest> {
    const r = await s.requests.next();
    if (r.value?.event.case !== "tunnel") throw new Error("expected a tunnel request");
    return r.value.event.value;
  }
  return { ...s, open, attach, nextRequest };
}

/** Collects a stream's bytes; `gate` holds reading back until it resolves. */
function collector(gate: Promise<void> = Promise.resolve()) {
  const chunks: Buffer[] = [];
  let n = 0;
  const out = new Writable({
    highWaterMark: 16 * 1024,
    write(chunk: Buffer, _enc, cb) {
      gate.then(() => {
        chunks.push(chunk);
        n += chunk.length;
        cb();
      }, cb);
    },
  });
  return { out, bytes: () => Buffer.concat(chunks), count: () => n };
}

describe("the tunnels' byte path", () => {
  it("refuses a request without credentials, and one whose role lacks tunnel:open (audited)", async () => {
    const { device, open } = await sides();
    const anonymous = await open({});
    expect(anonymous.status).toBe(401);
    expect(anonymous.error?.code).toBe(Code.Unauthenticated);
    anonymous.stream.close();

    const deployer = await t.as(device.orgId, "deployer");
    const refused = await open(deployer.headers);
    expect(refused.status).toBe(403);
    expect(refused.error?.code).toBe(Code.PermissionDenied);
    expect(refused.error?.rawMessage).toBe("role deployer may not Open");
    refused.stream.close();
    const audit = await t.coord.store.audit.listAudit(device.orgId, { limit: 20 });
    expect(audit.some((e) => e.action === "Open" && e.outcome === "denied")).toBe(true);
    expect(t.coord.tunnels.size).toBe(0);
  });

  it("refuses an agent's session on the admin's path and an admin's on the agent's", async () => {
    const { owner, device, open, attach } = await sides();
    const asDevice = await open(device.headers);
    expect(asDevice.error?.code).toBe(Code.PermissionDenied);
    asDevice.stream.close();
    const asAdmin = await attach(owner.headers, "tun_whatever");
    expect(asAdmin.error?.code).toBe(Code.PermissionDenied);
    asAdmin.stream.close();
  });

  it("lets a device attach only to its own device's tunnels", async () => {
    const { owner, device, open, attach, nextRequest } = await sides();
    const other = await enrollDevice(t, owner, "other");
    const admin = open(owner.headers);
    const req = await nextRequest();
    expect(req.attachPath).toBe(TUNNEL_ATTACH_PATH);

    const intruder = await attach(other.headers, req.tunnelId);
    expect(intruder.status).toBe(404);
    expect(intruder.error?.code).toBe(Code.NotFound);
    intruder.stream.close();

    // The tunnel still waits for its own device, which attaches and carries bytes both ways.
    const agent = await attach(device.headers, req.tunnelId);
    expect(agent.status).toBe(200);
    const a = await admin;
    expect(a.status).toBe(200);
    const toDevice = randomBytes(300 * 1024);
    const fromDevice = randomBytes(200 * 1024);
    const atAdmin = collector();
    const atDevice = collector();
    await Promise.all([
      relayTunnelStream(a.stream, Readable.from([toDevice]), atAdmin.out),
      relayTunnelStream(agent.stream, Readable.from([fromDevice]), atDevice.out),
    ]);
    expect(atDevice.bytes().equals(toDevice)).toBe(true);
    expect(atAdmin.bytes().equals(fromDevice)).toBe(true);
    await waitFor("the tunnel to be forgotten", () => t.coord.tunnels.size === 0);
    const entry = await waitFor("the audit entry", async () =>
      (await t.coord.store.audit.listAudit(device.orgId, { limit: 20 })).find((e) => e.action === "tunnel"),
    );
    expect(JSON.parse(entry.detail)).toMatchObject({ bytesToDevice: toDevice.length, bytesFromDevice: fromDevice.length, closedBy: "both" });
  });

  it("holds a bounded number of bytes for a tunnel whose device reads nothing, then delivers every byte", async () => {
    const { owner, device, open, attach, nextRequest } = await sides();
    const admin = open(owner.headers);
    const req = await nextRequest();
    const agent = await attach(device.headers, req.tunnelId);
    const a = await admin;
    expect(a.status).toBe(200);

    // The admin writes as fast as the path takes it; the device reads nothing until released.
    let sent = 0;
    let finish = false;
    const chunk = randomBytes(64 * 1024);
    const input = new Readable({
      read() {
        if (finish) return void this.push(null);
        sent += chunk.length;
        this.push(chunk);
      },
    });
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => (release = r));
    const atDevice = collector(gate);
    const adminDone = relayTunnelStream(a.stream, input, new PassThrough().resume());
    const deviceDone = relayTunnelStream(agent.stream, Readable.from([]), atDevice.out);

    let last = -1;
    let still = 0;
    const stalled = await waitFor(
      "the admin-side writer to stall",
      () => {
        still = sent === last && sent > 0 ? still + 1 : 0;
        last = sent;
        return still >= 5 ? sent : undefined;
      },
      60_000,
      200,
    );
    const held = t.coord.tunnels.heldBytes;
    // The coordinator holds its queue (plus at most one 64 KiB piece), no more.
    expect(held).toBeGreaterThanOrEqual(QUEUE_LIMIT_BYTES);
    expect(held).toBeLessThanOrEqual(QUEUE_LIMIT_BYTES + 64 * 1024);
    // Queue, HTTP/2 windows and stream buffers on each hop: far below what a writer could offer.
    expect(stalled).toBeLessThan(8 * MiB);

    finish = true;
    input.read(0); // lets the readable see `finish` once the path takes more
    release();
    await Promise.all([adminDone, deviceDone]);
    expect(atDevice.count()).toBe(sent);
    await waitFor("the tunnel to be forgotten", () => t.coord.tunnels.size === 0);
    expect(t.coord.tunnels.heldBytes).toBe(0);
  });

  it("carries an admin's byte-path tunnel to an agent that attaches with the Attach RPC (an older agent)", async () => {
    const { owner, device, agentSide, ac, open, nextRequest } = await sides();
    const admin = open(owner.headers);
    const req = await nextRequest();
    const fromDevice = randomBytes(100 * 1024);
    async function* agentInput() {
      yield create(agentv1.AttachRequestSchema, { frame: { case: "start", value: { tunnelId: req.tunnelId } } });
      yield create(agentv1.AttachRequestSchema, { frame: { case: "data", value: fromDevice } });
      yield create(agentv1.AttachRequestSchema, { frame: { case: "eof", value: {} } });
    }
    const agent = agentSide.attach(agentInput(), { headers: device.headers, signal: ac.signal });
    const a = await admin;
    expect(a.status).toBe(200);
    const toDevice = randomBytes(150 * 1024);
    const atAdmin = collector();
    const adminDone = relayTunnelStream(a.stream, Readable.from([toDevice]), atAdmin.out);
    const chunks: Uint8Array[] = [];
    for await (const m of agent) {
      if (m.frame.case === "data") chunks.push(m.frame.value);
      if (m.frame.case === "eof") break;
    }
    await adminDone;
    expect(Buffer.concat(chunks).equals(toDevice)).toBe(true);
    expect(atAdmin.bytes().equals(fromDevice)).toBe(true);
  });

  it("ends the admin's stream with the device's error when the agent's connection goes away", async () => {
    const { owner, device, open, nextRequest } = await sides();
    const admin = open(owner.headers);
    const req = await nextRequest();
    // The agent attaches over a connection of its own, which then dies (a killed agent).
    const agentConn = await coordinatorTransport({ url: t.coord.url });
    const agentStream = await rawStreamOf(agentConn.transport)!(TUNNEL_ATTACH_PATH, { ...device.headers, [TUNNEL_ID_HEADER]: req.tunnelId });
    expect(Number((await tunnelStreamResponse(agentStream))[":status"])).toBe(200);
    const a = await admin;
    const output = new PassThrough().resume();
    const done = relayTunnelStream(a.stream, new PassThrough(), output);
    agentStream.on("error", () => {});
    agentStream.session?.destroy();
    agentConn.close();
    await expect(done).rejects.toMatchObject({ code: Code.Aborted });
    // The failure leaves the admin's output open: the CLI prints the error before its stdout
    // closes (ssh, at a ProxyCommand's EOF, would end and kill it before the error is out).
    expect(output.writableEnded).toBe(false);
    expect(output.destroyed).toBe(false);
    await waitFor("the tunnel to be forgotten", () => t.coord.tunnels.size === 0);
  });
});
