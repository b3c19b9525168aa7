/**
 * Every coordinator option, in one place: flag, environment variable, TOML key, validation and
 * default. Values come from a flag, then FLOTILLA_*, then the config file, then the default.
 */
import * as z from "zod";
import { setupCodeWeakness } from "./access/setup-code.ts";
import { orgQuotasSchema, quotaSchema } from "./artifacts/byte-size.ts";
import { isLoopback } from "./server/listen.ts";
import { defineOptions, MAX_DELAY_MS, type OptionSpec, type Values } from "@flotilla/protocol/agent";

const positiveMs = z.coerce.number().int().positive();
/** A delay handed to setTimeout or setInterval: a longer one than MAX_DELAY_MS would fire at once. */
const timerMs = positiveMs.max(MAX_DELAY_MS, `at most ${MAX_DELAY_MS} ms (about 24 days), the longest a timer waits`);

export const coordinatorOptionSpecs = defineOptions({
  dataDir: {
    flag: "data-dir",
    env: "FLOTILLA_DATA_DIR",
    key: "data_dir",
    schema: z.string().min(1),
    default: ".flotilla",
    doc: "where the coordinator keeps its key, its SQLite database and artifacts",
  },
  listen: {
    flag: "listen",
    env: "FLOTILLA_LISTEN",
    key: "listen",
    schema: z.string().regex(/^(\[[0-9a-fA-F:.]+\]|[^:[\]\s]+):\d{1,5}$/, "expected host:port"),
    default: "127.0.0.1:7700",
    doc: "host:port; plain HTTP on loopback, TLS on any other address",
  },
  databaseUrl: {
    flag: "database-url",
    env: "FLOTILLA_DATABASE_URL",
    key: "database_url",
    schema: z.string().regex(/^postgres(ql)?:\/\//, "expected postgres://...").optional(),
    doc: "PostgreSQL instead of the embedded SQLite database (several replicas may share it)",
    secret: true,
  },
  tlsCert: {
    flag: "tls-cert",
    env: "FLOTILLA_TLS_CERT",
    key: "tls_cert",
    schema: z.string().optional(),
    doc: "PEM certificate file; without it, a certificate made from the coordinator's own key",
  },
  tlsKey: {
    flag: "tls-key",
    env: "FLOTILLA_TLS_KEY",
    key: "tls_key",
    schema: z.string().optional(),
    doc: "PEM private key file for --tls-cert",
  },
  publicUrl: {
    flag: "public-url",
    env: "FLOTILLA_PUBLIC_URL",
    key: "public_url",
    schema: z.string().regex(/^https?:\/\/[^\s/]+$/, "expected http(s)://host:port").optional(),
    doc: "the address agents dial, put into join strings (default: derived from --listen)",
  },
  internalUrl: {
    flag: "internal-url",
    env: "FLOTILLA_INTERNAL_URL",
    key: "internal_url",
    schema: z
      .string()
      .superRefine((url, c) => {
        const problem = internalUrlProblem(url);
        if (problem) c.addIssue({ code: "custom", message: problem });
      })
      .optional(),
    doc: "where the other replicas on the database reach this one, e.g. https://10.0.0.5:7700 (default: derived from --listen); with --replicas above 1, scheme and host only: each replica adds its own port (docs/scale.md)",
  },
  installDir: {
    flag: "install-dir",
    env: "FLOTILLA_INSTALL_DIR",
    key: "install_dir",
    schema: z.string().min(1).optional(),
    doc: "a directory with flotilla-linux-x86_64 / flotilla-linux-aarch64, served to /install.sh (default: the packaged executable's own directory)",
  },
  setupCode: {
    flag: "setup-code",
    env: "FLOTILLA_SETUP_CODE",
    key: "setup_code",
    schema: z
      .string()
      .superRefine((code, c) => {
        const weak = setupCodeWeakness(code);
        if (weak) c.addIssue({ code: "custom", message: `the setup code ${weak}; leave it out to have a strong one generated` });
      })
      .optional(),
    doc: "the one-time owner setup code, for unattended installs: 16 or more letters and digits (default: a random one, printed)",
    secret: true,
  },
  maxMessageBytes: {
    flag: "max-message-bytes",
    env: "FLOTILLA_MAX_MESSAGE_BYTES",
    key: "max_message_bytes",
    schema: z.coerce.number().int().min(64 * 1024).max(256 * 1024 * 1024),
    default: 4 * 1024 * 1024,
    doc: "largest RPC message accepted or sent, in bytes",
  },
  sessionTtlMs: {
    flag: "session-ttl-ms",
    env: "FLOTILLA_SESSION_TTL_MS",
    key: "session_ttl_ms",
    schema: positiveMs,
    default: 3_600_000,
    doc: "how long a session token lives",
  },
  keepaliveMs: {
    flag: "keepalive-ms",
    env: "FLOTILLA_KEEPALIVE_MS",
    key: "keepalive_ms",
    schema: timerMs,
    default: 15_000,
    doc: "how often Watch streams send a keep-alive and refresh last-seen",
  },
  offlineAfterMs: {
    flag: "offline-after-ms",
    env: "FLOTILLA_OFFLINE_AFTER_MS",
    key: "offline_after_ms",
    schema: positiveMs,
    default: 45_000,
    doc: "a device not heard from for this long shows as offline",
  },
  maxAgentCalls: {
    flag: "max-agent-calls",
    env: "FLOTILLA_MAX_AGENT_CALLS",
    key: "max_agent_calls",
    schema: z.coerce.number().int().positive(),
    default: 512,
    doc: "agent calls (enroll, authenticate, reports, logs, metrics) served at once; more are told to retry later",
  },
  shedLagMs: {
    flag: "shed-lag-ms",
    env: "FLOTILLA_SHED_LAG_MS",
    key: "shed_lag_ms",
    schema: positiveMs,
    default: 1000,
    doc: "while the event loop lags this much (its longest delay over the last second, or right now), agent calls are told to retry later",
  },
  logRetentionMs: {
    flag: "log-retention-ms",
    env: "FLOTILLA_LOG_RETENTION_MS",
    key: "log_retention_ms",
    schema: positiveMs,
    default: 7 * 24 * 3_600_000,
    doc: "device logs and metric samples the coordinator received longer ago than this are deleted (default 7 days)",
  },
  logRetentionBytes: {
    flag: "log-retention-bytes",
    env: "FLOTILLA_LOG_RETENTION_BYTES",
    key: "log_retention_bytes",
    schema: z.coerce.number().int().min(1024 * 1024),
    default: 1024 ** 3,
    doc: "per organization: its device logs beyond about this many bytes are deleted, earliest received first (its metric samples likewise, apart)",
  },
  otlpUrl: {
    flag: "otlp-url",
    env: "FLOTILLA_OTLP_URL",
    key: "otlp_url",
    schema: z.string().regex(/^https?:\/\/\S+$/, "expected http(s)://host:port").optional(),
    doc: "forward device metrics as OTLP/HTTP JSON to this collector (POST <url>/v1/metrics)",
  },
  metricsToken: {
    flag: "metrics-token",
    env: "FLOTILLA_METRICS_TOKEN",
    key: "metrics_token",
    schema: z.string().min(16).optional(),
    doc: "bearer token for GET /metrics; without it /metrics answers loopback callers only",
    secret: true,
  },
  tufTimestampTtlMs: {
    flag: "tuf-timestamp-ttl-ms",
    env: "FLOTILLA_TUF_TIMESTAMP_TTL_MS",
    key: "tuf_timestamp_ttl_ms",
    schema: positiveMs,
    default: 86_400_000,
    doc: "how long a TUF timestamp signed by the coordinator stays valid (agents refuse it after)",
  },
  tufRefreshMs: {
    flag: "tuf-refresh-ms",
    env: "FLOTILLA_TUF_REFRESH_MS",
    key: "tuf_refresh_ms",
    schema: timerMs,
    default: 3_600_000,
    doc: "how often the coordinator re-signs TUF snapshot and timestamp that would expire within two such periods",
  },
  storageQuota: {
    flag: "storage-quota",
    env: "FLOTILLA_STORAGE_QUOTA",
    key: "storage_quota",
    schema: quotaSchema(),
    default: 20 * 1024 ** 3,
    doc: "the most an organization may store in artifacts and NARs, unfinished uploads included (e.g. 20GiB, 500MB; 0 or unlimited: no limit)",
  },
  storageQuotaOrgs: {
    flag: "storage-quota-orgs",
    env: "FLOTILLA_STORAGE_QUOTA_ORGS",
    key: "storage_quota_orgs",
    schema: orgQuotasSchema(),
    default: {},
    doc: "other quotas for some organizations, by name or id: acme=100GiB,globex=unlimited (a table in the config file)",
  },
  staleUploadAfterMs: {
    flag: "stale-upload-after-ms",
    env: "FLOTILLA_STALE_UPLOAD_AFTER_MS",
    key: "stale_upload_after_ms",
    schema: positiveMs,
    default: 86_400_000,
    doc: "an artifact or NAR upload left unfinished this long is deleted and its room in the quota given back",
  },
  gcIntervalMs: {
    flag: "gc-interval-ms",
    env: "FLOTILLA_GC_INTERVAL_MS",
    key: "gc_interval_ms",
    schema: timerMs,
    default: 21_600_000,
    doc: "how often artifacts and NARs no release needs are deleted and their room in the quota given back",
  },
  gcGraceMs: {
    flag: "gc-grace-ms",
    env: "FLOTILLA_GC_GRACE_MS",
    key: "gc_grace_ms",
    schema: positiveMs,
    default: 86_400_000,
    doc: "an uploaded artifact or NAR no release needs is kept this long before garbage collection deletes it",
  },
  replicas: {
    flag: "replicas",
    env: "FLOTILLA_REPLICAS",
    key: "replicas",
    schema: z.coerce.number().int().min(1).max(64),
    default: 1,
    doc: "coordinator processes on this host sharing the listening port (one per core); above 1 needs --database-url (docs/scale.md)",
  },
});

/**
 * What is wrong with `url` as an --internal-url, or undefined: an http(s) URL naming a host other
 * replicas can dial (not a wildcard such as 0.0.0.0), and an optional port, nothing else.
 */
export function internalUrlProblem(url: string): string | undefined {
  const expected = "expected http(s)://host or http(s)://host:port";
  if (/\s/.test(url)) return `${expected}, without spaces`;
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return expected;
  }
  if (u.protocol !== "http:" && u.protocol !== "https:") return `${expected}, not ${u.protocol}//`;
  if (u.username || u.password) return `${expected}, without a user or password`;
  if (!/^https?:\/\/[^/?#]+\/?$/i.test(url)) return `${expected}, without a path, query or fragment`;
  if (u.hostname === "0.0.0.0" || u.hostname === "[::]") return `${u.hostname} is where a server listens, not an address other replicas can dial`;
  return undefined;
}

/** True when --internal-url names a port, as in https://10.0.0.5:7700 (the scheme's default port written out counts). */
export function internalUrlHasPort(url: string): boolean {
  return /^https?:\/\/(\[[^\]]*\]|[^:/?#]*):\d*\/?$/i.test(url);
}

/** Whether a coordinator with this configuration serves TLS: with --tls-cert, or on any --listen host but loopback. */
function servesTls(config: Pick<CoordinatorConfig, "listen" | "tlsCert" | "tlsKey">): boolean {
  return config.tlsCert !== undefined || config.tlsKey !== undefined || !isLoopback(config.listen.replace(/:\d+$/, ""));
}

/**
 * What is wrong with --internal-url alongside the other options, or undefined: its scheme must be
 * the one this coordinator serves, and with --replicas above 1 it names no port (each replica
 * is reached on a port of its own, which it adds).
 */
export function internalUrlConflict(config: Pick<CoordinatorConfig, "internalUrl" | "listen" | "tlsCert" | "tlsKey" | "replicas">): string | undefined {
  const url = config.internalUrl;
  if (url === undefined) return undefined;
  const tls = servesTls(config);
  const https = new URL(url).protocol === "https:";
  if (tls && !https) {
    return `--internal-url ${url} is plain HTTP, but this coordinator serves TLS (it does with --tls-cert and on any --listen address but loopback): use https://`;
  }
  if (!tls && https) {
    return `--internal-url ${url} is HTTPS, but this coordinator serves plain HTTP (--listen on loopback, no --tls-cert): use http://`;
  }
  if (config.replicas > 1 && internalUrlHasPort(url)) {
    return `--internal-url with --replicas above 1 names a host without a port (e.g. ${url.replace(/:\d*\/?$/, "")}): each replica is reached on a port of its own`;
  }
  return undefined;
}

/** Every coordinator option's value, as `loadConfig(coordinatorOptionSpecs, ...)` returns them. */
export type CoordinatorConfig = Values<typeof coordinatorOptionSpecs>;

/**
 * What startCoordinator takes: the configuration, where any option but the data directory and
 * the listen address may be left out for its default (programs and tests pass what they change).
 */
export type CoordinatorOptions = Pick<CoordinatorConfig, "dataDir" | "listen"> & Partial<CoordinatorConfig>;

/** The full configuration: each option left out (or undefined) takes its default from the specs. */
export function withDefaults(opts: CoordinatorOptions): CoordinatorConfig {
  const given = opts as Record<string, unknown>;
  const specs = coordinatorOptionSpecs as Record<string, OptionSpec<unknown>>;
  return Object.fromEntries(Object.entries(specs).map(([name, spec]) => [name, given[name] ?? spec.default])) as CoordinatorConfig;
}
