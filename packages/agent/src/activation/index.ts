export type {
  Activator,
  ActivationEvents,
  ActivationOutcome,
  ActivationRequest,
  ActivationStep,
  InstalledRelease,
} from "./activator.ts";
export { BundleActivator, type BundleActivatorOptions } from "./bundle/bundle-activator.ts";
export { BundleRefusedError } from "./bundle/unpack.ts";
