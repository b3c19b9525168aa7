/**
 * An agent swarm: many enrolled device identities in one test process, each speaking the real
 * agent protocol (Hello, Enroll, Authenticate, Watch, Report) to a real coordinator over its own
 * HTTP/2 connection. The devices are the fleet simulator's (`flotilla sim`, packages/agent
 * src/sim/device.ts), driven from the test: each reports the release steps (checking,
 * downloading with bytes, verifying, activating, health-checking) and then healthy, or failed
 * then rolled-back when told to fail its health checks, through an outbox resent until
 * acknowledged. It installs nothing: rollouts care about the protocol, and real agents cover
 * activation in their own tests. Swarm devices ship no metrics or logs.
 */
import { generateIdentity, parseJoinString } from "@flotilla/protocol";
import { SimDevice, type SimBehaviour } from "@flotilla/agent/sim";

export interface SwarmDeviceOptions {
  hostname: string;
  arch?: string;
  capabilities?: string[];
  /** Report a failed health check (then a rollback) for every release it is given. */
  failHealth?: boolean;
  /** Report a failed download (early, at the second step) for every release it is given. */
  failDownload?: boolean;
}

/** One activation as a device performed it, in the order the swarm saw them. */
export interface Activation {
  order: number;
  /** Wall-clock time (ms) of the activating step, as the device reported it. */
  at: number;
  device: string;
  targetPath: string;
}

export class Swarm {
  readonly devices: SwarmDevice[] = [];
  readonly activations: Activation[] = [];
  private readonly behaviour: SimBehaviour;

  /**
   * @param stepDelayMs time between two release steps of one device, so a rollout takes a while.
   * @param versions the human version of each target path, reported as what a device runs.
   */
  constructor(
    readonly join: string,
    readonly stepDelayMs = 50,
    readonly versions: Record<string, string> = {},
  ) {
    this.behaviour = {
      stepDelayMs,
      outcome: (d) => {
        const o = (d as SwarmDevice).options;
        return o.failDownload ? "download-failed" : o.failHealth ? "health-failed" : "healthy";
      },
      metricsIntervalMs: 0,
      metricsShipIntervalMs: 0,
      logsIntervalMs: 0,
      logLines: 0,
      watchTimeoutMs: 60_000,
      reconnectMs: 200,
      reconnectMaxMs: 1000,
      versionOf: (targetPath) => versions[targetPath],
      onActivating: (d, targetPath) => this.recordActivation(d.name, targetPath),
    };
  }

  /** Enrolls devices (one at a time: enrollment names must not race) and connects them. */
  async add(options: SwarmDeviceOptions[]): Promise<SwarmDevice[]> {
    const j = parseJoinString(this.join);
    const added: SwarmDevice[] = [];
    for (const o of options) {
      const d = new SwarmDevice(
        { index: this.devices.length, hostname: o.hostname, identity: generateIdentity(), url: j.url, pin: j.pin, arch: o.arch, capabilities: o.capabilities },
        this.behaviour,
        o,
      );
      await d.enroll(j.secret);
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

/** A simulated device as the swarm made it, with the options it was added with. */
export class SwarmDevice extends SimDevice {
  constructor(
    spec: ConstructorParameters<typeof SimDevice>[0],
    behaviour: SimBehaviour,
    readonly options: SwarmDeviceOptions,
  ) {
    super(spec, behaviour);
  }
}
