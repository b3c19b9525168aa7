// The entry of the single executable (scripts/package.mjs): packages/cli/src/entry.ts without
// top-level await, which the CommonJS bundle that Node 20's SEA runs cannot have.
import { applyAgentV8Flags } from "@flotilla/protocol/agent-flags";

// A SEA sees itself twice: argv is [executable, executable, ...arguments]. The program's own
// children (`flotilla sim` workers, `tunnel ssh`'s ProxyCommand) start it as
// [process.execPath, process.argv[1], ...], which here repeats the executable once more.
const argv = process.argv.slice(2);
if (argv[0] === process.execPath) argv.shift();
const role = argv.find((a) => !a.startsWith("-"));
// The agent's own V8 flags, set before the modules that run code as they load (as in entry.ts).
if (role === "agent") applyAgentV8Flags();
Promise.all([import("./main.ts"), import("./safety-net.ts")])
  .then(([{ main }, { installSafetyNet }]) => {
    installSafetyNet(() => role === "agent" || role === "coordinator" || role === "up" || role === "sim");
    return main(argv, process.env);
  })
  .then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`error: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    },
  );
