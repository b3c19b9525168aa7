export { runAgent, FatalAgentError, type AgentExit, type AgentOptions } from "./agent.ts";
export { StateDir, type Enrollment, type AppliedState } from "./state.ts";
export { agentOptionSpecs } from "./config.ts";
export { LogCapture, AGENT_UNIT } from "./telemetry/capture.ts";
export * from "./activation/index.ts";
