/**
 * An agent swarm: many enrolled device identities in one test process, each speaking the real
 * agent protocol (Hello, Enroll, Authenticate, Watch, Report) to a real coordinator over its own
 * HTTP/2 connection. Each device reacts to a desired release as an agent does: it reports the
 * release steps (checking, downloading with bytes, verifying, activating, health-checking) and
 * then healthy, or failed then rolled-back when told to fail its health checks, through an outbox
 * resent until acknowledged. It installs nothing: rollouts care about the protocol, and real
 * agents cover activation in their own tests.
 */
import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { createClient, type Client } from "@connectrpc/connect";
import {
  agentv1,
  authenticateMessage,
  commonv1,
  coordinatorTransport,
  enrollMessage,
  generateIdentity,
  newNonce,
  parseJoinString,
  verifyCoordinatorProof,
  type ClosableTransport,
  type Identity,
} from "@flotilla/protocol";

export interface SwarmDeviceOptions {
  hostname: string;
  arch?: string;
  capabilities?: string[];
  /** Report a failed health check (then a rollback) for every release it is given. */
  failHealth?: boolean;
}

/** One activation as a device performed it, in the order the swarm saw them. */
export interface Activation {
  order: number;
  /** Wall-clock time (ms) of the activating step, as the device reported it. */
  at: number;
  device: string;
  targetPath: string;
}

const wait = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((res) => {
    const t = setTimeout(res, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      res();
    });
  });

export class Swarm {
  readonly devices: SwarmDevice[] = [];
  readonly activations: Activation[] = [];

  /**
   * @param stepDelayMs time between two release steps of one device, so a rollout takes a while.
   * @param versions the human version of each target path, reported as what a device runs.
   */
  constructor(
    readonly join: string,
    readonly stepDelayMs = 50,
    readonly versions: Record<string, string> = {},
  ) {}

  /** Enrolls devices (one at a time: enrollment names must not race) and connects them. */
  async add(options: SwarmDeviceOptions[]): Promise<SwarmDevice[]> {
    const added: SwarmDevice[] = [];
    for (const o of options) {
      const d = new SwarmDevice(this, o);
      await d.enroll();
      d.connect();
      this.devices.push(d);
      added.push(d);
    }
    return added;
  }

  byName(name: string): SwarmDevice {
    const d = this.devices.find((x) => x.name === name);
    if (!d) throw new Error(`no swarm device ${name}`);
    return d;
  }

  recordActivation(device: string, targetPath: string): void {
    this.activations.push({ order: this.activations.length, at: Date.now(), device, targetPath });
  }

  async close(): Promise<void> {
    await Promise.all(this.devices.map((d) => d.disconnect()));
  }
}

export class SwarmDevice {
  readonly identity: Identity = generateIdentity();
  id = "";
  name = "";
  /** For each target path: how many distinct generations of desired state carried it newly or again. */
  readonly notifications = new Map<string, number>();
  /** What it runs per release name. */
  readonly current = new Map<string, { targetPath: string; version: string; counter: number }>();
  private readonly url: string;
  private readonly pin: string;
  private readonly secret: string;
  private conn: ClosableTransport | undefined;
  private client: Client<typeof agentv1.AgentService> | undefined;
  private token = "";
  private abort: AbortController | undefined;
  private running: Promise<void> | undefined;
  private seq = 0;
  private outbox: agentv1.OutboxEntry[] = [];
  private flushing: Promise<void> = Promise.resolve();
  private lastDesired = new Map<string, string>();
  private lastGeneration = -1n;
  private readonly installing = new Set<string>();

  constructor(
    private readonly swarm: Swarm,
    readonly options: SwarmDeviceOptions,
  ) {
    const j = parseJoinString(swarm.join);
    this.url = j.url;
    this.pin = j.pin;
    this.secret = j.secret;
  }

  private async open(): Promise<Client<typeof agentv1.AgentService>> {
    if (!this.client) {
      this.conn = await coordinatorTransport({ url: this.url, pin: this.pin });
      this.client = createClient(agentv1.AgentService, this.conn.transport);
    }
    return this.client;
  }

  private async challenge(client: Client<typeof agentv1.AgentService>): Promise<Uint8Array> {
    const nonce = newNonce();
    const res = await client.hello({ clientNonce: nonce }, { timeoutMs: 15_000 });
    return verifyCoordinatorProof(res.proof, nonce, this.pin);
  }

