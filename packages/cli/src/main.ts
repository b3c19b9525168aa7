import { Command, CommanderError } from "commander";
import { VERSION } from "@flotilla/protocol";
import { closeAdminClients } from "./admin/client.ts";
import { flotillaHome } from "./admin/credentials.ts";
import { registerAccessCommands } from "./commands/access.ts";
import { registerDeviceCommands } from "./commands/device.ts";
import { registerIdCommand } from "./commands/id.ts";
import { registerNixCommands } from "./commands/nix.ts";
import { registerLogsCommands } from "./commands/logs.ts";
import { registerOrgCommands } from "./commands/org.ts";
import { registerReleaseCommands } from "./commands/release.ts";
import { registerRoleCommands } from "./commands/roles.ts";
import { registerRolloutCommands } from "./commands/rollout.ts";
import type { Run } from "./run.ts";
import { registerTunnelCommands } from "./commands/tunnel.ts";
import { registerUpCommand } from "./commands/up.ts";
import { describeError, exitCodeFor } from "./errors.ts";

/** Runs the `flotilla` program with these arguments; resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  let exitCode = 0;
  // Only as the sole argument: a global --version option would swallow `release create --version`.
  if (argv.length === 1 && (argv[0] === "--version" || argv[0] === "-V")) {
    process.stdout.write(`${VERSION}\n`);
    return 0;
  }
  const program = new Command("flotilla")
    .description(`Flotilla ${VERSION}: fleet management and deployment for NixOS and Linux machines (flotilla --version prints the version)`)
    .option("--coordinator <url>", "the coordinator to talk to (default: the one logged in to) [FLOTILLA_COORDINATOR]")
    .option("--key <file>", "admin key to use: an OpenSSH ed25519 key or a Flotilla key file (default: $FLOTILLA_HOME/admin.key) [FLOTILLA_ADMIN_KEY]")
    .option("--org <name>", "the organization to act in (default: your key's first) [FLOTILLA_ORG]")
    .option("-v, --verbose", "show more detail on errors")
    .showHelpAfterError()
    .exitOverride()

  const globals = () => program.opts<{ coordinator?: string; key?: string; org?: string; verbose?: boolean }>();
  const home = () => flotillaHome();
  const target = () => ({
    coordinator: globals().coordinator ?? process.env.FLOTILLA_COORDINATOR,
    home: home(),
    keyFile: globals().key ?? process.env.FLOTILLA_ADMIN_KEY,
    org: globals().org ?? process.env.FLOTILLA_ORG,
    apiToken: process.env.FLOTILLA_TOKEN || undefined,
  });
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

  registerUpCommand(program, home, run);
  registerRoleCommands(program, run);
  registerIdCommand(program, home, run);
  registerAccessCommands(program, target, run);
  registerDeviceCommands(program, target, run);
  registerOrgCommands(program, target, run);
  registerNixCommands(program, target, run);
  registerLogsCommands(program, target, run);
  registerTunnelCommands(program, target, run);
  registerReleaseCommands(program, target, run);
  registerRolloutCommands(program, target, run);

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
