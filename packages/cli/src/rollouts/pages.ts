/** A rollout's devices, page by page: GetRollout sends at most one page of them per answer. */
import type { Client } from "@connectrpc/connect";
import type { adminv1 } from "@flotilla/protocol";

/** Devices per GetRollout request: the coordinator's largest page. */
export const DEVICE_PAGE = 1000;

export interface DevicePages {
  /** Only devices in this state, or of this wave (0: every wave). */
  state?: string;
  wave?: number;
  /** At most this many devices (default: every one). */
  limit?: number;
  pageSize?: number;
}

/**
 * The rollout as its first page showed it (status and counts), with the devices of every page
 * after it, each once (pages follow the order wave, position, device, from a key), up to `limit`.
 * `more` is true when `limit` left devices out.
 */
export async function rolloutWithDevices(
  c: Client<typeof adminv1.RolloutService>,
  id: string,
  o: DevicePages = {},
): Promise<{ rollout: adminv1.Rollout; devices: adminv1.RolloutDevice[]; more: boolean }> {
  const limit = o.limit ?? Infinity;
  const pageSize = o.pageSize ?? DEVICE_PAGE;
  let rollout: adminv1.Rollout | undefined;
  const devices: adminv1.RolloutDevice[] = [];
  let pageToken = "";
  do {
    const page = await c.getRollout({ id, pageSize: Math.min(pageSize, limit - devices.length), pageToken, state: o.state ?? "", wave: o.wave ?? 0 });
    if (!page.rollout) throw new Error("the coordinator sent no rollout");
    rollout ??= page.rollout;
    devices.push(...page.rollout.devices);
    pageToken = page.nextPageToken;
  } while (pageToken && devices.length < limit);
  return { rollout: rollout!, devices: devices.slice(0, limit), more: pageToken !== "" || devices.length > limit };
}
