import fc from "fast-check";
import { describe, it } from "vitest";
import { propertyRuns } from "@flotilla/protocol/testing";
import { afterRestart, beginHandover, confirmHandover, rollBackHandover, toRun, type LauncherState, type StagedExecutable } from "./launcher-state.ts";

const pool: StagedExecutable[] = [1, 2, 3].map((n) => ({ id: `${n}-${String(n).repeat(16)}`, name: "flotilla-agent", version: `0.${n}.0`, counter: n, sha256: String(n).repeat(64) }));

const event = fc.oneof(
  fc.record({ type: fc.constant("switch" as const), to: fc.constantFrom(...pool) }),
  fc.record({ type: fc.constant("confirm" as const), id: fc.constantFrom(...pool.map((p) => p.id)) }),
  fc.record({ type: fc.constant("fail" as const) }),
  fc.record({ type: fc.constant("restart" as const) }),
);

describe("the launcher's state across any sequence of handovers, confirmations, failures and restarts", () => {
  it("only ever makes current an executable that confirmed, runs an unconfirmed one only on probation, and survives being written and read back", () => {
    fc.assert(
      fc.property(fc.array(event, { maxLength: 40 }), (events) => {
        let s: LauncherState = {};
        const confirmed = new Set<string>();
        for (const e of events) {
          try {
            if (e.type === "switch") s = beginHandover(s, e.to);
            else if (e.type === "confirm") {
              s = confirmHandover(s, e.id);
              confirmed.add(e.id);
            } else if (e.type === "fail") s = rollBackHandover(s, "failed");
            else s = afterRestart(s);
          } catch {
            // refused: the state is unchanged
          }
          s = JSON.parse(JSON.stringify(s)) as LauncherState;
          if (s.current && !confirmed.has(s.current.id)) return false;
          const run = toRun(s);
          if (run && !confirmed.has(run.id) && s.pending?.to.id !== run.id) return false;
          if (e.type === "restart" && s.pending) return false;
          if (s.pending && s.pending.from?.id !== s.current?.id) return false;
        }
        return true;
      }),
      propertyRuns(300),
    );
  });
});
