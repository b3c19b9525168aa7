export { DEFAULT_NIXOS_PROFILE } from "../../config.ts";
export { NixosActivator, type NixosActivatorOptions } from "./nixos-activator.ts";
export { nixosActivators } from "./agent-wiring.ts";
