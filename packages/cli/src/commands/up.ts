import { resolve, join } from "node:path";
import type { Command } from "commander";
import { agentOptionSpecs } from "@flotilla/agent/config";
import type { Coordinator } from "@flotilla/coordinator";
import { coordinatorOptionSpecs } from "@flotilla/coordinator/config";
import { createLogger, loadConfig, newId, nodeId } from "@flotilla/protocol";
import { adminClient, login } from "../admin/client.ts";
import { Credentials } from "../admin/credentials.ts";
import type { CliConfig } from "../config.ts";
import { agentActivators } from "../roles/activators.ts";
import type { Run } from "../run.ts";
import { stopSignal, waitForAbort } from "../signals.ts";
import { UsageError } from "../errors.ts";
import { simOptions } from "./sim.ts";

/** `up --sim n`: n simulated devices in this process, kept in <data-dir>/sim so a restart brings the same ones back. */
async function startSim(client: Awaited<ReturnType<typeof adminClient>>, dataDir: string, devices: number, signal: AbortSignal, out: (text: string) => void): Promise<void> {
  const { runSimulation, simOptionSpecs } = await import("@flotilla/agent/sim");
  const token = await client.createJoinToken({ usesAllowed: devices, expiresInSeconds: 7n * 86400n, autoApprove: true, labels: { sim: "true" } });
  const v = loadConfig(simOptionSpecs, { flags: { join: token.joinString, devices, stateDir: join(dataDir, "sim"), statusInterval: 0 }, env: {} }).values;
  await runSimulation(simOptions(v), { workers: 1, statusIntervalMs: 0, fork: () => { throw new Error("up --sim runs in one process"); } }, signal, (line) => out(`${line}\n`));
}

/**
 * Whoever can run `flotilla up` in this folder owns its data directory, so the local admin key
 * becomes an owner: through the setup code on the first start, directly in the store after.
 */
async function ensureLocalOwner(c: Coordinator, creds: Credentials): Promise<void> {
  if (c.setupCode) {
    await login(creds, c.url, { setupCode: c.setupCode, keyName: "local owner" });
    return;
  }
  const identity = await creds.identity();
  const registered = await c.store.access.findAdminKeysByPublicKey(identity.id);
  if (registered.length === 0) {
    const org = (await c.store.access.listOrgs())[0];
    if (!org) throw new Error("the data directory has no organization; remove it and start again");
    const now = Date.now();
    const memberId = `mem_${newId()}`;
    await c.store.access.addMember({ id: memberId, orgId: org.id, name: `local-owner-${newId(6)}`, role: "owner", passwordHash: null, createdAt: now, removedAt: null });
    await c.store.access.addAdminKey({ id: `key_${newId()}`, orgId: org.id, memberId, name: "local owner", publicKey: nodeId(identity.publicKey), createdAt: now, revokedAt: null });
  }
  await login(creds, c.url);
}

export function registerUpCommand(program: Command, cli: () => CliConfig, env: Record<string, string | undefined>, run: Run): void {
  program
    .command("up")
    .description("a coordinator with its embedded database in ./.flotilla, a local agent enrolled, and you logged in as owner")
    .option("--data-dir <dir>", "the coordinator's data directory", ".flotilla")
    .option("--listen <host:port>", "where the coordinator listens", "127.0.0.1:7700")
    .option("--sim <n>", "also simulate n devices (label sim=true), as `flotilla sim` does; the same ones again on the next start")
    .action((opts: { dataDir: string; listen: string; sim?: string }) =>
      run(async (out) => {
        const stop = stopSignal();
        const { startCoordinator } = await import("@flotilla/coordinator");
        const { runAgent, StateDir } = await import("@flotilla/agent");
        const dataDir = resolve(opts.dataDir);
        const simDevices = opts.sim === undefined ? 0 : Number(opts.sim);
        if (!Number.isInteger(simDevices) || simDevices < 0 || simDevices > 100_000) throw new UsageError(`invalid --sim ${JSON.stringify(opts.sim)}: expected a number of devices`);
        const config = loadConfig(coordinatorOptionSpecs, { flags: { dataDir, listen: opts.listen }, env });
        const c = await startCoordinator(config.values);
        try {
          // The key in FLOTILLA_HOME, whatever --key says: it becomes this data directory's owner.
          const creds = new Credentials(cli().home, undefined, cli().sshAuthSock);
          await ensureLocalOwner(c, creds);
          const client = await adminClient({ coordinator: c.url, home: creds.home });
          const agentState = join(dataDir, "agent");
          let joinString: string | undefined;
          if (!(await new StateDir(agentState).readEnrollment())) {
            const res = await client.createJoinToken({ usesAllowed: 1, expiresInSeconds: 600n, autoApprove: true, labels: { local: "true" } });
            joinString = res.joinString;
          }
          const more = await client.createJoinToken({ usesAllowed: 10, expiresInSeconds: 7n * 86400n });
          const agentConfig = loadConfig(agentOptionSpecs, {
            flags: { stateDir: agentState, join: joinString },
            env: {},
          });
          const agentStop = new AbortController();
          const agentDone = runAgent({ ...agentConfig.values, activators: await agentActivators(agentConfig.values.stateDir, createLogger({ role: "agent" })) }, createLogger({ role: "agent" }), agentStop.signal);
          out(
            [
              `Flotilla is up: coordinator ${c.url}, data in ${dataDir}`,
              `You are logged in as owner (key in ${creds.home}). Try:  npx flotilla device ls`,
              "",
              "To add more machines (they wait for `flotilla device approve`), run on each:",
              `  flotilla agent --state-dir /var/lib/flotilla-agent --join '${more.joinString}'`,
              "",
              "Ctrl-C stops the coordinator and the local agent.",
              "",
            ].join("\n"),
          );
          const simDone = simDevices > 0 ? startSim(client, dataDir, simDevices, agentStop.signal, out) : undefined;
          await Promise.race([waitForAbort(stop), agentDone, ...(simDone ? [simDone] : [])]);
          agentStop.abort();
          await Promise.all([agentDone, simDone]);
        } finally {
          await c.close();
        }
      }),
    );
}
