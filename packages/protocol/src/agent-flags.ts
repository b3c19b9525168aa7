import { setFlagsFromString } from "node:v8";

/**
 * The V8 flags of the agent process, through NODE_OPTIONS (which node and the single executable
 * both read at start; a running process cannot change them): the agent's systemd units (the one
 * install.sh and the .deb install, the NixOS module's) set them, and the launcher gives them to
 * the agent it runs. V8's young generation grows to two 16 MiB semi-spaces in any process that
 * allocates a burst, as the agent does while it starts, and an idle process can keep them
 * resident; at 1 MiB the idle agent stays near its floor (bench/agent.ts: peak RSS about 13 MiB
 * lower) and its garbage, small messages, is collected more often at a cost that does not show in
 * its CPU time. Not a lite mode: code runs as fast. The agent removes them again
 * (withoutAgentNodeOptions in @flotilla/agent), so that what it runs (switch scripts, health
 * commands, the services of bundle releases) does not inherit them.
 */
export const AGENT_NODE_OPTIONS = "--max-semi-space-size=1";

/**
 * V8 flags that `flotilla agent` (the launcher and the agent it runs) sets on itself as it starts,
 * before it loads its modules (packages/cli/src/entry.ts, through {@link applyAgentV8Flags}):
 * Node does not accept them in NODE_OPTIONS. `--no-opt` leaves V8's optimising compiler
 * (TurboFan) off while the agent idles: its first use pages some 4 MiB of the node executable's
 * compiler code into the process, and what an idle agent runs (keep-alives, a report a minute,
 * log batches) is not hot enough to gain from it. Code still runs in V8's baseline compiler
 * (Sparkplug).
 *
 * A large download is the exception: its per-record JavaScript (rawGet's read callback, the copy
 * into write buffers, the hash and write calls) runs hot for seconds. `npm run bench -- download`,
 * 300 MB over TLS, 2026-12-03: through Node's HTTP client 6.1 and 5.0 CPU seconds per GB with
 * `--no-opt` against 4.5 without; through rawGet 4.4 against 3.6 (curl: 2.0 to 2.4). So
 * {@link withOptimizingCompiler} turns it on for as long as a download runs. For small
 * downloads it is a wash: 50 agents fetching 20 MB each spent 6.7 s/GB with it, 6.1 without
 * (each process compiles once for little data).
 */
export const AGENT_V8_FLAGS = "--no-opt";

/** Whether this process set AGENT_V8_FLAGS on itself (and so may turn TurboFan on and off again). */
let lean = false;
/** Downloads running with TurboFan turned on for them. */
let optimizing = 0;

/** Sets {@link AGENT_V8_FLAGS} on this process: the agent's first step, before it loads its modules. */
export function applyAgentV8Flags(): void {
  setFlagsFromString(AGENT_V8_FLAGS);
  lean = true;
}

/**
 * Runs `work` (a download) with V8's optimising compiler on, in a process that turned it off
 * with {@link applyAgentV8Flags}; it goes off again when the last such work ends. V8 reads the flag
 * each time it decides whether to optimise a function, so this takes effect at once; code it
 * optimised meanwhile stays optimised. In any other process this only runs `work`.
 */
export async function withOptimizingCompiler<T>(work: () => Promise<T>): Promise<T> {
  if (!lean) return work();
  if (optimizing++ === 0) setFlagsFromString("--opt");
  try {
    return await work();
  } finally {
    if (--optimizing === 0) setFlagsFromString(AGENT_V8_FLAGS);
  }
}
