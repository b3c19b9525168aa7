/**
 * One simulated device: its own ed25519 key and its own HTTP/2 connection, speaking the real
 * agent protocol to a real coordinator (Hello, Enroll, Authenticate, Watch with keep-alives,
 * Report through an outbox resent until acknowledged, ShipMetrics and ShipLogs). It reacts to
 * desired state as an agent does: a status for each new generation, and for each new release the
 * real release steps (checking, downloading with bytes, verifying, activating, health-checking,
 * then healthy; or failed, or failed then rolled-back) with a delay between steps. It downloads
 * and installs nothing: the coordinator only sees the messages, which are the real ones.
 */
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Client } from "@connectrpc/connect";
import { gzipSync } from "node:zlib";
import {
  agentv1,
  authenticateMessage,
  bearerInterceptor,
  commonv1,
  coordinatorTransport,
  PING_INTERVAL_MS,
  enrollMessage,
  newNonce,
  retryDelay,
  verifyCoordinatorProof,
  type ClosableTransport,
  type Identity,
} from "@flotilla/protocol/agent";

/** How a simulated install ends. */
export type SimOutcome = "healthy" | "download-failed" | "health-failed";

/** What all devices of a simulation share: timings, outcomes, and what a caller observes. */
export interface SimBehaviour {
  /** Time between two release steps of one device. */
  stepDelayMs: number;
  /** How installing `release` ends on `device`. */
  outcome(device: SimDevice, release: agentv1.DesiredRelease): SimOutcome;
  /** How often a metric sample is taken (0: never). */
  metricsIntervalMs: number;
  /** How often the samples taken meanwhile are shipped together, in one call (as an agent's metric shipper lingers). */
  metricsShipIntervalMs: number;
  /** How often a batch of log lines is shipped (0: never). */
  logsIntervalMs: number;
  /** Log lines per batch. */
  logLines: number;
  /** Each device also reports its status this often while online (0: only on changes). */
  reportIntervalMs?: number;
  /** Called with the duration of each acknowledged report call. */
  onReport?(ms: number): void;
  /** Reconnect when the coordinator was silent (not even a keep-alive) this long. */
  watchTimeoutMs: number;
  /** First wait before retrying after a failure; it doubles per failure (with jitter) up to reconnectMaxMs. */
  reconnectMs: number;
  reconnectMaxMs: number;
  /** The human version of a target path, reported as what a device runs (default: its counter). */
  versionOf?(targetPath: string): string | undefined;
  /** Called with each desired state a device receives. */
  onDesired?(device: SimDevice, desired: agentv1.DesiredState): void;
  /** Called when a device reports its activating step. */
  onActivating?(device: SimDevice, targetPath: string): void;
  /** Called when a device's stream opens (true) or closes (false). */
  onOnline?(device: SimDevice, online: boolean): void;
  /** Called when a call fails (the device retries it). */
  onError?(device: SimDevice, what: string, err: unknown): void;
  /** Called when an install ends, with how. */
  onInstalled?(device: SimDevice, targetPath: string, outcome: SimOutcome): void;
}

/** Who a device is and where it connects. */
export interface SimDeviceSpec {
  /** Its position in the simulated fleet (0-based); fail decisions are made per index. */
  index: number;
  hostname: string;
  identity: Identity;
  url: string;
  pin: string;
  arch?: string;
  capabilities?: string[];
  /** Set once enrolled (also when restored from a state file). */
  deviceId?: string;
  name?: string;
}

const wait = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((res) => {
    if (signal?.aborted) return res();
    const done = () => {
      clearTimeout(t);
      signal?.removeEventListener("abort", done);
      res();
    };
    const t = setTimeout(done, ms);
    signal?.addEventListener("abort", done);
  });

const AGENT_VERSION = "0.1.0-sim";

