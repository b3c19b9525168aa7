/** How rollouts look on a terminal and in JSON. */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { adminv1 } from "@flotilla/protocol";

const iso = (t: { seconds: bigint; nanos: number } | undefined) => (t ? new Date(timestampMs(t as Parameters<typeof timestampMs>[0])).toISOString() : null);

/** The JSON form of a rollout, for `ls --json`, `show --json` and scripts. */
export function rolloutJson(r: adminv1.Rollout, withDevices = true) {
  const s = r.spec;
  return {
    id: r.id,
    status: r.status,
    reason: r.reason,
    createdAt: iso(r.createdAt),
    updatedAt: iso(r.updatedAt),
    createdBy: r.createdBy,
    release: { name: s?.releaseName ?? "", version: s?.releaseVersion ?? "", counter: Number(r.releaseCounter) },
    selector: s?.selector ?? "",
    strategy: {
      waves: s?.waves ?? [],
      maxParallel: s?.maxParallel ?? 0,
      failureThreshold: s?.failureThreshold ?? "",
      soakMs: Number(s?.soakMs ?? 0n),
      approveEachWave: s?.approveEachWave ?? false,
      deadlineMs: Number(s?.deadlineMs ?? 0n),
    },
    currentWave: r.currentWave,
    waiting: r.waiting,
    waves: r.waves.map((w) => ({ number: w.number, entry: w.entry, total: w.total, healthy: w.healthy, failed: w.failed, skipped: w.skipped, inProgress: w.inProgress, pending: w.pending })),
    ...(withDevices
      ? {
          devices: r.devices.map(rolloutDeviceJson),
        }
      : {}),
  };
}

/** The JSON form of one device of a rollout. */
export function rolloutDeviceJson(d: adminv1.RolloutDevice) {
  return {
    id: d.deviceId,
    name: d.name,
    wave: d.wave,
    state: d.state,
    bytesDone: Number(d.bytesDone),
    bytesTotal: Number(d.bytesTotal),
    error: d.error,
    previousVersion: d.previousVersion,
    previousCounter: Number(d.previousCounter),
    rollBackCounter: Number(d.rollBackCounter),
    updatedAt: iso(d.updatedAt),
  };
}

/** The JSON form of a plan. */
export function planJson(p: adminv1.Plan) {
  const dev = (d: adminv1.PlannedDevice) => ({ id: d.id, name: d.name, online: d.online, ...(d.reason ? { reason: d.reason } : {}) });
  return {
    release: { name: p.releaseName, version: p.releaseVersion, counter: Number(p.releaseCounter) },
    selector: p.selector,
    waves: p.waves.map((w) => ({ number: w.number, entry: w.entry, devices: w.devices.map(dev) })),
    ineligible: p.ineligible.map(dev),
    offline: p.offline.map(dev),
  };
}

/** The plan for people: each wave's devices, then the devices left out and those offline. */
export function planText(p: adminv1.Plan): string {
  const lines = [`release ${p.releaseName}@${p.releaseVersion} (#${p.releaseCounter}), selector ${JSON.stringify(p.selector)}`];
  for (const w of p.waves) {
    lines.push(`wave ${w.number} (${w.entry}): ${w.devices.length} device${w.devices.length === 1 ? "" : "s"}`);
    for (const d of w.devices) lines.push(`  ${d.name}${d.online ? "" : "  (offline)"}  ${d.id}`);
  }
  if (p.ineligible.length > 0) {
    lines.push(`cannot take the release: ${p.ineligible.length}`);
    for (const d of p.ineligible) lines.push(`  ${d.name}  ${d.id}  ${d.reason}`);
  }
  if (p.offline.length > 0) lines.push(`offline now (they get it when they return): ${p.offline.map((d) => d.name).join(", ")}`);
  return lines.join("\n") + "\n";
}

function bar(done: number, failed: number, total: number, width = 30): string {
  if (total === 0) return " ".repeat(width);
  const ok = Math.round((done / total) * width);
  const bad = Math.min(width - ok, Math.round((failed / total) * width));
  return "#".repeat(ok) + "x".repeat(bad) + "-".repeat(width - ok - bad);
}

/** One line per wave with a progress bar; the current wave is marked. */
export function waveLines(r: adminv1.Rollout): string[] {
  return r.waves.map((w) => {
    const mark = w.number === r.currentWave && r.status === "running" ? (r.waiting ? "~" : ">") : " ";
    const counts = `${w.healthy}/${w.total} healthy` + (w.failed ? `, ${w.failed} failed` : "") + (w.skipped ? `, ${w.skipped} skipped` : "") + (w.inProgress ? `, ${w.inProgress} installing` : "");
    return `${mark} wave ${w.number} ${w.entry.padStart(4)} [${bar(w.healthy + w.skipped, w.failed, w.total)}] ${counts}`;
  });
}

/** A device's state for people, with bytes while downloading. */
export function deviceStateText(d: adminv1.RolloutDevice): string {
  if (d.state === "downloading" && d.bytesTotal > 0n) return `downloading ${Math.floor((Number(d.bytesDone) * 100) / Number(d.bytesTotal))}%`;
  return d.error && (d.state === "failed" || d.state === "rolled-back" || d.state === "skipped" || d.state === "rolling-back") ? `${d.state}: ${d.error}` : d.state;
}

/** The header line of a rollout. */
export function headline(r: adminv1.Rollout): string {
  return `rollout ${r.id} ${r.spec?.releaseName}@${r.spec?.releaseVersion}: ${r.status}${r.reason ? ` (${r.reason})` : ""}`;
}

const BUSY = new Set(["notified", "downloading", "verifying", "activating", "health-checking", "rolling-back"]);

/**
 * What `rollout watch` draws on a terminal of `columns` x `rows`: the headline, a bar per wave and
 * the devices installing now. Every line is cut to fit one row (a wrapped line would take two,
 * and the next redraw would move up too little), and the block keeps to the screen's height
 * (the cursor cannot move up into scrollback), with the busy devices that do not fit counted.
 */
export function watchFrame(r: adminv1.Rollout, columns: number, rows: number): string[] {
  let waves = waveLines(r);
  if (waves.length > rows - 2) {
    // More waves than the screen holds: the current one and those after it in half the screen
    // (the devices installing get the other half), the rest counted.
    const keep = Math.max(1, Math.floor((rows - 3) / 2));
    const from = Math.min(Math.max(0, r.currentWave - 1), Math.max(0, waves.length - keep));
    waves = [`  ${from} earlier wave${from === 1 ? "" : "s"}, ${Math.max(0, waves.length - from - keep)} later`, ...waves.slice(from, from + keep)];
  }
  const head = [headline(r), ...waves];
  const busy = r.devices.filter((d) => BUSY.has(d.state));
  const room = Math.max(0, rows - 1 - head.length);
  const shown = busy.length <= room ? busy : busy.slice(0, Math.max(0, room - 1));
  const lines = [...head, ...shown.map((d) => `    ${d.name.padEnd(24)} wave ${d.wave}  ${deviceStateText(d)}`)];
  if (shown.length < busy.length && room > 0) lines.push(`    +${busy.length - shown.length} more installing`);
  const width = Math.max(20, columns - 1);
  return lines.map((l) => (l.length > width ? l.slice(0, width) : l));
}
