/**
 * Agent report RPC: how many `Report` calls a coordinator answers per second, and their p99,
 * while a fleet of idle devices stays connected, beside a bare Node HTTP/2 server that answers
 * the same request shape (a Connect unary POST with one status entry) with no work, measured
 * in the same run with the same concurrency.
 *
 *   (a) bare: one process opens SESSIONS HTTP/2 sessions to a `node:http2` server and keeps
 *       CONCURRENCY calls in flight for WINDOW seconds (closed loop);
 *   (b) coordinator (SQLite, production keep-alive): `flotilla sim` keeps DEVICES idle devices
 *       connected, and a second `flotilla sim` of CONCURRENCY devices reports back to back
 *       (`--report-interval 1ms`; one call in flight per device, as an agent's outbox does).
 *       Its status lines give the calls acknowledged and their p50/p99 per interval.
 *   (c) paced: the same two again, with each of CONCURRENCY callers starting a call every N ms,
 *       N chosen to offer half the coordinator's closed-loop rate (BENCH_REPORT_PACED_SHARE):
 *       the latency a device sees while the coordinator keeps up. Back to back, any server's
 *       latency is CONCURRENCY over its rate: a queue, not its answer time.
 *
 *   npm run bench -- report                   # 1,000 idle devices, 200 calls in flight
 *   BENCH_REPORT_DEVICES=10000 BENCH_REPORT_CONCURRENCY=200 BENCH_REPORT_WINDOW_S=30 npm run bench -- report
 *
 * Asserts nothing about speed; every wait has a deadline and everything is stopped at the end.
 */
import { once } from "node:events";
import { createServer, type Http2Server } from "node:http2";
import type { AddressInfo } from "node:net";
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { agentv1 } from "@flotilla/protocol";
import { latency, type Latency } from "./fleet.ts";
import type { Proc } from "@flotilla/protocol/testing";
import { Fleet } from "../test/e2e/support/fleet.ts";
import { Sandbox } from "../test/e2e/support/sandbox.ts";
import { writeResult } from "./results.ts";

const DEVICES = Number(process.env.BENCH_REPORT_DEVICES ?? 1000);
const CONCURRENCY = Number(process.env.BENCH_REPORT_CONCURRENCY ?? 200);
const WINDOW_S = Number(process.env.BENCH_REPORT_WINDOW_S ?? 20);
const SESSIONS = 8;
const f = (n: number) => n.toFixed(0);

export interface Figures {
  callsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
}

/** A status entry, as an agent's outbox sends it. */
function request(seq: bigint): agentv1.ReportRequest {
  const status = create(agentv1.StatusSchema, { observedGeneration: 3n, labels: { env: "bench", site: "lab" } });
  return create(agentv1.ReportRequestSchema, {
    entries: [create(agentv1.OutboxEntrySchema, { stream: "status", seq, time: timestampNow(), body: { case: "status", value: status } })],
  });
}

/**
 * (a) A bare HTTP/2 server answering every POST with an empty ReportResponse: closed loop, or
 * with each of the CONCURRENCY callers starting a call every `intervalMs` (paced).
 */
async function bare(intervalMs = 0): Promise<Figures> {
  const server: Http2Server = createServer((req, res) => {
    req.on("error", () => {});
    req.resume();
    req.on("end", () => {
      res.writeHead(200, { "content-type": "application/proto" });
      res.end();
    });
  });
  server.on("error", () => {});
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const clients = Array.from({ length: SESSIONS }, () => createClient(agentv1.AgentService, createConnectTransport({ baseUrl: url, httpVersion: "2" })));
  const ms: number[] = [];
  let failed = 0;
  const end = performance.now() + WINDOW_S * 1000;
  let seq = 0n;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async (_, i) => {
      const client = clients[i % SESSIONS]!;
      // Paced callers start spread over the interval, as the simulator's devices do.
      if (intervalMs > 0) await new Promise((r) => setTimeout(r, Math.random() * intervalMs));
      while (performance.now() < end) {
        const t0 = performance.now();
        try {
          await client.report(request(++seq), { timeoutMs: 10_000 });
          ms.push(performance.now() - t0);
        } catch {
          failed++;
        }
        const rest = intervalMs - (performance.now() - t0);
        if (intervalMs > 0 && rest > 0) await new Promise((r) => setTimeout(r, rest));
      }
    }),
  );
  server.close();
  const l: Latency = latency(ms, failed);
  return { callsPerSecond: ms.length / WINDOW_S, p50Ms: l.p50, p99Ms: l.p99 };
}

/**
 * Starts a `flotilla sim` of `devices` devices that report back to back (`--report-interval 1ms`:
 * one call in flight per device, as an agent's outbox does), with a status line every `windowS`.
 */
export function startReporting(sb: Sandbox, join: string, devices: number, windowS: number, intervalMs = 1): Proc {
  const prefix = intervalMs > 1 ? "paced" : "hot";
  return sb.spawn(
    ["sim", "--join", join, "--devices", String(devices), "--hostname-prefix", prefix, "--report-interval", `${intervalMs}ms`, "--metrics-interval", "0", "--logs-interval", "0", "--status-interval", `${windowS}s`, "--seed", "2"],
    {},
    `sim ${prefix}`,
  );
}

export interface ReportWindow extends Figures {
  /** The simulator's call errors in that window, as it prints them. */
  errors: string;
}

/**
 * Waits until every device of a {@link startReporting} simulator is online, then for its first
 * status line over a whole window after that (the window in which they came online is partly
 * enrollment); its calls/s and p50/p99 (bucket bounds). Gives up after `deadlineMs`.
 */
