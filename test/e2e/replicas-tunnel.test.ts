/**
 * Tunnels across coordinator replicas: three replicas on one PostgreSQL database and one shared
 * data directory; an admin on replica A reaches, through real OpenSSH, a device whose agent is
 * connected to replica C (A forwards the tunnel to C over the replicas' internal call).
 */
import net from "node:net";
import { freePort, waitFor, type Proc } from "@flotilla/protocol/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { fastAgentFlags, fastCoordinatorFlags, Fleet, freshPostgresDatabase, type DeviceJson } from "./support/fleet.ts";
import { Sandbox } from "./support/sandbox.ts";
import { startSshd, type Sshd } from "./support/ssh.ts";

const SETUP_CODE = "XTNL-4K7M-9QWX-3TZH";

const pgUrl = process.env.FLOTILLA_TEST_POSTGRES_URL;
if (!pgUrl) console.log("test/e2e/replicas-tunnel.test.ts did not run: FLOTILLA_TEST_POSTGRES_URL is not set (replicas need PostgreSQL)");

/** The addresses in the registry of replicas of database `url`. */
async function registeredAddresses(url: string): Promise<string[]> {
  const { default: pg } = await import("pg");
  const db = new pg.Client({ connectionString: url });
  await db.connect();
  try {
    const { rows } = await db.query<{ address: string }>("SELECT address FROM replicas");
    return rows.map((r) => r.address);
  } finally {
    await db.end();
  }
}

/**
 * A TCP relay on 127.0.0.1 to `port`: stands for an address other replicas are told that is not
 * the one the replica listens on (a NAT, a load balancer's port), and counts the connections
 * made through it.
 */
