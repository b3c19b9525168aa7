export { AgentActivator, type AgentActivatorOptions } from "./agent-activator.ts";
export { AGENT_NODE_OPTIONS, LAUNCHED_ENV, runLauncher, withoutAgentNodeOptions, type LauncherOptions } from "./launcher.ts";
export { LauncherLink, type IpcChannel } from "./link.ts";
export { INSTALLED } from "./launcher-state.ts";
