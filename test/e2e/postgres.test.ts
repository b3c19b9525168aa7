import { waitFor } from "@flotilla/protocol/testing";
import { describe, expect, it } from "vitest";
import { Fleet, freshPostgresDatabase } from "./support/fleet.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

describe.skipIf(!process.env.FLOTILLA_TEST_POSTGRES_URL)("a coordinator on PostgreSQL", () => {
  it("enrolls, labels, and keeps everything across a SIGKILL and restart", async () => {
    const url = await freshPostgresDatabase(sb);
    const fleet = await new Fleet(sb, ["--database-url", url]).start();
    const stateDir = await sb.dir("flotilla-agent-");
    fleet.startAgent(stateDir, await fleet.joinToken(["--auto-approve", "--labels", "env=prod"]));
    const dev = await waitFor("the device online", async () => (await fleet.devices()).find((d) => d.status === "online"));
    expect((await fleet.admin(["device", "label", "set", dev.name, "db=pg"])).code).toBe(0);

    await fleet.coordinator.stop("SIGKILL");
    await fleet.startCoordinator();
    const after = await waitFor("the device back online", async () => {
      const d = await fleet.device(dev.name);
      return d?.status === "online" && d.observedGeneration === d.generation ? d : undefined;
    }, 30_000);
    expect(after.labels).toEqual({ env: "prod", db: "pg" });
    expect(after.id).toBe(dev.id);
  });
});
