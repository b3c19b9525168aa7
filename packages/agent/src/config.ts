/**
 * Every agent option, in one place: flag, environment variable, TOML key, validation and
 * default. Values come from a flag, then FLOTILLA_*, then the config file, then the default.
 */
import * as z from "zod";
import { defineOptions, MAX_DELAY_MS, type Values } from "@flotilla/protocol/agent";
import { tunnelPortsSchema } from "./tunnel/ports.ts";

// Every *_ms option of the agent is a timer delay: a longer one than MAX_DELAY_MS would fire at once.
const positiveMs = z.coerce.number().int().positive().max(MAX_DELAY_MS, `at most ${MAX_DELAY_MS} ms (about 24 days), the longest a timer waits`);

/** The default profile of a NixOS system. */
export const DEFAULT_NIXOS_PROFILE = "/nix/var/nix/profiles/system";

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
  rejoin: {
    flag: "rejoin",
    env: "FLOTILLA_REJOIN",
    key: "rejoin",
    schema: z.string().optional(),
    doc: "re-home an enrolled agent with a new join string (another coordinator or organization), keeping its key and installed releases; run by the machine's operator (docs/rejoin.md)",
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
  nixosProfile: {
    flag: "nixos-profile",
    env: "FLOTILLA_NIXOS_PROFILE",
    key: "nixos_profile",
    schema: z.string().min(1),
    default: DEFAULT_NIXOS_PROFILE,
    doc: "the NixOS system profile that nixos releases switch (nix-env --profile)",
  },
  nixosSwitchTimeoutMs: {
    flag: "nixos-switch-timeout-ms",
    env: "FLOTILLA_NIXOS_SWITCH_TIMEOUT_MS",
    key: "nixos_switch_timeout_ms",
    schema: positiveMs,
    default: 60_000,
    doc: "after a NixOS switch, how long the agent has to reach the coordinator again before it rolls back (a release's health window overrides it)",
  },
  logBufferBytes: {
    flag: "log-buffer-bytes",
    env: "FLOTILLA_LOG_BUFFER_BYTES",
    key: "log_buffer_bytes",
    schema: z.coerce.number().int().min(64 * 1024),
    default: 256 * 1024 * 1024,
    doc: "disk space for logs not yet acknowledged by the coordinator; beyond it the oldest are dropped (and counted)",
  },
  metricsIntervalMs: {
    flag: "metrics-interval-ms",
    env: "FLOTILLA_METRICS_INTERVAL_MS",
    key: "metrics_interval_ms",
    schema: positiveMs.min(100),
    default: 10_000,
    doc: "how often CPU, memory, disk, network, load and uptime are sampled",
  },
  metricsShipIntervalMs: {
    flag: "metrics-ship-interval-ms",
    env: "FLOTILLA_METRICS_SHIP_INTERVAL_MS",
    key: "metrics_ship_interval_ms",
    schema: positiveMs.optional(),
    doc: "how long samples wait to be shipped together; default six samples' worth (--metrics-interval-ms x 6), at most 60 s",
  },
  journalUnits: {
    flag: "journal-units",
    env: "FLOTILLA_JOURNAL_UNITS",
    key: "journal_units",
    schema: listOf(/^[A-Za-z0-9_.@:-]{1,128}$/, "a systemd unit name"),
    default: [],
    doc: "systemd units whose journal is captured, comma-separated (needs journalctl)",
  },
  logFileUnit: {
    flag: "log-file-unit",
    env: "FLOTILLA_LOG_FILE_UNITS",
    key: "log_file_units",
    schema: listOf(/^[A-Za-z0-9_.@:-]{1,128}=\/.+$/, "NAME=/absolute/path"),
    default: [],
    doc: "log files to follow into units, NAME=/absolute/path, comma-separated",
  },
  tunnelPorts: {
    flag: "tunnel-ports",
    env: "FLOTILLA_TUNNEL_PORTS",
    key: "tunnel_ports",
    schema: tunnelPortsSchema,
    default: [22],
    doc: "local TCP ports admins may reach through tunnels, e.g. 22,8080 ('none': no tunnels); the coordinator cannot change this",
  },
  downloadBytesPerSecond: {
    flag: "download-bytes-per-second",
    env: "FLOTILLA_DOWNLOAD_BYTES_PER_SECOND",
    key: "download_bytes_per_second",
    schema: z.coerce.number().int().min(0),
    default: 0,
    doc: "caps release downloads, for slow or metered links; 0 for no cap",
  },
  selfUpdate: {
    flag: "self-update",
    env: "FLOTILLA_SELF_UPDATE",
    key: "self_update",
    schema: z.union([z.boolean(), z.stringbool()]),
    default: false,
    doc: "run the agent under a launcher that installs agent releases and restores the previous executable when a new one fails (docs/self-update.md)",
  },
  selfUpdateConfirmMs: {
    flag: "self-update-confirm-ms",
    env: "FLOTILLA_SELF_UPDATE_CONFIRM_MS",
    key: "self_update_confirm_ms",
    schema: positiveMs,
    default: 120_000,
    doc: "how long a new agent executable has to reach the coordinator before the launcher restores the previous one",
  },
});

/** A list option: an array (TOML) or comma-separated text (flag, environment), each item checked. */
function listOf(item: RegExp, what: string) {
  return z
    .union([z.string(), z.array(z.string())])
    .transform((v) => (Array.isArray(v) ? v : v.split(",")).map((s) => s.trim()).filter(Boolean))
    .pipe(z.array(z.string().regex(item, `expected ${what}`)));
}

/** The agent's configuration as loaded from agentOptionSpecs: every option, defaults applied. */
export type AgentConfig = Values<typeof agentOptionSpecs>;
