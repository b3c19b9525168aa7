import type { Command } from "commander";
import { adminv1 } from "@flotilla/protocol";
import { serviceClient, type AdminTarget } from "../admin/client.ts";
import { UsageError } from "../errors.ts";
import { json, parseDuration, table } from "../output.ts";
import { abortRollingBack } from "../rollouts/roll-back.ts";
import { DEVICE_PAGE, rolloutWithDevices } from "../rollouts/pages.ts";
import { deviceStateText, headline, planJson, planText, rolloutDeviceJson, rolloutJson, waveLines } from "../rollouts/view.ts";
import { watchRollout } from "../rollouts/watch.ts";
import type { Run } from "../run.ts";
import { withSigningOptions, type SigningOpts } from "../signing/signing-options.ts";


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
    .action((id: string) => run((out) => watchRollout(target(), id, out)));

  rollout
    .command("ls")
    .description("rollouts, newest first (all of them: pages are followed)")
    .option("--json", "print a JSON array")
    .action((o: { json?: boolean }) =>
      run(async (out) => {
        const c = await client();
        const rollouts = [];
        let pageToken = "";
        do {
          const page = await c.listRollouts({ pageToken });
          rollouts.push(...page.rollouts);
          pageToken = page.nextPageToken;
        } while (pageToken);
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
    .description("a rollout's waves and every device's state (all of them: pages are followed)")
    .option("--state <state>", "only devices in this state, e.g. failed (the wave counts still cover every device)")
    .option("--wave <n>", "only devices of this wave")
    .option("--limit <n>", "at most this many devices; says on stderr when more were left out")
    .option("--page-size <n>", `devices per request (1 to ${DEVICE_PAGE})`, String(DEVICE_PAGE))
    .option("--json", "print JSON")
    .action((id: string, o: { state?: string; wave?: string; limit?: string; pageSize: string; json?: boolean }) =>
      run(async (out) => {
        const count = (flag: string, v: string, max = Infinity) => {
          if (!/^\d{1,9}$/.test(v) || Number(v) < 1 || Number(v) > max) throw new UsageError(`invalid ${flag} ${JSON.stringify(v)}: expected a whole number from 1${max < Infinity ? ` to ${max}` : ""}`);
          return Number(v);
        };
        const { rollout: r, devices, more } = await rolloutWithDevices(await client(), id, {
          pageSize: count("--page-size", o.pageSize, DEVICE_PAGE),
          ...(o.limit !== undefined ? { limit: count("--limit", o.limit) } : {}),
          ...(o.wave !== undefined ? { wave: count("--wave", o.wave) } : {}),
          ...(o.state !== undefined ? { state: o.state } : {}),
        });
        if (more) process.stderr.write(`flotilla: showing the first ${devices.length} devices; more follow: without --limit every one is listed\n`);
        if (o.json) return out(json({ ...rolloutJson(r, false), devices: devices.map(rolloutDeviceJson) }));
        out([headline(r), ...waveLines(r), ""].join("\n"));
        out(table(["DEVICE", "WAVE", "STATE", "PREVIOUS"], devices.map((d) => [d.name, String(d.wave), deviceStateText(d), d.previousVersion])));
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
      // The answer carries the first page of devices; the counts cover them all.
      for (const d of r.devices.filter((x) => x.state === "rolling-back")) out(`  ${d.name}: ${d.error}\n`);
      const shown = r.devices.length;
      const total = r.waves.reduce((n, w) => n + w.total, 0);
      if (total > shown) out(`the other ${total - shown} devices are not listed here; every one returning: flotilla rollout show ${r.id} --state rolling-back\n`);
      else if (r.devices.some((x) => x.state === "rolling-back")) out(`follow them with: flotilla rollout show ${r.id}\n`);
    }),
  );
}
