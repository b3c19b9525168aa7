/**
 * Failure of a replica loses nothing: three real coordinator processes on one real PostgreSQL
 * database and one shared data directory, real agents spread across them. Each replica in turn
 * is killed with SIGKILL while it holds agents' Watch streams and rollout transitions, then
 * started again; the rollout completes with every device activated exactly once. An upload
 * interrupted by the death of its replica resumes on another and the release is created intact.
 */
import { execFileSync } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { waitFor, type Proc } from "@flotilla/protocol/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FaultProxy } from "./support/fault-proxy.ts";
import { Fleet, freshPostgresDatabase } from "./support/fleet.ts";
import { artifact, files, ownerToken, sha256, uploadState } from "./support/releases.ts";
import { show, start, waitForStatus } from "./support/rollouts.ts";
import { killProcessesUnder, Sandbox } from "./support/sandbox.ts";

/** Every replica gets the same owner setup code (each would otherwise make its own). */
const SETUP_CODE = "FLVR-8K2M-4QWX-7TZH";
const replicaFlags = ["--setup-code", SETUP_CODE];

const pgUrl = process.env.FLOTILLA_TEST_POSTGRES_URL;
if (!pgUrl) console.log("test/e2e/replicas-failover.test.ts did not run: FLOTILLA_TEST_POSTGRES_URL is not set (replicas need PostgreSQL)");

/** How long an agent of a killed replica may take to be online on another (the bound). */
const RECONNECT_BOUND_MS = 30_000;

