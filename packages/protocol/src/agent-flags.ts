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
