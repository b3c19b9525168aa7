/** `rollout watch`: a rollout's progress, redrawn on a terminal or as lines in a log. */
import { adminv1 } from "@flotilla/protocol";
import { serviceClient, type AdminTarget } from "../admin/client.ts";
import { ExitError } from "../errors.ts";
import { deviceStateText, headline, watchFrame, waveLines } from "./view.ts";

/** Exit codes of `rollout watch` by final status; see docs/rollouts.md. */
export const watchExitCodes: Record<string, number> = { completed: 0, paused: 10, aborted: 11, failed: 12 };

/** Renders a rollout's progress from its WatchRollout stream until a final status or a pause. */
export async function watchRollout(target: AdminTarget, id: string, out: (text: string) => void): Promise<void> {
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
