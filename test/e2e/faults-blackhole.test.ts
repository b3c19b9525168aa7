/**
 * A network that silently drops everything for a minute, both ways (a NAT that forgot the
 * device, a dead uplink), while an agent ships logs, downloads a release and carries a tunnel:
 * the agent stays alive, the download resumes where it stopped, the tunnel ends with a clear
 * message on the admin's side, and every log line arrives exactly once.
 */
import { stat } from "node:fs/promises";
import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { busyAgent, linesAt, numbered, openEcho, roundTrip, useProxiedFleet, writeLines } from "./support/faults.ts";
import { waitForEnd } from "./support/releases.ts";

describe("a minute of blackhole between agent and coordinator", () => {
  const f = useProxiedFleet();

  it("keeps the agent alive, resumes the download, ends the tunnel clearly and delivers every log line once", async () => {
    const { fleet, proxy } = f;
    // The default Watch time-out (60 s), so the HTTP/2 keep-alive is what notices the blackhole.
    const busy = await busyAgent(fleet, f.sandbox, 12, ["--watch-timeout-ms", "60000"]);

    await proxy.set("blackhole");
    const holeAt = Date.now();
    await writeLines(busy.appLog, 101, 100);
    const partAtHole = (await stat(busy.part)).size;
    // The tunnel ends while the network is gone, and the admin is told why in one line.
    await busy.tunnel.closed;
    await busy.forward.waitForOutput(/error: 127\.0\.0\.1:\d+ -> \S+: the device's agent disconnected\n/, 30_000);
    await waitFor("60 s of blackhole", () => Date.now() - holeAt >= 60_000, 70_000, 500);
    expect(busy.agent.exitCode).toBeNull();
    await writeLines(busy.appLog, 201, 100);
    await proxy.set("pass");

    const steps = await waitForEnd(fleet, busy.name, "app/1/app.tar.gz", 90_000);
    expect(steps.at(-1)!.step).toBe("healthy");
    const downloads = steps.filter((s) => s.step === "downloading");
    expect(downloads.filter((s) => s.bytesDone === 0)).toHaveLength(1);
    // A download resumed near where the blackhole stopped it, not from the start.
    expect(downloads.some((s, i) => i > 0 && Math.abs(s.bytesDone - partAtHole) <= 1024 * 1024)).toBe(true);

    expect(await linesAt(fleet, busy.name, "applog", 300)).toEqual(numbered(1, 300).trimEnd().split("\n"));

    // The forward itself stays up: a new connection through it works again.
    const again = await openEcho(busy.localPort);
    expect(await roundTrip(again, "again")).toBe("again");
    again.destroy();
    expect(busy.agent.exitCode).toBeNull();
  }, 180_000);
});
