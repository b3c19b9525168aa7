import { main } from "./main.ts";
import { installSafetyNet } from "./safety-net.ts";

const argv = process.argv.slice(2);
const role = argv.find((a) => !a.startsWith("-"));
installSafetyNet(() => role === "agent" || role === "coordinator" || role === "up" || role === "sim");
process.exitCode = await main(argv, process.env);
