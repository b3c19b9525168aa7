import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type Client } from "@connectrpc/connect";
import type { Command } from "commander";
import { adminv1, isReissueOf } from "@flotilla/protocol";
import { serviceClient, type AdminTarget } from "../admin/client.ts";
import { ExitError, UsageError } from "../errors.ts";
import { json, parseDuration, table } from "../output.ts";
import { DEFAULT_TARGETS_EXPIRY, reissuedTarget, SignedTargets, withSigningOptions, type ReleaseTarget, type SigningOpts } from "./release-signing.ts";
import { deviceStateText, headline, planJson, planText, rolloutJson, watchFrame, waveLines } from "./rollout-view.ts";
import type { Run } from "./run.ts";

/** Exit codes of `rollout watch` by final status; see docs/rollouts.md. */
export const watchExitCodes: Record<string, number> = { completed: 0, paused: 10, aborted: 11, failed: 12 };

interface SpecOptions {
  selector: string;
  waves: string;
  maxParallel?: string;
  failureThreshold?: string;
  soak?: string;
  approveEachWave?: boolean;
  deadline?: string;
}

function spec(release: string, o: SpecOptions) {
  const at = release.indexOf("@");
  if (at <= 0 || at === release.length - 1) throw new UsageError(`invalid release ${JSON.stringify(release)}: expected name@version, e.g. webapp@1.5.0`);
  let maxParallel = 0;
  if (o.maxParallel !== undefined) {
    if (!/^\d{1,6}$/.test(o.maxParallel)) throw new UsageError(`invalid --max-parallel ${JSON.stringify(o.maxParallel)}: expected a number`);
    maxParallel = Number(o.maxParallel);
  }
  return {
    releaseName: release.slice(0, at),
    releaseVersion: release.slice(at + 1),
    selector: o.selector,
    waves: o.waves.split(",").map((w) => w.trim()),
    maxParallel,
    failureThreshold: o.failureThreshold ?? "",
    soakMs: BigInt(o.soak ? parseDuration(o.soak) : 0),
    approveEachWave: o.approveEachWave ?? false,
    deadlineMs: BigInt(o.deadline ? parseDuration(o.deadline) : 0),
  };
}

const withSpecOptions = (c: Command, withStrategy: boolean) => {
  c.requiredOption("-s, --selector <selector>", "the devices, by labels and facts, e.g. 'env=prod,site!=lab'")
    .option("--waves <list>", "cumulative wave targets: device counts, then percentages, ending at 100%", "1,10%,100%")
    .option("--json", "print JSON");
  if (withStrategy) {
    c.option("--max-parallel <n>", "at most this many devices installing at once (default: no limit)")
      .option("--failure-threshold <n|n%>", "failures tolerated before the rollout pauses (default 0)")
      .option("--soak <duration>", "how long a finished wave must stay healthy before the next (e.g. 10m)")
      .option("--approve-each-wave", "wait for `rollout approve` before each wave after the first")
      .option("--deadline <duration>", "after this long, devices that have not finished (offline) are skipped (e.g. 7d)");
  }
  return c;
};

/** Renders a rollout's progress from its WatchRollout stream until a final status or a pause. */
async function watch(target: AdminTarget, id: string, out: (text: string) => void): Promise<void> {
  const client = await serviceClient(target, adminv1.RolloutService);
  const tty = process.stdout.isTTY === true;
  let drawn = 0;
  let lastHead = "";
  let lastWaves = "";
  let lastFrame = "";
  const seen = new Map<string, string>();
  let final: adminv1.Rollout | undefined;
  for await (const { rollout: r } of client.watchRollout({ id })) {
    if (!r) continue;
    final = r;
    if (tty) {
      const lines = watchFrame(r, process.stdout.columns || 80, process.stdout.rows || 24);
      const frame = lines.join("\n");
      if (frame !== lastFrame) out((drawn > 0 ? `\x1b[${drawn}A\x1b[J` : "") + frame + "\n");
      lastFrame = frame;
      drawn = lines.length;
    } else {
      const head = headline(r);
      if (head !== lastHead) out(`${head}\n`);
      lastHead = head;
      for (const d of r.devices) {
        const s = deviceStateText(d);
        if (seen.get(d.deviceId) !== s && !(d.state === "pending" && !seen.has(d.deviceId))) out(`  ${d.name} (wave ${d.wave}): ${s}\n`);
        seen.set(d.deviceId, s);
      }
      const waves = waveLines(r).join("\n");
      if (waves !== lastWaves) out(`${waves}\n`);
      lastWaves = waves;
    }
    if (r.status !== "running") break;
  }
  if (!final) throw new ExitError(`rollout ${id}: the stream ended without a snapshot`, 1);
  const code = watchExitCodes[final.status] ?? 1;
  if (final.status === "running") throw new ExitError(`rollout ${id}: the coordinator ended the stream while it was running`, 1);
  if (code !== 0) throw new ExitError(`rollout ${id} ${final.status}${final.reason ? `: ${final.reason}` : ""}`, code);
  out(`rollout ${id} completed: ${final.reason}\n`);
}

