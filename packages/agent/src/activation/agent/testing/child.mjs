// A stand-in for an agent under the launcher (launcher.test.ts). Its first argument says what it
// does; every line it would print goes to $TEST_LOG as "<executable id> <event>".
import { appendFileSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { getHeapSpaceStatistics } from "node:v8";

const mode = process.argv[2];
const id = process.env.FLOTILLA_AGENT_EXECUTABLE;
const log = (what) => appendFileSync(process.env.TEST_LOG, `${id} ${what}\n`);
const ask = (msg) =>
  new Promise((resolve) => {
    process.once("message", resolve);
    process.send(msg);
  });

process.on("disconnect", () => process.exit(0));
process.on("SIGTERM", () => {
  log("stopped");
  process.exit(0);
});
log(`started ${mode}`);
if (mode === "exit") process.exit(3);
if (mode === "switch-once") {
  let state = {};
  try {
    state = JSON.parse(readFileSync(join(process.env.TEST_STATE, "agent-versions", "launcher.json"), "utf8"));
  } catch {
    // no handover yet
  }
  if (!state.last) {
    const reply = await ask({ type: "switch", seq: 1, to: JSON.parse(process.env.TEST_TO) });
    log(`switch ${reply.error ?? "ok"}`);
  }
}
if (mode === "confirm") {
  const reply = await ask({ type: "confirm", seq: 7, id });
  log(`confirm ${reply.error ?? "ok"}`);
}
if (mode === "quit") process.exit(0);
if (mode === "young") {
  // What V8 flags it runs with: the young generation's size after a burst of garbage, in MiB
  // (two 16 MiB semi-spaces by default), and NODE_OPTIONS as the agent leaves it for its children.
  let keep = [];
  for (let i = 0; i < 2e6; i++) {
    keep.push({ i, s: `x${i}` });
    if (keep.length > 20_000) keep = [];
  }
  const young = getHeapSpaceStatistics().find((s) => s.space_name === "new_space").space_size;
  log(`young ${Math.ceil(young / 2 ** 20)} MiB`);
  log(`NODE_OPTIONS ${process.env.NODE_OPTIONS}`);
}
setInterval(() => {}, 60_000);
