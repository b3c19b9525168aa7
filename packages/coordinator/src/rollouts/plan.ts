/**
 * The rollout plan: a pure function from the organization's devices, a selector, a release's
 * requirements and a wave specification to an assignment of devices to waves. `plan` and `start`
 * both call it with the same inputs, so they agree device for device.
 */
import { matchesSelector, type Selector } from "@flotilla/protocol";
import { waveSizes, type WaveEntry } from "./waves.ts";

/** What the plan needs to know of a device. */
export interface PlanDevice {
  id: string;
  name: string;
  lifecycle: string;
  /** Labels and flattened facts, merged as selectors see them. */
  fields: Readonly<Record<string, string>>;
  arch: string;
  capabilities: readonly string[];
  online: boolean;
  /** False when its last reported release step was a failure or a rollback. */
  healthy: boolean;
}

/** What a release demands of a device. */
export interface ReleaseRequirements {
  /** The capability the agent must declare, e.g. "release:bundle". */
  capability: string;
  /** Architectures it runs on; empty: any. */
  arch: readonly string[];
}

export interface PlannedWave {
  number: number;
  entry: string;
  devices: PlanDevice[];
}

export interface RolloutPlan {
  waves: PlannedWave[];
  ineligible: { device: PlanDevice; reason: string }[];
  /** Devices in the waves that are offline now. */
  offline: PlanDevice[];
  /** Every device in a wave, in order. */
  total: number;
}

/** What a missing capability means, for the capabilities whose name does not say it. */
const CAPABILITY_MEANING: Readonly<Record<string, string>> = {
  "release:agent": "this agent cannot update itself (it runs without self_update, or is older than self-update)",
};

/** Why a device matched by the selector cannot take the release, or undefined when it can. */
export function ineligibility(d: PlanDevice, req: ReleaseRequirements): string | undefined {
  if (d.lifecycle !== "approved") return `device is ${d.lifecycle}`;
  if (!d.capabilities.includes(req.capability)) {
    const meaning = Object.hasOwn(CAPABILITY_MEANING, req.capability) ? `: ${CAPABILITY_MEANING[req.capability]}` : "";
    return `missing capability ${req.capability}${meaning}`;
  }
  if (req.arch.length > 0 && !req.arch.includes(d.arch)) return `arch ${d.arch || "unknown"} not in ${req.arch.join(", ")}`;
  return undefined;
}

const rank = (d: PlanDevice): number => (d.online ? (d.healthy ? 0 : 1) : 2);

/** Canaries first: online and healthy devices, then online ones, then offline; by name, then id. */
export function compareForRollout(a: PlanDevice, b: PlanDevice): number {
  return rank(a) - rank(b) || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
}

/** Assigns the selected, eligible devices to waves in a deterministic order. */
export function planRollout(devices: readonly PlanDevice[], selector: Selector, req: ReleaseRequirements, waves: readonly WaveEntry[]): RolloutPlan {
  const eligible: PlanDevice[] = [];
  const ineligible: { device: PlanDevice; reason: string }[] = [];
  for (const d of devices) {
    if (!matchesSelector(selector, d.fields)) continue;
    const reason = ineligibility(d, req);
    if (reason) ineligible.push({ device: d, reason });
    else eligible.push(d);
  }
  eligible.sort(compareForRollout);
  ineligible.sort((a, b) => compareForRollout(a.device, b.device));
  const out: PlannedWave[] = [];
  let at = 0;
  for (const { entry, size } of waveSizes(waves, eligible.length)) {
    out.push({ number: out.length + 1, entry, devices: eligible.slice(at, at + size) });
    at += size;
  }
  return { waves: out, ineligible, offline: eligible.filter((d) => !d.online), total: eligible.length };
}
