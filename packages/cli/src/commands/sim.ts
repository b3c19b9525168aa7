import { fork } from "node:child_process";
import { availableParallelism } from "node:os";
import type { Command } from "commander";
import type { CliConfig } from "../config.ts";
import { addSpecOptions, loadRoleConfig } from "../roles/role-config.ts";
import type { Run } from "../run.ts";
import { stopSignal } from "../signals.ts";
import type { SimOptions } from "@flotilla/agent/sim";
import { simOptionSpecs } from "@flotilla/agent/sim/config";
import { formatConfig, type Values } from "@flotilla/protocol";

/** The simulation's options from the loaded `flotilla sim` configuration. */
export function simOptions(v: Values<typeof simOptionSpecs>, url?: string): SimOptions {
  return {
    join: v.join,
    url,
    devices: v.devices,
    failRate: v.failRate,
    churnPerMinute: v.churn,
    offlineMs: v.offlineFor,
    stepDelayMs: v.stepDelay,
    seed: v.seed ?? Math.floor(Math.random() * 0xffffffff),
    metricsIntervalMs: v.metricsInterval,
    metricsShipIntervalMs: v.metricsShipInterval,
    logsIntervalMs: v.logsInterval,
    logLines: v.logLines,
    reportIntervalMs: v.reportInterval,
    watchTimeoutMs: v.watchTimeout,
    hostnamePrefix: v.hostnamePrefix,
    enrollConcurrency: v.enrollConcurrency,
    stateDir: v.stateDir,
  };
}

export function registerSimCommand(program: Command, cli: () => CliConfig, env: Record<string, string | undefined>, run: Run): void {
  const sim = program
    .command("sim")
    .description("simulate a fleet: devices with their own keys and connections speaking the agent protocol to a coordinator (load tests, demos)");
  addSpecOptions(sim, simOptionSpecs).action((opts: Record<string, unknown>) =>
    run(async (out) => {
      const { runSimulation, runSimWorker, SIM_WORKER_ENV } = await import("@flotilla/agent/sim");
      const stop = stopSignal();
      // A worker started by the parent below: its slice of devices comes in the environment.
      const payload = env[SIM_WORKER_ENV];
      if (payload) {
        await runSimWorker(payload, stop);
        // Every device is disconnected: a connection still being opened must not hold the worker.
        process.exit(0);
      }
      const loaded = loadRoleConfig(simOptionSpecs, opts, env, cli().configFile);
      if (opts.printConfig) return out(formatConfig(simOptionSpecs, loaded));
      const v = loaded.values;
      const workers = v.workers ?? Math.max(1, Math.min(availableParallelism(), Math.ceil(v.devices / 100)));
      const script = process.argv[1];
      if (!script) throw new Error("cannot start simulator workers: the path of the flotilla program is unknown");
      await runSimulation(
        simOptions(v, cli().coordinator),
        {
          workers,
          statusIntervalMs: v.statusInterval,
          fork: (p) => fork(script, ["sim"], { env: { ...process.env, [SIM_WORKER_ENV]: p }, stdio: ["ignore", "ignore", "pipe", "ipc"] }),
        },
        stop,
        (line) => out(`${line}\n`),
      );
    }),
  );
}
