/** What a device runs and the steps of its releases, for `device show`. */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { adminv1 } from "@flotilla/protocol";
import { serviceClient, type AdminTarget } from "../admin/client.ts";

/** A device's releases and step history, for `device show`. */
export async function deviceReleaseInfo(target: AdminTarget, deviceId: string, opts: { removed?: boolean; steps?: number } = {}) {
  const r = await (await serviceClient(target, adminv1.ReleaseService)).getDeviceReleases({ device: deviceId, limit: opts.steps ?? 0 });
  const iso = (t: adminv1.ReleaseStep["time"]) => (t ? new Date(timestampMs(t)).toISOString() : null);
  return {
    // Undeployed releases are kept as rows (run state removed) but are no longer on the device.
    releases: r.releases.filter((x) => opts.removed || x.runState !== "removed" || x.reportedState !== "removed").map((x) => ({
      name: x.name,
      current: x.currentVersion ? { version: x.currentVersion, counter: Number(x.currentCounter) } : null,
      desired: { version: x.desiredVersion, counter: Number(x.desiredCounter), targetPath: x.desiredTarget, at: iso(x.desiredAt) },
      runState: x.runState || "running",
      restartGeneration: Number(x.restartGeneration),
      control: x.controlAction
        ? {
            action: x.controlAction,
            by: x.controlBy,
            at: iso(x.controlAt),
            purgeData: x.purgeData,
            reported: answers(x.controlAction, x.reportedState) ? { state: x.reportedState, at: iso(x.reportedAt), error: x.reportedError } : null,
          }
        : null,
    })),
    steps: r.steps.map((s) => ({
      time: iso(s.time),
      name: s.name,
      targetPath: s.targetPath,
      step: s.step,
      bytesDone: Number(s.bytesDone),
      bytesTotal: Number(s.bytesTotal),
      error: s.error,
    })),
    /** Older steps exist than those in `steps`. */
    moreSteps: r.moreSteps,
  };
}

/** The lines `device show` prints for releases. */
export function releaseLines(info: Awaited<ReturnType<typeof deviceReleaseInfo>>): string[] {
  if (info.releases.length === 0) return [];
  const lines = ["releases:"];
  for (const r of info.releases) {
    lines.push(`  ${r.name.padEnd(20)} current ${r.current ? `${r.current.version} (#${r.current.counter})` : "none"}, desired ${r.desired.version} (#${r.desired.counter}) since ${r.desired.at}`);
    const c = r.control;
    if (c) lines.push(`  ${r.name}: ${controlText(c)}`);
  }
  lines.push("release steps:");
  for (const s of info.steps) {
    const bytes = s.step === "downloading" ? ` ${s.bytesDone}/${s.bytesTotal} bytes` : "";
    lines.push(`  ${s.time}  ${s.targetPath}  ${s.step}${bytes}${s.error ? `: ${s.error}` : ""}`);
  }
  return lines;
}

/** What the device reports when it has carried out each command (or control-failed). */
const outcomes: Record<string, string> = { restart: "restarted", stop: "stopped", start: "started", undeploy: "removed" };

/**
 * Whether the device's last report answers the last command: the coordinator clears the report
 * with every command, and a late report of an earlier one names another outcome.
 */
function answers(action: string, reported: string): boolean {
  return reported !== "" && (reported === "control-failed" || outcomes[action] === reported);
}

type ControlInfo = NonNullable<Awaited<ReturnType<typeof deviceReleaseInfo>>["releases"][number]["control"]>;

const pendingText: Record<string, string> = { restart: "restart pending", stop: "stop pending", start: "start pending", undeploy: "undeploy pending" };

/** e.g. `stopped (by member:alice, 2026-11-30T12:03:00.000Z)` or `stop pending (by ...)`. */
export function controlText(c: ControlInfo): string {
  const by = `by ${c.by}, ${c.at}`;
  if (!c.reported) return `${pendingText[c.action] ?? c.action} (${by})`;
  if (c.reported.state === "control-failed") return `${c.action} failed: ${c.reported.error} (${by}; reported ${c.reported.at})`;
  return `${c.reported.state} (${by}; done ${c.reported.at})`;
}