export class SimDevice {
  readonly index: number;
  readonly identity: Identity;
  id: string;
  name: string;
  /** Whether its Watch stream is open now. */
  online = false;
  /** Set when the coordinator retired the device (decommissioned or rejected): it stops. */
  retired: "decommissioned" | "rejected" | undefined;
  /** For each target path: how many distinct generations of desired state carried it. */
  readonly notifications = new Map<string, number>();
  /** Every `key=value` label this device has been told to carry. */
  readonly labelsSeen = new Set<string>();
  /** What it runs per release name. */
  readonly current = new Map<string, { targetPath: string; version: string; counter: number }>();
  /** Calls that failed (reconnects included), for the simulator's summary. */
  errors = 0;
  private conn: ClosableTransport | undefined;
  /** Counts close() calls, so a connection that finishes opening after one is closed at once. */
  private epoch = 0;
  private client: Client<typeof agentv1.AgentService> | undefined;
  private telemetry: Client<typeof agentv1.TelemetryService> | undefined;
  private token = "";
  private abort: AbortController | undefined;
  private running: Promise<void> | undefined;
  private readonly seqs = new Map<string, bigint>();
  private outbox: agentv1.OutboxEntry[] = [];
  private flushing: Promise<void> = Promise.resolve();
  private lastDesired = new Map<string, string>();
  private lastGeneration = -1n;
  private lastLabels: Record<string, string> = {};
  private readonly installing = new Set<string>();
  private factsSent = false;
  private telemetrySeq = { logs: 0, metrics: 0 };
  /** Ends the open stream, so the device authenticates again. */
  private dropStream: (() => void) | undefined;

  constructor(
    readonly spec: SimDeviceSpec,
    private readonly behaviour: SimBehaviour,
  ) {
    this.index = spec.index;
    this.identity = spec.identity;
    this.id = spec.deviceId ?? "";
    this.name = spec.name ?? "";
  }

  private async open(): Promise<Client<typeof agentv1.AgentService>> {
    if (!this.client) {
      const epoch = this.epoch;
      const conn = await coordinatorTransport({
        url: this.spec.url,
        pin: this.spec.pin,
        interceptors: [bearerInterceptor(() => this.token || undefined)],
        localAddress: loopbackSourceAddress(this.spec.url, this.index),
        pingIntervalMs: simPingIntervalMs(),
      });
      if (epoch !== this.epoch || this.client) {
        // Closed (or opened by another call) meanwhile: this connection is not needed.
        conn.close();
        if (this.client) return this.client;
        throw new Error("the device was disconnected");
      }
      this.conn = conn;
      this.client = createClient(agentv1.AgentService, this.conn.transport);
      this.telemetry = createClient(agentv1.TelemetryService, this.conn.transport);
    }
    return this.client;
  }

  private close(): void {
    this.epoch++;
    this.client = undefined;
    this.telemetry = undefined;
    this.token = "";
    this.conn?.close();
    this.conn = undefined;
  }

  private async challenge(client: Client<typeof agentv1.AgentService>, signal?: AbortSignal): Promise<Uint8Array> {
    const nonce = newNonce();
    const res = await client.hello({ clientNonce: nonce }, { timeoutMs: 15_000, signal });
    return verifyCoordinatorProof(res.proof, nonce, this.spec.pin);
  }

  facts(): MessageInitShape<typeof commonv1.FactsSchema> {
    return {
      hostname: this.spec.hostname,
      os: "linux",
      arch: this.spec.arch ?? "x86_64",
      kernel: "6.1.0-sim",
      agentVersion: AGENT_VERSION,
      capabilities: this.spec.capabilities ?? ["release:bundle"],
    };
  }

  /** Releases being installed now. */
  get installingCount(): number {
    return this.installing.size;
  }

  /** Enroll with the join secret; sets id and name. */
  async enroll(joinSecret: string, signal?: AbortSignal): Promise<void> {
    try {
      const client = await this.open();
      const challenge = await this.challenge(client, signal);
      const res = await client.enroll(
        {
          joinSecret,
          publicKey: this.identity.publicKey,
          challenge,
          signature: this.identity.sign(enrollMessage(challenge, joinSecret)),
          facts: create(commonv1.FactsSchema, this.facts()),
        },
        { timeoutMs: 30_000, signal },
      );
      this.id = res.deviceId;
      this.name = res.name;
      // Enroll carried the facts; the first connection does not send them again.
      this.factsSent = true;
    } finally {
      this.close();
    }
  }

