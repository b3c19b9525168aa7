import { Code, ConnectError, createClient } from "@connectrpc/connect";
import type { Command } from "commander";
import { adminv1 } from "@flotilla/protocol";
import { adminTransport, type AdminTarget } from "../admin/client.ts";
import { UsageError } from "../errors.ts";
import { json, parseDuration } from "../output.ts";
import { metricsText } from "../devices/metrics-view.ts";
import type { Run } from "../run.ts";

interface LogsOptions {
  unit?: string;
  since?: string;
  grep?: string;
  follow?: boolean;
  selector?: string;
  lines: string;
  json?: boolean;
}

function lineText(l: adminv1.LogLine, prefix: boolean): string {
  const time = new Date(Number(l.timeUnixMs)).toISOString();
  return `${prefix ? `${l.deviceName} | ` : ""}${time} ${l.unit}[${l.source}]: ${l.line}\n`;
}

function lineJson(l: adminv1.LogLine): string {
  return `${JSON.stringify({ device: l.deviceName, deviceId: l.deviceId, time: new Date(Number(l.timeUnixMs)).toISOString(), unit: l.unit, source: l.source, seq: Number(l.seq), line: l.line })}\n`;
}

/** Lines per page when `--since` prints every line. */
const PAGE_LINES = 2000;

function count(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 10_000) throw new UsageError(`${what} must be a whole number from 0 to 10000`);
  return n;
}

export function registerLogsCommands(program: Command, target: () => AdminTarget, run: Run): void {
  program
    .command("logs [device]")
    .description("show device logs: one device (id or name), or those a selector matches, prefixed by name")
    .option("--unit <unit>", "only this unit, e.g. webapp or flotilla-agent")
    .option("--since <duration>", "only lines from this long ago, e.g. 90s, 15m, 1h, 7d; prints every one of them unless -n is given")
    .option("--grep <text>", "only lines containing this text (case-insensitive)")
    .option("-s, --selector <selector>", "devices matching a selector, e.g. 'site=lab'")
    .option("-n, --lines <n>", "how many of the newest lines to show, up to 10000 (default 1000; with -f: to show first, default 10)", "")
    .option("-f, --follow", "keep printing new lines as they arrive (Ctrl-C stops)")
    .option("--json", "one JSON object per line")
    .action((device: string | undefined, opts: LogsOptions) =>
      run(async (out) => {
        if (device && opts.selector) throw new UsageError("give a device or --selector, not both");
        const filter = {
          device: device ?? "",
          selector: opts.selector ?? "",
          unit: opts.unit ?? "",
          grep: opts.grep ?? "",
          sinceUnixMs: opts.since ? BigInt(Date.now() - parseDuration(opts.since)) : 0n,
        };
        const n = count(opts.lines || (opts.follow ? "10" : "1000"), "--lines");
        const prefix = !device;
        const print = (l: adminv1.LogLine) => out(opts.json ? lineJson(l) : lineText(l, prefix));
        const client = createClient(adminv1.TelemetryService, await adminTransport(target()));
        if (!opts.follow && opts.since && !opts.lines) {
          // Every line since then, streamed page by page from the oldest.
          let pageToken = "";
          do {
            const page = await client.queryLogs({ filter, limit: PAGE_LINES, fromOldest: true, pageToken });
            page.lines.forEach(print);
            pageToken = page.nextPageToken;
          } while (pageToken);
          return;
        }
        if (!opts.follow) {
          const { lines, more } = await client.queryLogs({ filter, limit: n });
          lines.forEach(print);
          if (more) {
            process.stderr.write(
              `flotilla: showing the newest ${n} matching lines; older ones match too: --since DURATION prints every line since then${n < 10_000 ? ", -n 10000 more of the newest" : ""}\n`,
            );
          }
          return;
        }
        const stop = new AbortController();
        const onSignal = () => stop.abort();
        process.once("SIGINT", onSignal);
        process.once("SIGTERM", onSignal);
        try {
          for await (const msg of client.followLogs({ filter, tail: n }, { signal: stop.signal })) msg.lines.forEach(print);
        } catch (err) {
          if (!(stop.signal.aborted && ConnectError.from(err).code === Code.Canceled)) throw err;
        } finally {
          process.off("SIGINT", onSignal);
          process.off("SIGTERM", onSignal);
        }
      }),
    );

  program
    .command("metrics <device>")
    .description("a device's current and recent CPU, memory, disk, network, load and uptime")
    .option("--samples <n>", "how many recent samples to fetch", "60")
    .option("--json", "print the samples as JSON")
    .action((device: string, opts: { samples: string; json?: boolean }) =>
      run(async (out) => {
        const client = createClient(adminv1.TelemetryService, await adminTransport(target()));
        const res = await client.getMetrics({ device, limit: count(opts.samples, "--samples") || 1 });
        if (!opts.json) return out(metricsText(res));
        out(
          json({
            device: res.deviceName,
            deviceId: res.deviceId,
            logsDropped: Number(res.logsDropped),
            metricsDropped: Number(res.metricsDropped),
            samples: res.samples.map((s) => ({
              time: new Date(Number(s.timeUnixMs)).toISOString(),
              values: s.values.map((v) => ({ name: v.name, value: v.value, attributes: v.attributes, unit: v.unit })),
            })),
          }),
        );
      }),
    );
}