describe.skipIf(!pgUrl)("replica failure (SIGKILL) with three replicas on one PostgreSQL", () => {
  const sb = new Sandbox();
  let databaseUrl: string;
  let replicas: Fleet[];

  beforeAll(async () => {
    databaseUrl = await freshPostgresDatabase(sb);
    const a = new Fleet(sb, ["--database-url", databaseUrl, ...replicaFlags]);
    await a.prepare();
    await a.startCoordinator();
    const others = await Promise.all(
      [0, 1].map(async () => {
        const r = new Fleet(sb, ["--database-url", databaseUrl, ...replicaFlags]);
        await r.prepare();
        r.dataDir = a.dataDir;
        r.adminHome = a.adminHome;
        await r.startCoordinator();
        return r;
      }),
    );
    replicas = [a, ...others];
    const login = await a.admin(["login", "--setup-code", SETUP_CODE]);
    expect(login.code, login.stderr).toBe(0);
    const key = await a.admin(["signing-key", "add"]);
    expect(key.code, key.stderr).toBe(0);
  }, 120_000);
  afterAll(() => sb.cleanup());

  /**
   * Publishes `name@version`: a bundle whose service writes a line to its data directory (kept
   * across releases) at each start, so a second activation on a device leaves two lines; healthy
   * after `upSeconds` up. Returns its target path.
   */
  async function countingRelease(fleet: Fleet, name: string, version: string, upSeconds = 3): Promise<string> {
    const dir = await sb.dir("flotilla-artifact-");
    await mkdir(join(dir, "src", "bin"), { recursive: true });
    await writeFile(join(dir, "src", "bin", "app"), `#!/bin/sh\necho "start $FLOTILLA_VERSION" >> "$FLOTILLA_DATA_DIR/starts"\nexec sleep 3600\n`, { mode: 0o755 });
    const file = join(dir, `${name}.tar.gz`);
    execFileSync("tar", ["-czf", file, "-C", join(dir, "src"), "."]);
    const created = await fleet.admin(["release", "create", file, "--name", name, "--version", version, "--run", "exec sh bin/app", "--health-up-seconds", String(upSeconds)]);
    expect(created.code, created.stderr).toBe(0);
    return (await fleet.adminJson<{ version: string; targetPath: string }[]>(["release", "ls", "--name", name])).find((x) => x.version === version)!.targetPath;
  }

  /** A replica that is up (the one after `r` in the ring), to ask while `r` is down. */
  const liveBeside = (r: Fleet) => replicas[(replicas.indexOf(r) + 1) % replicas.length]!;

  it("completes a rollout driven while each replica in turn is killed and restarted: every device activated exactly once, agents back within 30 s", async () => {
    const [a] = replicas;
    // A bundle whose service writes a line to its data directory (kept across releases) at each
    // start: a second activation of the release on a device would leave two lines.
    // Health-checking lasts 8 s: the kills land while devices install, even on a loaded machine.
    const target = await countingRelease(a!, "webapp", "2.0.0", 8);

    // Two agents per replica: each join string names all three, starting with a different one.
    const agents: { proc: Proc; stateDir: string }[] = [];
    for (let i = 0; i < replicas.length; i++) {
      const ring = [0, 1, 2].map((k) => replicas[(i + k) % replicas.length]!);
      const join = await a!.joinToken(["--auto-approve", "--uses", "2", "--labels", "env=failover", ...ring.flatMap((r) => ["--coordinator-url", r.url])]);
      for (let k = 0; k < 2; k++) {
        const stateDir = await sb.dir("flotilla-agent-");
        sb.onCleanup(() => killProcessesUnder(stateDir));
        agents.push({ proc: a!.startAgent(stateDir, join, [], `agent ${i}.${k}`), stateDir });
      }
    }
    type Dev = { name: string; status: string; lastSeen: string | null; capabilities: string[] };
    const devices = () => a!.adminJson<Dev[]>(["device", "ls", "--selector", "env=failover"]);
    await waitFor(
      "six agents online with release:bundle",
      async () => {
        const l = await devices();
        return l.length === 6 && l.every((d) => d.status === "online" && d.capabilities.includes("release:bundle")) ? true : undefined;
      },
      90_000,
      250,
    );

    // Each wave waits for approval, which the test gives once the previous kill is over: however
    // slow the machine, every kill lands while the rollout runs. The soak ends on the tick, run by
    // the holder of the rollout-tick lease, which the kills move between replicas.
    const r = await start(a!, ["webapp@2.0.0", "--selector", "env=failover", "--waves", "2,4,100%", "--soak", "3s", "--approve-each-wave"]);
    expect(r.waves.map((w) => w.total)).toEqual([2, 2, 2]);

    const kills: { replica: number; wave: number; status: string; inFlight: number; victims: number; backInMs: number }[] = [];
    for (let i = 0; i < replicas.length; i++) {
      const victim = replicas[i]!;
      const asker = liveBeside(victim);
      // Kill while devices of wave i+1 are mid-install, so transitions are in flight (or, should
      // the machine be too slow to see that, once they are healthy).
      const wave = i + 1;
      const before = await waitFor(
        `wave ${wave} under way before killing replica ${i}`,
        async () => {
          const s = await show(asker, r.id);
          const mine = s.devices.filter((d) => d.wave === wave);
          if (s.status !== "running") return s;
          return mine.some((d) => !["pending", "healthy"].includes(d.state)) || mine.every((d) => d.state === "healthy") ? s : undefined;
        },
        120_000,
        100,
      );
      const marks = agents.map((x) => x.proc.stderr.length);
      await victim.coordinator.stop("SIGKILL");
      const killedAt = Date.now();
      // Every device online again through a live replica: heard from after the kill.
      await waitFor(
        `every agent online again after replica ${i} was killed`,
        async () => {
          const l = await asker.adminJson<Dev[]>(["device", "ls", "--selector", "env=failover"]);
          return l.length === 6 && l.every((d) => d.status === "online" && d.lastSeen !== null && Date.parse(d.lastSeen) > killedAt) ? true : undefined;
        },
        RECONNECT_BOUND_MS + 15_000,
        100,
      );
      const backInMs = Date.now() - killedAt;
      // The agents that were on the killed replica said so (it held some of them).
      const lost = agents.filter((x, k) => x.proc.stderr.slice(marks[k]).split("\n").some((line) => line.includes("connection to coordinator lost") && line.includes(victim.url)));
      kills.push({ replica: i, wave: before.currentWave, status: before.status, inFlight: before.devices.filter((d) => !["pending", "healthy"].includes(d.state)).length, victims: lost.length, backInMs });
      await victim.startCoordinator();
      if (i < replicas.length - 1) {
        const approve = await asker.admin(["rollout", "approve", r.id]);
        expect(approve.code, approve.stderr).toBe(0);
      }
    }
    console.log(`replica kills: ${JSON.stringify(kills)}`);
    for (const k of kills) {
      expect(k.status, `replica ${k.replica} was killed while the rollout ran`).toBe("running");
      expect(k.wave, `replica ${k.replica} was killed in wave ${k.replica + 1}`).toBe(k.replica + 1);
      expect(k.victims, `replica ${k.replica} held agents when it was killed`).toBeGreaterThan(0);
      expect(k.backInMs, `agents of replica ${k.replica} back within 30 s`).toBeLessThan(RECONNECT_BOUND_MS);
    }

    expect(kills.some((k) => k.inFlight > 0), "some replica was killed while devices installed").toBe(true);
    const done = await waitForStatus(a!, r.id, "completed", 120_000);
    expect(done.reason).toBe("6 healthy, 0 failed, 0 skipped");
    expect(done.devices.every((d) => d.state === "healthy")).toBe(true);
    // Every device runs the release and started it exactly once.
    for (const { stateDir } of agents) {
      const starts = (await readFile(join(stateDir, "bundles", "webapp", "data", "starts"), "utf8")).trim().split("\n");
      expect(starts, stateDir).toEqual(["start 2.0.0"]);
    }
    for (const d of done.devices) {
      const shown = await a!.adminJson<{ releases: { name: string; current: { version: string } | null }[]; steps: { targetPath: string; step: string }[] }>(["device", "show", d.name]);
      expect(shown.releases.find((x) => x.name === "webapp")?.current?.version, d.name).toBe("2.0.0");
      expect(shown.steps.filter((s) => s.targetPath === target && s.step === "activating").length, d.name).toBe(1);
    }
    await Promise.all(agents.map((x) => x.proc.stop("SIGTERM")));
  }, 600_000);

  it("applies on another replica a release step its replica stored but was killed (SIGKILL) before applying, without that replica coming back", async () => {
    const [a, b] = replicas;
    // Health-checking lasts 10 s: time enough to see it and take the lock on a loaded machine.
    const target = await countingRelease(a!, "stuckapp", "1.0.0", 10);
    const stateDir = await sb.dir("flotilla-agent-");
    sb.onCleanup(() => killProcessesUnder(stateDir));
    const join_ = await a!.joinToken(["--auto-approve", "--labels", "test=stuck", "--coordinator-url", a!.url, "--coordinator-url", b!.url]);
    const agent = a!.startAgent(stateDir, join_, [], "agent on A");
    const dev = await waitFor(
      "the agent online on A with release:bundle",
      async () => (await b!.adminJson<{ name: string; status: string; capabilities: string[] }[]>(["device", "ls", "--selector", "test=stuck"])).find((d) => d.status === "online" && d.capabilities.includes("release:bundle")),
      90_000,
      250,
    );
    const r = await start(b!, ["stuckapp@1.0.0", "--selector", "test=stuck", "--waves", "100%"]);
    // Once the device is health-checking, the test holds the rollout's row lock: A stores the
    // device's `healthy` step but cannot apply it to the rollout until A is gone.
    let seen: unknown;
    await waitFor("the device health-checking", async () => {
      const x = await show(b!, r.id);
      seen = x;
      return x.devices[0]?.state === "health-checking";
    }, 90_000, 50).catch((err: unknown) => {
      console.log(JSON.stringify(seen), agent.stderr.slice(-4000), a!.coordinator.output.slice(-4000), b!.coordinator.output.slice(-3000));
      throw err;
    });
    const { default: pg } = await import("pg");
    const holder = new pg.Client({ connectionString: databaseUrl });
    await holder.connect();
    try {
      await holder.query("BEGIN");
      await holder.query("SELECT id FROM rollouts WHERE id = $1 FOR UPDATE", [r.id]);
      await waitFor(
        "A to store the healthy step",
        async () => (await b!.adminJson<{ steps: { targetPath: string; step: string }[] }>(["device", "show", dev.name])).steps.some((s) => s.targetPath === target && s.step === "healthy"),
        60_000,
        100,
      );
      await a!.coordinator.stop("SIGKILL");
    } finally {
      await holder.query("ROLLBACK");
      await holder.end();
    }
    // A stays down: B (or C) must learn of the step from the agent, which sends it again.
    const done = await waitForStatus(b!, r.id, "completed", 60_000);
    expect(done.devices.map((d) => d.state)).toEqual(["healthy"]);
    expect(agent.stderr).toMatch(/connection to coordinator lost/);
    const starts = (await readFile(join(stateDir, "bundles", "stuckapp", "data", "starts"), "utf8")).trim().split("\n");
    expect(starts).toEqual(["start 1.0.0"]);
    await a!.startCoordinator();
  }, 300_000);

  it("resumes on another replica an upload whose replica was killed (SIGKILL) mid-way, and creates the release intact", async () => {
    const [a, b] = replicas;
    // The admin reaches the replicas through a load balancer; a slow link keeps the upload going
    // long enough to kill its replica mid-way.
    const lb = await FaultProxy.start({ target: { host: "127.0.0.1", port: a!.port } });
    sb.onCleanup(() => lb.close());
    lb.bytesPerSecond = 1024 * 1024;
    const viaLb = (args: string[]) => sb.spawn(["--coordinator", lb.url, ...args], { FLOTILLA_HOME: a!.adminHome }, `flotilla ${args.slice(0, 2).join(" ")}`);
    const { path, data } = await artifact(await sb.dir(), "big.tar.gz", 12 * 1024 * 1024);
    const sha = sha256(data);
    expect((await b!.admin(["release", "ls"])).code).toBe(0);
    const token = await ownerToken(b!);

    const first = viaLb(["release", "create", path, "--name", "big", "--version", "1.0.0", "--run", "bin/app"]);
    // B sees the upload A is receiving: its state is the shared folder's.
    await waitFor("replica A to have stored 2 MiB of the upload", async () => (await uploadState(b!, token, sha, data.length)).offset >= 2 * 1024 * 1024, 60_000, 100);
    await a!.coordinator.stop("SIGKILL");
    expect(await first.exited).not.toBe(0);
    expect(first.stderr.trim().split("\n").filter((l) => l.startsWith("error:"))).toHaveLength(1);
    const kept = await uploadState(b!, token, sha, data.length);
    expect(kept.complete).toBe(false);
    expect(kept.offset).toBeGreaterThan(0);
    expect(kept.offset).toBeLessThan(data.length);

    // The load balancer sends the retry to B, which resumes where A stopped.
    lb.retarget({ host: "127.0.0.1", port: b!.port });
    lb.bytesPerSecond = 0;
    const again = viaLb(["release", "create", path, "--name", "big", "--version", "1.0.0", "--run", "bin/app"]);
    expect(await again.exited, again.stderr).toBe(0);
    expect(again.stderr).toContain(`resuming at byte ${kept.offset}`);
    const stored = await readFile(join(b!.dataDir, "artifacts", "sha256", sha));
    expect(sha256(stored)).toBe(sha);
    expect(await files(join(b!.dataDir, "artifacts", "uploads"))).toEqual([]);
    const ls = await b!.adminJson<{ name: string; version: string; sha256: string }[]>(["release", "ls", "--name", "big"]);
    expect(ls.map((x) => [x.version, x.sha256])).toEqual([["1.0.0", sha]]);
    await a!.startCoordinator();
  }, 240_000);
});
