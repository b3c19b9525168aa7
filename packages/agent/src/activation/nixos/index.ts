export { DEFAULT_NIXOS_PROFILE, NixosActivator, type NixosActivatorOptions } from "./nixos-activator.ts";
export { nixosActivators } from "./agent-wiring.ts";
