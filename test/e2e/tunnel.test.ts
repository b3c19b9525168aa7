import { createHash, randomBytes } from "node:crypto";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { startSshd } from "./support/ssh.ts";
import { auditEntries, tunnelFleet } from "./support/tunnels.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

/** An HTTP server in this process: it stands for a web UI on the device. */
async function httpServer(routes: Record<string, Buffer>): Promise<number> {
  const server = http.createServer((req, res) => {
    const body = routes[req.url ?? ""];
    if (!body) return void res.writeHead(404).end();
    res.writeHead(200, { "content-length": body.length }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  sb.onCleanup(() => new Promise((r) => server.close(() => r())));
  server.unref();
  return (server.address() as AddressInfo).port;
}

/** GET through the forwarded port; resolves to the body's sha256 and length. */
function fetchSha(port: number, path: string): Promise<{ sha: string; length: number; status: number }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: "127.0.0.1", port, path, agent: false }, (res) => {
        const hash = createHash("sha256");
        let length = 0;
        res.on("data", (c: Buffer) => {
          hash.update(c);
          length += c.length;
        });
        res.on("end", () => resolve({ sha: hash.digest("hex"), length, status: res.statusCode ?? 0 }));
        res.on("error", reject);
      })
      .on("error", reject);
  });
}

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("tunnels to devices behind NAT", () => {
  it("runs a command through the system's ssh and flotilla ssh, returning its output and exit code", async () => {
    const sshd = await startSshd(sb);
    const { fleet, device } = await tunnelFleet(sb, String(sshd.port));
    const r = await fleet.admin([
      "ssh", device.name, "--port", String(sshd.port), "--",
      "-F", "/dev/null",
      "-o", `UserKnownHostsFile=${sshd.knownHosts}`,
      "-o", "StrictHostKeyChecking=accept-new",
      "-o", "IdentitiesOnly=yes",
      "-o", "BatchMode=yes",
      "-i", sshd.identity,
      "-l", sshd.user,
      "echo hello over the tunnel from $(whoami); exit 7",
    ]);
    expect(r.stdout).toBe(`hello over the tunnel from ${sshd.user}\n`);
    expect(r.code).toBe(7);

    const entries = await waitFor("the tunnel in the audit log", async () => {
      const e = await auditEntries(fleet, "tunnel");
      return e.length > 0 ? e : undefined;
    });
    const detail = JSON.parse(entries[0]!.detail) as Record<string, unknown>;
    expect(entries[0]!).toMatchObject({ target: device.name, outcome: "ok" });
    expect(entries[0]!.actor).toMatch(/^key:/);
    expect(detail).toMatchObject({ port: sshd.port, deviceId: device.id });
    expect(detail.bytesToDevice).toBeGreaterThan(1000);
    expect(detail.bytesFromDevice).toBeGreaterThan(1000);
    expect(Date.parse(String(detail.end))).toBeGreaterThanOrEqual(Date.parse(String(detail.start)));
  }, 180_000);

  it("forwards local ports: 100 MB arrive with the same sha256, and 20 concurrent connections work", async () => {
    const big = randomBytes(100 * 1024 * 1024);
    const small = Array.from({ length: 20 }, () => randomBytes(256 * 1024 + Math.floor(Math.random() * 1024)));
    const routes: Record<string, Buffer> = { "/big": big };
    small.forEach((b, i) => (routes[`/small/${i}`] = b));
    const port = await httpServer(routes);
    const { fleet, device } = await tunnelFleet(sb, `22,${port}`);

    const pf = sb.spawn(
      ["--coordinator", fleet.url, "port-forward", device.name, `0:${port}`, `0:${port}`],
      { FLOTILLA_HOME: fleet.adminHome },
      "port-forward",
    );
    const [, first, second] = await pf.waitForOutput(/forwarding 127\.0\.0\.1:(\d+) -> .*\nforwarding 127\.0\.0\.1:(\d+) -> /, 30_000);
    const local = Number(first);
    expect(await fetchSha(Number(second), "/small/0")).toMatchObject({ sha: sha256(small[0]!), status: 200 });

    const got = await fetchSha(local, "/big");
    expect(got).toEqual({ sha: sha256(big), length: big.length, status: 200 });

    const results = await Promise.all(small.map((_, i) => fetchSha(local, `/small/${i}`)));
    expect(results.map((r) => r.sha)).toEqual(small.map(sha256));

    // Ctrl-C: a clean shutdown with exit code 0.
    await pf.stop("SIGINT");
    expect(pf.exitCode).toBe(0);
    const entries = await waitFor("22 tunnels in the audit log", async () => {
      const e = await auditEntries(fleet, "tunnel");
      return e.length === 22 ? e : undefined;
    });
    const biggest = Math.max(...entries.map((e) => Number((JSON.parse(e.detail) as { bytesFromDevice: number }).bytesFromDevice)));
    expect(biggest).toBeGreaterThan(big.length);
  }, 300_000);

  it("refuses a port outside the agent's allowlist with a clear error, and audits it", async () => {
    const { fleet, device } = await tunnelFleet(sb, "22");
    const r = await fleet.admin(["tunnel", device.name, "--port", "8080"]);
    expect(r.code).toBe(4);
    expect(r.stderr).toBe("error: port 8080 is not allowed on this device (agent --tunnel-ports: 22)\n");
    const [entry] = await auditEntries(fleet, "tunnel");
    expect(entry).toMatchObject({ target: device.name, outcome: "refused" });
  }, 120_000);

  it("refuses an admin whose role does not allow tunnels, and audits the refusal", async () => {
    const { fleet, device } = await tunnelFleet(sb, "22");
    const created = await fleet.admin(["token", "create", "ci", "--role", "deployer"]);
    expect(created.code).toBe(0);
    const token = created.stdout.trim().split("\n").pop()!;
    const r = await fleet.admin(["tunnel", device.name, "--port", "22"], { FLOTILLA_TOKEN: token });
    expect(r.code).toBe(4);
    expect(r.stderr).toBe("error: role deployer may not Open\n");
    const denied = await auditEntries(fleet, "Open");
    expect(denied).toEqual([expect.objectContaining({ actor: "token:ci", outcome: "denied" })]);
  }, 120_000);

  it("tells the admin clearly when the device is offline", async () => {
    const { fleet, agent, device } = await tunnelFleet(sb, "22");
    await agent.stop();
    await waitFor("the device offline", async () => (await fleet.device(device.name))?.status === "offline", 30_000);

    const tunnel = await fleet.admin(["tunnel", device.name, "--port", "22"]);
    expect(tunnel.code).toBe(1);
    expect(tunnel.stderr).toBe(`error: device ${device.name} is offline\n`);

    const pf = await fleet.admin(["port-forward", device.name, "0:22"]);
    expect(pf.code).toBe(1);
    expect(pf.stderr).toBe(`error: device ${device.name} is offline\n`);
  }, 120_000);
});
