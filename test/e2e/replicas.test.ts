/**
 * Three coordinator replicas on one PostgreSQL database and one shared data directory, shared by
 * the tests of this file where they do not interfere: any replica serves any call.
 */
import { appendFile, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { freePort, waitFor } from "@flotilla/protocol/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FaultProxy } from "./support/fault-proxy.ts";
import { fastCoordinatorFlags, Fleet, freshPostgresDatabase } from "./support/fleet.ts";
import { Sandbox } from "./support/sandbox.ts";

/** Every replica is given the same owner setup code: each would otherwise make its own, and the last one started would win. */
const SETUP_CODE = "RPLC-4K7M-9QWX-3TZH";

/** The TUF refresh period of every replica; timestamps live shorter than two, so each refresh re-signs one. */
const TUF_REFRESH_MS = 1000;
const replicaFlags = ["--setup-code", SETUP_CODE, "--tuf-refresh-ms", String(TUF_REFRESH_MS), "--tuf-timestamp-ttl-ms", "1500"];

const pgUrl = process.env.FLOTILLA_TEST_POSTGRES_URL;
if (!pgUrl) console.log("test/e2e/replicas.test.ts did not run: FLOTILLA_TEST_POSTGRES_URL is not set (replicas need PostgreSQL)");

describe.skipIf(!pgUrl)("three coordinator replicas on one PostgreSQL", () => {
  const sb = new Sandbox();
  let databaseUrl: string;
  /** Replica A, whose admin home is logged in as the owner through `lb`. */
  let a: Fleet;
  let b: Fleet;
  let c: Fleet;
  /** A load balancer in front of the replicas: new connections go where a test points it. */
  let lb: FaultProxy;

  const viaLb = (args: string[]) => sb.run(["--coordinator", lb.url, ...args], { FLOTILLA_HOME: a.adminHome });

  /** Starts another replica on A's database and data directory, sharing A's admin home. */
  async function replica(extra: string[] = []): Promise<Fleet> {
    const r = new Fleet(sb, ["--database-url", databaseUrl, ...replicaFlags, ...extra]);
    await r.prepare();
    r.dataDir = a.dataDir;
    r.adminHome = a.adminHome;
    await r.startCoordinator();
    return r;
  }

  beforeAll(async () => {
    databaseUrl = await freshPostgresDatabase(sb);
    a = new Fleet(sb, ["--database-url", databaseUrl, ...replicaFlags]);
    await a.prepare();
    await a.startCoordinator();
    lb = await FaultProxy.start({ target: { host: "127.0.0.1", port: a.port } });
    sb.onCleanup(() => lb.close());
    [b, c] = await Promise.all([replica(), replica()]);
    // The owner logs in through the load balancer, to A: that login pins the coordinator's key.
    const login = await viaLb(["login", "--setup-code", SETUP_CODE]);
    expect(login.code, login.stderr).toBe(0);
  });
  afterAll(() => sb.cleanup());

  it("serves an admin who pinned the key through replica A from replicas B and C under that pin, and refuses an impostor", async () => {
    for (const r of [b, c, a]) {
      lb.retarget({ host: "127.0.0.1", port: r.port });
      const ls = await viaLb(["device", "ls", "--json"]);
      expect(ls.code, ls.stderr).toBe(0);
      expect(JSON.parse(ls.stdout)).toEqual([]);
    }
    // A coordinator with a key of its own, behind the same address: the pin refuses it.
    const impostor = new Fleet(sb, ["--database-url", await freshPostgresDatabase(sb)]);
    await impostor.prepare();
    await impostor.startCoordinator();
    lb.retarget({ host: "127.0.0.1", port: impostor.port });
    const refused = await viaLb(["device", "ls"]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toMatch(/does not match the pinned key/);
    lb.retarget({ host: "127.0.0.1", port: a.port });
  });

  it("refuses to start a replica whose data directory holds another coordinator key", async () => {
    const stray = new Fleet(sb, ["--database-url", databaseUrl]);
    await stray.prepare();
    const p = sb.spawn(["coordinator", "--data-dir", stray.dataDir, "--listen", `127.0.0.1:${await freePort()}`, "--database-url", databaseUrl], {}, "stray replica");
    expect(await p.exited).not.toBe(0);
    expect(p.stderr).toMatch(/is not the key .* the database's replicas serve: replicas sharing a database must share the data directory/);
    // The replicas that share the key carry on.
    const ls = await waitFor("B still answers", async () => {
      const r = await b.admin(["device", "ls"]);
      return r.code === 0 ? r : undefined;
    });
    expect(ls.code).toBe(0);
  });

  it("re-signs the TUF timestamp once per refresh period across the three replicas, not once per replica", async () => {
    const add = await viaLb(["signing-key", "add"]);
    expect(add.code, add.stderr).toBe(0);
    const tuf = join(a.dataDir, "tuf");
    const version = async () => {
      const [org] = await readdir(tuf).catch(() => []);
      if (!org) return undefined;
      const ts = await readFile(join(tuf, org, "timestamp.json"), "utf8").catch(() => undefined);
      return ts === undefined ? undefined : (JSON.parse(ts) as { signed: { version: number } }).signed.version;
    };
    const first = await waitFor("a timestamp", version);
    const start = Date.now();
    const RESIGNS = 6;
    // Three replicas each re-signing would get there in about two periods; one at a time takes five.
    await waitFor(`${RESIGNS} more timestamps`, async () => ((await version())! >= first + RESIGNS ? true : undefined), RESIGNS * TUF_REFRESH_MS + 20_000, 20);
    const elapsed = Date.now() - start;
    expect(elapsed).toBeGreaterThanOrEqual((RESIGNS - 1) * TUF_REFRESH_MS - 50);
    for (const r of [a, b, c]) expect(r.coordinator.output).not.toMatch(/could not refresh TUF metadata/);
  });

  it("shows in `logs -f` on replica A the lines an agent ships to replica B", async () => {
    const appLog = join(await sb.dir("flotilla-app-"), "app.log");
    await writeFile(appLog, "");
    // The join string names B alone: the agent ships its lines there.
    const token = await b.joinToken(["--auto-approve", "--labels", "test=logs", "--coordinator-url", b.url]);
    const agent = b.startAgent(await sb.dir("flotilla-agent-"), token, ["--log-file-unit", `app=${appLog}`], "logs agent");
    const dev = await waitFor("the device online", async () => (await b.devices("test=logs")).find((d) => d.status === "online"));
    await appendFile(appLog, "first\n");
    await waitFor("the first line stored", async () => (await b.admin(["logs", dev.name, "--unit", "app"])).stdout.includes("first"));
    const follow = sb.spawn(["--coordinator", a.url, "logs", dev.name, "--unit", "app", "-f", "-n", "1"], { FLOTILLA_HOME: a.adminHome }, "logs -f on A");
    await follow.waitForOutput(/app\[file\]: first/);
    const markers = Array.from({ length: 3 }, (_, i) => `shipped to B ${i} ${Math.random().toString(36).slice(2)}`);
    for (const m of markers) {
      await appendFile(appLog, `${m}\n`);
      await waitFor(`"${m}" in logs -f on A`, () => follow.stdout.includes(m), 15_000, 20);
    }
    // Each line once, in order.
    const shown = follow.stdout.split("\n").filter((l) => l.includes("shipped to B"));
    expect(shown.map((l) => markers.find((m) => l.includes(m)))).toEqual(markers);
    await follow.stop("SIGINT");
    await agent.stop("SIGTERM");
  });

  it("moves an agent whose replica is killed (SIGKILL) to another replica of its join string within 30 s", async () => {
    const join = await a.joinToken(["--auto-approve", "--labels", "test=failover", ...[a, b, c].flatMap((r) => ["--coordinator-url", r.url])]);
    const agent = a.startAgent(await sb.dir("flotilla-agent-"), join, [], "failover agent");
    const online = async () => (await b.devices("test=failover")).find((d) => d.status === "online" && d.observedGeneration === d.generation);
    const dev = await waitFor("the device online", online);
    // It dialled the join string's first address, A.
    expect(agent.output).not.toMatch(/connection to coordinator lost/);
    await a.coordinator.stop("SIGKILL");
    const killedAt = Date.now();
    const label = await b.admin(["device", "label", "set", dev.name, "moved=yes"]);
    expect(label.code, label.stderr).toBe(0);
    await waitFor("the agent applying desired state through B or C", async () => {
      const d = await b.device(dev.name);
      return d?.labels.moved === "yes" && d.observedGeneration === d.generation ? d : undefined;
    }, 30_000);
    expect(Date.now() - killedAt).toBeLessThan(30_000);
    expect(agent.output).toMatch(/connection to coordinator lost/);
    await agent.stop("SIGTERM");
    await a.startCoordinator();
  });

  it("runs `coordinator --replicas 2` behind one port, starts a killed replica again and stops them all on SIGTERM", async () => {
    const port = await freePort();
    const dataDir = await sb.dir("flotilla-coord-");
    const home = await sb.dir("flotilla-admin-");
    const primary = sb.spawn(
      ["coordinator", "--replicas", "2", "--database-url", await freshPostgresDatabase(sb), "--data-dir", dataDir, "--listen", `127.0.0.1:${port}`, ...fastCoordinatorFlags],
      {},
      "coordinator --replicas 2",
    );
    const listening = () => [...primary.stdout.matchAll(/listening on (\S+) \(replica (\d) of 2, pid (\d+)\)/g)];
    await waitFor("two replicas listening", () => listening().length === 2, 30_000);
    expect(new Set(listening().map((m) => m[1]))).toEqual(new Set([`http://127.0.0.1:${port}`]));
    expect(new Set(listening().map((m) => m[2]))).toEqual(new Set(["1", "2"]));
    const code = (await primary.waitForOutput(/--setup-code (\S+)/))[1]!;
    const admin = (args: string[]) => sb.run(["--coordinator", `http://127.0.0.1:${port}`, ...args], { FLOTILLA_HOME: home });
    expect((await admin(["login", "--setup-code", code])).code).toBe(0);

    const victim = Number(listening()[0]![3]);
    process.kill(victim, "SIGKILL");
    await waitFor("the killed replica started again", () => listening().length === 3, 30_000);
    expect(primary.stdout).toMatch(/exited \(SIGKILL\); starting it again/);
    // Each admin command is a new connection, handed to either replica in turn.
    for (let i = 0; i < 4; i++) expect((await admin(["device", "ls"])).code).toBe(0);

    const pids = listening().slice(1).map((m) => Number(m[3]));
    await primary.stop("SIGTERM");
    expect(primary.exitCode).toBe(0);
    for (const pid of pids) expect(() => process.kill(pid, 0)).toThrow();
  });

  it("refuses --replicas above 1 without PostgreSQL, in one line, and stops when a replica cannot start", async () => {
    const r = await sb.run(["coordinator", "--replicas", "2", "--data-dir", await sb.dir("flotilla-coord-"), "--listen", `127.0.0.1:${await freePort()}`]);
    expect(r.code).toBe(2);
    expect(r.stderr.trim()).toMatch(/^error: --replicas above 1 needs --database-url/);
    // A replica that cannot start (here: no such database) stops the others instead of being started again for ever.
    const missing = new URL(pgUrl!);
    missing.pathname = "/flotilla_no_such_database";
    const failed = await sb.run(["coordinator", "--replicas", "2", "--database-url", missing.toString(), "--data-dir", await sb.dir("flotilla-coord-"), "--listen", `127.0.0.1:${await freePort()}`]);
    expect(failed.code).not.toBe(0);
    expect(failed.stderr).toMatch(/cannot open PostgreSQL database/);
    expect(failed.stderr).toMatch(/error: replica \d exited \(code \d+\) before it listened; stopping the others/);
  });
});
