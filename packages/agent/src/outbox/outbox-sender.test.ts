import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { join } from "node:path";
import { agentv1, commonv1, silentLogger } from "@flotilla/protocol";
import { useTempDir } from "@flotilla/protocol/testing/hooks";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { OutboxSender } from "./outbox-sender.ts";
import { Outbox } from "./outbox.ts";

const tmp = useTempDir("flotilla-sender-");
let outbox: Outbox;
let stop: AbortController;

beforeEach(async () => {
  outbox = await Outbox.open(join(tmp.path, "outbox"));
  stop = new AbortController();
});

afterEach(async () => {
  stop.abort();
  await outbox.close();
});

/** A coordinator in memory whose Report answers with `answer(entries)`: acks or an error. */
function coordinator(answer: (entries: agentv1.OutboxEntry[]) => { stream: string; seq: number }[] | ConnectError) {
  const reports: agentv1.OutboxEntry[][] = [];
  const transport = createRouterTransport(({ service }) => {
    service(agentv1.AgentService, {
      report(req) {
        reports.push(req.entries);
        const res = answer(req.entries);
        if (res instanceof ConnectError) throw res;
        return { acks: res.map((a) => ({ stream: a.stream, seq: BigInt(a.seq) })) };
      },
    });
  });
  return { client: createClient(agentv1.AgentService, transport), reports };
}

const ackAll = (entries: agentv1.OutboxEntry[]) => entries.map((e) => ({ stream: e.stream, seq: Number(e.seq) }));
const labels = (entries: agentv1.OutboxEntry[]) => entries.map((e) => `${e.stream}:${e.seq}:${e.body.case === "status" ? e.body.value.observedGeneration : "?"}`);
const status = (generation: number): agentv1.OutboxEntry["body"] => ({ case: "status", value: create(agentv1.StatusSchema, { observedGeneration: BigInt(generation) }) });

describe("OutboxSender", () => {
  it("queues entries as outbox records that carry their stream, seq and time when sent", async () => {
    const sender = new OutboxSender(outbox, { retryMs: 1_000 }, silentLogger);
    await sender.queue("status", status(7));
    const [record] = await outbox.pending(10);
    expect(record?.stream).toBe("status");
    expect(fromBinary(agentv1.OutboxEntrySchema, record!.body).body.case).toBe("status");

    const c = coordinator(ackAll);
    sender.connect(c.client);
    const run = sender.run(stop.signal);
    await vi.waitFor(() => expect(outbox.size()).toBe(0));
    const sent = c.reports[0]![0]!;
    expect(labels([sent])).toEqual(["status:1:7"]);
    expect(Number(sent.time?.seconds)).toBeGreaterThan(0);
    stop.abort();
    await run;
    sender.close();
  });

  it("sends nothing while disconnected, then everything in batches within the record and byte limits", async () => {
    const sender = new OutboxSender(outbox, { retryMs: 1_000, batchRecords: 3, batchBytes: 40 }, silentLogger);
    const run = sender.run(stop.signal);
    for (let g = 1; g <= 7; g++) await sender.queue("status", status(g));
    // A record bigger than batchBytes goes alone rather than blocking the rest.
    await outbox.append("big", toBinary(agentv1.OutboxEntrySchema, create(agentv1.OutboxEntrySchema, { body: { case: "status", value: create(agentv1.StatusSchema, { labels: { x: "y".repeat(100) } }) } })));
    const c = coordinator(ackAll);
    expect(c.reports).toEqual([]);
    sender.connect(c.client);
    await vi.waitFor(() => expect(outbox.size()).toBe(0));
    expect(c.reports.map((r) => r.length)).toEqual([3, 3, 1, 1]);
    expect(c.reports.flatMap(labels).slice(0, 7)).toEqual([1, 2, 3, 4, 5, 6, 7].map((g) => `status:${g}:${g}`));
    for (const r of c.reports.slice(0, 3)) {
      expect(r.reduce((n, e) => n + toBinary(agentv1.OutboxEntrySchema, create(agentv1.OutboxEntrySchema, { body: e.body })).length, 0)).toBeLessThanOrEqual(40);
    }
    stop.abort();
    await run;
    sender.close();
  });

  it("deletes only what the coordinator acknowledged and sends the rest again", async () => {
    const sender = new OutboxSender(outbox, { retryMs: 1_000 }, silentLogger);
    for (let g = 1; g <= 3; g++) await sender.queue("status", status(g));
    await sender.queue("facts", { case: "facts", value: create(commonv1.FactsSchema, {}) });
    // First report: only status up to seq 2 acknowledged; afterwards everything.
    const c = coordinator((entries) => (c.reports.length === 1 ? [{ stream: "status", seq: 2 }] : ackAll(entries)));
    sender.connect(c.client);
    const run = sender.run(stop.signal);
    await vi.waitFor(() => expect(outbox.size()).toBe(0));
    expect(c.reports.map((r) => r.map((e) => `${e.stream}:${e.seq}`))).toEqual([
      ["status:1", "status:2", "status:3", "facts:1"],
      ["status:3", "facts:1"],
    ]);
    stop.abort();
    await run;
    sender.close();
  });

  it("keeps records after a failed report and asks for a new session when the coordinator refused this one", async () => {
    const sender = new OutboxSender(outbox, { retryMs: 60_000 }, silentLogger);
    await sender.queue("status", status(1));
    const refused = coordinator(() => new ConnectError("session expired", Code.Unauthenticated));
    let reconnects = 0;
    const run = sender.run(stop.signal);
    sender.connect(refused.client, () => reconnects++);
    await vi.waitFor(() => expect(reconnects).toBe(1));
    expect(refused.reports).toHaveLength(1);
    expect(outbox.size()).toBe(1);
    // A new connection ends the wait at once, long before retryMs.
    const fresh = coordinator(ackAll);
    sender.connect(fresh.client);
    await vi.waitFor(() => expect(outbox.size()).toBe(0));
    expect(fresh.reports.flatMap(labels)).toEqual(["status:1:1"]);
    stop.abort();
    await run;
    sender.close();
  });
});
