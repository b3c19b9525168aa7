import { freePort, waitFor } from "@flotilla/protocol/testing";
import { expect, it } from "vitest";
import { Fleet } from "./support/fleet.ts";
import { useSandbox } from "./support/use-sandbox.ts";

const sb = useSandbox();

it("serves TLS off loopback with a certificate made from its own key, which agents pin through the join string", async () => {
  const port = await freePort();
  // Listening on every address means TLS; the test still only dials 127.0.0.1.
  const fleet = new Fleet(sb, ["--public-url", `https://127.0.0.1:${port}`]);
  fleet.port = port;
  fleet.dataDir = await sb.dir("flotilla-coord-");
  fleet.adminHome = await sb.dir("flotilla-admin-");
  fleet.coordinator = sb.spawn(
    ["coordinator", "--data-dir", fleet.dataDir, "--listen", `0.0.0.0:${port}`, "--public-url", `https://127.0.0.1:${port}`, "--keepalive-ms", "500"],
    {},
    "coordinator",
  );
  const listening = (await fleet.coordinator.waitForOutput(/listening on (\S+)/))[1]!;
  expect(listening).toMatch(/^https:/);
  fleet.url = `https://127.0.0.1:${port}`;
  const code = (await fleet.coordinator.waitForOutput(/--setup-code (\S+)/))[1]!;
  expect((await fleet.admin(["login", "--setup-code", code])).code).toBe(0);

  const join = await fleet.joinToken(["--auto-approve"]);
  fleet.startAgent(await sb.dir("flotilla-agent-"), join);
  await waitFor("the device online over TLS", async () => (await fleet.devices())[0]?.status === "online");

  // Plain HTTP to the TLS port gets nowhere.
  await expect(fetch(`http://127.0.0.1:${port}/grpc.health.v1.Health/Check`, { method: "POST", body: "{}" })).rejects.toThrow();
});

it("refuses a message larger than the configured maximum", async () => {
  const fleet = await new Fleet(sb, ["--max-message-bytes", String(64 * 1024)]).start();
  const res = await fetch(`${fleet.url}/flotilla.agent.v1.AgentService/Hello`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ clientNonce: Buffer.alloc(128 * 1024).toString("base64") }),
  });
  expect(res.ok).toBe(false);
  expect(((await res.json()) as { code: string }).code).toBe("resource_exhausted");
  // The coordinator is still fine.
  expect((await fleet.admin(["device", "ls"])).code).toBe(0);
});