  /** Keeps a Watch stream open (re-authenticating after any failure) until `disconnect`. */
  connect(): void {
    if (this.running || this.retired) return;
    const abort = (this.abort = new AbortController());
    const b = this.behaviour;
    this.running = (async () => {
      let failures = 0;
      while (!abort.signal.aborted && !this.retired) {
        let failure: unknown;
        const stream = new AbortController();
        const stop = () => stream.abort();
        abort.signal.addEventListener("abort", stop);
        this.dropStream = stop;
        let silence: NodeJS.Timeout | undefined;
        const heard = () => {
          clearTimeout(silence);
          silence = setTimeout(stop, b.watchTimeoutMs);
        };
        try {
          const client = await this.open();
          const challenge = await this.challenge(client, stream.signal);
          const session = await client.authenticate(
            { publicKey: this.identity.publicKey, challenge, signature: this.identity.sign(authenticateMessage(challenge)) },
            { timeoutMs: 15_000, signal: stream.signal },
          );
          this.token = session.sessionToken;
          heard();
          const caps = this.spec.capabilities ?? ["release:bundle"];
          const messages = client.watch({ agentVersion: AGENT_VERSION, capabilities: caps }, { signal: stream.signal });
          this.setOnline(true);
          if (!this.factsSent) {
            this.factsSent = true;
            this.queue("facts", { case: "facts", value: create(commonv1.FactsSchema, this.facts()) });
          }
          this.flush();
          const telemetry = this.shipTelemetry(stream.signal);
          for await (const msg of messages) {
            heard();
            if (msg.event.case === "desired") {
              failures = 0;
              this.onDesired(msg.event.value);
            }
            if (this.retired) break;
          }
          stream.abort();
          await telemetry;
        } catch (err) {
          // The coordinator went away or refused us: try again shortly, as an agent does.
          failure = err;
          if (!abort.signal.aborted) this.failed("watch", err);
        } finally {
          clearTimeout(silence);
          stream.abort();
          abort.signal.removeEventListener("abort", stop);
          this.setOnline(false);
          this.close();
        }
        if (!abort.signal.aborted && !this.retired) await wait(retryDelay(failure, failures++, b.reconnectMs, b.reconnectMaxMs), abort.signal);
      }
    })();
  }

  private failed(what: string, err: unknown): void {
    this.errors++;
    this.behaviour.onError?.(this, what, err);
  }

  private setOnline(online: boolean): void {
    if (this.online === online) return;
    this.online = online;
    this.behaviour.onOnline?.(this, online);
  }

  /** Closes the stream and the connection: the device goes offline. */
  async disconnect(): Promise<void> {
    this.abort?.abort();
    await this.running;
    this.running = undefined;
    this.close();
  }

  private onDesired(d: agentv1.DesiredState): void {
    if (d.lifecycle === commonv1.Lifecycle.DECOMMISSIONED || d.lifecycle === commonv1.Lifecycle.REJECTED) {
      this.retired = d.lifecycle === commonv1.Lifecycle.DECOMMISSIONED ? "decommissioned" : "rejected";
      return;
    }
    this.behaviour.onDesired?.(this, d);
    const generation = d.generation;
    const newGeneration = generation !== this.lastGeneration;
    this.lastGeneration = generation;
    this.lastLabels = d.labels;
    if (newGeneration) this.queue("status", { case: "status", value: create(agentv1.StatusSchema, { observedGeneration: generation, labels: d.labels }) });
    for (const r of d.releases) {
      if (newGeneration) this.notifications.set(r.targetPath, (this.notifications.get(r.targetPath) ?? 0) + 1);
      const prev = this.lastDesired.get(r.name);
      this.lastDesired.set(r.name, r.targetPath);
      if (prev === r.targetPath || this.current.get(r.name)?.targetPath === r.targetPath || this.installing.has(r.targetPath)) continue;
      void this.install(r);
    }
  }

  private async install(r: agentv1.DesiredRelease): Promise<void> {
    this.installing.add(r.targetPath);
    const b = this.behaviour;
    const counter = Number(r.targetPath.split("/")[1] ?? 0);
    const version = b.versionOf?.(r.targetPath) ?? String(counter);
    const outcome = b.outcome(this, r);
    const total = 1000;
    const step = async (s: string, extra: { bytesDone?: bigint; bytesTotal?: bigint; error?: string; currentVersion?: string; currentCounter?: bigint } = {}) => {
      this.queue("release", { case: "releaseProgress", value: create(agentv1.ReleaseProgressSchema, { name: r.name, targetPath: r.targetPath, step: s, ...extra }) });
      await wait(b.stepDelayMs);
    };
    const before = this.current.get(r.name);
    const cur = { currentVersion: before?.version ?? "", currentCounter: BigInt(before?.counter ?? 0) };
    await step("checking");
    await step("downloading", { bytesDone: 0n, bytesTotal: BigInt(total) });
    if (outcome === "download-failed") {
      await step("failed", { error: "download failed: simulated: connection reset", ...cur });
    } else {
      await step("downloading", { bytesDone: BigInt(total), bytesTotal: BigInt(total) });
      await step("verifying");
      b.onActivating?.(this, r.targetPath);
      await step("activating");
      await step("health-checking");
      if (outcome === "health-failed") {
        await step("failed", { error: "health check failed: simulated: exit status 1", ...cur });
        await step("rolled-back", { error: "health check failed: simulated: exit status 1", ...cur });
      } else {
        this.current.set(r.name, { targetPath: r.targetPath, version, counter });
        await step("healthy", { currentVersion: version, currentCounter: BigInt(counter) });
      }
    }
    this.installing.delete(r.targetPath);
    b.onInstalled?.(this, r.targetPath, outcome);
  }