export function registerRolloutCommands(program: Command, target: () => AdminTarget, run: Run): void {
  const rollout = program.command("rollout").description("deliver a release to many devices in waves");
  const client = () => serviceClient(target(), adminv1.RolloutService);

  withSpecOptions(rollout.command("plan <name@version>").description("show which devices fall into which wave; changes nothing"), false).action(
    (release: string, o: SpecOptions & { json?: boolean }) =>
      run(async (out) => {
        const { plan } = await (await client()).planRollout({ spec: spec(release, o) });
        if (!plan) throw new Error("the coordinator sent no plan");
        out(o.json ? json(planJson(plan)) : planText(plan));
      }),
  );

  withSpecOptions(rollout.command("start <name@version>").description("start a rollout (the same assignment `plan` shows)"), true).action(
    (release: string, o: SpecOptions & { json?: boolean }) =>
      run(async (out) => {
        const res = await (await client()).startRollout({ spec: spec(release, o) });
        if (!res.rollout || !res.plan) throw new Error("the coordinator sent no rollout");
        if (o.json) return out(json({ ...rolloutJson(res.rollout), plan: planJson(res.plan) }));
        out(planText(res.plan));
        out(`rollout ${res.rollout.id} started; follow it with: flotilla rollout watch ${res.rollout.id}\n`);
      }),
  );

  rollout
    .command("watch <rollout>")
    .description("live progress per wave and per device; exits 0 when completed, 10 paused, 11 aborted, 12 failed")
    .action((id: string) => run((out) => watch(target(), id, out)));

  rollout
    .command("ls")
    .description("rollouts, newest first")
    .option("--json", "print a JSON array")
    .action((o: { json?: boolean }) =>
      run(async (out) => {
        const { rollouts } = await (await client()).listRollouts({});
        if (o.json) return out(json(rollouts.map((r) => rolloutJson(r, false))));
        out(
          table(
            ["ID", "RELEASE", "STATUS", "WAVE", "HEALTHY", "FAILED", "CREATED"],
            rollouts.map((r) => {
              const j = rolloutJson(r, false);
              const sum = (k: "healthy" | "failed" | "total") => j.waves.reduce((n, w) => n + w[k], 0);
              return [r.id, `${j.release.name}@${j.release.version}`, r.status, `${r.currentWave}/${r.waves.length}`, `${sum("healthy")}/${sum("total")}`, String(sum("failed")), j.createdAt ?? ""];
            }),
          ),
        );
      }),
    );

  rollout
    .command("show <rollout>")
    .description("a rollout's waves and every device's state")
    .option("--json", "print JSON")
    .action((id: string, o: { json?: boolean }) =>
      run(async (out) => {
        const { rollout: r } = await (await client()).getRollout({ id });
        if (!r) throw new Error("the coordinator sent no rollout");
        if (o.json) return out(json(rolloutJson(r)));
        out([headline(r), ...waveLines(r), ""].join("\n"));
        out(table(["DEVICE", "WAVE", "STATE", "PREVIOUS"], r.devices.map((d) => [d.name, String(d.wave), deviceStateText(d), d.previousVersion])));
      }),
    );

  const action = (name: "pause" | "resume" | "approve", description: string) =>
    rollout
      .command(`${name} <rollout>`)
      .description(description)
      .action((id: string) =>
        run(async (out) => {
          const c = await client();
          const res = name === "pause" ? await c.pauseRollout({ id }) : name === "resume" ? await c.resumeRollout({ id }) : await c.approveWave({ id });
          if (res.rollout) out(`${headline(res.rollout)}\n`);
        }),
      );
  action("pause", "stop notifying more devices (devices already installing finish)");
  action("resume", "continue a paused rollout; failures so far no longer count against the threshold");
  action("approve", "let the next wave start (rollouts started with --approve-each-wave)");

  withSigningOptions(
    rollout
      .command("abort <rollout>")
      .description("end a rollout for good")
      .option("--roll-back", "return devices it already updated to their previous release (signing a copy of it above the rollout's counter when needed)"),
  ).action((id: string, o: SigningOpts & { rollBack?: boolean }) =>
    run(async (out) => {
      const c = await client();
      if (!o.rollBack) {
        const { rollout: r } = await c.abortRollout({ id, rollBack: false });
        if (r) out(`${headline(r)}\n`);
        return;
      }
      const r = await abortRollingBack(target(), c, id, o);
      out(`${headline(r)}\n`);
      for (const d of r.devices.filter((x) => x.state === "rolling-back")) out(`  ${d.name}: ${d.error}\n`);
      if (r.devices.some((x) => x.state === "rolling-back")) out(`follow them with: flotilla rollout show ${r.id}\n`);
    }),
  );
}