async function tcpRelay(port: number): Promise<{ port: number; connections: () => number; close(): void }> {
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((inbound) => {
    connections++;
    const outbound = net.connect(port, "127.0.0.1");
    for (const s of [inbound, outbound]) {
      sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => {
        sockets.delete(s);
        inbound.destroy();
        outbound.destroy();
      });
    }
    inbound.pipe(outbound).pipe(inbound);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    connections: () => connections,
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

describe.skipIf(!pgUrl)("tunnels across coordinator replicas", () => {
  const sb = new Sandbox();
  let databaseUrl: string;
  let a: Fleet;
  let b: Fleet;
  let c: Fleet;
  let sshd: Sshd;
  let agent: Proc;
  let device: DeviceJson;

  /** Starts another replica on A's database and data directory, sharing A's admin home. */
  async function replica(): Promise<Fleet> {
    const r = new Fleet(sb, ["--database-url", databaseUrl, "--setup-code", SETUP_CODE]);
    await r.prepare();
    r.dataDir = a.dataDir;
    r.adminHome = a.adminHome;
    await r.startCoordinator();
    return r;
  }

  /** `flotilla ssh` through replica `via` to the device, running `command` with real OpenSSH. */
  function sshArgs(via: Fleet | string, command: string, name = device.name): string[] {
    return [
      "--coordinator", typeof via === "string" ? via : via.url,
      "ssh", name, "--port", String(sshd.port), "--",
      "-F", "/dev/null",
      "-o", `UserKnownHostsFile=${sshd.knownHosts}`,
      "-o", "StrictHostKeyChecking=accept-new",
      "-o", "IdentitiesOnly=yes",
      "-o", "BatchMode=yes",
      "-i", sshd.identity,
      "-l", sshd.user,
      command,
    ];
  }

  beforeAll(async () => {
    databaseUrl = await freshPostgresDatabase(sb);
    a = new Fleet(sb, ["--database-url", databaseUrl, "--setup-code", SETUP_CODE]);
    await a.prepare();
    await a.startCoordinator();
    [b, c] = await Promise.all([replica(), replica()]);
    const login = await a.admin(["login", "--setup-code", SETUP_CODE]);
    expect(login.code, login.stderr).toBe(0);
    sshd = await startSshd(sb);
    // The agent dials the join string's first address, C, and B after C is gone; never A.
    const join = await a.joinToken(["--auto-approve", "--coordinator-url", c.url, "--coordinator-url", b.url]);
    agent = a.startAgent(await sb.dir("flotilla-agent-"), join, ["--tunnel-ports", String(sshd.port)], "agent on C");
    device = await waitFor(
      "the device online with the tunnel capability",
      async () => {
        const d = (await a.devices())[0] as (DeviceJson & { capabilities?: string[] }) | undefined;
        return d?.status === "online" && d.capabilities?.includes("tunnel") ? d : undefined;
      },
      60_000,
    );
  }, 180_000);
  afterAll(() => sb.cleanup());

  it("runs a command with `flotilla ssh` on replica A on a device whose agent is connected to replica C", async () => {
    const r = await sb.run(sshArgs(a, "echo across replicas from $(whoami); exit 3"), { FLOTILLA_HOME: a.adminHome });
    expect(r.stdout, r.stderr).toBe(`across replicas from ${sshd.user}\n`);
    expect(r.code).toBe(3);
    // The agent never dialled A, so A carried the tunnel to C.
    expect(agent.output).not.toMatch(/connection to coordinator lost/);
    const audit = await a.adminJson<{ action: string; outcome: string; detail: string }[]>(["audit", "ls"]);
    const entry = audit.filter((e) => e.action === "tunnel").at(-1)!;
    expect(entry.outcome).toBe("ok");
    const detail = JSON.parse(entry.detail) as { deviceId: string; bytesToDevice: number; bytesFromDevice: number };
    expect(detail.deviceId).toBe(device.id);
    expect(detail.bytesToDevice).toBeGreaterThan(0);
    expect(detail.bytesFromDevice).toBeGreaterThan(0);
  });

  it("ends the tunnel with a clear error when the replica holding the agent is killed (SIGKILL), and opens again once the agent is on another replica", async () => {
    const ssh = sb.spawn(sshArgs(a, "echo tunnel up; sleep 600"), { FLOTILLA_HOME: a.adminHome }, "long ssh via A");
    await ssh.waitForOutput(/tunnel up/, 60_000);
    await c.coordinator.stop("SIGKILL");
    const { code } = await waitFor("ssh to end", () => (ssh.exitCode === null ? undefined : { code: ssh.exitCode }), 60_000, 100);
    expect(code).not.toBe(0);
    // One line from `flotilla tunnel` (ssh's ProxyCommand), not "cannot reach the coordinator": A is up.
    expect(ssh.stderr).toMatch(/^error: the tunnel to device \S+ ended: the coordinator replica relaying it went away .*; once the device reconnects, open it again$/m);
    // A itself is fine: other calls go on.
    expect((await a.admin(["device", "ls"])).code).toBe(0);
    await waitFor("the agent to notice C is gone", () => /connection to coordinator lost/.test(agent.output), 60_000);
    const again = await waitFor(
      "a new `flotilla ssh` through A to succeed",
      async () => {
        const r = await sb.run(sshArgs(a, "echo reopened"), { FLOTILLA_HOME: a.adminHome });
        return r.code === 0 ? r : undefined;
      },
      90_000,
      500,
    );
    expect(again.stdout).toBe("reopened\n");
  }, 240_000);

  it("carries tunnels to a replica on 0.0.0.0 at its --internal-url, on one connection for tunnels in a row, and again once that replica was killed and started again", async () => {
    // D listens on every address; the other replicas are told to dial a relay to it instead.
    const d = new Fleet(sb, ["--database-url", databaseUrl, "--setup-code", SETUP_CODE]);
    await d.prepare();
    d.dataDir = a.dataDir;
    d.adminHome = a.adminHome;
    const relay = await tcpRelay(d.port);
    try {
      const internalUrl = `https://127.0.0.1:${relay.port}`;
      // The last --listen given wins over Fleet's own 127.0.0.1 one.
      d.extraArgs.push("--listen", `0.0.0.0:${d.port}`, "--internal-url", internalUrl);
      await d.startCoordinator();
      // It listens on every address: 127.0.0.2 reaches it too, as it would not on 127.0.0.1 alone.
      await new Promise<void>((resolve, reject) => {
        const probe = net.connect(d.port, "127.0.0.2", () => {
          probe.destroy();
          resolve();
        });
        probe.on("error", reject);
      });
      await waitFor("D registered at its --internal-url", async () => (await registeredAddresses(databaseUrl)).includes(internalUrl));
      // No warning about the wildcard address: the address to dial was given.
      expect(d.coordinator.output).not.toMatch(/wildcard/);

      const join = await a.joinToken(["--auto-approve", "--coordinator-url", `https://127.0.0.1:${d.port}`]);
      d.startAgent(await sb.dir("flotilla-agent-"), join, ["--tunnel-ports", String(sshd.port)], "agent on D");
      const onD = await waitFor(
        "the device on D online with the tunnel capability",
        async () =>
          (await a.devices()).find(
            (x): x is DeviceJson => x.id !== device.id && x.status === "online" && ((x as DeviceJson & { capabilities?: string[] }).capabilities?.includes("tunnel") ?? false),
          ),
        60_000,
      );
      const carried = () => a.coordinator.output.match(/tunnel carried to the replica holding the device/g)?.length ?? 0;
      const before = carried();
      const first = await sb.run(sshArgs(a, "echo first", onD.name), { FLOTILLA_HOME: a.adminHome });
      expect(first.stdout, first.stderr).toBe("first\n");
      // A reached D through the relay, i.e. at the address D registered.
      const afterFirst = relay.connections();
      expect(afterFirst).toBeGreaterThan(0);
      const second = await sb.run(sshArgs(a, "echo second", onD.name), { FLOTILLA_HOME: a.adminHome });
      expect(second.stdout, second.stderr).toBe("second\n");
      expect(carried() - before).toBe(2);
      // The second tunnel went over the connection the first one opened: none new to D.
      expect(relay.connections()).toBe(afterFirst);

      await d.coordinator.stop("SIGKILL");
      await d.startCoordinator();
      const again = await waitFor(
        "a tunnel through A to the device on the restarted D",
        async () => {
          const r = await sb.run(sshArgs(a, "echo after restart", onD.name), { FLOTILLA_HOME: a.adminHome });
          return r.code === 0 ? r : undefined;
        },
        90_000,
        500,
      );
      expect(again.stdout).toBe("after restart\n");
      expect(relay.connections()).toBeGreaterThan(afterFirst);
      await d.coordinator.stop("SIGTERM");
    } finally {
      relay.close();
    }
  }, 240_000);

  it("carries tunnels between the workers of `coordinator --replicas 2` behind one shared port", async () => {
    const port = await freePort();
    const url = `http://127.0.0.1:${port}`;
    const home = await sb.dir("flotilla-admin-");
    const clusterDb = await freshPostgresDatabase(sb);
    const primary = sb.spawn(
      ["coordinator", "--replicas", "2", "--database-url", clusterDb, "--data-dir", await sb.dir("flotilla-coord-"), "--listen", `127.0.0.1:${port}`, ...fastCoordinatorFlags],
      {},
      "coordinator --replicas 2",
    );
    await waitFor("two replicas listening", () => [...primary.stdout.matchAll(/listening on \S+ \(replica \d of 2/g)].length === 2, 60_000);
    // Each worker registered a port of its own, not the shared one, where its sibling reaches it.
    const addresses = await waitFor("both workers in the registry of replicas", async () => {
      const rows = await registeredAddresses(clusterDb);
      return rows.length === 2 ? rows : undefined;
    });
    expect(new Set(addresses).size).toBe(2);
    for (const address of addresses) {
      expect(address).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(address).not.toBe(url);
    }
    const code = (await primary.waitForOutput(/--setup-code (\S+)/))[1]!;
    const admin = (args: string[]) => sb.run(["--coordinator", url, ...args], { FLOTILLA_HOME: home });
    expect((await admin(["login", "--setup-code", code])).code).toBe(0);
    const token = await admin(["join-token", "create", "--auto-approve"]);
    expect(token.code, token.stderr).toBe(0);
    const join = token.stdout.trim().split("\n").pop()!;
    const stateDir = await sb.dir("flotilla-agent-");
    sb.spawn(["agent", "--state-dir", stateDir, "--join", join, ...fastAgentFlags, "--tunnel-ports", String(sshd.port)], {}, "agent of --replicas 2");
    const dev = await waitFor(
      "the device online with the tunnel capability",
      async () => {
        const r = await admin(["device", "ls", "--json"]);
        const d = r.code === 0 ? (JSON.parse(r.stdout) as (DeviceJson & { capabilities?: string[] })[])[0] : undefined;
        return d?.status === "online" && d.capabilities?.includes("tunnel") ? d : undefined;
      },
      60_000,
    );
    // Each command opens new connections, handed to the workers in turn; one more connection
    // before every other try shifts that turn, so some tunnels reach the worker without the
    // agent, which forwards them to its sibling's own port.
    const forwarded = () => primary.output.match(/tunnel carried to the replica holding the device/g)?.length ?? 0;
    for (let i = 0; i < 12 && forwarded() < 2; i++) {
      if (i % 2 === 1) expect((await admin(["device", "ls"])).code).toBe(0);
      const r = await sb.run(sshArgs(url, `echo try ${i}`, dev.name), { FLOTILLA_HOME: home });
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe(`try ${i}\n`);
    }
    expect(forwarded()).toBeGreaterThanOrEqual(2);
    await primary.stop("SIGTERM");
  }, 240_000);
});
