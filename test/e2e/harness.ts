/**
 * Transitional: what bench/tunnel.ts and packages/agent's bundle tests still import from here.
 * The tests in test/e2e take these from support/ and @flotilla/protocol/testing; remove this
 * file once those imports have moved there too.
 */
export { freePort, waitFor } from "@flotilla/protocol/testing";
export { Fleet } from "./support/fleet.ts";
export { Proc, repoRoot, Sandbox } from "./support/sandbox.ts";