  async enroll(): Promise<void> {
    const client = await this.open();
    const challenge = await this.challenge(client);
    const facts = create(commonv1.FactsSchema, {
      hostname: this.options.hostname,
      os: "linux",
      arch: this.options.arch ?? "x86_64",
      kernel: "6.1.0",
      agentVersion: "0.1.0",
      capabilities: this.options.capabilities ?? ["release:bundle"],
    });
    const res = await client.enroll({
      joinSecret: this.secret,
      publicKey: this.identity.publicKey,
      challenge,
      signature: this.identity.sign(enrollMessage(challenge, this.secret)),
      facts,
    });
    this.id = res.deviceId;
    this.name = res.name;
  }

  private headers() {
    return { authorization: `Bearer ${this.token}` };
  }

  /** Keeps a Watch stream open (re-authenticating after any failure) until `disconnect`. */
  connect(): void {
    if (this.running) return;
    const abort = (this.abort = new AbortController());
    this.running = (async () => {
      while (!abort.signal.aborted) {
        try {
          const client = await this.open();
          const challenge = await this.challenge(client);
          const session = await client.authenticate({ publicKey: this.identity.publicKey, challenge, signature: this.identity.sign(authenticateMessage(challenge)) });
          this.token = session.sessionToken;
          this.flush();
          const caps = this.options.capabilities ?? ["release:bundle"];
          for await (const msg of client.watch({ agentVersion: "0.1.0", capabilities: caps }, { headers: this.headers(), signal: abort.signal })) {
            if (msg.event.case === "desired") this.onDesired(msg.event.value);
          }
        } catch {
          // The coordinator went away or refused us: try again shortly, as an agent does.
        }
        if (!abort.signal.aborted) {
          this.client = undefined;
          this.conn?.close();
          await wait(200, abort.signal);
        }
      }
    })();
  }

  /** Closes the stream and the connection: the device goes offline. */
  async disconnect(): Promise<void> {
    this.abort?.abort();
    await this.running;
    this.running = undefined;
    this.client = undefined;
    this.conn?.close();
  }

  private onDesired(d: agentv1.DesiredState): void {
    const generation = d.generation;
    const newGeneration = generation !== this.lastGeneration;
    this.lastGeneration = generation;
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
    const counter = Number(r.targetPath.split("/")[1] ?? 0);
    const version = this.swarm.versions[r.targetPath] ?? String(counter);
    const total = 1000;
    const step = async (s: string, extra: { bytesDone?: bigint; bytesTotal?: bigint; error?: string; currentVersion?: string; currentCounter?: bigint } = {}) => {
      this.report(create(agentv1.ReleaseProgressSchema, { name: r.name, targetPath: r.targetPath, step: s, ...extra }));
      await wait(this.swarm.stepDelayMs);
    };
    await step("checking");
    await step("downloading", { bytesDone: 0n, bytesTotal: BigInt(total) });
    await step("downloading", { bytesDone: BigInt(total), bytesTotal: BigInt(total) });
    await step("verifying");
    this.swarm.recordActivation(this.name, r.targetPath);
    await step("activating");
    await step("health-checking");
    const before = this.current.get(r.name);
    if (this.options.failHealth) {
      const cur = { currentVersion: before?.version ?? "", currentCounter: BigInt(before?.counter ?? 0) };
      await step("failed", { error: "health check failed: exit status 1", ...cur });
      await step("rolled-back", { error: "health check failed: exit status 1", ...cur });
    } else {
      this.current.set(r.name, { targetPath: r.targetPath, version, counter });
      await step("healthy", { currentVersion: version, currentCounter: BigInt(counter) });
    }
    this.installing.delete(r.targetPath);
  }

  private report(p: agentv1.ReleaseProgress): void {
    this.outbox.push(create(agentv1.OutboxEntrySchema, { stream: "release", seq: BigInt(++this.seq), time: timestampNow(), body: { case: "releaseProgress", value: p } }));
    this.flush();
  }

  /** Sends the outbox in order; entries stay until acknowledged (a failed send is retried later). */
  private flush(): void {
    this.flushing = this.flushing.then(async () => {
      while (this.outbox.length > 0 && this.client && this.token) {
        try {
          const res = await this.client.report({ entries: this.outbox }, { headers: this.headers(), timeoutMs: 10_000 });
          const acked = res.acks.find((a) => a.stream === "release")?.seq ?? 0n;
          this.outbox = this.outbox.filter((e) => e.seq > acked);
        } catch {
          await wait(200);
          if (this.abort?.signal.aborted) return;
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
}
