/**
 * A slice of a simulated fleet run in one process: devices [from, to) enrolled (or restored from
 * the state directory), connected, churned, and counted, until stopped.
 */
import { createPrivateKey } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { generateIdentity, identityFromPrivateKey, onAbort, parseJoinString, retryDelay, type Identity } from "@flotilla/protocol/agent";
import { SimDevice, type SimBehaviour, type SimOutcome } from "./device.ts";
import { failingDevices, seededRandom, hashSeed } from "./random.ts";

/** Everything a simulation is given (`flotilla sim` flags); the same for every worker. */
export interface SimOptions {
  /** Join string: where to connect and the secret to enroll with. */
  join: string;
  /** Connect here instead of the join string's address (e.g. through a proxy). */
  url?: string;
  /** Devices in the whole simulated fleet. */
  devices: number;
  /** Fraction (0..1) of devices that fail each release; exactly round(rate * devices) do. */
  failRate: number;
  /** Fraction (0..1) of devices that go offline per minute, each for about `offlineMs`. */
  churnPerMinute: number;
  offlineMs: number;
  stepDelayMs: number;
  /** Chooses who fails and who churns; the same seed makes the same choices. */
  seed: number;
  metricsIntervalMs: number;
  /** How often samples are shipped together (default: as an agent, six samples' worth, at most 60 s). */
  metricsShipIntervalMs?: number;
  logsIntervalMs: number;
  logLines: number;
  /** Each device also reports its status this often (0: only on changes). */
  reportIntervalMs?: number;
  watchTimeoutMs: number;
  /** Host names are `<prefix>-00000`, `<prefix>-00001`, ... */
  hostnamePrefix: string;
  /** Enrollments in flight at once per worker. */
  enrollConcurrency: number;
  /** Keeps each device's key and enrollment here, so a restart brings back the same devices. */
  stateDir?: string;
}

/** Counts one worker sends its parent; the parent sums them. */
export interface SliceStats {
  enrolled: number;
  online: number;
  installing: number;
  healthy: number;
  failed: number;
  errors: number;
  /** Failed calls by what and why, e.g. "report: unavailable". */
  errorKinds: Record<string, number>;
  /**
   * Per target path (and per `label k=v`): devices that received it in their desired state, and
   * when the last one did.
   */
  received: Record<string, { devices: number; lastAt: number }>;
  /** Report calls acknowledged, and their latency: `reportBuckets[i]` counts calls under 2^i ms. */
  reports: number;
  reportBuckets: number[];
  /** Per target path: installs that ended. */
  installed: Record<string, { healthy: number; failed: number }>;
  /**
   * The longest this process's event loop was stuck since its previous counts, in ms. A simulator
   * stuck for seconds sees its own HTTP/2 pings time out: a status line that shows it says the
   * simulator, not the coordinator, was the bottleneck.
   */
  lagMs?: number;
}

interface SavedDevice {
  index: number;
  hostname: string;
  privateKey: string;
  deviceId: string;
  name: string;
}

const pad = (i: number) => String(i).padStart(5, "0");

export class SimSlice {
  readonly devices: SimDevice[] = [];
  readonly stats: SliceStats = { enrolled: 0, online: 0, installing: 0, healthy: 0, failed: 0, errors: 0, errorKinds: {}, received: {}, installed: {}, reports: 0, reportBuckets: [] };
  private readonly failing = new Map<string, Map<number, number>>();
  private readonly behaviour: SimBehaviour;
  private readonly url: string;
  private readonly pin: string;
  private readonly secret: string;

  constructor(
    private readonly opts: SimOptions,
    private readonly from: number,
    private readonly to: number,
  ) {
    const j = parseJoinString(opts.join);
    this.url = opts.url ?? j.url;
    this.pin = j.pin;
    this.secret = j.secret;
    const received = this.stats.received;
    this.behaviour = {
      stepDelayMs: opts.stepDelayMs,
      metricsIntervalMs: opts.metricsIntervalMs,
      metricsShipIntervalMs: opts.metricsShipIntervalMs ?? Math.min(60_000, 6 * opts.metricsIntervalMs),
      logsIntervalMs: opts.logsIntervalMs,
      logLines: opts.logLines,
      watchTimeoutMs: opts.watchTimeoutMs,
      reportIntervalMs: opts.reportIntervalMs ?? 0,
      onReport: (ms) => {
        this.stats.reports++;
        const i = latencyBucket(ms);
        const b = this.stats.reportBuckets;
        while (b.length <= i) b.push(0);
        b[i]!++;
      },
      reconnectMs: 500,
      reconnectMaxMs: 30_000,
      outcome: (d, r) => this.outcome(d, r.targetPath),
      onOnline: (_d, online) => (this.stats.online += online ? 1 : -1),
      onDesired: (d, desired) => {
        for (const r of desired.releases) {
          if (d.notifications.has(r.targetPath)) continue;
          const e = (received[r.targetPath] ??= { devices: 0, lastAt: 0 });
          e.devices++;
          e.lastAt = Date.now();
        }
        // A label change reaches devices as desired state too: counted as "label k=v".
        for (const [k, v] of Object.entries(desired.labels)) {
          const key = `label ${k}=${v}`;
          if (d.labelsSeen.has(key)) continue;
          d.labelsSeen.add(key);
          const e = (received[key] ??= { devices: 0, lastAt: 0 });
          e.devices++;
          e.lastAt = Date.now();
        }
      },
      onError: (_d, what, err) => {
        const kind = `${what}: ${err instanceof ConnectError ? Code[err.code].toLowerCase() : (err as Error).message.slice(0, 60)}`;
        this.stats.errorKinds[kind] = (this.stats.errorKinds[kind] ?? 0) + 1;
      },
      onInstalled: (_d, targetPath, outcome) => {
        const e = (this.stats.installed[targetPath] ??= { healthy: 0, failed: 0 });
        if (outcome === "healthy") e.healthy++, this.stats.healthy++;
        else e.failed++, this.stats.failed++;
      },
    };
  }

