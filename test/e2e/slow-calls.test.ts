/**
 * The coordinator tells slow calls in its log: a real coordinator process and a client on a real
 * HTTP/2 connection that sends a call's headers at once and its body 2.5 s later (a slow link).
 * The log line must name the call and put the time before the handler, where it went. And the
 * CLI's side: FLOTILLA_TIMING=1 marks each step of an admin command on stderr.
 */
import { connect, constants } from "node:http2";
import { once } from "node:events";
import { randomBytes } from "node:crypto";
import { create, toBinary } from "@bufbuild/protobuf";
import { agentv1 } from "@flotilla/protocol";
import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { Fleet } from "./support/fleet.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

describe("slow calls in the coordinator's log", () => {
  it("names a call whose body came 2.5 s after its headers, with that time before the handler", async () => {
    const fleet = await new Fleet(sb).start();
    const session = connect(fleet.url);
    session.on("error", () => {});
    try {
      const req = session.request({
        [constants.HTTP2_HEADER_METHOD]: "POST",
        [constants.HTTP2_HEADER_PATH]: `/${agentv1.AgentService.typeName}/Hello`,
        "content-type": "application/proto",
        "connect-protocol-version": "1",
      });
      req.on("error", () => {});
      const response = once(req, "response");
      const chunks: Buffer[] = [];
      req.on("data", (c: Buffer) => chunks.push(c));
      const ended = once(req, "end");
      // The headers are sent now; the body only after the delay that makes the call slow.
      await new Promise((r) => setTimeout(r, 2500));
      req.end(Buffer.from(toBinary(agentv1.HelloRequestSchema, create(agentv1.HelloRequestSchema, { clientNonce: randomBytes(32) }))));
      const [headers] = (await response) as [Record<string, string | number>];
      await ended;
      expect(headers[constants.HTTP2_HEADER_STATUS]).toBe(200);
      expect(Buffer.concat(chunks).length).toBeGreaterThan(0);
    } finally {
      session.close();
    }

    const line = await waitFor("the slow-calls line", () => /warn slow calls .*$/m.exec(fleet.coordinator.output)?.[0], 10_000, 100);
    const m = /AgentService\/Hello (\d+) ms \((\d+) ms before the handler, ok, 1 slow\)/.exec(line);
    expect(m, line).not.toBeNull();
    const [total, before] = [Number(m![1]), Number(m![2])];
    expect(before).toBeGreaterThanOrEqual(2400);
    expect(total).toBeGreaterThanOrEqual(before);
  }, 60_000);

  it("the CLI with FLOTILLA_TIMING=1 says on stderr when each step of a command happened, and prints its answer as ever", async () => {
    const fleet = await new Fleet(sb).start();
    const r = await fleet.admin(["device", "ls", "--json"], { FLOTILLA_TIMING: "1" });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([]);
    const steps = [...r.stderr.matchAll(/^flotilla timing: (\d+) ms (.*)$/gm)].map((m) => ({ ms: Number(m[1]), what: m[2]! }));
    expect(steps.map((x) => x.what)).toEqual(["session ready", "transport ready", "ListDevices sent", "ListDevices answered"]);
    for (let i = 1; i < steps.length; i++) expect(steps[i]!.ms).toBeGreaterThanOrEqual(steps[i - 1]!.ms);
    // Without it, nothing of the kind.
    const quiet = await fleet.admin(["device", "ls", "--json"]);
    expect(quiet.stderr).not.toMatch(/flotilla timing/);
  }, 60_000);
});
