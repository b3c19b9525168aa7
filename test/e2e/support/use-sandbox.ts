import { afterEach } from "vitest";
import { Sandbox } from "./sandbox.ts";

/**
 * The test file's Sandbox: every test starts with it empty, and it is cleaned up after each test.
 * Apart from sandbox.ts because it needs vitest, which the benchmarks that use Sandbox cannot load.
 */
export function useSandbox(): Sandbox {
  const sb = new Sandbox();
  afterEach(() => sb.cleanup());
  return sb;
}
