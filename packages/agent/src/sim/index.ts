/** The fleet simulator (`flotilla sim`): simulated devices speaking the real agent protocol. */
export { SimDevice, type SimBehaviour, type SimDeviceSpec, type SimOutcome } from "./device.ts";
export { SimSlice, type SimOptions, type SliceStats } from "./slice.ts";
export { runSimulation, runSimWorker, runSlice, SIM_WORKER_ENV, type SimulationOptions, type WorkerPayload } from "./run.ts";
export { failingDevices, seededRandom, hashSeed } from "./random.ts";
export { simOptionSpecs } from "./config.ts";
