/** A coordinator process with its first owner logged in, and the agents a test starts. */
import { freePort, type Proc } from "@flotilla/protocol/testing";
import { flotillaBin, type RunResult, type Sandbox } from "./sandbox.ts";

/** Fast timings so tests see disconnects and reconnects in seconds, not minutes. */
export const fastCoordinatorFlags = ["--keepalive-ms", "500", "--offline-after-ms", "2000"];
export const fastAgentFlags = [
  "--backoff-min-ms", "100",
  "--backoff-max-ms", "1000",
  "--watch-timeout-ms", "3000",
  "--facts-interval-ms", "1000",
];

/** A coordinator process plus an admin home logged in as its first owner. */
export class Fleet {
  coordinator!: Proc;
  url = "";
  dataDir = "";
  adminHome = "";
  port = 0;
  /**
   * The `flotilla` program (a bin/flotilla.js) each role runs: this checkout's, unless a
   * version-skew test points one at a previous version's build.
   */
  bins = { coordinator: flotillaBin, admin: flotillaBin, agent: flotillaBin };

  constructor(readonly sandbox: Sandbox, readonly extraArgs: string[] = []) {}

  async start(): Promise<this> {
    await this.prepare();
    // The port may be taken between freePort and the coordinator's bind. Nothing refers to it
    // before this first start, so another is as good.
    for (let attempt = 1; ; attempt++) {
      try {
        await this.startCoordinator();
        break;
      } catch (err) {
        if (attempt === 3 || !String(err).includes("EADDRINUSE")) throw err;
        this.port = await freePort();
      }
    }
    await this.loginAsOwner();
    return this;
  }

  /** Picks the data directory, the admin home and the port, before the coordinator starts. */
  async prepare(): Promise<this> {
    this.dataDir = await this.sandbox.dir("flotilla-coord-");
    this.adminHome = await this.sandbox.dir("flotilla-admin-");
    this.port = await freePort();
    return this;
  }

  /** Logs the admin home in as the first owner, with the setup code the coordinator printed. */
  async loginAsOwner(): Promise<void> {
    const code = (await this.coordinator.waitForOutput(/--setup-code (\S+)/))[1]!;
    const login = await this.admin(["login", "--setup-code", code]);
    if (login.code !== 0) throw new Error(`login failed: ${login.stderr}`);
  }

  /** Starts (or restarts) the coordinator, with the fleet's extra flags unless others are given. */
  async startCoordinator(extraArgs: string[] = this.extraArgs): Promise<Proc> {
    this.coordinator = this.sandbox.spawn(
      ["coordinator", "--data-dir", this.dataDir, "--listen", `127.0.0.1:${this.port}`, ...fastCoordinatorFlags, ...extraArgs],
      {},
      "coordinator",
      this.bins.coordinator,
    );
    this.url = (await this.coordinator.waitForOutput(/listening on (\S+)/))[1]!;
    return this.coordinator;
  }

  /** Runs an admin command against this coordinator. */
  admin(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
    return this.sandbox.run(["--coordinator", this.url, ...args], { FLOTILLA_HOME: this.adminHome, ...env }, this.bins.admin);
  }

  /** An admin command's JSON output. */
  async adminJson<T>(args: string[]): Promise<T> {
    const r = await this.admin([...args, "--json"]);
    if (r.code !== 0) throw new Error(`flotilla ${args.join(" ")} failed (${r.code}): ${r.stderr}`);
    return JSON.parse(r.stdout) as T;
  }

  /** Creates a join token; returns the join string (the last line of the output). */
  async joinToken(args: string[] = []): Promise<string> {
    const r = await this.admin(["join-token", "create", ...args]);
    if (r.code !== 0) throw new Error(`join-token create failed: ${r.stderr}`);
    return r.stdout.trim().split("\n").pop()!;
  }

  startAgent(stateDir: string, join?: string, extra: string[] = [], label = "agent"): Proc {
    return this.sandbox.spawn(
      ["agent", "--state-dir", stateDir, ...(join ? ["--join", join] : []), ...fastAgentFlags, ...extra],
      {},
      label,
      this.bins.agent,
    );
  }

  devices(selector = ""): Promise<DeviceJson[]> {
    return this.adminJson<DeviceJson[]>(["device", "ls", ...(selector ? ["--selector", selector] : [])]);
  }

  async device(name: string): Promise<DeviceJson | undefined> {
    return (await this.devices()).find((d) => d.name === name || d.id === name);
  }
}

export interface DeviceJson {
  id: string;
  name: string;
  status: "pending" | "online" | "offline" | "decommissioned" | "rejected";
  labels: Record<string, string>;
  facts: Record<string, string>;
  agentVersion: string;
  lastSeen: string | null;
  publicKey: string;
  generation: number;
  observedGeneration: number;
}

/** A fresh PostgreSQL database for one test, when FLOTILLA_TEST_POSTGRES_URL is set. */
export async function freshPostgresDatabase(sandbox: Sandbox): Promise<string> {
  const base = process.env.FLOTILLA_TEST_POSTGRES_URL;
  if (!base) throw new Error("FLOTILLA_TEST_POSTGRES_URL is not set");
  const { default: pg } = await import("pg");
  const name = `flotilla_e2e_${Math.random().toString(36).slice(2, 10)}`;
  const c = new pg.Client({ connectionString: base });
  await c.connect();
  await c.query(`CREATE DATABASE ${name}`);
  await c.end();
  sandbox.onCleanup(async () => {
    const d = new pg.Client({ connectionString: base });
    await d.connect();
    await d.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await d.end();
  });
  const url = new URL(base);
  url.pathname = `/${name}`;
  return url.toString();
}
