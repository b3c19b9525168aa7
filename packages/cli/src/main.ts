import { Command, CommanderError } from "commander";
import { VERSION } from "@flotilla/protocol";
import { closeAdminClients } from "./admin/client.ts";
import { registerAccessCommands } from "./commands/access.ts";
import { registerCompletionCommand } from "./commands/completion.ts";
import { registerDeviceCommands } from "./commands/device.ts";
import { registerIdCommand } from "./commands/id.ts";
import { registerNixCommands } from "./commands/nix.ts";
import { registerLogsCommands } from "./commands/logs.ts";
import { registerOrgCommands } from "./commands/org.ts";
import { registerGcCommand } from "./commands/gc.ts";
import { registerReleaseCommands } from "./commands/release.ts";
import { registerRoleCommands } from "./commands/roles.ts";
import { registerRolloutCommands } from "./commands/rollout.ts";
import { registerSimCommand } from "./commands/sim.ts";
import type { Run } from "./run.ts";
import { registerTunnelCommands } from "./commands/tunnel.ts";
import { registerUpCommand } from "./commands/up.ts";
import { addExamples } from "./commands/examples.ts";
import { cliOptionSpecs, environmentHelp, globalFlags, loadCliConfig, type CliConfig } from "./config.ts";
import { describeError, exitCodeFor } from "./errors.ts";

/**
 * Runs the `flotilla` program with these arguments and environment (the only place the CLI
 * reads it); resolves to the process exit code.
 */
export async function main(argv: string[], env: Record<string, string | undefined>): Promise<number> {
  let exitCode = 0;
  // Only as the sole argument: a global --version option would swallow `release create --version`.
  if (argv.length === 1 && (argv[0] === "--version" || argv[0] === "-V")) {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  const program = new Command("flotilla")
    .description(`Flotilla ${VERSION}: fleet management and deployment for NixOS and Linux machines (flotilla --version prints the version)`)
    .showHelpAfterError()
    .exitOverride();
  for (const [name, value] of Object.entries(globalFlags)) {
    const spec = cliOptionSpecs[name as keyof typeof globalFlags];
    program.option(`--${spec.flag} <${value}>`, `${spec.doc} [${spec.env}]`);
  }
  program.option("-v, --verbose", "show more detail on errors").addHelpText("after", environmentHelp());

  const globals = () => program.opts<{ coordinator?: string; verbose?: boolean }>();
  // Loaded on first use, once commander has parsed the global flags.
  let loaded: CliConfig | undefined;
  const cli = (): CliConfig => (loaded ??= loadCliConfig(program.opts(), env));
  const run: Run = async (action) => {
    try {
      const code = await action((text) => process.stdout.write(text));
      if (typeof code === "number") exitCode = code;
    } catch (err) {
      process.stderr.write(`error: ${describeError(err, globals().coordinator)}\n`);
      if (globals().verbose && err instanceof Error && err.stack) process.stderr.write(`${err.stack}\n`);
      exitCode = exitCodeFor(err);
    }
  };

  registerCommands(program, cli, env, run);

  try {
    await program.parseAsync(argv, { from: "user" });
    closeAdminClients();
  } catch (err) {
    closeAdminClients();
    if (err instanceof CommanderError) {
      // Help and version exit 0; usage mistakes were already printed as one line.
      return err.exitCode === 0 ? 0 : 2;
    }
    process.stderr.write(`error: ${describeError(err)}\n`);
    return 1;
  }
  return exitCode;
}

/** Registers every command on `program`, each with its --help examples (commands/examples.ts). */
export function registerCommands(program: Command, cli: () => CliConfig, env: Record<string, string | undefined>, run: Run): void {
  registerUpCommand(program, cli, env, run);
  registerRoleCommands(program, cli, env, run);
  registerIdCommand(program, cli, run);
  registerAccessCommands(program, cli, run);
  registerDeviceCommands(program, cli, run);
  registerOrgCommands(program, cli, run);
  registerNixCommands(program, cli, run);
  registerLogsCommands(program, cli, run);
  registerTunnelCommands(program, cli, run);
  registerReleaseCommands(program, cli, run);
  registerRolloutCommands(program, cli, run);
  registerGcCommand(program, cli, run);
  registerCompletionCommand(program, run);
  registerSimCommand(program, cli, env, run);
  addExamples(program);
}
