import { Command, CommanderError } from "commander";
import { VERSION } from "@flotilla/protocol/agent";
import type { Run } from "./run.ts";
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

  // `flotilla agent` loads the agent's commands only: not the admin commands, their clients and
  // schemas, nor the coordinator's code, which every other command registers.
  const closeAdminClients = await registerCommands(program, cli, env, run, commandOf(argv) === "agent" ? "agent" : "all");

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

/** The command `argv` runs: its first word that is neither a flag nor a global flag's value. */
export function commandOf(argv: string[]): string | undefined {
  const valued = Object.keys(globalFlags).map((name) => `--${cliOptionSpecs[name as keyof typeof globalFlags].flag}`);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === "--") return argv[i + 1];
    if (!a.startsWith("-")) return a;
    if (valued.includes(a)) i++;
  }
  return undefined;
}

/**
 * Registers every command (or the agent's only), in the order help lists them, each with its
 * --help examples (commands/examples.ts); returns the closer of the admin clients.
 */
export async function registerCommands(program: Command, cli: () => CliConfig, env: Record<string, string | undefined>, run: Run, which: "all" | "agent" = "all"): Promise<() => void> {
  if (which === "agent") {
    (await import("./commands/roles.ts")).registerRoleCommands(program, cli, env, run);
    addExamples(program);
    return () => {};
  }
  const [client, access, completion, device, id, nix, logs, org, gc, release, roles, rollout, sim, tunnel, up] = await Promise.all([
    import("./admin/client.ts"),
    import("./commands/access.ts"),
    import("./commands/completion.ts"),
    import("./commands/device.ts"),
    import("./commands/id.ts"),
    import("./commands/nix.ts"),
    import("./commands/logs.ts"),
    import("./commands/org.ts"),
    import("./commands/gc.ts"),
    import("./commands/release.ts"),
    import("./commands/roles.ts"),
    import("./commands/rollout.ts"),
    import("./commands/sim.ts"),
    import("./commands/tunnel.ts"),
    import("./commands/up.ts"),
  ]);
  up.registerUpCommand(program, cli, env, run);
  roles.registerRoleCommands(program, cli, env, run);
  id.registerIdCommand(program, cli, run);
  access.registerAccessCommands(program, cli, run);
  device.registerDeviceCommands(program, cli, run);
  org.registerOrgCommands(program, cli, run);
  nix.registerNixCommands(program, cli, run);
  logs.registerLogsCommands(program, cli, run);
  tunnel.registerTunnelCommands(program, cli, run);
  release.registerReleaseCommands(program, cli, run);
  rollout.registerRolloutCommands(program, cli, run);
  gc.registerGcCommand(program, cli, run);
  completion.registerCompletionCommand(program, run);
  sim.registerSimCommand(program, cli, env, run);
  addExamples(program);
  return client.closeAdminClients;
}
