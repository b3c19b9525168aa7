import { timestampMs } from "@bufbuild/protobuf/wkt";
import type { Command } from "commander";
import { adminClient, type AdminTarget } from "../admin/client.ts";
import { controlRelease, type ControlVerb } from "../devices/control.ts";
import { changeLabels, type LabelOpts } from "../devices/labels.ts";
import { moveDevice, type MoveOpts } from "../devices/move.ts";
import { withSigningOptions } from "../signing/signing-options.ts";
import { deviceJson, deviceStatus } from "../devices/view.ts";
import { UsageError } from "../errors.ts";
import { ago, json, table } from "../output.ts";
import { deviceReleaseInfo, releaseLines } from "../releases/device-releases.ts";

/** The most release steps `device show` asks for (the coordinator's limit). */
const MAX_STEPS = 1000;
import type { Run } from "../run.ts";

function labelText(labels: Record<string, string>): string {
  return Object.entries(labels)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${v}`)
    .join(",");
}

export function registerDeviceCommands(program: Command, target: () => AdminTarget, run: Run): void {
  const device = program.command("device").description("list, inspect, approve and label devices; restart, stop, start and undeploy their releases");

  device
    .command("ls")
    .description("list devices, optionally those matching a selector over labels and facts (every device: pages are followed)")
    .option("-s, --selector <selector>", "e.g. 'env=prod,arch in (aarch64,x86_64)'", "")
    .option("--json", "print a JSON array")
    .action(
      (opts: { selector: string; json?: boolean }) =>
        run(async (out) => {
          const client = await adminClient(target());
          // Every page, in name order: a fleet of any size is listed whole, never cut.
          const devices = [];
          let pageToken = "";
          do {
            const page = await client.listDevices({ selector: opts.selector, pageSize: 1000, pageToken });
            devices.push(...page.devices);
            pageToken = page.nextPageToken;
          } while (pageToken);
          if (opts.json) return out(json(devices.map(deviceJson)));
          const now = Date.now();
          out(
            table(
              ["NAME", "STATUS", "AGENT", "ARCH", "OS", "LABELS", "LAST SEEN", "ID"],
              devices.map((d) => [
                d.name,
                deviceStatus(d),
                d.agentVersion,
                d.facts?.arch ?? "",
                [d.facts?.os, d.facts?.osVersion].filter(Boolean).join(" "),
                labelText(d.labels),
                d.lastSeen ? ago(timestampMs(d.lastSeen), now) : "never",
                d.id,
              ]),
            ),
          );
        }),
    );

  device
    .command("show <device>")
    .description("everything known of one device (id or name)")
    .option("--steps <n>", `the newest n release steps (at most ${MAX_STEPS}); says on stderr when older ones were left out`, "200")
    .option("--json", "print JSON")
    .action(
      (ref: string, opts: { json?: boolean; steps: string }) =>
        run(async (out) => {
          const steps = Number(opts.steps);
          if (!Number.isInteger(steps) || steps < 1 || steps > MAX_STEPS) throw new UsageError(`--steps must be a whole number from 1 to ${MAX_STEPS}`);
          const { device: d } = await (await adminClient(target())).getDevice({ device: ref });
          if (!d) throw new UsageError(`no device ${ref}`);
          const j = deviceJson(d);
          const rel = await deviceReleaseInfo(target(), d.id, { steps });
          if (rel.moreSteps) {
            process.stderr.write(
              steps < MAX_STEPS
                ? `device show: older release steps were left out; --steps ${MAX_STEPS} shows up to ${MAX_STEPS}\n`
                : `device show: only the newest ${MAX_STEPS} release steps are shown\n`,
            );
          }
          if (opts.json) return out(json({ ...j, ...rel }));
          const lines = [
            `name:          ${j.name}`,
            `id:            ${j.id}`,
            `status:        ${j.status}`,
            `labels:        ${labelText(j.labels) || "(none)"}`,
            `agent:         ${j.agentVersion}`,
            `last seen:     ${j.lastSeen ?? "never"}`,
            `enrolled:      ${j.createdAt ?? ""}`,
            `generation:    desired ${j.generation}, applied ${j.observedGeneration}`,
            `public key:    ${j.publicKey}`,
            "facts:",
            ...Object.entries(j.facts).map(([k, v]) => `  ${k.padEnd(22)} ${v}`),
            ...releaseLines(rel),
          ];
          out(lines.join("\n") + "\n");
        }),
    );

  const lifecycle = (name: "approve" | "reject" | "decommission", description: string) =>
    device
      .command(`${name} <device>`)
      .description(description)
      .action(
        (ref: string) =>
          run(async (out) => {
            const client = await adminClient(target());
            const res =
              name === "approve"
                ? await client.approveDevice({ device: ref })
                : name === "reject"
                  ? await client.rejectDevice({ device: ref })
                  : await client.decommissionDevice({ device: ref });
            out(`${res.device?.name ?? ref}: ${res.device ? deviceStatus(res.device) : ""}\n`);
          }),
      );
  lifecycle("approve", "approve a pending device");
  lifecycle("reject", "refuse a pending device; its agent forgets its credentials");
  lifecycle("decommission", "retire a device; its agent forgets its credentials and stops");

  const control = (verb: ControlVerb, description: string) => {
    const cmd = device
      .command(`${verb} <args...>`)
      .usage(`[options] DEVICE NAME | --selector SELECTOR NAME`)
      .description(description)
      .option("-s, --selector <selector>", "every device matching it, after a confirmation listing them")
      .option("-y, --yes", "with --selector: do not ask for confirmation");
    if (verb === "undeploy") cmd.option("--purge", "remove the release's data directory too");
    cmd.action(
      (args: string[], opts: { selector?: string; yes?: boolean; purge?: boolean }) =>
        run(async (out) => controlRelease(target(), verb, args, opts, out)),
    );
  };
  control("restart", "restart a release on a device (runs it if stopped); done when the device is next online");
  control("stop", "stop a release on a device; it stays stopped, across agent restarts, until started");
  control("start", "start a stopped release on a device");
  control("undeploy", "stop a release on a device and remove its files (its data directory too with --purge)");

  withSigningOptions(
    device
      .command("move <device>")
      .description("move a device to another organization of this coordinator; needs admin rights in both")
      .requiredOption("--to-org <org>", "the organization it moves to (name)")
      .option("--to-org-token <token>", "with FLOTILLA_TOKEN: an API token of the destination organization")
      .option("--json", "print the moved device as JSON"),
  )
    .addHelpText("after", "\nThe device keeps running its releases and its identity. The move is signed by the old organization's root keys (see docs/device-move.md).")
    .action((ref: string, opts: MoveOpts) => run(async (out) => moveDevice(target(), ref, opts, out)));

  const label = device.command("label").description("set or remove device labels, on one device or on every device a selector matches");
  const labelCommand = (verb: "set" | "rm", description: string) =>
    label
      .command(`${verb} <args...>`)
      .usage(verb === "set" ? "[options] DEVICE KEY=VALUE... | --selector SELECTOR KEY=VALUE..." : "[options] DEVICE KEY... | --selector SELECTOR KEY...")
      .description(description)
      .option("-s, --selector <selector>", "every pending or approved device matching it, after a confirmation")
      .option("-y, --yes", "with --selector: do not ask for confirmation")
      .action((args: string[], opts: LabelOpts) => run(async (out) => changeLabels(target(), verb, args, opts, out, labelText)));
  labelCommand("set", "set labels, e.g. `device label set web-1 env=prod site=lab`");
  labelCommand("rm", "remove labels by key");
}
