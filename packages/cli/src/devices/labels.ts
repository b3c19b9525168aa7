/** `flotilla device label set|rm`: change the labels of one device, or of every device a selector matches. */
import { commonv1 } from "@flotilla/protocol";
import { adminClient, type AdminTarget } from "../admin/client.ts";
import { ExitError, UsageError } from "../errors.ts";
import { parseLabels } from "../output.ts";
import { confirm } from "./control.ts";
import { deviceStatus } from "./view.ts";

/** Devices listed in the confirmation before "and N more". */
const SHOWN = 20;

export interface LabelOpts {
  selector?: string;
  yes?: boolean;
}

/**
 * The device and the labels (or keys) the arguments name: `DEVICE LABEL...`, or with a selector
 * `LABEL...` alone. Throws UsageError on any other shape.
 */
export function labelTargets(args: string[], selector: string | undefined): { device?: string; items: string[] } {
  if (selector !== undefined) {
    if (args.length === 0) throw new UsageError("with --selector, give the labels only");
    return { items: args };
  }
  if (args.length < 2) throw new UsageError("give a device and at least one label (or --selector and labels)");
  return { device: args[0]!, items: args.slice(1) };
}

/**
 * Sets (`set`) or removes (`rm`, by key) labels on one device, or on every pending or approved
 * device the selector matches after a confirmation; the coordinator changes them in batches and
 * each device gets its new desired state. Prints the device's labels, or how many changed.
 */
export async function changeLabels(
  target: AdminTarget,
  verb: "set" | "rm",
  args: string[],
  opts: LabelOpts,
  out: (text: string) => void,
  labelText: (labels: Record<string, string>) => string,
): Promise<void> {
  const { device, items } = labelTargets(args, opts.selector);
  const change = verb === "set" ? { set: parseLabels(items.join(",")) } : { remove: items };
  const client = await adminClient(target);
  if (device !== undefined) {
    const res = await client.updateDeviceLabels({ device, ...change });
    out(`${res.device?.name}: ${labelText(res.device?.labels ?? {}) || "(no labels)"}\n`);
    return;
  }
  const selector = opts.selector!;
  if (!opts.yes) {
    if (!process.stdin.isTTY) throw new UsageError(`refusing to change the labels of every device matching ${JSON.stringify(selector)} without confirmation: pass --yes`);
    const shown: string[] = [];
    let count = 0;
    let pageToken = "";
    do {
      const page = await client.listDevices({ selector, pageSize: 1000, pageToken });
      for (const d of page.devices) {
        if (d.lifecycle !== commonv1.Lifecycle.PENDING && d.lifecycle !== commonv1.Lifecycle.APPROVED) continue;
        count++;
        if (shown.length < SHOWN) shown.push(`  ${d.name} (${deviceStatus(d)})\n`);
      }
      pageToken = page.nextPageToken;
    } while (pageToken);
    if (count === 0) throw new UsageError(`no pending or approved device matches ${JSON.stringify(selector)}`);
    const what = verb === "set" ? `set ${items.join(" ")}` : `remove ${items.join(" ")}`;
    process.stderr.write(`${what} on ${count} device${count === 1 ? "" : "s"}:\n${shown.join("")}${count > SHOWN ? `  and ${count - SHOWN} more\n` : ""}`);
    if (!(await confirm("proceed? [y/N] "))) throw new ExitError("cancelled", 1);
  }
  const res = await client.updateDeviceLabels({ selector, ...change });
  out(`labels changed on ${res.updated} device${res.updated === 1 ? "" : "s"}\n`);
}
