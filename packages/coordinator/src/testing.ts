/**
 * For tests and benchmarks outside this package (`@flotilla/coordinator/testing`): a real
 * coordinator on a loopback port with clients that log in to it, an enrolled device, and the
 * SQLite store on its own.
 */
export { SETUP_CODE, startTestCoordinator, type TestCoordinator } from "./test-support.ts";
export { enrollTestDevice } from "./telemetry/testing.ts";
export { openSqliteStore } from "./store/index.ts";
