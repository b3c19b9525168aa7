import type { Command } from "commander";
import { agentOptionSpecs } from "@flotilla/agent/config";
import { coordinatorOptionSpecs, internalUrlConflict } from "@flotilla/coordinator/config";
import { createLogger, formatConfig, loadConfig, VERSION } from "@flotilla/protocol/agent";
import type { CliConfig } from "../config.ts";
import { ExitError, UsageError } from "../errors.ts";
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
      // Loaded here: node:cluster and what it loads are no part of the agent's process.
      const { isReplicaWorker, leaveCluster, replicaIndex, runReplicas } = await import("../roles/replicas.ts");
      const stop = stopSignal();
      const replicas = loaded.values.replicas;
      const conflict = internalUrlConflict(loaded.values);
      if (conflict) throw new UsageError(conflict);
      if (replicas > 1 && !isReplicaWorker()) {
        if (!loaded.values.databaseUrl) throw new UsageError("--replicas above 1 needs --database-url: replicas share a PostgreSQL database");
        return runReplicas(replicas, { setupCode: loaded.values.setupCode, stop, out });
      }
      try {
        // Loaded here, not at the top: admin commands start faster without the coordinator's code.
        const { startCoordinator } = await import("@flotilla/coordinator");
        const c = await startCoordinator(loaded.values);
        const which = isReplicaWorker() ? ` (replica ${replicaIndex()} of ${replicas}, pid ${process.pid})` : "";
        out(`coordinator ${c.identity.id} listening on ${c.url}${which}\n`);
        if (c.setupCode && replicaIndex() === 1) out(setupBanner(c.publicUrl, c.setupCode) + "\n");
        await waitForAbort(stop);
        await c.close();
      } finally {
        // A replica worker exits once its coordinator closed, or failed to start.
        leaveCluster();
      }
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

  // Backup, restore and verify take the options they need, as rotate-key does.
  const databaseUrl = coordinatorOptionSpecs.databaseUrl;
  const dirOption = `--${dataDir.flag} <dir>`;
  const dirDoc = `${dataDir.doc} [${dataDir.env}]`;
  const urlOption = `--${databaseUrl.flag} <url>`;
  const urlDoc = `${databaseUrl.doc} [${databaseUrl.env}]`;
  const storeConfig = (opts: { dataDir?: string; databaseUrl?: string }) => {
    const parent = coordinator.opts<{ dataDir?: string; databaseUrl?: string }>();
    return loadConfig(
      { dataDir, databaseUrl },
      { flags: { dataDir: opts.dataDir ?? parent.dataDir, databaseUrl: opts.databaseUrl ?? parent.databaseUrl }, env },
    ).values;
  };
  coordinator
    .command("backup")
    .description("write a consistent backup of the coordinator's database and data directory to one file, while it runs")
    .requiredOption("--to <file>", "the backup file to write (must not exist yet)")
    .option(dirOption, dirDoc)
    .option(urlOption, `${urlDoc}; its database is then backed up with pg_dump, apart`)
    .action((opts: { to: string; dataDir?: string; databaseUrl?: string }) =>
      run(async (out) => {
        const values = storeConfig(opts);
        const { backupCoordinator, describeBackup } = await import("@flotilla/coordinator");
        out(describeBackup(await backupCoordinator({ dataDir: values.dataDir, databaseUrl: values.databaseUrl, to: opts.to })) + "\n");
      }),
    );
  coordinator
    .command("restore <file>")
    .description("restore a backup into a new (or empty) data directory, checked before it is put in place")
    .option(dirOption, dirDoc)
    .action((file: string, opts: { dataDir?: string }) =>
      run(async (out) => {
        const values = storeConfig(opts);
        const { ArchiveError, describeRestore, restoreCoordinator } = await import("@flotilla/coordinator");
        try {
          out(describeRestore(await restoreCoordinator({ file, dataDir: values.dataDir })) + "\n");
        } catch (err) {
          throw err instanceof ArchiveError ? new Error(`${file} cannot be restored: ${err.message}`) : err;
        }
      }),
    );
  coordinator
    .command("verify")
    .description("check that the data directory holds every artifact and NAR file the database refers to (and, for SQLite, the database's integrity)")
    .option(dirOption, dirDoc)
    .option(urlOption, urlDoc)
    .action((opts: { dataDir?: string; databaseUrl?: string }) =>
      run(async (out) => {
        const values = storeConfig(opts);
        const { describeVerify, verified, verifyPostgres, verifySqlite } = await import("@flotilla/coordinator");
        const report = values.databaseUrl ? await verifyPostgres(values.dataDir, values.databaseUrl) : await verifySqlite(values.dataDir);
        out(describeVerify(report) + "\n");
        if (!verified(report)) throw new ExitError(`${values.dataDir} does not hold what its database refers to (listed above)`, 1);
      }),
    );

  const agent = program.command("agent").description("run the agent on a managed machine");
  addSpecOptions(agent, agentOptionSpecs).action((opts: Record<string, unknown>) =>
    run(async (out) => {
      const loaded = loadRoleConfig(agentOptionSpecs, opts, env, cli().configFile);
      if (opts.printConfig) return out(formatConfig(agentOptionSpecs, loaded));
      // The launcher loads its own module only: nothing of the agent runs in it.
      const { LAUNCHED_ENV, runLauncher, withoutAgentNodeOptions } = await import("@flotilla/agent/launcher");
      const log = createLogger({ role: "agent" });
      const launchedAs = env[LAUNCHED_ENV];
      // The agent's V8 flags (given by the launcher, or the NixOS module's unit) are its own:
      // what it runs starts without them, and a launcher gives them to its agent once.
      const own = withoutAgentNodeOptions(env.NODE_OPTIONS);
      if (own === undefined) delete env.NODE_OPTIONS;
      else env.NODE_OPTIONS = own;
      if (loaded.values.selfUpdate && launchedAs === undefined) {
        // The launcher (docs/self-update.md): runs the agent as a child and never runs new code itself.
        return runLauncher(
          {
            stateDir: loaded.values.stateDir,
            installedCommand: await installedCommand(),
            args: process.argv.slice(2),
            env,
            confirmWindowMs: loaded.values.selfUpdateConfirmMs,
            log,
          },
          stopSignal(),
        );
      }
      const { FatalAgentError, LauncherLink, runAgent } = await import("@flotilla/agent");
      // Tests give an executable of theirs a version of its own; nothing else sets it.
      const version = env.FLOTILLA_TEST_AGENT_VERSION || VERSION;
      const link = launchedAs !== undefined && process.send ? new LauncherLink(process, launchedAs) : undefined;
      // An agent whose launcher is gone stops, so that a restarted launcher never finds two.
      const stop = link ? AbortSignal.any([stopSignal(), link.gone]) : stopSignal();
      try {
        const activators = await agentActivators(loaded.values.stateDir, log, link && { link, version });
        const exit = await runAgent({ ...loaded.values, version, activators }, log, stop);
        if (exit === "rejected") {
          throw new FatalAgentError("the coordinator's admins rejected this device; it needs a new join string");
        }
        if (exit === "decommissioned") out("decommissioned: credentials forgotten\n");
      } finally {
        // The IPC channel would keep the process alive after the agent ended.
        if (link) process.disconnect?.();
      }
    }),
  );
}

/**
 * The command that runs this program again: the executable itself for a single-executable build,
 * else node with the script it was started with.
 */
async function installedCommand(): Promise<string[]> {
  const sea = await import("node:sea").catch(() => undefined);
  if (sea?.isSea()) return [process.execPath];
  return [process.execPath, ...process.execArgv, process.argv[1]!];
}