  private queue(stream: string, body: agentv1.OutboxEntry["body"]): void {
    const seq = (this.seqs.get(stream) ?? 0n) + 1n;
    this.seqs.set(stream, seq);
    this.outbox.push(create(agentv1.OutboxEntrySchema, { stream, seq, time: timestampNow(), body }));
    this.flush();
  }

  /** Sends the outbox in order; entries stay until acknowledged (a failed send is retried later). */
  private flush(): void {
    this.flushing = this.flushing.then(async () => {
      for (let attempt = 0; this.outbox.length > 0 && this.client && this.token; ) {
        try {
          const t0 = performance.now();
          const res = await this.client.report({ entries: this.outbox }, { timeoutMs: 10_000 });
          this.behaviour.onReport?.(performance.now() - t0);
          const acked = new Map(res.acks.map((a) => [a.stream, a.seq]));
          this.outbox = this.outbox.filter((e) => e.seq > (acked.get(e.stream) ?? 0n));
          attempt = 0;
        } catch (err) {
          this.failed("report", err);
          // A session the coordinator no longer accepts: open a new one.
          if (ConnectError.from(err).code === Code.Unauthenticated) this.dropStream?.();
          // Backs off as an agent does, and never sooner than a busy coordinator advised.
          await wait(retryDelay(err, attempt++, this.behaviour.reconnectMs, this.behaviour.reconnectMaxMs));
          if (!this.online) return;
        }
      }
    });
  }

  /** Waits until everything reported so far is acknowledged. */
  async drained(): Promise<void> {
    while (this.outbox.length > 0) {
      this.flush();
      await this.flushing;
      if (this.outbox.length > 0) await wait(100);
    }
  }

  /** Ships a metric sample and a batch of log lines at the behaviour's rates while connected. */
  private async shipTelemetry(signal: AbortSignal): Promise<void> {
    const b = this.behaviour;
    const tasks: Promise<void>[] = [];
    const loop = async (intervalMs: number, what: string, ship: () => Promise<void>) => {
      // Spread the devices over the interval, as real agents started at different times are.
      await wait(Math.random() * intervalMs, signal);
      while (!signal.aborted) {
        try {
          await ship();
          await wait(intervalMs, signal);
        } catch (err) {
          if (signal.aborted) return;
          this.failed(what, err);
          await wait(Math.max(intervalMs, retryDelay(err, 0, this.behaviour.reconnectMs, this.behaviour.reconnectMaxMs)), signal);
        }
      }
    };
    if (b.metricsIntervalMs > 0) {
      const shipEvery = Math.max(b.metricsIntervalMs, b.metricsShipIntervalMs);
      const samples = Math.max(1, Math.round(shipEvery / b.metricsIntervalMs));
      tasks.push(loop(shipEvery, "ship metrics", () => this.shipMetrics(samples, b.metricsIntervalMs, signal)));
    }
    if (b.logsIntervalMs > 0) tasks.push(loop(b.logsIntervalMs, "ship logs", () => this.shipLogs(signal)));
    if ((b.reportIntervalMs ?? 0) > 0) {
      tasks.push(
        loop(b.reportIntervalMs!, "report", async () => {
          // One report in flight at a time, of one entry, as an agent's outbox sends when it keeps up.
          if (this.outbox.length > 0) return;
          const labels = this.lastLabels;
          this.queue("status", { case: "status", value: create(agentv1.StatusSchema, { observedGeneration: this.lastGeneration < 0n ? 0n : this.lastGeneration, labels }) });
        }),
      );
    }
    await Promise.all(tasks);
  }

