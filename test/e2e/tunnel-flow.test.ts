import { randomBytes } from "node:crypto";
import { readFile } from "node:fs/promises";
import net from "node:net";
import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { tunnelFleet } from "./support/tunnels.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

const MiB = 1024 * 1024;

async function rssBytes(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? 0) * 1024;
}

describe("tunnel flow control", () => {
  it("holds a fast writer on the device back while the admin's side reads nothing, and loses no byte", async () => {
    const total = 128 * MiB;
    let written = 0;
    const chunk = randomBytes(64 * 1024); // incompressible, as ssh traffic is
    // A service on the device that writes as fast as the tunnel takes it, honouring backpressure.
    const server = net.createServer((socket) => {
      socket.on("error", () => {});
      const pump = () => {
        while (written < total) {
          written += chunk.length;
          if (!socket.write(chunk)) return void socket.once("drain", pump);
        }
        socket.end();
      };
      pump();
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    sb.onCleanup(() => new Promise((r) => server.close(() => r())));
    const port = (server.address() as net.AddressInfo).port;

    const { fleet, device } = await tunnelFleet(sb, String(port));
    const coordinatorPid = fleet.coordinator.child.pid!;
    const pf = sb.spawn(["--coordinator", fleet.url, "port-forward", device.name, `0:${port}`], { FLOTILLA_HOME: fleet.adminHome }, "port-forward");
    const local = Number((await pf.waitForOutput(/forwarding 127\.0\.0\.1:(\d+) -> /, 30_000))[1]);
    const rssBefore = await rssBytes(coordinatorPid);

    const client = net.connect({ host: "127.0.0.1", port: local });
    client.pause();
    let last = -1;
    let still = 0;
    const stalled = await waitFor(
      "the device-side writer to stall",
      () => {
        still = written === last && written > 0 ? still + 1 : 0;
        last = written;
        return still >= 4 ? written : undefined;
      },
      90_000,
      500,
    );
    // Kernel socket buffers on both ends plus a few HTTP/2 windows (about 8 MiB here): far
    // below the 128 MiB offered.
    expect(stalled).toBeLessThan(32 * MiB);
    expect(await rssBytes(coordinatorPid)).toBeLessThan(rssBefore + 64 * MiB);

    let received = 0;
    client.on("data", (d: Buffer) => (received += d.length));
    const ended = new Promise<void>((r) => client.once("end", r));
    client.resume();
    await ended;
    expect(written).toBe(total);
    expect(received).toBe(total);
    client.destroy();
  }, 300_000);
});
