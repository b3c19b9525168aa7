/**
 * Whole-system test helpers: real `flotilla` processes in temporary directories, talking over
 * loopback sockets. Nothing of Flotilla's own is mocked.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

export const repoRoot = resolve(import.meta.dirname, "../..");
export const flotillaBin = join(repoRoot, "packages/cli/bin/flotilla.js");

/** Waits until `check` returns a truthy value, polling every `intervalMs`, or fails after the deadline. */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined | false | null | Promise<T | undefined | false | null>,
  timeoutMs = 20_000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** A free loopback TCP port, for processes that must keep their port across restarts. */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const addr = s.address();
      s.close(() => (typeof addr === "object" && addr ? res(addr.port) : rej(new Error("no port"))));
    });
  });
}

/** A running `flotilla` process whose output is collected. */
export class Proc {
  stdout = "";
  stderr = "";
  exitCode: number | null = null;
  readonly exited: Promise<number | null>;

  constructor(readonly child: ChildProcess, readonly label: string) {
    child.stdout?.setEncoding("utf8").on("data", (d: string) => (this.stdout += d));
    child.stderr?.setEncoding("utf8").on("data", (d: string) => (this.stderr += d));
    this.exited = new Promise((res) =>
      child.on("exit", (code, signal) => {
        this.exitCode = code ?? (signal ? 128 : null);
        res(this.exitCode);
      }),
    );
  }

  get output(): string {
    return this.stdout + this.stderr;
  }

  /** Waits for a line matching `re` in stdout or stderr; returns the match. */
  waitForOutput(re: RegExp, timeoutMs = 20_000): Promise<RegExpMatchArray> {
    return waitFor(`${this.label} to print ${re}`, () => {
      if (this.exitCode !== null && !re.test(this.output)) {
        throw new Error(`${this.label} exited with ${this.exitCode}:\n${this.output}`);
      }
      return this.output.match(re) ?? undefined;
    }, timeoutMs);
  }

  /** SIGTERM (or the given signal), then wait for exit. */
  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    if (this.exitCode === null) this.child.kill(signal);
    return this.exited;
  }
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Everything a test starts, torn down in one call. */
export class Sandbox {
  readonly procs: Proc[] = [];
  private dirs: string[] = [];
  private cleanups: (() => Promise<void>)[] = [];

  /** Runs `fn` at cleanup, after every process is gone. */
  onCleanup(fn: () => Promise<void>): void {
    this.cleanups.push(fn);
  }

  async dir(prefix = "flotilla-e2e-"): Promise<string> {
    const d = await mkdtemp(join(tmpdir(), prefix));
    this.dirs.push(d);
    return d;
  }

  spawn(args: string[], env: Record<string, string> = {}, label = args[0] ?? "flotilla"): Proc {
    const child = spawn(process.execPath, [flotillaBin, ...args], {
      cwd: repoRoot,
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    const p = new Proc(child, label);
    this.procs.push(p);
    return p;
  }

  /** Runs a short `flotilla` command to completion. */
  async run(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
    const p = this.spawn(args, env, `flotilla ${args.slice(0, 2).join(" ")}`);
    const code = await p.exited;
    return { code, stdout: p.stdout, stderr: p.stderr };
  }

  async cleanup(): Promise<void> {
    await Promise.all(this.procs.map((p) => p.stop("SIGKILL")));
    await Promise.all(this.dirs.map((d) => rm(d, { recursive: true, force: true })));
    for (const fn of this.cleanups.splice(0)) await fn();
  }
}

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

  constructor(readonly sandbox: Sandbox, readonly extraArgs: string[] = []) {}

  async start(): Promise<this> {
    this.dataDir = await this.sandbox.dir("flotilla-coord-");
    this.adminHome = await this.sandbox.dir("flotilla-admin-");
    this.port = await freePort();
    await this.startCoordinator();
    const code = (await this.coordinator.waitForOutput(/--setup-code (\S+)/))[1]!;
    const login = await this.admin(["login", "--setup-code", code]);
    if (login.code !== 0) throw new Error(`login failed: ${login.stderr}`);
    return this;
  }

  async startCoordinator(): Promise<Proc> {
    this.coordinator = this.sandbox.spawn(
      ["coordinator", "--data-dir", this.dataDir, "--listen", `127.0.0.1:${this.port}`, ...fastCoordinatorFlags, ...this.extraArgs],
      {},
      "coordinator",
    );
    this.url = (await this.coordinator.waitForOutput(/listening on (\S+)/))[1]!;
    return this.coordinator;
  }

  /** Runs an admin command against this coordinator. */
  admin(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
    return this.sandbox.run(["--coordinator", this.url, ...args], { FLOTILLA_HOME: this.adminHome, ...env });
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
