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
 * before it loads its modules (packages/cli/src/entry.ts, with v8.setFlagsFromString): Node does
 * not accept them in NODE_OPTIONS. `--no-opt` leaves V8's optimising compiler (TurboFan) off:
 * its first use pages some 4 MiB of the node executable's compiler code into the process, and
 * what an agent runs hot enough for it (protobuf-es decoding the message descriptors at start)
 * runs once. Code still runs in V8's baseline compiler (Sparkplug). What costs an agent CPU
 * (TLS, sha256 and file writes while it downloads) is native code: a 200 MiB download over TLS,
 * hashed and copied into 1 MiB buffers as the agent does, took 0.65 to 0.67 s of CPU with the
 * flag and 0.75 to 0.77 s without. bench/agent.ts prints the agent's CPU time beside its memory.
 */
export const AGENT_V8_FLAGS = "--no-opt";
