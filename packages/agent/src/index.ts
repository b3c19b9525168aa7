export { runAgent, FatalAgentError, type AgentExit, type AgentOptions } from "./agent.ts";
export { StateDir, type Enrollment, type AppliedState } from "./state.ts";
export { agentOptionSpecs } from "./config.ts";
export type { Activator, ActivationEvents, ActivationOutcome, ActivationRequest, ActivationStep, InstalledRelease } from "./activation/activator.ts";
