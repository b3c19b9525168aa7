import { spawnSync } from "node:child_process";
import { createServer, type Server } from "node:http";
import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { Fleet } from "./support/fleet.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

interface MetricsJson {
  device: string;
  logsDropped: number;
  samples: { time: string; values: { name: string; value: number; attributes: Record<string, string>; unit: string }[] }[];
}

async function fleetWithAgent(coordinatorArgs: string[] = []) {
  const fleet = await new Fleet(sb, coordinatorArgs).start();
  fleet.startAgent(await sb.dir("flotilla-agent-"), await fleet.joinToken(["--auto-approve"]), ["--metrics-interval-ms", "300"]);
  const device = await waitFor("the device online", async () => (await fleet.devices()).find((d) => d.status === "online"));
  const metrics = await waitFor("two metric samples", async () => {
    const m = await fleet.adminJson<MetricsJson>(["metrics", device.name]);
    return m.samples.length >= 2 ? m : undefined;
  });
  return { fleet, device, metrics };
}

describe("device metrics", () => {
  it("samples CPU, memory, disk, network, load and uptime under OpenTelemetry names, and `metrics` shows them", async () => {
    const { fleet, device, metrics } = await fleetWithAgent();
    const names = new Set(metrics.samples.at(-1)!.values.map((v) => v.name));
    for (const n of ["system.cpu.utilization", "system.memory.usage", "system.filesystem.usage", "system.cpu.load_average.1m", "system.uptime"]) {
      expect(names, n).toContain(n);
    }
    const idle = metrics.samples.at(-1)!.values.find((v) => v.name === "system.cpu.utilization" && v.attributes.state === "idle")!;
    expect(idle.value).toBeGreaterThanOrEqual(0);
    expect(idle.value).toBeLessThanOrEqual(1);
    const text = await fleet.admin(["metrics", device.name]);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/^cpu\s+\d+\.\d%/m);
    expect(text.stdout).toMatch(/^memory\s+\S+ \S+ used of/m);
    expect(text.stdout).toMatch(/^disk\s+\/: /m);
    expect(text.stdout).toMatch(/^uptime\s+\d+d/m);
    const missing = await fleet.admin(["metrics", "no-such-device"]);
    expect(missing.code).toBe(5);
  }, 90_000);

  it("serves /metrics in a format promtool accepts, with fleet and device series", async () => {
    const { fleet, device } = await fleetWithAgent();
    const res = await fetch(`${fleet.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const body = await res.text();
    expect(body).toMatch(/^flotilla_devices\{org="[^"]+",state="online"\} 1$/m);
    expect(body).toMatch(new RegExp(`^flotilla_device_system_cpu_utilization_ratio\\{org="[^"]+",device="${device.name}",state="idle"\\} `, "m"));
    expect(body).toMatch(/^flotilla_log_lines_received_total \d+$/m);
    expect(body).toMatch(new RegExp(`^flotilla_device_system_network_io_bytes_total\\{org="[^"]+",device="${device.name}",network_device="[^"]+",direction="receive"\\} \\d+`, "m"));
    const check = spawnSync("/usr/bin/promtool", ["check", "metrics"], { input: body, encoding: "utf8" });
    expect(check.stderr + check.stdout).toBe("");
    expect(check.status).toBe(0);
  }, 90_000);

  it("asks for the bearer token on /metrics when one is configured", async () => {
    const token = "scrape-token-0123456789";
    const fleet = await new Fleet(sb, ["--metrics-token", token]).start();
    expect((await fetch(`${fleet.url}/metrics`)).status).toBe(401);
    expect((await fetch(`${fleet.url}/metrics`, { headers: { authorization: "Bearer wrong-token-0123456789" } })).status).toBe(401);
    const ok = await fetch(`${fleet.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    expect(ok.status).toBe(200);
    expect(await ok.text()).toMatch(/^process_resident_memory_bytes \d+$/m);
  }, 60_000);

  it("forwards device metrics to an OTLP/HTTP collector as JSON", async () => {
    const bodies: unknown[] = [];
    const collector: Server = createServer((req, res) => {
      let data = "";
      req.setEncoding("utf8").on("data", (d: string) => (data += d));
      req.on("end", () => {
        if (req.url === "/v1/metrics" && req.headers["content-type"] === "application/json") bodies.push(JSON.parse(data));
        res.writeHead(200, { "content-type": "application/json" }).end("{}");
      });
    });
    await new Promise<void>((r) => collector.listen(0, "127.0.0.1", r));
    sb.onCleanup(() => new Promise((r) => collector.close(() => r())));
    const port = (collector.address() as { port: number }).port;
    const { device } = await fleetWithAgent(["--otlp-url", `http://127.0.0.1:${port}`]);

    type Rm = { resource: { attributes: { key: string; value: { stringValue: string } }[] }; scopeMetrics: { metrics: { name: string; gauge?: { dataPoints: { asDouble: number; timeUnixNano: string }[] }; sum?: { isMonotonic: boolean } }[] }[] };
    const rm = await waitFor("a batch at the collector", () => (bodies as { resourceMetrics: Rm[] }[]).flatMap((b) => b.resourceMetrics)[0]);
    expect(rm.resource.attributes).toContainEqual({ key: "host.name", value: { stringValue: device.name } });
    const metrics = rm.scopeMetrics[0]!.metrics;
    const cpu = metrics.find((m) => m.name === "system.cpu.utilization")!;
    expect(cpu.gauge!.dataPoints[0]!.timeUnixNano).toMatch(/^\d{19}$/);
    const net = metrics.find((m) => m.name === "system.network.io");
    if (net) expect(net.sum!.isMonotonic).toBe(true);
  }, 90_000);
});
