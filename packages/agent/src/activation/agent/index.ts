export { AgentActivator, type AgentActivatorOptions } from "./agent-activator.ts";
export { LAUNCHED_ENV, runLauncher, type LauncherOptions } from "./launcher.ts";
export { LauncherLink, type IpcChannel } from "./link.ts";
export { INSTALLED } from "./launcher-state.ts";
