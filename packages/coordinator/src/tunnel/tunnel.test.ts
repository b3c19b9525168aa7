import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { randomBytes } from "node:crypto";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { adminv1, agentv1 } from "@flotilla/protocol";
import { waitFor } from "@flotilla/protocol/testing";
import { startTestCoordinator, type TestCoordinator } from "../testing.ts";
import { listeningDevice } from "./listening-device.ts";
import { MAX_CHUNK_BYTES, QUEUE_LIMIT_BYTES } from "./registry.ts";

let t: TestCoordinator;
let closeTransport: () => void = () => {};
beforeEach(async () => {
  t = await startTestCoordinator();
});
afterEach(async () => {
  closeTransport();
  await t.close();
});

/** An approved device whose agent side holds Listen open, and clients for both sides. */
async function tunnelSides() {
  const sides = await listeningDevice(t);
  closeTransport = sides.close;
  return { ...sides, adminSide: createClient(adminv1.TunnelService, sides.transport) };
}

/** The next tunnel request the agent side hears of. */
async function nextTunnelId(requests: AsyncIterator<agentv1.ListenResponse>): Promise<string> {
  const r = await requests.next();
  if (r.value?.event.case !== "tunnel") throw new Error("expected a tunnel request");
  return r.value.event.value.tunnelId;
}

describe("the coordinator's tunnel relay", () => {
  it("holds a bounded number of bytes for a tunnel whose device reads nothing, then delivers every byte", async () => {
    const { owner, device, agentSide, adminSide, ac, requests } = await tunnelSides();
    let sent = 0;
    let finish = false;
    async function* adminInput() {
      yield create(adminv1.OpenRequestSchema, { frame: { case: "target", value: { device: "box", port: 22 } } });
      const chunk = new Uint8Array(randomBytes(64 * 1024)); // incompressible, as ssh traffic is
      while (!finish) {
        yield create(adminv1.OpenRequestSchema, { frame: { case: "data", value: chunk } });
        sent += chunk.length;
      }
      yield create(adminv1.OpenRequestSchema, { frame: { case: "eof", value: {} } });
    }
    const opened = adminSide.open(adminInput(), { headers: owner.headers, signal: ac.signal })[Symbol.asyncIterator]();
    const openedFirst = opened.next();

    const tunnelId = await nextTunnelId(requests);
    let deviceDone: () => void = () => {};
    const deviceEof = new Promise<void>((r) => (deviceDone = r));
    async function* agentInput() {
      yield create(agentv1.AttachRequestSchema, { frame: { case: "start", value: { tunnelId } } });
      await deviceEof;
      yield create(agentv1.AttachRequestSchema, { frame: { case: "eof", value: {} } });
    }
    const attached = agentSide.attach(agentInput(), { headers: device.headers, signal: ac.signal })[Symbol.asyncIterator]();
    const firstAtDevice = attached.next(); // starts the call; then the device reads nothing
    expect((await openedFirst).value?.frame.case).toBe("opened");

    let last = -1;
    let still = 0;
    const stalled = await waitFor(
      "the admin-side writer to stall",
      () => {
        still = sent === last ? still + 1 : 0;
        last = sent;
        return still >= 5 && sent > 0 ? sent : undefined;
      },
      60_000,
      200,
    );
    const held = t.coord.tunnels.heldBytes;
    expect(held).toBeGreaterThanOrEqual(QUEUE_LIMIT_BYTES); // the relay is the one holding back
    expect(held).toBeLessThanOrEqual(QUEUE_LIMIT_BYTES + MAX_CHUNK_BYTES);
    expect(stalled).toBeLessThan(4 * 1024 * 1024);

    finish = true;
    let received = 0;
    for (let r = await firstAtDevice; !r.done; r = await attached.next()) {
      if (r.value.frame.case === "data") received += r.value.frame.value.length;
      if (r.value.frame.case === "eof") break;
    }
    expect(received).toBe(sent);
    deviceDone();
    let tail = await opened.next();
    expect(tail.value?.frame.case).toBe("eof");
    tail = await opened.next();
    expect(tail.done).toBe(true);
    await waitFor("the tunnel to be forgotten", () => t.coord.tunnels.size === 0);
    expect(t.coord.tunnels.heldBytes).toBe(0);
    ac.abort();
  });

  it("delivers everything the admin sends after the device has closed its side", async () => {
    const { owner, device, agentSide, adminSide, ac, requests } = await tunnelSides();
    const payload = randomBytes(1024 * 1024);
    let deviceClosed: () => void = () => {};
    const afterDeviceEof = new Promise<void>((r) => (deviceClosed = r));
    async function* adminInput() {
      yield create(adminv1.OpenRequestSchema, { frame: { case: "target", value: { device: device.id, port: 22 } } });
      await afterDeviceEof;
      for (let i = 0; i < payload.length; i += 64 * 1024) {
        yield create(adminv1.OpenRequestSchema, { frame: { case: "data", value: payload.subarray(i, i + 64 * 1024) } });
      }
      yield create(adminv1.OpenRequestSchema, { frame: { case: "eof", value: {} } });
    }
    const admin = adminSide.open(adminInput(), { headers: owner.headers, signal: ac.signal })[Symbol.asyncIterator]();
    const opened = admin.next();
    const tunnelId = await nextTunnelId(requests);
    async function* agentInput() {
      yield create(agentv1.AttachRequestSchema, { frame: { case: "start", value: { tunnelId } } });
      yield create(agentv1.AttachRequestSchema, { frame: { case: "eof", value: {} } });
    }
    const agent = agentSide.attach(agentInput(), { headers: device.headers, signal: ac.signal });
    expect((await opened).value?.frame.case).toBe("opened");
    expect((await admin.next()).value?.frame.case).toBe("eof");
    deviceClosed();

    const chunks: Uint8Array[] = [];
    let sawEof = false;
    for await (const m of agent) {
      if (m.frame.case === "data") chunks.push(m.frame.value);
      if (m.frame.case === "eof") sawEof = true;
    }
    expect(sawEof).toBe(true);
    expect(Buffer.concat(chunks).equals(payload)).toBe(true);
    expect((await admin.next()).done).toBe(true);
    await waitFor("the tunnel to be forgotten", () => t.coord.tunnels.size === 0);
    ac.abort();
  });
});
