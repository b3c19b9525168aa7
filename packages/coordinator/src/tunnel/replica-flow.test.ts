/**
 * A tunnel opened on one coordinator replica to a device whose agent listens on another, both
 * on one PostgreSQL database (runs when FLOTILLA_TEST_POSTGRES_URL is set).
 */
import { create } from "@bufbuild/protobuf";
import { createClient } from "@connectrpc/connect";
import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterEach, describe, expect, it } from "vitest";
import { adminv1, agentv1, coordinatorTransport, generateIdentity, uncompressedTunnels } from "@flotilla/protocol";
import { waitFor } from "@flotilla/protocol/testing";
import { enrollDevice, SETUP_CODE, startTestCoordinator, type TestCoordinator } from "../testing.ts";
import { MAX_CHUNK_BYTES, QUEUE_LIMIT_BYTES } from "./registry.ts";

const pgUrl = process.env.FLOTILLA_TEST_POSTGRES_URL;
const cleanups: (() => Promise<void> | void)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function freshDatabase(): Promise<string> {
  const name = `flotilla_test_${randomBytes(6).toString("hex")}`;
  const admin = new pg.Client({ connectionString: pgUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  cleanups.push(async () => {
    const c = new pg.Client({ connectionString: pgUrl });
    await c.connect();
    await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await c.end();
  });
  const url = new URL(pgUrl!);
  url.pathname = `/${name}`;
  return url.toString();
}

/** Replica `a` (where the admin is) and `b` (where the agent listens), sharing database and data directory. */
async function twoReplicas(): Promise<{ a: TestCoordinator; b: TestCoordinator }> {
  const databaseUrl = await freshDatabase();
  const a = await startTestCoordinator({ databaseUrl });
  cleanups.push(() => a.close());
  const b = await startTestCoordinator({ databaseUrl, dataDir: a.dataDir });
  cleanups.push(() => b.close());
  return { a, b };
}

describe.skipIf(!pgUrl)("a tunnel carried from one replica to another", () => {
  it("holds a bounded number of bytes when the device reads nothing, keeps nothing on the admin's replica, carries another tunnel on the same connection meanwhile, then delivers every byte", async () => {
    const { a, b } = await twoReplicas();
    const owner = await a.login(generateIdentity(), { setupCode: SETUP_CODE });
    const device = await enrollDevice(a, owner);
    const toA = await coordinatorTransport({ url: a.coord.url, interceptors: [uncompressedTunnels] });
    const toB = await coordinatorTransport({ url: b.coord.url, interceptors: [uncompressedTunnels] });
    cleanups.push(() => toA.close(), () => toB.close());
    const ac = new AbortController();
    cleanups.push(() => ac.abort());
    const agentSide = createClient(agentv1.AgentTunnelService, toB.transport);
    const adminSide = createClient(adminv1.TunnelService, toA.transport);
    // The agent's Watch stream on B makes the device online (the admin's replica reads that from the database).
    const watch = createClient(agentv1.AgentService, toB.transport).watch({ agentVersion: "1.0.0" }, { headers: device.headers, signal: ac.signal })[Symbol.asyncIterator]();
    void watch.next().catch(() => {});
    await waitFor("the device online for A", async () => {
      const d = await a.admin.getDevice({ device: device.id }, { headers: owner.headers }).catch(() => undefined);
      return d?.device?.connection === adminv1.Connection.ONLINE ? true : undefined;
    });
    const requests = agentSide.listen({}, { headers: device.headers, signal: ac.signal })[Symbol.asyncIterator]();
    await waitFor("the agent's Listen stream on B", () => b.coord.tunnels.isListening(device.id));
    expect(a.coord.tunnels.isListening(device.id)).toBe(false);

    let sent = 0;
    let finish = false;
    async function* adminInput() {
      yield create(adminv1.OpenRequestSchema, { frame: { case: "target", value: { device: "box", port: 22 } } });
      const chunk = new Uint8Array(randomBytes(64 * 1024));
      while (!finish) {
        yield create(adminv1.OpenRequestSchema, { frame: { case: "data", value: chunk } });
        sent += chunk.length;
      }
      yield create(adminv1.OpenRequestSchema, { frame: { case: "eof", value: {} } });
    }
    const opened = adminSide.open(adminInput(), { headers: owner.headers, signal: ac.signal })[Symbol.asyncIterator]();
    const openedFirst = opened.next();
    const r = await requests.next();
    if (r.value?.event.case !== "tunnel") throw new Error("expected a tunnel request");
    const tunnelId = r.value.event.value.tunnelId;
    let deviceDone: () => void = () => {};
    const deviceEof = new Promise<void>((res) => (deviceDone = res));
    async function* agentInput() {
      yield create(agentv1.AttachRequestSchema, { frame: { case: "start", value: { tunnelId } } });
      await deviceEof;
      yield create(agentv1.AttachRequestSchema, { frame: { case: "eof", value: {} } });
    }
    const attached = agentSide.attach(agentInput(), { headers: device.headers, signal: ac.signal })[Symbol.asyncIterator]();
    const firstAtDevice = attached.next();
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
    // The holder's queue is full; the admin's replica keeps no tunnel of its own; the two
    // connections' HTTP/2 windows hold the rest, a bounded amount.
    expect(b.coord.tunnels.heldBytes).toBeGreaterThanOrEqual(QUEUE_LIMIT_BYTES);
    expect(b.coord.tunnels.heldBytes).toBeLessThanOrEqual(QUEUE_LIMIT_BYTES + MAX_CHUNK_BYTES);
    expect(a.coord.tunnels.size).toBe(0);
    expect(stalled).toBeLessThan(8 * 1024 * 1024);

    // A second tunnel, carried on the same connection between the replicas, goes both ways while
    // the first one stands still.
    let secondDone: () => void = () => {};
    const secondEnds = new Promise<void>((res) => (secondDone = res));
    async function* secondAdmin() {
      yield create(adminv1.OpenRequestSchema, { frame: { case: "target", value: { device: "box", port: 22 } } });
      yield create(adminv1.OpenRequestSchema, { frame: { case: "data", value: new TextEncoder().encode("ping") } });
      await secondEnds;
      yield create(adminv1.OpenRequestSchema, { frame: { case: "eof", value: {} } });
    }
    const second = adminSide.open(secondAdmin(), { headers: owner.headers, signal: ac.signal })[Symbol.asyncIterator]();
    const secondOpened = second.next();
    let r2 = await requests.next();
    // Keep-alives may come first.
    while (!r2.done && r2.value.event.case !== "tunnel") r2 = await requests.next();
    if (r2.value?.event.case !== "tunnel") throw new Error(`expected a second tunnel request, got ${r2.value?.event.case}`);
    const secondId = r2.value.event.value.tunnelId;
    async function* secondAgent() {
      yield create(agentv1.AttachRequestSchema, { frame: { case: "start", value: { tunnelId: secondId } } });
      yield create(agentv1.AttachRequestSchema, { frame: { case: "data", value: new TextEncoder().encode("pong") } });
      await secondEnds;
      yield create(agentv1.AttachRequestSchema, { frame: { case: "eof", value: {} } });
    }
    const secondAttached = agentSide.attach(secondAgent(), { headers: device.headers, signal: ac.signal })[Symbol.asyncIterator]();
    expect((await secondOpened).value?.frame.case).toBe("opened");
    const atDevice = await secondAttached.next();
    expect(atDevice.value?.frame.case === "data" && new TextDecoder().decode(atDevice.value.frame.value)).toBe("ping");
    const atAdmin = await second.next();
    expect(atAdmin.value?.frame.case === "data" && new TextDecoder().decode(atAdmin.value.frame.value)).toBe("pong");
    secondDone();
    expect((await second.next()).value?.frame.case).toBe("eof");
    expect((await secondAttached.next()).value?.frame.case).toBe("eof");
    // The first tunnel did not move meanwhile.
    expect(sent).toBe(stalled);

    finish = true;
    let received = 0;
    for (let m = await firstAtDevice; !m.done; m = await attached.next()) {
      if (m.value.frame.case === "data") received += m.value.frame.value.length;
      if (m.value.frame.case === "eof") break;
    }
    expect(received).toBe(sent);
    deviceDone();
    expect((await opened.next()).value?.frame.case).toBe("eof");
    expect((await opened.next()).done).toBe(true);
    await waitFor("the tunnel to be forgotten on B", () => b.coord.tunnels.size === 0);
    expect(b.coord.tunnels.heldBytes).toBe(0);
  });
});
