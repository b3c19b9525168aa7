/** `flotilla device restart|stop|start|undeploy`: control a release on one device or many. */
import { createInterface } from "node:readline";
import { ConnectError } from "@connectrpc/connect";
import { adminv1 } from "@flotilla/protocol";
import { adminClient, serviceClient, type AdminTarget } from "../admin/client.ts";
import { ExitError, UsageError } from "../errors.ts";
import { deviceStatus } from "./view.ts";

export type ControlVerb = "restart" | "stop" | "start" | "undeploy";

/** What each verb prints once the coordinator has recorded it. */
const done: Record<ControlVerb, string> = {
  restart: "restart requested",
  stop: "stop requested",
  start: "start requested",
  undeploy: "undeploy requested",
};

/**
 * The devices and release name the arguments name: `DEVICE NAME`, or with a selector `NAME`
 * alone. Throws UsageError on any other shape.
 */
export function controlTargets(args: string[], selector: string | undefined): { device?: string; name: string } {
  if (selector !== undefined) {
    if (args.length !== 1) throw new UsageError("with --selector, give the release name only");
    return { name: args[0]! };
  }
  if (args.length !== 2) throw new UsageError("give a device and a release name (or --selector and a release name)");
  return { device: args[0]!, name: args[1]! };
}

/** Asks on the terminal; true for y or yes. */
export async function confirm(question: string): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr, terminal: true });
  const answer = await new Promise<string>((resolve) => rl.question(question, resolve));
  rl.close();
  return /^y(es)?$/i.test(answer.trim());
}

/**
 * Records the control command as desired state on each device (one, or all the selector
 * matches after a confirmation listing them) and prints one line per device. Devices offline
 * now carry it out when they return.
 */
export async function controlRelease(
  target: AdminTarget,
  verb: ControlVerb,
  args: string[],
  opts: { selector?: string; yes?: boolean; purge?: boolean },
  out: (text: string) => void,
): Promise<void> {
  const { device, name } = controlTargets(args, opts.selector);
  const releases = await serviceClient(target, adminv1.ReleaseService);
  const request = (d: string) => releases.controlRelease({ device: d, name, action: verb, purgeData: verb === "undeploy" && opts.purge === true });
  if (device !== undefined) {
    await request(device);
    out(`${device}: ${name}: ${done[verb]}\n`);
    return;
  }
  const { devices } = await (await adminClient(target)).listDevices({ selector: opts.selector ?? "" });
  if (devices.length === 0) throw new UsageError(`no device matches ${JSON.stringify(opts.selector)}`);
  const what = `${verb} ${name}${verb === "undeploy" && opts.purge ? " (and purge its data)" : ""}`;
  if (!opts.yes) {
    if (!process.stdin.isTTY) throw new UsageError(`refusing to ${what} on ${devices.length} devices without confirmation: pass --yes`);
    process.stderr.write(`${what} on ${devices.length} device${devices.length === 1 ? "" : "s"}:\n${devices.map((d) => `  ${d.name} (${deviceStatus(d)})\n`).join("")}`);
    if (!(await confirm("proceed? [y/N] "))) throw new ExitError("cancelled", 1);
  }
  let failed = 0;
  for (const d of devices) {
    try {
      await request(d.id);
      out(`${d.name}: ${name}: ${done[verb]}\n`);
    } catch (err) {
      failed++;
      out(`${d.name}: ${name}: ${err instanceof ConnectError ? err.rawMessage : String(err)}\n`);
    }
  }
  if (failed > 0) throw new ExitError(`${failed} of ${devices.length} devices refused`, 1);
}
