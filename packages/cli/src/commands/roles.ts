import type { Command } from "commander";
import { agentOptionSpecs } from "@flotilla/agent/config";
import { coordinatorOptionSpecs } from "@flotilla/coordinator/config";
import { createLogger, formatConfig, loadConfig } from "@flotilla/protocol";
import type { CliConfig } from "../config.ts";
import { agentActivators } from "../roles/activators.ts";
import { addSpecOptions, loadRoleConfig } from "../roles/role-config.ts";
import type { Run } from "../run.ts";
import { stopSignal, waitForAbort } from "../signals.ts";

/** The banner a coordinator prints while it has no owner. */
export function setupBanner(url: string, code: string): string {
  return [
    "",
    "  No owner yet. Log in as the first owner, once, with:",
    `    flotilla login --coordinator ${url} --setup-code ${code}`,
    "",
  ].join("\n");
}

export function registerRoleCommands(program: Command, cli: () => CliConfig, env: Record<string, string | undefined>, run: Run): void {
  const coordinator = program.command("coordinator").description("run the coordinator: the fleet's source of truth");
  addSpecOptions(coordinator, coordinatorOptionSpecs).action((opts: Record<string, unknown>) =>
    run(async (out) => {
      const loaded = loadRoleConfig(coordinatorOptionSpecs, opts, env, cli().configFile);
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

  // `rotate-key` takes the one coordinator option it needs, as the coordinator does.
  const dataDir = coordinatorOptionSpecs.dataDir;
  coordinator
    .command("rotate-key")
    .description("replace the coordinator's key with a new one endorsed by the old; agents and admins follow by themselves (stop the coordinator first)")
    .option(`--${dataDir.flag} <dir>`, `${dataDir.doc} [${dataDir.env}]`)
    .action((opts: { dataDir?: string }) =>
      run(async (out) => {
        // `--data-dir` after `coordinator` is parsed as the parent's option; either place works.
        const parentDir = coordinator.opts<{ dataDir?: string }>().dataDir;
        const loaded = loadConfig({ dataDir }, { flags: { dataDir: opts.dataDir ?? parentDir }, env });
        const { describeRotation, rotateCoordinatorKey } = await import("@flotilla/coordinator");
        out(describeRotation(await rotateCoordinatorKey(loaded.values.dataDir)) + "\n");
      }),
    );

  const agent = program.command("agent").description("run the agent on a managed machine");
  addSpecOptions(agent, agentOptionSpecs).action((opts: Record<string, unknown>) =>
    run(async (out) => {
      const loaded = loadRoleConfig(agentOptionSpecs, opts, env, cli().configFile);
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
