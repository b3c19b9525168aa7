/**
 * Every option of the `flotilla` program itself (the admin side), in one place: flag,
 * environment variable, validation and default. Values come from a flag, then the environment
 * variable; the admin side reads no config file (`key` only names an option, as in the roles').
 * `flotilla coordinator` and `flotilla agent` have their own specs in their packages.
 */
import { homedir } from "node:os";
import { join } from "node:path";
import * as z from "zod";
import { defineOptions, loadConfig, type Values } from "@flotilla/protocol/agent";

const optional = z.string().optional();

export const cliOptionSpecs = defineOptions({
  coordinator: {
    flag: "coordinator",
    env: "FLOTILLA_COORDINATOR",
    key: "coordinator",
    schema: optional,
    doc: "the coordinator to talk to (default: the one logged in to)",
  },
  keyFile: {
    flag: "key",
    env: "FLOTILLA_ADMIN_KEY",
    key: "admin_key",
    schema: optional,
    doc: "admin key to use: an OpenSSH ed25519 key or a Flotilla key file (default: $FLOTILLA_HOME/admin.key)",
  },
  org: {
    flag: "org",
    env: "FLOTILLA_ORG",
    key: "org",
    schema: optional,
    doc: "the organization to act in (default: your key's first)",
  },
  apiToken: {
    flag: "token",
    env: "FLOTILLA_TOKEN",
    key: "token",
    schema: optional,
    doc: "an API token (`flotilla token create`) to use instead of a key login, e.g. in CI",
    secret: true,
  },
  home: {
    flag: "home",
    env: "FLOTILLA_HOME",
    key: "home",
    schema: optional,
    doc: "where the admin's key and context are kept (default: $XDG_CONFIG_HOME/flotilla, else ~/.config/flotilla)",
  },
  xdgConfigHome: {
    flag: "xdg-config-home",
    env: "XDG_CONFIG_HOME",
    key: "xdg_config_home",
    schema: optional,
    doc: "the base of the default FLOTILLA_HOME",
  },
  sshAuthSock: {
    flag: "ssh-auth-sock",
    env: "SSH_AUTH_SOCK",
    key: "ssh_auth_sock",
    schema: optional,
    doc: "ssh-agent's socket: signs with --ssh-agent, and logs in with a --key that only ssh-agent holds",
  },
  configFile: {
    flag: "config",
    env: "FLOTILLA_CONFIG",
    key: "config",
    schema: optional,
    doc: "TOML config file of the coordinator or agent",
  },
});

/**
 * The options given as global flags of `flotilla`, with the word their help shows for the value.
 * The others come from the environment only (a token on a command line would show in `ps`), or
 * from a subcommand's own flag (`--config` of `coordinator` and `agent`).
 */
export const globalFlags = { coordinator: "url", keyFile: "file", org: "name" } as const;

/** The loaded options, with FLOTILLA_HOME resolved to its default when unset. */
export type CliConfig = Omit<Values<typeof cliOptionSpecs>, "home" | "xdgConfigHome"> & { home: string };

/**
 * Loads the options from commander's global `opts()` and the environment. Throws a ConfigError
 * for an invalid value (none today: every option is free text).
 */
export function loadCliConfig(flags: Record<string, unknown>, env: Record<string, string | undefined>): CliConfig {
  const { home, xdgConfigHome, ...values } = loadConfig(cliOptionSpecs, { flags, env }).values;
  return { ...values, home: home ?? join(xdgConfigHome ?? join(homedir(), ".config"), "flotilla") };
}

/** The help lines for the options that only the environment sets. */
export function environmentHelp(): string {
  const flagged: string[] = Object.keys(globalFlags);
  const rows = Object.entries(cliOptionSpecs)
    .filter(([name]) => !flagged.includes(name))
    .map(([, spec]) => [spec.env, spec.doc] as const);
  const width = Math.max(...rows.map(([env]) => env.length));
  return ["", "Environment:", ...rows.map(([env, doc]) => `  ${env.padEnd(width)}  ${doc}`)].join("\n");
}
