import { join } from "node:path";
import type { Command } from "commander";
import { formatOpenSshPublicKey, keyPin, loadIdentity, loadOrCreateIdentity } from "@flotilla/protocol";
import type { CliConfig } from "../config.ts";
import { UsageError } from "../errors.ts";
import type { Run } from "../run.ts";

export function registerIdCommand(program: Command, cli: () => CliConfig, run: Run): void {
  program
    .command("id")
    .description("print a node id (an ed25519 public key): the admin's by default")
    .option("--state-dir <dir>", "print the id of the agent with this state directory")
    .option("--data-dir <dir>", "print the id of the coordinator with this data directory")
    .option("--ssh", "print it as an OpenSSH public key line")
    .option("--pin", "print the key's pin, as join strings and known coordinators record it")
    .action((opts: { stateDir?: string; dataDir?: string; ssh?: boolean; pin?: boolean }) =>
      run(async (out) => {
        if (opts.stateDir && opts.dataDir) throw new UsageError("give --state-dir or --data-dir, not both");
        const identity = opts.stateDir
          ? await loadIdentity(join(opts.stateDir, "agent.key")).catch(() => {
              throw new UsageError(`no agent key in ${opts.stateDir}`);
            })
          : opts.dataDir
            ? await loadIdentity(join(opts.dataDir, "coordinator.key")).catch(() => {
                throw new UsageError(`no coordinator key in ${opts.dataDir}`);
              })
            : await loadOrCreateIdentity(join(cli().home, "admin.key"));
        const text = opts.ssh ? formatOpenSshPublicKey(identity.publicKey, "flotilla") : opts.pin ? keyPin(identity.publicKey) : identity.id;
        out(`${text}\n`);
      }),
    );
}