export async function reportWindow(hot: Proc, devices: number, windowS: number, deadlineMs = (3 * windowS + 60) * 1000): Promise<ReportWindow> {
  await hot.waitForOutput(new RegExp(`sim: all ${devices} devices online`), 10 * 60_000);
  const line = /sim: .*, (\d+) reports in ([\d.]+) s \(p50 < (\d+) ms, p99 < (\d+) ms\), (\d+) call errors( \([^)]*\))?[^\n]*\n/g;
  const want = [...hot.stdout.matchAll(line)].length + 1;
  const deadline = Date.now() + deadlineMs;
  let m: RegExpExecArray[] = [];
  while (Date.now() < deadline && m.length <= want) {
    m = [...hot.stdout.matchAll(line)];
    await new Promise((r) => setTimeout(r, 250));
  }
  const w = m[want];
  if (!w) throw new Error(`the reporting simulator printed no whole window:\n${hot.output.slice(-2000)}`);
  return { callsPerSecond: Number(w[1]) / Number(w[2]), p50Ms: Number(w[3]), p99Ms: Number(w[4]), errors: `${w[5]}${w[6] ?? ""}` };
}

/**
 * The share of the coordinator's closed-loop rate offered in the paced measurement: its p99 at
 * that load is what a device sees while the coordinator keeps up, not the queue of a saturated
 * one (with CONCURRENCY calls always in flight, any server's latency is CONCURRENCY / its rate).
 */
const PACED_SHARE = Number(process.env.BENCH_REPORT_PACED_SHARE ?? 0.5);

/**
 * (b) The coordinator with DEVICES idle devices: CONCURRENCY devices reporting back to back
 * (closed loop), then CONCURRENCY others each reporting every `paced` ms, chosen to offer
 * PACED_SHARE of the closed-loop rate.
 */
async function coordinator(print: (line: string) => void): Promise<{ closed: ReportWindow; paced: ReportWindow; intervalMs: number }> {
  const sb = new Sandbox();
  try {
    const fleet = await new Fleet(sb, ["--keepalive-ms", "15000", "--offline-after-ms", "45000"]).start();
    const join = await fleet.joinToken(["--auto-approve", "--uses", "0", "--labels", "env=bench"]);
    const idle = sb.spawn(["sim", "--join", join, "--devices", String(DEVICES), "--status-interval", "0", "--seed", "1"], {}, "sim idle");
    await idle.waitForOutput(new RegExp(`sim: all ${DEVICES} devices online`), 30 * 60_000);
    print(`  report: ${DEVICES} idle devices online; ${CONCURRENCY} devices start reporting back to back`);
    const hot = startReporting(sb, join, CONCURRENCY, WINDOW_S);
    const closed = await reportWindow(hot, CONCURRENCY, WINDOW_S);
    await hot.stop("SIGTERM");
    const intervalMs = Math.max(2, Math.round((CONCURRENCY * 1000) / (closed.callsPerSecond * PACED_SHARE)));
    print(`  report: ${f(closed.callsPerSecond)} calls/s back to back; ${CONCURRENCY} other devices now report every ${intervalMs} ms`);
    const pacedSim = startReporting(sb, join, CONCURRENCY, WINDOW_S, intervalMs);
    const paced = await reportWindow(pacedSim, CONCURRENCY, WINDOW_S);
    await pacedSim.stop("SIGTERM");
    await idle.stop("SIGTERM");
    return { closed, paced, intervalMs };
  } finally {
    await sb.cleanup();
  }
}

export async function benchReport(print: (line: string) => void): Promise<void> {
  print(`report RPC: ${CONCURRENCY} calls in flight for ${WINDOW_S} s; coordinator with ${DEVICES} idle devices connected (SQLite)`);
  const b = await bare();
  const { closed: c, paced: cp, intervalMs } = await coordinator(print);
  const bp = await bare(intervalMs);
  print(`  back to back (${CONCURRENCY} calls always in flight):`);
  print(`    bare node:http2, same request shape, no work:   ${f(b.callsPerSecond)} calls/s, p50 ${f(b.p50Ms)} ms, p99 ${f(b.p99Ms)} ms`);
  print(`    coordinator Report (p50/p99 are bucket bounds): ${f(c.callsPerSecond)} calls/s, p50 < ${f(c.p50Ms)} ms, p99 < ${f(c.p99Ms)} ms; call errors: ${c.errors}`);
  print(`    ratio coordinator / bare: ${(c.callsPerSecond / b.callsPerSecond).toFixed(2)}`);
  print(`  paced (${CONCURRENCY} callers, each a call every ${intervalMs} ms: ${Math.round(PACED_SHARE * 100)} % of the coordinator's rate above):`);
  print(`    bare node:http2:                                ${f(bp.callsPerSecond)} calls/s, p50 ${f(bp.p50Ms)} ms, p99 ${f(bp.p99Ms)} ms`);
  print(`    coordinator Report:                             ${f(cp.callsPerSecond)} calls/s, p50 < ${f(cp.p50Ms)} ms, p99 < ${f(cp.p99Ms)} ms; call errors: ${cp.errors}`);
  const file = await writeResult("report", { devices: DEVICES, concurrency: CONCURRENCY, windowSeconds: WINDOW_S, bare: b, coordinator: c, paced: { intervalMs, share: PACED_SHARE, bare: bp, coordinator: cp } });
  print(`  written to ${file}`);
}
