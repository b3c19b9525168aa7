export { runAgent, type AgentOptions } from "./agent.ts";
export { FatalAgentError, type AgentExit } from "./exit.ts";
export { StateDir, type Enrollment, type AppliedState } from "./state.ts";
export { agentOptionSpecs, type AgentConfig } from "./config.ts";
export { LogCapture, AGENT_UNIT } from "./telemetry/capture.ts";
export * from "./activation/index.ts";
export { AgentActivator, AGENT_NODE_OPTIONS, INSTALLED, LAUNCHED_ENV, LauncherLink, runLauncher, withoutAgentNodeOptions, type AgentActivatorOptions, type IpcChannel, type LauncherOptions } from "./activation/agent/index.ts";