/**
 * Aborts a rollout with roll-back. Agents refuse a release counter below the one they run
 * (anti-rollback), so every earlier release that devices return to is first signed again here,
 * unchanged but for a counter above the rollout's, unless it allows downgrades or such a copy
 * exists already. A device notified meanwhile may add an earlier release: then once more.
 */
async function abortRollingBack(target: AdminTarget, c: Client<typeof adminv1.RolloutService>, id: string, o: SigningOpts): Promise<adminv1.Rollout> {
  const releases = await serviceClient(target, adminv1.ReleaseService);
  for (let attempt = 1; ; attempt++) {
    const { rollout: r } = await c.getRollout({ id });
    if (!r) throw new Error("the coordinator sent no rollout");
    const reissued = r.status === "running" || r.status === "paused" ? await returnReleases(target, releases, r, o) : [];
    try {
      const res = await c.abortRollout({ id, rollBack: true, reissued });
      if (!res.rollout) throw new Error("the coordinator sent no rollout");
      return res.rollout;
    } catch (err) {
      if (attempt >= 3 || !(err instanceof ConnectError) || err.code !== Code.FailedPrecondition || (r.status !== "running" && r.status !== "paused")) throw err;
    }
  }
}

/** The re-signed copies of the releases the rollout's notified devices ran before, signing those that do not exist yet. */
async function returnReleases(target: AdminTarget, client: Client<typeof adminv1.ReleaseService>, r: adminv1.Rollout, o: SigningOpts): Promise<adminv1.ReissuedRelease[]> {
  const name = r.spec?.releaseName ?? "";
  const above = Number(r.releaseCounter);
  const previous = new Set(r.devices.filter((d) => d.state !== "pending" && d.previousCounter > 0n && Number(d.previousCounter) < above).map((d) => Number(d.previousCounter)));
  if (previous.size === 0) return [];
  const current = await SignedTargets.load(client, target);
  const signed = current.releases(name);
  let next = await current.nextCounter(client, name);
  const pairs: { previousCounter: number; counter: number }[] = [];
  const toSign: ReleaseTarget[] = [];
  for (const p of [...previous].sort((a, b) => a - b)) {
    const original = signed.find((x) => x.meta.counter === p);
    if (!original) throw new ExitError(`release ${name} #${p}, which devices ran before, is not in the organization's signed targets`, 1);
    if (original.meta.allowDowngrade) continue;
    const copy = signed.find((x) => x.meta.counter > above && isReissueOf(x, original)) ?? reissuedTarget(original, next++);
    if (!signed.includes(copy)) toSign.push(copy);
    pairs.push({ previousCounter: p, counter: copy.meta.counter });
  }
  if (toSign.length > 0) {
    await current.publish(client, target, toSign, o, parseDuration(DEFAULT_TARGETS_EXPIRY));
    for (const t of toSign) process.stderr.write(`re-signed ${name} ${t.meta.version} as #${t.meta.counter}, so devices may return to it\n`);
  }
  return pairs.map((x) => create(adminv1.ReissuedReleaseSchema, { previousCounter: BigInt(x.previousCounter), counter: BigInt(x.counter) }));
}
