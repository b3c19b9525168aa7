import { readdir, rm } from "node:fs/promises";
import { resolve, join } from "node:path";
import type { Command } from "commander";
import { agentOptionSpecs } from "@flotilla/agent/config";
import type { Coordinator } from "@flotilla/coordinator";
import { coordinatorOptionSpecs } from "@flotilla/coordinator/config";
import { adminv1, createLogger, keyPin, loadConfig, newId, nodeId, readJsonIfExists } from "@flotilla/protocol";
import { adminClient, login, serviceClient } from "../admin/client.ts";
import { Credentials } from "../admin/credentials.ts";
import type { CliConfig } from "../config.ts";
import { agentActivators } from "../roles/activators.ts";
import type { Run } from "../run.ts";
import { stopSignal, waitForAbort } from "../signals.ts";
import { joinStringNamingRoot, verifiedRepository } from "../signing/trusted-root.ts";
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

/**
 * `up` holds the key of the coordinator it has just started, so it knows that coordinator's pin
 * first-hand. An admin context that pins another key at the same address belongs to an earlier
 * local coordinator (its data directory was removed, or another one is used now): that pin, its
 * sessions, and the TUF roots and Nix keys pinned through it are dropped, and `up` says so. Every other
 * command still refuses a coordinator whose key does not match its pin.
 */
async function replaceStalePin(c: Coordinator, creds: Credentials): Promise<string | undefined> {
  const ctx = await creds.context();
  const known = ctx.coordinators[c.url];
  if (!known || known.pin === keyPin(c.identity.publicKey)) return undefined;
  delete ctx.coordinators[c.url];
  await creds.saveContext(ctx);
  for (const folder of ["tuf-roots", "nix-keys"].map((f) => join(creds.home, f))) {
    for (const name of await readdir(folder).catch(() => [] as string[])) {
      const pinned = await readJsonIfExists<{ coordinator?: string }>(join(folder, name)).catch(() => undefined);
      if (pinned?.coordinator === c.url) await rm(join(folder, name), { force: true });
    }
  }
  return `replaced the pin of the earlier coordinator at ${c.url} (key ${known.pin}) with this one's`;
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
          const replaced = await replaceStalePin(c, creds);
          if (replaced) out(`${replaced}\n`);
          await ensureLocalOwner(c, creds);
          const owner = { coordinator: c.url, home: creds.home };
          const client = await adminClient(owner);
          // Join strings name the organization's signing root, if it has one (a data directory used before).
          const { root } = await verifiedRepository(owner, await serviceClient(owner, adminv1.ReleaseService));
          const agentState = join(dataDir, "agent");
          let joinString: string | undefined;
          if (!(await new StateDir(agentState).readEnrollment())) {
            const res = await client.createJoinToken({ usesAllowed: 1, expiresInSeconds: 600n, autoApprove: true, labels: { local: "true" } });
            joinString = joinStringNamingRoot(res.joinString, root);
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
              `Web console: ${c.url}/  (log in with the one-time link  npx flotilla login-link  prints)`,
              "",
              "To add more machines (they wait for `flotilla device approve`), run on each:",
              `  flotilla agent --state-dir /var/lib/flotilla-agent --join '${joinStringNamingRoot(more.joinString, root)}'`,
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
