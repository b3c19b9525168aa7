/** The options of `flotilla coordinator` and `flotilla agent`, as commander flags and loaded values. */
import type { Command } from "commander";
import { loadConfig, type OptionSpec, type OptionSpecs } from "@flotilla/protocol/agent";
import { cliOptionSpecs } from "../config.ts";

/** Adds one commander option per spec, e.g. `--data-dir <value>`, documented from the spec. */
export function addSpecOptions(cmd: Command, specs: Record<string, OptionSpec<unknown>>): Command {
  for (const spec of Object.values(specs)) {
    cmd.option(`--${spec.flag} <value>`, `${spec.doc} [${spec.env}]`);
  }
  return cmd
    .option(`--${cliOptionSpecs.configFile.flag} <file>`, `${cliOptionSpecs.configFile.doc} [${cliOptionSpecs.configFile.env}]`)
    .option("--print-config", "print the effective configuration, with where each value came from, and exit");
}

function camel(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** Reads flag values back by spec name, so loadConfig sees exactly what was given. */
export function flagsFor(specs: Record<string, OptionSpec<unknown>>, opts: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(specs).map(([name, spec]) => [name, opts[camel(spec.flag)]]));
}

/**
 * The effective configuration of a role from its flags, FLOTILLA_* and the config file: the
 * one `--config` names, else `configFile` (FLOTILLA_CONFIG, from the CLI's own options).
 */
export function loadRoleConfig<S extends OptionSpecs>(
  specs: S,
  opts: Record<string, unknown>,
  env: Record<string, string | undefined>,
  configFile: string | undefined,
) {
  return loadConfig(specs, {
    flags: flagsFor(specs, opts),
    env,
    configFile: (opts[camel(cliOptionSpecs.configFile.flag)] as string | undefined) ?? configFile,
  });
}
