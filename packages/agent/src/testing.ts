/**
 * Helpers for tests outside the agent package (`@flotilla/agent/testing`): the activators to
 * drive directly, their event types, and fixtures for bundle releases. Not part of the
 * runtime surface.
 */
export { NixosActivator, type NixosActivatorOptions } from "./activation/nixos/index.ts";
export { BundleActivator, type BundleActivatorOptions } from "./activation/bundle/bundle-activator.ts";
export type { ActivationEvents, ActivationOutcome, ActivationRequest, ActivationStep, Activator, InstalledRelease } from "./activation/activator.ts";
export {
  makeBundle,
  processesUnder,
  RecordedEvents,
  served,
  SERVER_JS,
  serverBundle,
  serviceMeta,
  sha256File,
  type Artifact,
  type ServerConfig,
} from "./activation/bundle/testing/fixtures.ts";
// The agent's release download and verification as production runs them, for bench/download.ts.
export { connect } from "./connection/dial.ts";
export { downloadTarget, targetUrlPath } from "./releases/download.ts";
export { verifyRelease } from "./releases/verify.ts";
