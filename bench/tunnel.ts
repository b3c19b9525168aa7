/**
 * Tunnel throughput: the same bytes copied over a direct loopback TCP connection and through a
 * tunnel (port-forward -> coordinator -> agent -> local port), measured in the same run on
 * the same machine, reported as a ratio. Real `flotilla` processes, as in the e2e tests.
 * Asserts nothing about speed.
 *
 *   npx tsx bench/tunnel.ts            # BENCH_TUNNEL_MB=256 to move more data (default 128)
 */
import { randomBytes } from "node:crypto";
import net from "node:net";
import { pathToFileURL } from "node:url";
import { waitFor } from "@flotilla/protocol/testing";
import { Fleet } from "../test/e2e/support/fleet.ts";
import { Sandbox } from "../test/e2e/support/sandbox.ts";
import { writeResult } from "./results.ts";

const MiB = 1024 * 1024;
const totalBytes = Number(process.env.BENCH_TUNNEL_MB ?? 128) * MiB;
const block = randomBytes(MiB); // incompressible, as ssh or TLS traffic is

/** A server that sends `totalBytes` to each connection, honouring backpressure, then ends. */
async function source(): Promise<{ port: number; close(): Promise<void> }> {
  const server = net.createServer((socket) => {
    socket.on("error", () => {});
    let sent = 0;
    const pump = () => {
      while (sent < totalBytes) {
        const n = Math.min(block.length, totalBytes - sent);
        sent += n;
        if (!socket.write(n === block.length ? block : block.subarray(0, n))) return void socket.once("drain", pump);
      }
      socket.end();
    };
    pump();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise((r) => server.close(() => r())),
  };
}

/** Reads everything from host:port; resolves to MB/s. */
function download(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const start = process.hrtime.bigint();
    let got = 0;
    const socket = net.connect({ host: "127.0.0.1", port });
    socket.on("data", (d: Buffer) => (got += d.length));
    socket.on("error", reject);
    socket.on("end", () => {
      const seconds = Number(process.hrtime.bigint() - start) / 1e9;
      if (got !== totalBytes) reject(new Error(`received ${got} of ${totalBytes} bytes`));
      else resolve(totalBytes / MiB / seconds);
    });
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Runs the tunnel benchmark, printing its figures through `print`. */
export async function benchTunnel(print: (line: string) => void): Promise<void> {
  const sb = new Sandbox();
  const src = await source();
  try {
    const fleet = await new Fleet(sb).start();
    const stateDir = await sb.dir("flotilla-bench-agent-");
    fleet.startAgent(stateDir, await fleet.joinToken(["--auto-approve"]), ["--tunnel-ports", String(src.port)]);
    const device = await waitFor("the device online", async () => (await fleet.devices()).find((d) => d.status === "online"), 60_000);
    const pf = sb.spawn(["--coordinator", fleet.url, "port-forward", device.name, `0:${src.port}`], { FLOTILLA_HOME: fleet.adminHome }, "port-forward");
    const local = Number((await pf.waitForOutput(/forwarding 127\.0\.0\.1:(\d+) -> /, 30_000))[1]);

    await download(local); // warm-up: connections, JIT
    const direct: number[] = [];
    const tunnel: number[] = [];
    for (let i = 0; i < 3; i++) {
      direct.push(await download(src.port));
      tunnel.push(await download(local));
    }
    const d = median(direct);
    const t = median(tunnel);
    print(`tunnel throughput, ${totalBytes / MiB} MiB per run, median of 3:`);
    print(`  direct loopback TCP   ${d.toFixed(0).padStart(6)} MB/s`);
    print(`  through a tunnel      ${t.toFixed(0).padStart(6)} MB/s`);
    print(`  ratio tunnel/direct   ${(t / d).toFixed(3)}`);
    const file = await writeResult("tunnel", { bytesPerRun: totalBytes, directMBps: d, tunnelMBps: t, ratio: t / d, runs: { direct, tunnel } });
    print(`  written to ${file}`);
  } finally {
    await sb.cleanup();
    await src.close();
  }
}

// Runnable on its own as well: `npx tsx bench/tunnel.ts`.
if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) await benchTunnel((line) => process.stdout.write(`${line}\n`));
