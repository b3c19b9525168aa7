/**
 * A stand-in agent for crash tests: runs a BundleActivator in its own process so the test can
 * `kill -9` it. Argument: JSON `{ dir, env, mode, activations?, pauseAt? }`.
 * - mode `activate`: activates each release in turn; during the last one it prints
 *   `paused <point>` at the `onStep` point `pauseAt` and waits forever (the test kills it).
 * - mode `recover`: runs recover() and prints `recovered <json>` (outcomes per name).
 * Either way it then supervises until its stdin closes, then close()s and exits. Tests only.
 */
import { silentLogger } from "@flotilla/protocol/agent";
import type { ActivationRequest } from "../../activator.ts";
import { BundleActivator } from "../bundle-activator.ts";
import { RecordedEvents } from "./fixtures.ts";

interface ChildConfig {
  dir: string;
  env: Record<string, string>;
  mode: "activate" | "recover";
  activations?: ActivationRequest[];
  pauseAt?: string;
}

const cfg = JSON.parse(process.argv[2] ?? "{}") as ChildConfig;
let armed = false;
const activator = new BundleActivator({
  dir: cfg.dir,
  log: silentLogger,
  env: cfg.env,
  backoffMinMs: 100,
  backoffMaxMs: 1_000,
  killGraceMs: 2_000,
  health: { defaultUpMs: 500, retryMs: 100 },
  onStep: async (_name, point) => {
    if (!armed || point !== cfg.pauseAt) return;
    process.stdout.write(`paused ${point}\n`);
    await new Promise(() => {});
  },
});
const events = new RecordedEvents();
const signal = new AbortController().signal;

if (cfg.mode === "activate") {
  const list = cfg.activations ?? [];
  for (const [i, req] of list.entries()) {
    armed = i === list.length - 1;
    const out = await activator.activate(req, events, signal);
    process.stdout.write(`outcome ${JSON.stringify(out)}\n`);
  }
} else {
  const outcomes = await activator.recover(events);
  process.stdout.write(`recovered ${JSON.stringify(Object.fromEntries(outcomes))}\n`);
}
process.stdin.resume();
process.stdin.on("end", () => {
  void activator.close().then(() => process.exit(0));
});