  /** Ships `count` samples taken `intervalMs` apart, the last now, in one call. */
  private async shipMetrics(count: number, intervalMs: number, signal: AbortSignal): Promise<void> {
    const t = this.telemetry;
    if (!t) return;
    const first = this.telemetrySeq.metrics + 1;
    const g = (name: string, value: number, unit: string, attributes: Record<string, string> = {}) => create(agentv1.MetricPointSchema, { name, value, unit, attributes });
    const now = Date.now();
    const samples = Array.from({ length: count }, (_, i) => {
      const points = [
        ...["user", "system", "idle"].map((state, k) => g("system.cpu.utilization", [0.12, 0.04, 0.84][k]! + Math.random() * 0.01, "1", { state })),
        g("system.cpu.load_average.1m", 0.3 + Math.random(), "{thread}"),
        g("system.memory.usage", 512e6 + Math.random() * 1e6, "By", { state: "used" }),
        g("system.memory.limit", 2048e6, "By"),
        g("system.filesystem.usage", 4e9, "By", { mountpoint: "/", state: "used" }),
        g("system.filesystem.limit", 16e9, "By", { mountpoint: "/" }),
        g("system.uptime", process.uptime(), "s"),
      ];
      return create(agentv1.MetricSampleSchema, { seq: BigInt(first + i), timeUnixMs: BigInt(now - (count - 1 - i) * intervalMs), points });
    });
    const payload = gzipSync(toBinary(agentv1.MetricSamplesSchema, create(agentv1.MetricSamplesSchema, { samples })), { level: 3 });
    const res = await t.shipMetrics({ stream: "metrics", compression: agentv1.Compression.GZIP, payload }, { signal, timeoutMs: 30_000 });
    const last = first + count - 1;
    if (Number(res.ackedSeq) >= last) this.telemetrySeq.metrics = last;
  }

  private async shipLogs(signal: AbortSignal): Promise<void> {
    const t = this.telemetry;
    if (!t) return;
    const first = this.telemetrySeq.logs + 1;
    const now = Date.now();
    const records = Array.from({ length: this.behaviour.logLines }, (_, i) =>
      create(agentv1.LogRecordSchema, {
        seq: BigInt(first + i),
        timeUnixMs: BigInt(now),
        unit: "webapp",
        source: "stdout",
        line: `INFO request handled method=GET path=/api/items/${(first + i) % 977} status=200 duration_ms=${Math.floor(Math.random() * 250)}`,
      }),
    );
    const payload = gzipSync(toBinary(agentv1.LogRecordsSchema, create(agentv1.LogRecordsSchema, { records })), { level: 3 });
    const res = await t.shipLogs({ stream: "logs", compression: agentv1.Compression.GZIP, payload }, { signal, timeoutMs: 30_000 });
    if (Number(res.ackedSeq) >= first + records.length - 1) this.telemetrySeq.logs = first + records.length - 1;
  }
}

/**
 * How often a simulated device's connection pings the coordinator: an agent's 10 s, give or take
 * a fifth, at random. Thousands of connections opened together in one simulator process would
 * otherwise ping in the same turn of its event loop every 10 s (a CPU profile of a worker with
 * 4,700 devices: a stretch of 2 s, a fifth of it sending pings), and a simulator stuck that long
 * measures its own pings as late and drops its connections. Real agents each ping from their
 * own machine.
 */
export function simPingIntervalMs(random: () => number = Math.random): number {
  return Math.round(PING_INTERVAL_MS * (0.8 + 0.4 * random()));
}

/**
 * A source address of its own for device `index` when the coordinator is on IPv4 loopback
 * (127.0.0.0/8 is all loopback): 127.10.0.0 and up. Real devices come from many addresses; from
 * one, every connection of a 10,000-device fleet shares one source address's 28,000 ephemeral
 * ports, and with the reconnects' TIME_WAIT sockets the kernel's search for a free port made
 * connect() cost milliseconds, the simulator's largest cost in a reconnect storm.
 */
export function loopbackSourceAddress(url: string, index: number): string | undefined {
  const host = new URL(url).hostname;
  if (!/^127\.\d+\.\d+\.\d+$/.test(host)) return undefined;
  return `127.${10 + ((index >> 16) & 0x7f)}.${(index >> 8) & 0xff}.${index & 0xff}`;
}
