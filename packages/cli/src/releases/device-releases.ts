/** What a device runs and the steps of its releases, for `device show`. */
import { timestampMs } from "@bufbuild/protobuf/wkt";
import { adminv1 } from "@flotilla/protocol";
import { serviceClient, type AdminTarget } from "../admin/client.ts";

/** A device's releases and step history, for `device show`. */
export async function deviceReleaseInfo(target: AdminTarget, deviceId: string) {
  const r = await (await serviceClient(target, adminv1.ReleaseService)).getDeviceReleases({ device: deviceId });
  const iso = (t: adminv1.ReleaseStep["time"]) => (t ? new Date(timestampMs(t)).toISOString() : null);
  return {
    releases: r.releases.map((x) => ({
      name: x.name,
      current: x.currentVersion ? { version: x.currentVersion, counter: Number(x.currentCounter) } : null,
      desired: { version: x.desiredVersion, counter: Number(x.desiredCounter), targetPath: x.desiredTarget, at: iso(x.desiredAt) },
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
  };
}

/** The lines `device show` prints for releases. */
export function releaseLines(info: Awaited<ReturnType<typeof deviceReleaseInfo>>): string[] {
  if (info.releases.length === 0) return [];
  const lines = ["releases:"];
  for (const r of info.releases) {
    lines.push(`  ${r.name.padEnd(20)} current ${r.current ? `${r.current.version} (#${r.current.counter})` : "none"}, desired ${r.desired.version} (#${r.desired.counter}) since ${r.desired.at}`);
  }
  lines.push("release steps:");
  for (const s of info.steps) {
    const bytes = s.step === "downloading" ? ` ${s.bytesDone}/${s.bytesTotal} bytes` : "";
    lines.push(`  ${s.time}  ${s.targetPath}  ${s.step}${bytes}${s.error ? `: ${s.error}` : ""}`);
  }
  return lines;
}
