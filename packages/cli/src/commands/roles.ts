import type { Command } from "commander";
import { agentOptionSpecs } from "@flotilla/agent/config";
import { agentActivators } from "./activators.ts";
import { coordinatorOptionSpecs } from "@flotilla/coordinator/config";
import { createLogger, formatConfig, loadConfig, type OptionSpec, type OptionSpecs } from "@flotilla/protocol";
import type { Run } from "./run.ts";

/** Adds one commander option per spec, e.g. `--data-dir <value>`, documented from the spec. */
export function addSpecOptions(cmd: Command, specs: Record<string, OptionSpec<unknown>>): Command {
  for (const spec of Object.values(specs)) {
    cmd.option(`--${spec.flag} <value>`, `${spec.doc} [${spec.env}]`);
  }
  return cmd
    .option("--config <file>", "TOML config file [FLOTILLA_CONFIG]")
    .option("--print-config", "print the effective configuration, with where each value came from, and exit");
}

function camel(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** Reads flag values back by spec name, so loadConfig sees exactly what was given. */
export function flagsFor(specs: Record<string, OptionSpec<unknown>>, opts: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(specs).map(([name, spec]) => [name, opts[camel(spec.flag)]]));
}

/** Resolves when the process is asked to stop (SIGINT, SIGTERM). */
export function stopSignal(): AbortSignal {
  const ac = new AbortController();
  const stop = () => ac.abort();
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  return ac.signal;
}

export function waitForAbort(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => (signal.aborted ? resolve() : signal.addEventListener("abort", () => resolve())));
}

/** The banner a coordinator prints while it has no owner. */
export function setupBanner(url: string, code: string): string {
  return [
    "",
    "  No owner yet. Log in as the first owner, once, with:",
    `    flotilla login --coordinator ${url} --setup-code ${code}`,
    "",
  ].join("\n");
}

/** The effective configuration of a role from its flags, FLOTILLA_* and the config file. */
function loadRoleConfig<S extends OptionSpecs>(specs: S, opts: Record<string, unknown>) {
  return loadConfig(specs, {
    flags: flagsFor(specs, opts),
    env: process.env,
    configFile: (opts.config as string | undefined) ?? process.env.FLOTILLA_CONFIG,
  });
}

export function registerRoleCommands(program: Command, run: Run): void {
  const coordinator = program.command("coordinator").description("run the coordinator: the fleet's source of truth");
  addSpecOptions(coordinator, coordinatorOptionSpecs).action((opts: Record<string, unknown>) =>
    run(async (out) => {
      const loaded = loadRoleConfig(coordinatorOptionSpecs, opts);
      if (opts.printConfig) return out(formatConfig(coordinatorOptionSpecs, loaded));
      const stop = stopSignal();
      // Loaded here, not at the top: admin commands start faster without the coordinator's code.
      const { startCoordinator } = await import("@flotilla/coordinator");
      const c = await startCoordinator(loaded.values);
      out(`coordinator ${c.identity.id} listening on ${c.url}\n`);
      if (c.setupCode) out(setupBanner(c.publicUrl, c.setupCode) + "\n");
      await waitForAbort(stop);
      await c.close();
    }),
  );

  coordinator
    .command("rotate-key")
    .description("replace the coordinator's key with a new one endorsed by the old; agents and admins follow by themselves (stop the coordinator first)")
    .option("--data-dir <dir>", "the coordinator's data directory [FLOTILLA_DATA_DIR]")
    .action((opts: { dataDir?: string }) =>
      run(async (out) => {
        // `--data-dir` after `coordinator` is parsed as the parent's option; either place works.
        const parentDir = coordinator.opts<{ dataDir?: string }>().dataDir;
        const dataDir = opts.dataDir ?? parentDir ?? process.env.FLOTILLA_DATA_DIR ?? String(coordinatorOptionSpecs.dataDir.default);
        const { describeRotation, rotateCoordinatorKey } = await import("@flotilla/coordinator");
        out(describeRotation(await rotateCoordinatorKey(dataDir)) + "\n");
      }),
    );

  const agent = program.command("agent").description("run the agent on a managed machine");
  addSpecOptions(agent, agentOptionSpecs).action((opts: Record<string, unknown>) =>
    run(async (out) => {
      const loaded = loadRoleConfig(agentOptionSpecs, opts);
      if (opts.printConfig) return out(formatConfig(agentOptionSpecs, loaded));
      const { FatalAgentError, runAgent } = await import("@flotilla/agent");
      const log = createLogger({ role: "agent" });
      const exit = await runAgent({ ...loaded.values, activators: await agentActivators(loaded.values.stateDir, log) }, log, stopSignal());
      if (exit === "rejected") {
        throw new FatalAgentError("the coordinator's admins rejected this device; it needs a new join string");
      }
      if (exit === "decommissioned") out("decommissioned: credentials forgotten\n");
    }),
  );
}
