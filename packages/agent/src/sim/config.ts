/**
 * Every option of `flotilla sim`: flag, environment variable, TOML key, validation and default,
 * as the agent's own options (config.ts) are.
 */
import * as z from "zod";
import { defineOptions } from "@flotilla/protocol/agent";

const UNITS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 };

/** "50ms", "10s", "2m", "1h", or a bare number of milliseconds. */
export const durationMs = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/.exec(String(v).trim());
  if (!m) {
    ctx.addIssue({ code: "custom", message: `expected a duration such as 50ms, 10s, 2m, got ${JSON.stringify(v)}` });
    return z.NEVER;
  }
  return Math.round(Number(m[1]) * UNITS[m[2] ?? "ms"]!);
});

/** "2%", "0.5%" or a fraction "0.02", as a fraction in [0, 1]. */
export const percent = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const m = /^(\d+(?:\.\d+)?)(%)?$/.exec(String(v).trim());
  const value = m ? Number(m[1]) / (m[2] ? 100 : 1) : NaN;
  if (!(value >= 0 && value <= 1)) {
    ctx.addIssue({ code: "custom", message: `expected a rate such as 2% (0% to 100%), got ${JSON.stringify(v)}` });
    return z.NEVER;
  }
  return value;
});

/** "1%/min", "1%/m", "0.5%/h", or "1%" (per minute), as a fraction per minute. */
export const perMinute = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const m = /^(\d+(?:\.\d+)?)%(?:\/(min|m|h|hour))?$/.exec(String(v).trim());
  const value = m ? Number(m[1]) / 100 / (m[2] === "h" || m[2] === "hour" ? 60 : 1) : NaN;
  if (!(value >= 0 && value <= 1)) {
    ctx.addIssue({ code: "custom", message: `expected a churn rate such as 1%/min, got ${JSON.stringify(v)}` });
    return z.NEVER;
  }
  return value;
});

const count = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

export const simOptionSpecs = defineOptions({
  join: {
    flag: "join",
    env: "FLOTILLA_SIM_JOIN",
    key: "join",
    schema: z.string().min(1),
    doc: "join string from `flotilla join-token create` (use --uses 0 or at least --devices uses; --auto-approve to skip approval)",
    secret: true,
  },
  devices: {
    flag: "devices",
    env: "FLOTILLA_SIM_DEVICES",
    key: "devices",
    schema: count(1, 1_000_000),
    default: 10,
    doc: "how many devices to simulate",
  },
  failRate: {
    flag: "fail-rate",
    env: "FLOTILLA_SIM_FAIL_RATE",
    key: "fail_rate",
    schema: percent,
    default: 0,
    doc: "share of devices that fail each release, e.g. 2% (half at download, half at the health check, then rolled back)",
  },
  churn: {
    flag: "churn",
    env: "FLOTILLA_SIM_CHURN",
    key: "churn",
    schema: perMinute,
    default: 0,
    doc: "share of devices going offline per minute, e.g. 1%/min; each comes back after about --offline-for",
  },
  offlineFor: {
    flag: "offline-for",
    env: "FLOTILLA_SIM_OFFLINE_FOR",
    key: "offline_for",
    schema: durationMs,
    default: 30_000,
    doc: "how long a churned device stays offline (±50%)",
  },
  stepDelay: {
    flag: "step-delay",
    env: "FLOTILLA_SIM_STEP_DELAY",
    key: "step_delay",
    schema: durationMs,
    default: 50,
    doc: "time between two release steps of one device (simulated download and activation)",
  },
  seed: {
    flag: "seed",
    env: "FLOTILLA_SIM_SEED",
    key: "seed",
    schema: z.coerce.number().int().min(0).max(0xffffffff).optional(),
    doc: "chooses which devices fail and churn: the same seed makes the same choices (default: random)",
  },
  metricsInterval: {
    flag: "metrics-interval",
    env: "FLOTILLA_SIM_METRICS_INTERVAL",
    key: "metrics_interval",
    schema: durationMs,
    default: 10_000,
    doc: "each device takes a metric sample this often, as an agent does (0: never)",
  },
  metricsShipInterval: {
    flag: "metrics-ship-interval",
    env: "FLOTILLA_SIM_METRICS_SHIP_INTERVAL",
    key: "metrics_ship_interval",
    schema: durationMs.optional(),
    doc: "each device ships its samples together this often, as an agent does (default: six samples' worth, at most 60s)",
  },
  logsInterval: {
    flag: "logs-interval",
    env: "FLOTILLA_SIM_LOGS_INTERVAL",
    key: "logs_interval",
    schema: durationMs,
    default: 30_000,
    doc: "each device ships a batch of log lines this often (0: never)",
  },
  logLines: {
    flag: "log-lines",
    env: "FLOTILLA_SIM_LOG_LINES",
    key: "log_lines",
    schema: count(1, 10_000),
    default: 5,
    doc: "log lines per batch",
  },
  reportInterval: {
    flag: "report-interval",
    env: "FLOTILLA_SIM_REPORT_INTERVAL",
    key: "report_interval",
    schema: durationMs,
    default: 0,
    doc: "each device also reports its status this often (0: only when something changed); status lines show report latency",
  },
  watchTimeout: {
    flag: "watch-timeout",
    env: "FLOTILLA_SIM_WATCH_TIMEOUT",
    key: "watch_timeout",
    schema: durationMs,
    default: 60_000,
    doc: "a device reconnects when the coordinator was silent (no keep-alive) this long",
  },
  workers: {
    flag: "workers",
    env: "FLOTILLA_SIM_WORKERS",
    key: "workers",
    schema: count(1, 256).optional(),
    doc: "worker processes the devices are spread over (default: one per CPU, at most one per 100 devices)",
  },
  stateDir: {
    flag: "state-dir",
    env: "FLOTILLA_SIM_STATE_DIR",
    key: "state_dir",
    schema: z.string().min(1).optional(),
    doc: "keep each device's key and enrollment here, so a restart brings back the same devices (default: new devices each run)",
  },
  hostnamePrefix: {
    flag: "hostname-prefix",
    env: "FLOTILLA_SIM_HOSTNAME_PREFIX",
    key: "hostname_prefix",
    schema: z.string().regex(/^[a-z0-9][a-z0-9-]{0,40}$/, "lower-case letters, digits and dashes"),
    default: "sim",
    doc: "devices' host names are <prefix>-00000, <prefix>-00001, ...",
  },
  enrollConcurrency: {
    flag: "enroll-concurrency",
    env: "FLOTILLA_SIM_ENROLL_CONCURRENCY",
    key: "enroll_concurrency",
    schema: count(1, 1000),
    default: 8,
    doc: "enrollments in flight at once, per worker",
  },
  statusInterval: {
    flag: "status-interval",
    env: "FLOTILLA_SIM_STATUS_INTERVAL",
    key: "status_interval",
    schema: durationMs,
    default: 10_000,
    doc: "print a status line this often (0: never)",
  },
});
