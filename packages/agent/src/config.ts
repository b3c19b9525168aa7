/**
 * Every agent option, in one place: flag, environment variable, TOML key, validation and
 * default. Values come from a flag, then FLOTILLA_*, then the config file, then the default.
 */
import { z } from "zod";
import { defineOptions } from "@flotilla/protocol";

const positiveMs = z.coerce.number().int().positive();

export const agentOptionSpecs = defineOptions({
  stateDir: {
    flag: "state-dir",
    env: "FLOTILLA_STATE_DIR",
    key: "state_dir",
    schema: z.string().min(1),
    default: "/var/lib/flotilla-agent",
    doc: "where the agent keeps its key, its enrollment and its outbox",
  },
  join: {
    flag: "join",
    env: "FLOTILLA_JOIN",
    key: "join",
    schema: z.string().optional(),
    doc: "join string from `flotilla join-token create`; needed only for the first start",
    secret: true,
  },
  factsIntervalMs: {
    flag: "facts-interval-ms",
    env: "FLOTILLA_FACTS_INTERVAL_MS",
    key: "facts_interval_ms",
    schema: positiveMs,
    default: 60_000,
    doc: "how often facts are collected (and sent when they changed)",
  },
  watchTimeoutMs: {
    flag: "watch-timeout-ms",
    env: "FLOTILLA_WATCH_TIMEOUT_MS",
    key: "watch_timeout_ms",
    schema: positiveMs,
    default: 60_000,
    doc: "reconnect when the coordinator has been silent this long",
  },
  backoffMinMs: {
    flag: "backoff-min-ms",
    env: "FLOTILLA_BACKOFF_MIN_MS",
    key: "backoff_min_ms",
    schema: positiveMs,
    default: 500,
    doc: "first reconnect delay; doubles per failure, with full jitter",
  },
  backoffMaxMs: {
    flag: "backoff-max-ms",
    env: "FLOTILLA_BACKOFF_MAX_MS",
    key: "backoff_max_ms",
    schema: positiveMs,
    default: 30_000,
    doc: "longest reconnect delay",
  },
  downloadBytesPerSecond: {
    flag: "download-bytes-per-second",
    env: "FLOTILLA_DOWNLOAD_BYTES_PER_SECOND",
    key: "download_bytes_per_second",
    schema: z.coerce.number().int().min(0),
    default: 0,
    doc: "caps release downloads, for slow or metered links; 0 for no cap",
  },
});
