import { applyAgentV8Flags } from "@flotilla/protocol/agent-flags";
import { installLightHeaders } from "@flotilla/protocol/light-headers";

const argv = process.argv.slice(2);
const role = argv.find((a) => !a.startsWith("-"));
// The agent's own V8 flags, set before the modules that run code as they load (the program's
// are imported below, not above, for that reason).
// And its own Headers class, before anything loads Node's (and undici with it, 6 MiB).
if (role === "agent") {
  applyAgentV8Flags();
  installLightHeaders();
}
const { main } = await import("./main.ts");
const { installSafetyNet } = await import("./safety-net.ts");
installSafetyNet(() => role === "agent" || role === "coordinator" || role === "up" || role === "sim");
process.exitCode = await main(argv, process.env);