  private outcome(d: SimDevice, targetPath: string): SimOutcome {
    let failing = this.failing.get(targetPath);
    if (!failing) this.failing.set(targetPath, (failing = failingDevices(this.opts.devices, this.opts.failRate, this.opts.seed, targetPath)));
    const rank = failing.get(d.index);
    if (rank === undefined) return "healthy";
    // Half fail their download, half their health check (then roll back).
    return rank % 2 === 0 ? "download-failed" : "health-failed";
  }

  private statePath(index: number): string | undefined {
    return this.opts.stateDir && join(this.opts.stateDir, `device-${pad(index)}.json`);
  }

  private async restore(index: number): Promise<SimDevice | undefined> {
    const path = this.statePath(index);
    if (!path) return undefined;
    let saved: SavedDevice;
    try {
      saved = JSON.parse(await readFile(path, "utf8")) as SavedDevice;
    } catch {
      return undefined;
    }
    const identity = identityFromPrivateKey(createPrivateKey({ key: Buffer.from(saved.privateKey, "base64"), format: "der", type: "pkcs8" }));
    return this.device(index, identity, saved.deviceId, saved.name);
  }

  private device(index: number, identity: Identity, deviceId?: string, name?: string): SimDevice {
    return new SimDevice({ index, hostname: `${this.opts.hostnamePrefix}-${pad(index)}`, identity, url: this.url, pin: this.pin, deviceId, name }, this.behaviour);
  }

  private async save(d: SimDevice): Promise<void> {
    const path = this.statePath(d.index);
    if (!path) return;
    const saved: SavedDevice = {
      index: d.index,
      hostname: d.spec.hostname,
      privateKey: d.identity.privateKey.export({ format: "der", type: "pkcs8" }).toString("base64"),
      deviceId: d.id,
      name: d.name,
    };
    await writeFile(`${path}.tmp`, JSON.stringify(saved), { mode: 0o600 });
    await rename(`${path}.tmp`, path);
  }

  /** Enrolls (or restores) and connects every device of the slice; enrollments retry until `signal`. */
  async start(signal: AbortSignal): Promise<void> {
    if (this.opts.stateDir) await mkdir(this.opts.stateDir, { recursive: true, mode: 0o700 });
    let next = this.from;
    const worker = async () => {
      while (next < this.to && !signal.aborted) {
        const index = next++;
        let d = await this.restore(index);
        if (!d) {
          d = this.device(index, generateIdentity());
          for (let attempt = 0; !signal.aborted; attempt++) {
            try {
              await d.enroll(this.secret, signal);
              break;
            } catch (err) {
              this.stats.errors++;
              if (attempt >= 20) throw new Error(`device ${d.spec.hostname} could not enroll: ${(err as Error).message}`);
              await new Promise((r) => setTimeout(r, retryDelay(err, attempt, 500, 30_000)));
            }
          }
          if (signal.aborted) return;
          await this.save(d);
        }
        this.stats.enrolled++;
        this.devices.push(d);
        d.connect();
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, this.opts.enrollConcurrency) }, worker));
  }

  /**
   * Churn: once a second, each online device goes offline with probability churnPerMinute/60,
   * and comes back after offlineMs (±50%). Runs until `signal`.
   */
  async churn(signal: AbortSignal): Promise<void> {
    if (this.opts.churnPerMinute <= 0) return;
    const random = seededRandom(hashSeed(this.opts.seed, "churn", this.from));
    const p = this.opts.churnPerMinute / 60;
    const away = new Set<SimDevice>();
    const timers = new Set<NodeJS.Timeout>();
    await new Promise<void>((resolve) => {
      const tick = setInterval(() => {
        for (const d of this.devices) {
          if (away.has(d) || !d.online || random() >= p) continue;
          away.add(d);
          void d.disconnect().then(() => {
            const t = setTimeout(() => {
              timers.delete(t);
              away.delete(d);
              if (!signal.aborted) d.connect();
            }, this.opts.offlineMs * (0.5 + random()));
            timers.add(t);
          });
        }
      }, 1000);
      onAbort(signal, () => {
        clearInterval(tick);
        for (const t of timers) clearTimeout(t);
        resolve();
      });
    });
  }

  /** The counts now. */
  snapshot(): SliceStats {
    let errors = this.stats.errors;
    let installing = 0;
    for (const d of this.devices) {
      errors += d.errors;
      installing += d.installingCount;
    }
    return { ...this.stats, errors, installing };
  }

  /** Disconnects every device. */
  async stop(): Promise<void> {
    await Promise.all(this.devices.map((d) => d.disconnect()));
  }
}

/** The latency bucket of a call of `ms` milliseconds: i with 2^(i-1) <= ms < 2^i (0 below 1 ms). */
export function latencyBucket(ms: number): number {
  return ms < 1 ? 0 : Math.min(30, Math.floor(Math.log2(ms)) + 1);
}

/** The upper bound in ms of the bucket holding the `q` quantile of `buckets`; NaN when empty. */
export function bucketQuantile(buckets: number[], q: number): number {
  const total = buckets.reduce((a, b) => a + b, 0);
  if (total === 0) return NaN;
  const rank = Math.ceil(q * total);
  let seen = 0;
  for (let i = 0; i < buckets.length; i++) {
    seen += buckets[i]!;
    if (seen >= rank) return 2 ** i;
  }
  return 2 ** (buckets.length - 1);
}
