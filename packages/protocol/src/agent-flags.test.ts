import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";

const run = promisify(execFile);
const repoRoot = join(import.meta.dirname, "..", "..", "..");

/**
 * Runs `body` in a node process of its own (V8's flags are per process), with natives syntax on so
 * that it can ask V8 whether a function was optimised; resolves with what it printed as JSON.
 */
async function inProcess(body: string): Promise<Record<string, boolean>> {
  const script = `
import { applyAgentV8Flags, withOptimizingCompiler } from "./packages/protocol/src/agent-flags.ts";
// Bit 64 of %GetOptimizationStatus: the function runs TurboFan's code.
const turbofanned = (f) => (%GetOptimizationStatus(f) & 64) !== 0;
// A new function each time (its own SharedFunctionInfo), so none inherits another's optimised code.
const makeHot = () => new Function("x", "return (x * 31 + 7) | 0;");
// Called often enough to be optimised; warm itself never is, so it cannot inline f instead.
function warm(f) { let s = 0; for (let k = 0; k < 200_000; k++) s ^= f(k); return turbofanned(f); }
%NeverOptimizeFunction(warm);
const out = {};
${body}
process.stdout.write(JSON.stringify(out));
`;
  // Compiled on the main thread (--no-concurrent-recompilation), so that a function V8 decided
  // to optimise is optimised by the time the loop that made it hot returns, however busy the machine.
  const { stdout } = await run(process.execPath, ["--allow-natives-syntax", "--no-concurrent-recompilation", "--import", "tsx", "--input-type=module", "-e", script], { cwd: repoRoot });
  return JSON.parse(stdout) as Record<string, boolean>;
}

describe("the agent's V8 flags", () => {
  it("leave TurboFan off in a lean agent, on while a download runs, and off again after", async () => {
    const out = await inProcess(`
applyAgentV8Flags();
out.idle = warm(makeHot());
out.downloading = await withOptimizingCompiler(async () => warm(makeHot()));
out.after = warm(makeHot());
`);
    expect(out).toEqual({ idle: false, downloading: true, after: false });
  });

  it("keep TurboFan on while any of two overlapping downloads runs", async () => {
    const out = await inProcess(`
applyAgentV8Flags();
let endFirst;
const first = withOptimizingCompiler(() => new Promise((r) => (endFirst = r)));
out.second = await withOptimizingCompiler(async () => warm(makeHot()));
out.firstStillRunning = warm(makeHot());
endFirst();
await first;
out.both = warm(makeHot());
`);
    expect(out).toEqual({ second: true, firstStillRunning: true, both: false });
  });

  it("change nothing in a process that did not set them (the coordinator, the CLI)", async () => {
    const out = await inProcess(`
out.before = warm(makeHot());
out.during = await withOptimizingCompiler(async () => warm(makeHot()));
out.after = warm(makeHot());
`);
    expect(out).toEqual({ before: true, during: true, after: true });
  });
});
